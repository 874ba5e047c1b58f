"""Who may administer which organization, and who belongs to one.

``administered_organizations`` is the one rule every organization page, export and key action
asks (through ``organization_for_admin``): staff administer every organization; a user whose
membership role is ``admin`` administers theirs; nobody else administers any. Being staff is a
Django flag; being an organization's admin is only this role, so an organization admin gets
nothing of the staff pages.

Ids from a URL are looked up as ``user__pk`` / ``organization__pk``, not ``user_id``: a pk
lookup answers "none" for a number no database integer holds, where the foreign key's own
column would hand it to the database and fail (an OverflowError on SQLite, a 500).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Case, IntegerField, QuerySet, Value, When
from django.http import Http404

from organizations.models import (
    Membership,
    Organization,
    UserPreferences,
    available_time_zones,
)


def administered_organizations(*, user: Any) -> QuerySet[Organization]:
    """The organizations ``user`` may administer (see the module docstring)."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return Organization.objects.none()
    if user.is_staff:
        return Organization.objects.all()
    return Organization.objects.filter(
        memberships__user_id=user.pk, memberships__role=Membership.Role.ADMIN
    )


def administers_any(*, user: Any) -> bool:
    """Whether ``user`` gets the Organization pages at all (the navigation asks)."""
    return administered_organizations(user=user).exists()


def organization_for_admin(*, user: Any, organization_id: int) -> Organization:
    """The organization, if ``user`` may administer it.

    A member of it who is not its admin gets 403 (it is their own organization: its existence
    is no secret to them, the refusal says why). Anyone else gets 404, exactly as for an id
    that does not exist, so another organization's ids reveal nothing.
    """
    organization = administered_organizations(user=user).filter(pk=organization_id).first()
    if organization is not None:
        return organization
    if Membership.objects.filter(user_id=user.pk, organization__pk=organization_id).exists():
        raise PermissionDenied("Only the organization's admins may open its pages.")
    raise Http404("No such organization.")


# Admins first, then people, then service accounts: the order the members page lists them in.
_ROLE_ORDER = Case(
    When(role=Membership.Role.ADMIN, then=Value(0)),
    When(role=Membership.Role.MEMBER, then=Value(1)),
    default=Value(2),
    output_field=IntegerField(),
)


def organization_members(*, organization: Organization) -> QuerySet[Membership]:
    """Every membership of the organization (people and service accounts), with its user."""
    return (
        Membership.objects.filter(organization=organization)
        .select_related("user")
        .order_by(_ROLE_ORDER, "user__username")
    )


def organization_member(*, organization: Organization, user_id: int) -> Membership:
    """The membership of ``user_id`` in the organization; 404 for anyone outside it, so an
    admin cannot tell another organization's users from ids that do not exist."""
    membership = (
        Membership.objects.filter(organization=organization, user__pk=user_id)
        .select_related("user")
        .first()
    )
    if membership is None:
        raise Http404("No such member.")
    return membership


def is_member(*, organization_id: int, user_id: int) -> bool:
    return Membership.objects.filter(organization__pk=organization_id, user__pk=user_id).exists()


def time_zone_of(*, user: Any) -> str:
    """The IANA zone ``user``'s pages are shown in: their choice, else UTC (also for anonymous
    visitors, API keys and a stored name this machine's tz database no longer has)."""
    if not getattr(user, "is_authenticated", False):
        return UserPreferences.DEFAULT_TIME_ZONE
    chosen = (
        UserPreferences.objects.filter(user_id=user.pk).values_list("time_zone", flat=True).first()
    )
    if chosen is None or chosen not in available_time_zones():
        return UserPreferences.DEFAULT_TIME_ZONE
    return chosen
