"""Who may call Claude, and every request they made.

``LLMRequest`` rows are the source of truth for queued work: Redis holds only the order
(scheduler) and the counters (limiter, quota reservations), and can be rebuilt from these rows.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q


class Organization(models.Model):
    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A user belongs to at most one organization; its quota and limits apply to them."""

    class Role(models.TextChoices):
        MEMBER = "member", "Member"
        ADMIN = "admin", "Organization admin"

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership"
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)

    def __str__(self) -> str:
        return f"{self.user} @ {self.organization}"


class Quota(models.Model):
    """Limits for one user or one organization. An empty limit means "no limit".

    Exactly one of ``user`` / ``organization`` is set. ``weight`` is the fair-share weight the
    scheduler gives this user (or every member of this organization without a quota of their own).
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="quota",
    )
    organization = models.OneToOneField(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="quota"
    )
    tokens_per_day = models.BigIntegerField(null=True, blank=True)
    tokens_per_month = models.BigIntegerField(null=True, blank=True)
    usd_per_day = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    usd_per_month = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    max_concurrent = models.PositiveIntegerField(null=True, blank=True)
    weight = models.DecimalField(max_digits=8, decimal_places=3, default=Decimal("1"))
    allowed_priorities = models.JSONField(
        default=list, blank=True, help_text="Priority classes this holder may use; empty means all."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(user__isnull=False) & Q(organization__isnull=True))
                | (Q(user__isnull=True) & Q(organization__isnull=False)),
                name="quota_exactly_one_holder",
            ),
            models.CheckConstraint(condition=Q(weight__gt=0), name="quota_weight_positive"),
        ]

    def __str__(self) -> str:
        return f"Quota for {self.user or self.organization}"


class LLMRequest(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        DISPATCHED = "dispatched", "Dispatched"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        REJECTED = "rejected", "Rejected by quota"

    TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.REJECTED})

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="llm_requests"
    )
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.SET_NULL, related_name="llm_requests"
    )
    session_id = models.CharField(max_length=128, db_index=True)
    model = models.CharField(max_length=100)
    priority = models.CharField(max_length=32, default="query")
    params = models.JSONField(
        help_text="The Messages API body we will send, without model and stream."
    )
    max_tokens = models.PositiveIntegerField()
    use_response_cache = models.BooleanField(default=False)
    response_cache_shared = models.BooleanField(default=False)
    use_batch = models.BooleanField(default=False)

    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    dispatch_count = models.PositiveIntegerField(default=0)

    estimated_input_tokens = models.PositiveIntegerField(default=0)
    reserved_tokens = models.BigIntegerField(default=0)
    reserved_usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal("0"))
    predicted_wait_s = models.FloatField(null=True, blank=True)

    attempts = models.PositiveIntegerField(default=0)
    result = models.JSONField(null=True, blank=True)
    error_type = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["user", "status", "created_at"])]

    def __str__(self) -> str:
        return f"LLMRequest {self.pk} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL
