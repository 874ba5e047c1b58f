from django.contrib import admin
from django.db import models

from organizations.models import Membership, Organization


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    """The organization page; ``queueing.admin`` registers it again with the quota inline added
    above the members (this app imports nothing above it)."""

    list_display = ["name", "created_at"]
    search_fields = ["name"]
    inlines = [MembershipInline]
    # A webhook address typed without a scheme is https (Django 6's default, asked for now).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "organization", "role"]
    list_filter = ["organization", "role"]
    search_fields = ["user__username", "organization__name"]
    autocomplete_fields = ["user", "organization"]
