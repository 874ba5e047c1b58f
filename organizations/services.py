"""Writes of the organizations app: service accounts and a person's preferences."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.db import transaction

from organizations.models import Membership, Organization, UserPreferences


def service_account_create(*, organization: Organization, username: str) -> Any:
    """A new user standing for a service of the organization (role ``service``).

    It has no usable password — it calls with gateway keys and never logs in to the pages —
    and its spend lands on the organization's dashboards and quotas like a member's. The user
    and its membership are written together or not at all. A name that is taken is refused
    (never reused: that user may belong to someone else, even to another organization).
    """
    users = get_user_model()
    username = username.strip()
    UnicodeUsernameValidator()(username)
    max_length = getattr(users._meta.get_field(users.USERNAME_FIELD), "max_length", None)
    if max_length is not None and len(username) > max_length:
        raise ValidationError(f"A user name has at most {max_length} characters.")
    with transaction.atomic():
        if users._default_manager.filter(**{users.USERNAME_FIELD: username}).exists():
            raise ValidationError(f"A user named {username!r} already exists; choose another name.")
        account = users._default_manager.create_user(**{users.USERNAME_FIELD: username})
        account.set_unusable_password()
        account.save(update_fields=["password"])
        Membership.objects.create(
            user=account, organization=organization, role=Membership.Role.SERVICE
        )
    return account


def preferences_set_time_zone(*, user: Any, time_zone: str) -> UserPreferences:
    """Show ``user``'s pages in ``time_zone`` from their next request on.

    The name is checked before anything is written: an unknown zone raises ``ValidationError``
    naming it, and the stored choice stays as it was.
    """
    time_zone = time_zone.strip()
    preferences = UserPreferences.objects.filter(user_id=user.pk).first() or UserPreferences(
        user=user
    )
    preferences.time_zone = time_zone
    preferences.full_clean(exclude=["user"])
    preferences.save()
    return preferences
