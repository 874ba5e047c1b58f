"""Who belongs to which organization: the bottom of the house.

``queueing`` (quotas, limits, requests) and ``usage`` (audit rows, rollups) both point here;
this app imports neither. The tables keep the names they had when these models lived in
``queueing`` (the move was state-only, see ``migrations/0001_initial.py``).
"""

from __future__ import annotations

from django.conf import settings
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
