"""What an organization's admin may change: their members' quotas and fair-share weights, and
the gateway keys of members and service accounts.

Who is an organization's admin is ``organizations.selectors.organization_for_admin``'s answer;
the views ask it before calling anything here. Each function then takes the organization the
admin acts for and checks that its target belongs to *that* organization (a user or key of
any other is a 404, as if it did not exist), so a view that forgot to check could still not
reach another organization. Every change is written in one transaction with a row in Django's
admin log naming the acting user (the object's History in the admin).

"Within the organization's own quota": a member's limit may not exceed the organization's
limit of the same kind (tokens or USD, day or month, requests in progress). Such a limit
would never bind — the organization's is checked on every call too (``quotas.admit``) — and
saying so beats saving a figure that promises more than the member can get. The fair-share
weight is capped at the organization's weight for the same reason in the scheduler's terms:
weights are shares against every other user of the gateway, other organizations' included, so
an admin may divide their organization's share but not enlarge it. A weight staff gave a
member above that stays valid while unchanged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.core.exceptions import ValidationError
from django.db import models, transaction

from organizations.models import Organization
from organizations.selectors import organization_member
from organizations.services import service_account_create
from queueing.auth import api_token_create, api_token_revoke
from queueing.models import ApiToken, Quota
from queueing.selectors import organization_key

# A holder without a Quota row weighs 1 (services.fair_share_weight).
DEFAULT_WEIGHT = Decimal(1)

# (Quota field, how a person calls it) for every limit a member's quota may set.
MEMBER_LIMITS: tuple[tuple[str, str], ...] = (
    ("tokens_per_day", "daily token limit"),
    ("tokens_per_month", "monthly token limit"),
    ("usd_per_day", "daily USD limit"),
    ("usd_per_month", "monthly USD limit"),
    ("max_concurrent", "limit of requests in progress"),
)
# A key's budget is in US dollars only (queueing.auth.api_token_create).
KEY_BUDGETS: tuple[tuple[str, str, str], ...] = (
    ("budget_usd_per_day", "usd_per_day", "daily"),
    ("budget_usd_per_month", "usd_per_month", "monthly"),
)


def figure(field: str, value: int | Decimal) -> str:
    """A limit as people read it: money to 4 decimals, counts with thousands separators."""
    if field.startswith("usd"):
        return f"${Decimal(value):,.4f}"
    return f"{int(value):,}"


def weight_text(weight: Decimal) -> str:
    """1.500 -> "1.5", 2.000 -> "2" (no exponent: Decimal("10").normalize() is 1E+1)."""
    return f"{Decimal(weight).normalize():f}"


def organization_weight(*, organization: Organization) -> Decimal:
    """The weight every member without a quota of their own gets from the scheduler."""
    quota = Quota.objects.filter(organization=organization).only("weight").first()
    return quota.weight if quota is not None else DEFAULT_WEIGHT


def _log(*, by_user: Any, obj: models.Model, flag: int, message: str) -> None:
    LogEntry.objects.log_actions(
        user_id=by_user.pk, queryset=[obj], action_flag=flag, change_message=message
    )


# --- quotas and weights ----------------------------------------------------------------------


def check_member_quota(
    *,
    organization: Organization,
    member_name: str,
    limits: dict[str, int | Decimal | None],
    weight: Decimal,
    current_weight: Decimal | None,
) -> dict[str, str]:
    """What is wrong with these limits for a member of ``organization``, by field (empty:
    nothing). Each message names both figures: the member's and the organization's."""
    org_quota = Quota.objects.filter(organization=organization).first()
    errors: dict[str, str] = {}
    for field, label in MEMBER_LIMITS:
        value = limits.get(field)
        if value is None:
            continue  # no limit of their own: the organization's still applies
        if value < 0:
            errors[field] = f"A {label} cannot be negative (got {figure(field, value)})."
            continue
        ceiling = getattr(org_quota, field) if org_quota is not None else None
        if ceiling is not None and value > ceiling:
            errors[field] = (
                f"A {label} of {figure(field, value)} for {member_name} is above "
                f"{organization.name}'s own {label} of {figure(field, ceiling)}."
            )
    org_weight = org_quota.weight if org_quota is not None else DEFAULT_WEIGHT
    if weight <= 0:
        errors["weight"] = f"A weight must be more than 0 (got {weight_text(weight)})."
    elif weight > org_weight and weight != current_weight:
        errors["weight"] = (
            f"A weight of {weight_text(weight)} for {member_name} is above "
            f"{organization.name}'s weight of {weight_text(org_weight)}; only staff can give "
            "a member more than the organization's weight."
        )
    return errors


def member_quota_set(
    *,
    organization: Organization,
    user_id: int,
    by_user: Any,
    tokens_per_day: int | None,
    tokens_per_month: int | None,
    usd_per_day: Decimal | None,
    usd_per_month: Decimal | None,
    max_concurrent: int | None,
    weight: Decimal,
) -> Quota:
    """Set a member's own limits and weight (None: no limit of their own), or refuse with a
    ``ValidationError`` by field, writing nothing.

    The member's row is locked while it is checked and written, so two admins saving at
    once cannot interleave a check with the other's write. ``allowed_priorities`` is left as
    it was (staff set it in the admin). The new figures apply to the member's next request:
    ``quotas.admit`` and the scheduler's weight read the row each time.
    """
    limits: dict[str, int | Decimal | None] = {
        "tokens_per_day": tokens_per_day,
        "tokens_per_month": tokens_per_month,
        "usd_per_day": usd_per_day,
        "usd_per_month": usd_per_month,
        "max_concurrent": max_concurrent,
    }
    with transaction.atomic():
        member = organization_member(organization=organization, user_id=user_id)
        quota = Quota.objects.select_for_update().filter(user_id=member.user_id).first()
        errors = check_member_quota(
            organization=organization,
            member_name=member.user.get_username(),
            limits=limits,
            weight=weight,
            current_weight=quota.weight if quota is not None else None,
        )
        if errors:
            raise ValidationError({field: [message] for field, message in errors.items()})
        created = quota is None
        if quota is None:
            quota = Quota(user_id=member.user_id)
        for field, value in limits.items():
            setattr(quota, field, value)
        quota.weight = weight
        quota.save()
        shown = ", ".join(
            f"{label} {figure(field, value) if value is not None else 'none'}"
            for (field, label), value in zip(MEMBER_LIMITS, limits.values(), strict=True)
        )
        _log(
            by_user=by_user,
            obj=quota,
            flag=ADDITION if created else CHANGE,
            message=f"Set by an admin of {organization.name}: {shown}, weight {weight_text(weight)}.",
        )
    return quota


# --- gateway keys ----------------------------------------------------------------------------


def _key_errors(
    *,
    organization: Organization,
    budget_usd_per_day: Decimal | None,
    budget_usd_per_month: Decimal | None,
) -> dict[str, list[str]]:
    """A key budget must be more than $0 and at most the organization's own USD limit of the
    same period (a larger one would never bind)."""
    budgets = {
        "budget_usd_per_day": budget_usd_per_day,
        "budget_usd_per_month": budget_usd_per_month,
    }
    org_quota = Quota.objects.filter(organization=organization).first()
    errors: dict[str, list[str]] = {}
    for arg, field, period in KEY_BUDGETS:
        value = budgets[arg]
        ceiling = getattr(org_quota, field) if org_quota is not None else None
        if value is not None and value <= 0:
            errors[arg] = [f"A {period} budget must be more than $0 (got {figure(field, value)})."]
        elif value is not None and ceiling is not None and value > ceiling:
            errors[arg] = [
                f"A {period} budget of {figure(field, value)} is above {organization.name}'s "
                f"own {period} USD limit of {figure(field, ceiling)}."
            ]
    return errors


def organization_key_create(
    *,
    organization: Organization,
    by_user: Any,
    name: str,
    owner_id: int | None = None,
    service_account_name: str = "",
    expires_at: dt.datetime | None = None,
    allowed_models: Sequence[str] = (),
    default_priority: str = "",
    budget_usd_per_day: Decimal | None = None,
    budget_usd_per_month: Decimal | None = None,
) -> tuple[ApiToken, str]:
    """A gateway key for a member (``owner_id``) or for a new service account of the
    organization (``service_account_name``), and the key itself — shown once, never stored.

    The owner must belong to this organization (404 otherwise); a new service account and its
    key are made together or not at all. A budget above the organization's own USD limit of
    the same period is refused (``ValidationError`` by field), like a member's limit.
    """
    if (owner_id is None) == (not service_account_name):
        raise ValueError("give exactly one of owner_id and service_account_name")
    with transaction.atomic():
        # Whose key first: a user outside the organization is a 404 whatever else is wrong.
        owner = None
        if owner_id is not None:
            owner = organization_member(organization=organization, user_id=owner_id).user
        errors = _key_errors(
            organization=organization,
            budget_usd_per_day=budget_usd_per_day,
            budget_usd_per_month=budget_usd_per_month,
        )
        if owner is not None and not owner.is_active:
            errors["owner"] = [f"{owner.get_username()} is deactivated: its keys would be refused."]
        if errors:
            raise ValidationError(errors)
        # The key's own rules (known models, a priority class that exists), as the admin's.
        ApiToken(allowed_models=list(allowed_models), default_priority=default_priority).clean()
        if owner is None:
            try:
                owner = service_account_create(
                    organization=organization, username=service_account_name
                )
            except ValidationError as problem:
                raise ValidationError({"service_account_name": problem.messages}) from None
        token, raw = api_token_create(
            user=owner,
            name=name,
            expires_at=expires_at,
            allowed_models=allowed_models,
            default_priority=default_priority,
            budget_usd_per_day=budget_usd_per_day,
            budget_usd_per_month=budget_usd_per_month,
        )
        _log(
            by_user=by_user,
            obj=token,
            flag=ADDITION,
            message=f"Made by an admin of {organization.name} for {owner.get_username()}.",
        )
    return token, raw


def organization_key_revoke(*, organization: Organization, key_id: int, by_user: Any) -> ApiToken:
    """Revoke a key of the organization (404 for another's). Revoking a revoked key changes
    nothing and logs nothing."""
    with transaction.atomic():
        token = organization_key(organization=organization, key_id=key_id)
        if api_token_revoke(token=token):
            _log(
                by_user=by_user,
                obj=token,
                flag=CHANGE,
                message=f"Revoked by an admin of {organization.name}.",
            )
    return token
