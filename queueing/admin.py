from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest

from llm_calls import catalog
from organizations import admin as organizations_admin
from organizations.models import Organization
from queueing.auth import api_token_create
from queueing.models import ApiToken, LLMRequest, Quota, QuotaAlert, RateLimitOverride


class QuotaInline(admin.StackedInline):
    model = Quota
    extra = 0
    fk_name = "organization"
    exclude = ["user", "api_token"]  # the organization's own row: no other holder


class BudgetInline(admin.StackedInline):
    """A gateway key's budget: its own Quota row, on top of its user's and organization's
    (the tightest wins). No fair-share weight: the scheduler weighs users, not keys."""

    model = Quota
    fk_name = "api_token"
    verbose_name = verbose_name_plural = "Budget"
    extra = 0
    max_num = 1
    fields = [
        "usd_per_day",
        "usd_per_month",
        "tokens_per_day",
        "tokens_per_month",
        "max_concurrent",
        "allowed_priorities",
    ]


# The organization page shows its quota above its members, as before the models moved to
# ``organizations`` (which cannot import Quota): registered again here, with the inline added.
admin.site.unregister(Organization)


@admin.register(Organization)
class OrganizationAdmin(organizations_admin.OrganizationAdmin):
    inlines = [QuotaInline, *organizations_admin.OrganizationAdmin.inlines]


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "tokens_per_day",
        "tokens_per_month",
        "usd_per_day",
        "usd_per_month",
        "max_concurrent",
        "weight",
        "allowed_priorities",
    ]
    search_fields = ["user__username", "organization__name", "api_token__name", "api_token__prefix"]
    autocomplete_fields = ["user", "organization", "api_token"]


@admin.register(LLMRequest)
class LLMRequestAdmin(admin.ModelAdmin):
    """Requests are facts: staff may inspect and filter them, not rewrite them."""

    list_display = [
        "id",
        "user",
        "session_id",
        "model",
        "priority",
        "status",
        "attempts",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "priority", "model"]
    search_fields = ["user__username", "session_id", "=id"]
    date_hierarchy = "created_at"
    list_select_related = ["user"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "user",
        "prefix",
        "default_priority",
        "expires_at",
        "created_at",
        "last_used_at",
        "revoked",
    ]
    list_filter = ["revoked"]
    search_fields = ["name", "user__username", "prefix"]
    autocomplete_fields = ["user"]
    fields = [
        "user",
        "name",
        "revoked",
        "expires_at",
        "allowed_models",
        "default_priority",
        "prefix",
        "created_at",
        "last_used_at",
    ]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    inlines = [BudgetInline]

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        token, raw = api_token_create(
            user=obj.user,
            name=obj.name,
            expires_at=obj.expires_at,
            allowed_models=obj.allowed_models or (),
            default_priority=obj.default_priority,
        )
        obj.pk = token.pk
        obj.key_hash, obj.prefix, obj.created_at = token.key_hash, token.prefix, token.created_at
        messages.warning(
            request, f"Copy this key now; it is not stored and will not be shown again: {raw}"
        )


class RateLimitOverrideForm(forms.ModelForm):
    class Meta:
        model = RateLimitOverride
        fields = ["model_class", "rpm", "itpm", "otpm", "note"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model_class"] = forms.ChoiceField(
            choices=[(b, b) for b in catalog.model_classes()],
            label="Rate-limit bucket",
            help_text="Opus 4.x share one bucket, Sonnet 4.x another; each 5.x model has its own.",
        )


@admin.register(RateLimitOverride)
class RateLimitOverrideAdmin(admin.ModelAdmin):
    """Organization limits per model class, when the configured tier is not the real one."""

    form = RateLimitOverrideForm
    list_display = ["model_class", "rpm", "itpm", "otpm", "note", "updated_at"]


@admin.register(QuotaAlert)
class QuotaAlertAdmin(admin.ModelAdmin):
    """80% / 100% quota crossings, raised once per period by ``queueing.quotas.settle``."""

    list_display = [
        "__str__",
        "user",
        "organization",
        "api_token",
        "metric",
        "threshold",
        "used",
        "limit",
        "period_start",
        "created_at",
        "emailed_at",
        "webhook_sent_at",
    ]
    list_filter = ["metric", "threshold", "period_start"]
    search_fields = ["user__username", "organization__name", "api_token__name"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
