"""Who may call Claude, and every request they made.

Organizations and memberships live in ``organizations`` (below this app and ``usage``); the
quotas, alerts and requests here point to them. The receiver that drops the limiter's cached
overrides when one changes is connected in ``QueueingConfig.ready()`` (this module does not
import the limiter, which reads it).

``LLMRequest`` rows are the source of truth for queued work: Redis holds only the order
(scheduler) and the counters (limiter, quota reservations), and can be rebuilt from these rows.
"""

from __future__ import annotations

import functools
import operator
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from llm_calls import catalog
from organizations.models import Organization
from queueing import conf


def _exactly_one_holder() -> Q:
    """Exactly one of ``user`` / ``organization`` / ``api_token`` is set (quotas and alerts)."""
    holders = ("user", "organization", "api_token")
    return functools.reduce(
        operator.or_,
        (Q(**{f"{name}__isnull": name != held for name in holders}) for held in holders),
    )


class Quota(models.Model):
    """Limits for one user, one organization or one gateway key. An empty limit means "no
    limit".

    Exactly one of ``user`` / ``organization`` / ``api_token`` is set. A key's quota is its
    *budget*: it applies to the calls made with that key, on top of its user's and
    organization's own quotas (the tightest wins). ``weight`` is the fair-share weight the
    scheduler gives this user (or every member of this organization without a quota of their
    own); a key has none of its own.
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
    api_token = models.OneToOneField(
        "ApiToken",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="quota",
        verbose_name="gateway key",
    )
    tokens_per_day = models.BigIntegerField(null=True, blank=True)
    tokens_per_month = models.BigIntegerField(null=True, blank=True)
    usd_per_day = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    usd_per_month = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    max_concurrent = models.PositiveIntegerField(null=True, blank=True)
    weight = models.DecimalField(
        max_digits=8,
        decimal_places=3,
        default=Decimal("1"),
        help_text="Fair-share weight in the scheduler; unused for a gateway key's budget.",
    )
    allowed_priorities = models.JSONField(
        default=list, blank=True, help_text="Priority classes this holder may use; empty means all."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=_exactly_one_holder(), name="quota_exactly_one_holder"
            ),
            models.CheckConstraint(condition=Q(weight__gt=0), name="quota_weight_positive"),
        ]

    def __str__(self) -> str:
        if self.api_token_id:
            return f"Budget of gateway key {self.api_token}"
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
    # The Message Batch carrying this request (queueing.batching); while a collector is
    # submitting it holds a "claim:<uuid>" token instead, so two collectors never take one row.
    batch_id = models.CharField(max_length=128, blank=True, default="", db_index=True)

    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    dispatch_count = models.PositiveIntegerField(default=0)

    estimated_input_tokens = models.PositiveIntegerField(default=0)
    # The prompt's cacheable prefixes ([[hash, estimated tokens], ...]; see
    # llm_calls.caching.cacheable_prefixes): what the limiter asks the prompt-cache record
    # about, to reserve only the part of the prompt the cache will not serve.
    cache_prefixes = models.JSONField(default=list, blank=True)
    reserved_tokens = models.BigIntegerField(default=0)
    reserved_usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal("0"))
    # The wait the submitter was told, and the queue model's own figure before the learned
    # per-class calibration was applied to it (queueing.eta.estimate_wait): calibration is
    # learned from the model's errors, not from its own corrections.
    predicted_wait_s = models.FloatField(null=True, blank=True)
    model_wait_s = models.FloatField(null=True, blank=True)

    attempts = models.PositiveIntegerField(default=0)
    result = models.JSONField(null=True, blank=True)
    error_type = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    # A client's Idempotency-Key: the same key from the same user names this request again,
    # never a second one (the constraint holds it across processes and crashes). The
    # fingerprint is of the submission it came with, so a key reused for a different body is
    # refused instead of silently answered with another request.
    idempotency_key = models.CharField(max_length=255, blank=True, default="")
    idempotency_fingerprint = models.CharField(max_length=64, blank=True, default="")
    # The caller streams the answer on (the Anthropic-compatible endpoint's stream: true): the
    # call is streamed and its events relayed as they arrive (queueing.relay).
    live_events = models.BooleanField(default=False)
    # The gateway key the request came with (none from the pages or Python callers).
    api_token = models.ForeignKey(
        "ApiToken", null=True, blank=True, on_delete=models.SET_NULL, related_name="requests"
    )

    # Not a column: set on the instance submit_request returns when an Idempotency-Key named
    # a request that already existed.
    replayed: bool = False
    # Not a column either: its place in its class when submit_request queued it (1 = next).
    queue_position: int | None = None

    class Meta:
        indexes = [models.Index(fields=["user", "status", "created_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="llmrequest_one_per_idempotency_key",
            )
        ]

    def __str__(self) -> str:
        return f"LLMRequest {self.pk} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    def message_params(self) -> dict[str, Any]:
        """The Messages body this request sends (model and max_tokens live in their columns)."""
        return {"model": self.model, "max_tokens": self.max_tokens, **self.params}


class ApiToken(models.Model):
    """A gateway key: how services that are not a browser call the JSON API and the
    Anthropic-compatible endpoint (``x-api-key`` or ``Authorization: Bearer``).

    Only a SHA-256 of the key is stored; the key itself is shown once, when it is created.
    A key belongs to a person or to an organization's service account (a user whose
    membership role is ``service``), and may be limited to some models and carry the
    priority class its calls get when they do not ask for one.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(
        max_length=12, editable=False, help_text="The first characters, to recognise it."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked = models.BooleanField(default=False)
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="After this moment the key is refused (blank: never)."
    )
    allowed_models = models.JSONField(
        default=list,
        blank=True,
        help_text='Model ids this key may use, e.g. ["claude-haiku-4-5"] (empty: every model).',
    )
    default_priority = models.CharField(
        max_length=32,
        blank=True,
        help_text="Priority class of calls that do not name one (blank: interactive).",
    )

    class Meta:
        verbose_name = "gateway key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def clean(self) -> None:
        models_given = self.allowed_models
        if not isinstance(models_given, list) or not all(isinstance(m, str) for m in models_given):
            raise ValidationError(
                {"allowed_models": 'a list of model ids, e.g. ["claude-haiku-4-5"]'}
            )
        unknown = [m for m in models_given if catalog.model_info(m) is None]
        if unknown:
            raise ValidationError({"allowed_models": f"unknown model {unknown[0]!r}"})
        classes = conf.priority_class_names()
        if self.default_priority and self.default_priority not in classes:
            raise ValidationError(
                {"default_priority": f"unknown class; choose one of {', '.join(classes)}"}
            )


