"""The organization admin's pages: members with their quotas and weights, and gateway keys.

(Its usage pages are usage's own views, scoped to the organization: ``usage.views.org_*``.)
Every view first asks ``organizations.selectors.organization_for_admin`` — 403 for a member
who is not an admin, 404 for anyone outside the organization — then calls one service of
``queueing.org_admin`` or reads ``queueing.selectors``, and renders.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from organizations.models import Organization
from organizations.selectors import (
    administered_organizations,
    organization_for_admin,
    organization_member,
    organization_members,
)
from queueing import org_admin, selectors
from queueing.models import Quota
from queueing.org_forms import KeyForm, MemberQuotaForm


def _organization(request: HttpRequest, org_id: int) -> Organization:
    return organization_for_admin(user=request.user, organization_id=org_id)


def _org_quota(organization: Organization) -> Quota | None:
    return Quota.objects.filter(organization=organization).first()


@login_required
def org_index(request: HttpRequest) -> HttpResponse:
    """The Organization entry: straight to the one organization someone administers, or a
    list to choose from (staff)."""
    organizations = list(administered_organizations(user=request.user))
    if not organizations:
        raise PermissionDenied("Only organization admins and staff have organization pages.")
    if len(organizations) == 1:
        return redirect("org:usage", organizations[0].pk)
    return render(request, "queueing/org_index.html", {"organizations": organizations})


@login_required
def members(request: HttpRequest, org_id: int) -> HttpResponse:
    organization = _organization(request, org_id)
    return render(
        request,
        "queueing/org_members.html",
        {
            "org": organization,
            "org_tab": "members",
            "org_quota": _org_quota(organization),
            "org_weight": org_admin.organization_weight(organization=organization),
            "rows": selectors.organization_member_rows(organization=organization),
        },
    )


@login_required
def member_quota(request: HttpRequest, org_id: int, user_id: int) -> HttpResponse:
    """A member's own limits and weight: the form, and saving it through the service."""
    organization = _organization(request, org_id)
    member = organization_member(organization=organization, user_id=user_id)
    org_quota = _org_quota(organization)
    quota = Quota.objects.filter(user_id=member.user_id).first()
    initial: dict[str, Any] = {
        field: getattr(quota, field) if quota is not None else None
        for field, _ in org_admin.MEMBER_LIMITS
    }
    initial["weight"] = (
        quota.weight
        if quota is not None
        else org_admin.organization_weight(organization=organization)
    )
    form = MemberQuotaForm(request.POST or None, initial=initial, organization_quota=org_quota)
    if request.method == "POST" and form.is_valid():
        try:
            org_admin.member_quota_set(
                organization=organization,
                user_id=member.user_id,
                by_user=request.user,
                **form.cleaned_data,
            )
        except ValidationError as refused:
            form.add_error(None, refused)
        else:
            messages.success(request, f"Limits of {member.user.get_username()} saved.")
            return redirect("org:members", organization.pk)
    return render(
        request,
        "queueing/org_member_quota.html",
        {
            "org": organization,
            "org_tab": "members",
            "member": member,
            "has_own_quota": quota is not None,
            "form": form,
        },
    )


@never_cache  # the page that shows a new key must never be served again from a cache
@login_required
def keys(request: HttpRequest, org_id: int) -> HttpResponse:
    """The organization's gateway keys, and the form that makes one (shown once, here)."""
    organization = _organization(request, org_id)
    form = KeyForm(
        request.POST or None, members=list(organization_members(organization=organization))
    )
    created: tuple[Any, str] | None = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        days = data["expires_in_days"]
        try:
            created = org_admin.organization_key_create(
                organization=organization,
                by_user=request.user,
                name=data["name"],
                owner_id=data["owner"],
                service_account_name=data["service_account_name"].strip(),
                expires_at=timezone.now() + timedelta(days=days) if days else None,
                allowed_models=data["allowed_models"],
                default_priority=data["default_priority"],
                budget_usd_per_day=data["budget_usd_per_day"],
                budget_usd_per_month=data["budget_usd_per_month"],
            )
        except ValidationError as refused:
            form.add_error(None, refused)
        else:
            form = KeyForm(members=list(organization_members(organization=organization)))
    return render(
        request,
        "queueing/org_keys.html",
        {
            "org": organization,
            "org_tab": "keys",
            "form": form,
            "created": created,
            "keys": selectors.organization_keys(organization=organization),
            "now": timezone.now(),
        },
    )


@login_required
@require_POST
def key_revoke(request: HttpRequest, org_id: int, key_id: int) -> HttpResponse:
    organization = _organization(request, org_id)
    token = org_admin.organization_key_revoke(
        organization=organization, key_id=key_id, by_user=request.user
    )
    messages.success(request, f"Key {token.name} ({token.prefix}…) revoked.")
    return redirect("org:keys", organization.pk)
