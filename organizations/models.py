"""Who belongs to which organization: the bottom of the house.

``queueing`` (quotas, limits, requests) and ``usage`` (audit rows, rollups) both point here;
this app imports neither. The tables keep the names they had when these models lived in
``queueing`` (the move was state-only, see ``migrations/0001_initial.py``).
"""

from __future__ import annotations

import functools
import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


class Organization(models.Model):
    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    alert_webhook_url = models.URLField(
        blank=True,
        help_text="Quota alerts of this organization, its members and keys are POSTed here "
        'as Slack-compatible JSON ({"text": …}); blank: none.',
    )

    class Meta:
        db_table = "queueing_organization"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A user belongs to at most one organization; its quota and limits apply to them."""

    class Role(models.TextChoices):
        MEMBER = "member", "Member"
        ADMIN = "admin", "Organization admin"
        # A user that stands for a service of the organization: it calls with gateway keys
        # and cannot log in (manage.py gateway_key create --org).
        SERVICE = "service", "Service account"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership"
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        db_table = "queueing_membership"

    def __str__(self) -> str:
        return f"{self.user} @ {self.organization}"


def validate_time_zone(value: str) -> None:
    """An IANA zone name this machine's tz database knows ("Europe/Paris", "UTC"): the pages
    print every date-time in it, so a name that zoneinfo cannot load would break each of them."""
    if value not in available_time_zones():
        raise ValidationError(
            "%(zone)s is not a time zone we know: use an IANA name such as UTC, "
            "Europe/Paris or America/New_York.",
            code="unknown_time_zone",
            params={"zone": repr(value)},
        )


@functools.cache
def available_time_zones() -> frozenset[str]:
    """Read once per process: ``zoneinfo.available_timezones()`` walks the tz database on disk."""
    return frozenset(zoneinfo.available_timezones())


class UserPreferences(models.Model):
    """What one person chose for how the pages are shown to them; a user without a row gets the
    defaults (nobody has to visit Settings before the pages work)."""

    DEFAULT_TIME_ZONE = "UTC"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preferences"
    )
    time_zone = models.CharField(
        max_length=64,
        default=DEFAULT_TIME_ZONE,
        validators=[validate_time_zone],
        help_text="IANA name; every date-time on the pages is shown in it, with its abbreviation.",
    )

    class Meta:
        verbose_name_plural = "user preferences"

    def __str__(self) -> str:
        return f"{self.user}: {self.time_zone}"