class RateLimitOverride(models.Model):
    """An admin's correction of the organization's per-minute limits for one model class.

    Precedence: ``GATEWAY_RATE_LIMITS`` < this row < limits learned from Anthropic's response
    headers (the server knows our tier best). An empty field keeps the settings value; 0 means
    unlimited. Other processes see a change within ``GATEWAY_LIMITER_OVERRIDE_CACHE_S`` seconds.
    """

    # A rate-limit bucket of llm_calls.catalog ("sonnet-5-5", "opus-4", ...): the catalog
    # changes as Anthropic ships models, so the choices are checked in clean(), not frozen
    # into a migration.
    model_class = models.CharField(max_length=32, unique=True)
    rpm = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests per minute; empty keeps the setting."
    )
    itpm = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Input tokens per minute; empty keeps the setting."
    )
    otpm = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Output tokens per minute; empty keeps the setting."
    )
    note = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model_class"]

    def __str__(self) -> str:
        return f"Rate limit override for {self.model_class}"

    def clean(self) -> None:
        buckets = catalog.model_classes()
        if self.model_class not in buckets:
            raise ValidationError(
                {"model_class": f"unknown rate-limit bucket; choose one of {', '.join(buckets)}"}
            )


class QuotaAlert(models.Model):
    """A user, organization or gateway key passed a threshold (80 %, 100 %) of one of its
    quotas (a key's: its budget).

    Written by ``quotas.settle`` at most once per holder, quota, threshold and period (the
    conditional unique constraints hold that even if Redis forgot it already alerted).
    ``used`` and ``limit`` are tokens or US dollars, per ``metric``.
    """

    class Metric(models.IntegerChoices):
        DAILY_TOKENS = 1, "daily tokens"
        MONTHLY_TOKENS = 2, "monthly tokens"
        DAILY_USD = 3, "daily USD"
        MONTHLY_USD = 4, "monthly USD"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="quota_alerts",
    )
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="quota_alerts"
    )
    api_token = models.ForeignKey(
        ApiToken,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="quota_alerts",
        verbose_name="gateway key",
    )
    metric = models.PositiveSmallIntegerField(choices=Metric.choices)
    threshold = models.PositiveSmallIntegerField(help_text="Percent of the limit: 80 or 100.")
    used = models.DecimalField(max_digits=20, decimal_places=6)
    limit = models.DecimalField(max_digits=20, decimal_places=6)
    period_start = models.DateField(help_text="First day (UTC) of the day or month it counts.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Delivery to the people concerned (queueing.alert_delivery), off the path of any call:
    # each channel once, retried with backoff until MAX_ATTEMPTS.
    emailed_at = models.DateTimeField(null=True, blank=True)
    webhook_sent_at = models.DateTimeField(null=True, blank=True)
    delivery_attempts = models.PositiveSmallIntegerField(default=0)
    next_delivery_at = models.DateTimeField(null=True, blank=True, db_index=True)
    delivery_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=_exactly_one_holder(), name="quota_alert_exactly_one_holder"
            ),
            models.UniqueConstraint(
                fields=["user", "metric", "threshold", "period_start"],
                condition=Q(user__isnull=False),
                name="quota_alert_once_per_user_period",
            ),
            models.UniqueConstraint(
                fields=["organization", "metric", "threshold", "period_start"],
                condition=Q(organization__isnull=False),
                name="quota_alert_once_per_org_period",
            ),
            models.UniqueConstraint(
                fields=["api_token", "metric", "threshold", "period_start"],
                condition=Q(api_token__isnull=False),
                name="quota_alert_once_per_key_period",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.holder_label} passed {self.threshold}% of its "
            f"{self.get_metric_display()} {'budget' if self.api_token_id else 'quota'} "
            f"({self.period_start})"
        )

    @property
    def amount_text(self) -> str:
        """What was used of what, as people read it: "$4.1200 of $5.0000" or "20,000 of 25,000
        tokens" (the pages' notices and the alert mail say it alike)."""
        if self.metric in (QuotaAlert.Metric.DAILY_USD, QuotaAlert.Metric.MONTHLY_USD):
            return f"${self.used:,.4f} of ${self.limit:,.4f}"
        return f"{int(self.used):,} of {int(self.limit):,} tokens"

    @property
    def holder_label(self) -> str:
        if self.user_id:
            return f"user {self.user}"
        if self.organization_id:
            return f"organization {self.organization}"
        return f"gateway key {self.api_token}"
