"""Accounting: prices, one audit row per billed response (or final failure), and rollups.

Money columns are whole picodollars (1e-12 USD) in integer columns; see ``usage.pricing`` for
why (SQLite adds DECIMAL columns in floating point). Each ``*_pico_usd`` column has a
``*_usd`` property that returns the exact ``Decimal``.

The rollups (``UsageDaily``, ``UserUsageDaily``, ``SessionUsage``, ``OrganizationUsageDaily``) are written in the
same transaction as each ``AuditLog`` row by ``usage.services.record_call``, so dashboards read
a few small rows instead of aggregating ``audit_log``; ``seed_usage`` rebuilds them with
GROUP BY after a bulk load. Their unique constraints COALESCE the nullable keys to 0 so a
system call (no user / no organization) still has exactly one rollup row per key.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Value
from django.db.models.functions import Coalesce

from usage.pricing import PRICE_DECIMAL_PLACES, pico_to_usd


class ModelPrice(models.Model):
    """A model's list price from ``effective_from`` until the next row for the same model.

    The price for a call is the row with the latest ``effective_from`` on or before the call's
    UTC date. Editing prices here is how billing follows Anthropic's price changes: add a row
    with the new date rather than editing history.
    """

    model = models.CharField(max_length=100)
    input_usd_per_mtok = models.DecimalField(
        "input USD per million tokens",
        max_digits=12,
        decimal_places=PRICE_DECIMAL_PLACES,
        validators=[MinValueValidator(Decimal(0))],
    )
    output_usd_per_mtok = models.DecimalField(
        "output USD per million tokens",
        max_digits=12,
        decimal_places=PRICE_DECIMAL_PLACES,
        validators=[MinValueValidator(Decimal(0))],
    )
    effective_from = models.DateField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "effective_from"], name="modelprice_one_per_model_and_date"
            ),
            models.CheckConstraint(
                condition=models.Q(input_usd_per_mtok__gte=0, output_usd_per_mtok__gte=0),
                name="modelprice_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.model} from {self.effective_from}: ${self.input_usd_per_mtok} in / "
            f"${self.output_usd_per_mtok} out per Mtok"
        )


class Outcome(models.IntegerChoices):
    SUCCESS = 1, "Success"
    FAILED = 2, "Failed"
    RESPONSE_CACHE_HIT = 3, "Response cache hit"


class ServiceTier(models.IntegerChoices):
    STANDARD = 1, "standard"
    BATCH = 2, "batch"
    PRIORITY = 3, "priority"


class AuditLog(models.Model):
    """One billed API response, or one request that finally failed (zero tokens).

    ``client_request_id`` is our idempotency key: unique when set, so a retried job or a
    redelivered message can never record the same response twice.
    ``uncached_cost_pico_usd`` is what the call would have cost with no prompt caching.
    """

    Outcome = Outcome
    ServiceTier = ServiceTier

    occurred_at = models.DateTimeField(db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,  # covered by (user, occurred_at)
    )
    organization = models.ForeignKey(
        "queueing.Organization",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,  # covered by (organization, occurred_at)
    )
    session_id = models.CharField(max_length=128, blank=True)
    llm_request = models.ForeignKey(
        "queueing.LLMRequest",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audit_rows",
    )
    model = models.CharField(max_length=100)
    priority = models.CharField(max_length=32, blank=True)
    outcome = models.PositiveSmallIntegerField(choices=Outcome.choices)
    attempts = models.PositiveIntegerField(default=1)
    final_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error_type = models.CharField(max_length=64, blank=True)

    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_creation_5m_tokens = models.BigIntegerField(default=0)
    cache_creation_1h_tokens = models.BigIntegerField(default=0)
    cache_creation_input_tokens = models.BigIntegerField(default=0)
    cache_read_input_tokens = models.BigIntegerField(default=0)
    service_tier = models.PositiveSmallIntegerField(
        choices=ServiceTier.choices, default=ServiceTier.STANDARD
    )
    cost_pico_usd = models.BigIntegerField("cost (picodollars)", default=0)
    uncached_cost_pico_usd = models.BigIntegerField("cost without caching (picodollars)", default=0)
    price_missing = models.BooleanField(
        default=False, help_text="No price for this model on this date: cost recorded as 0."
    )

    latency_ms = models.PositiveIntegerField(default=0)
    queue_wait_ms = models.PositiveIntegerField(default=0)
    request_id = models.CharField("Anthropic request id", max_length=128, blank=True)
    client_request_id = models.CharField(max_length=128, null=True, blank=True, unique=True)

    class Meta:
        db_table = "audit_log"
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["user", "occurred_at"], name="audit_user_time"),
            models.Index(fields=["session_id", "occurred_at"], name="audit_session_time"),
            models.Index(fields=["organization", "occurred_at"], name="audit_org_time"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(
                    cache_creation_input_tokens=F("cache_creation_5m_tokens")
                    + F("cache_creation_1h_tokens")
                ),
                name="audit_cache_creation_is_5m_plus_1h",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.model} {self.get_outcome_display()}"

    @property
    def cost_usd(self) -> Decimal:
        return pico_to_usd(self.cost_pico_usd)

    @property
    def uncached_cost_usd(self) -> Decimal:
        return pico_to_usd(self.uncached_cost_pico_usd)

    @property
    def total_input_tokens(self) -> int:
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    @property
    def cache_hit(self) -> bool:
        return self.cache_read_input_tokens > 0


class UsageCounters(models.Model):
    """The additive counters every rollup keeps. ``retries`` sums ``attempts - 1``."""

    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    response_cache_hits = models.BigIntegerField(default=0)
    retries = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_creation_5m_tokens = models.BigIntegerField(default=0)
    cache_creation_1h_tokens = models.BigIntegerField(default=0)
    cache_read_input_tokens = models.BigIntegerField(default=0)
    cost_pico_usd = models.BigIntegerField(default=0)
    uncached_cost_pico_usd = models.BigIntegerField(default=0)
    latency_ms_sum = models.BigIntegerField(default=0)
    queue_wait_ms_sum = models.BigIntegerField(default=0)
    price_missing = models.BigIntegerField(default=0)

    COUNTER_FIELDS = (
        "requests",
        "errors",
        "response_cache_hits",
        "retries",
        "input_tokens",
        "output_tokens",
        "cache_creation_5m_tokens",
        "cache_creation_1h_tokens",
        "cache_read_input_tokens",
        "cost_pico_usd",
        "uncached_cost_pico_usd",
        "latency_ms_sum",
        "queue_wait_ms_sum",
        "price_missing",
    )

    class Meta:
        abstract = True

    @property
    def cost_usd(self) -> Decimal:
        return pico_to_usd(self.cost_pico_usd)

    @property
    def uncached_cost_usd(self) -> Decimal:
        return pico_to_usd(self.uncached_cost_pico_usd)


class UsageDaily(UsageCounters):
    """Per UTC day, user, organization and model: the billing grain of the dashboards."""

    day = models.DateField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,  # covered by (user, day)
    )
    organization = models.ForeignKey(
        "queueing.Organization",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,
    )
    model = models.CharField(max_length=100)

    class Meta:
        verbose_name_plural = "usage daily"
        constraints = [
            models.UniqueConstraint(
                F("day"),
                Coalesce(F("user"), Value(0)),
                Coalesce(F("organization"), Value(0)),
                F("model"),
                name="usagedaily_one_row_per_key",
            )
        ]
        indexes = [
            models.Index(fields=["user", "day"], name="usagedaily_user_day"),
            models.Index(fields=["day"], name="usagedaily_day"),
        ]

    def __str__(self) -> str:
        return f"{self.day} user={self.user_id} org={self.organization_id} {self.model}"


class UserUsageDaily(UsageCounters):
    """Per UTC day and user (all models together): what "my usage" charts and the staff users
    list read. ``UsageDaily`` has a row per model as well, several times as many rows; listing
    every user over 90 days groups this smaller table instead."""

    day = models.DateField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,  # covered by (user, day)
    )

    class Meta:
        verbose_name_plural = "user usage daily"
        constraints = [
            models.UniqueConstraint(
                F("day"), Coalesce(F("user"), Value(0)), name="userdaily_one_row_per_key"
            )
        ]
        indexes = [models.Index(fields=["user", "day"], name="userdaily_user_day")]

    def __str__(self) -> str:
        return f"{self.day} user={self.user_id}"


class SessionUsage(UsageCounters):
    """Totals of one session of one user (session ids are the caller's, so only unique per
    user). ``first_at`` / ``last_at`` bound its calls."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,  # covered by (user, last_at)
    )
    organization = models.ForeignKey(
        "queueing.Organization",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    session_id = models.CharField(max_length=128)
    first_at = models.DateTimeField()
    last_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                Coalesce(F("user"), Value(0)),
                F("session_id"),
                name="sessionusage_one_row_per_session",
            )
        ]
        indexes = [
            models.Index(fields=["user", "last_at"], name="sessionusage_user_last"),
            models.Index(fields=["session_id"], name="sessionusage_session"),
            models.Index(fields=["last_at"], name="sessionusage_last"),
        ]

    def __str__(self) -> str:
        return f"session {self.session_id} of user {self.user_id}"


class OrganizationUsageDaily(UsageCounters):
    """Per UTC day, organization and model: the organizations page and /metrics read this
    small table instead of grouping every user's rows."""

    day = models.DateField()
    organization = models.ForeignKey(
        "queueing.Organization",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        db_index=False,  # covered by (organization, day)
    )
    model = models.CharField(max_length=100)

    class Meta:
        verbose_name_plural = "organization usage daily"
        constraints = [
            models.UniqueConstraint(
                F("day"),
                Coalesce(F("organization"), Value(0)),
                F("model"),
                name="orgdaily_one_row_per_key",
            )
        ]
        indexes = [
            models.Index(fields=["organization", "day"], name="orgdaily_org_day"),
            models.Index(fields=["day"], name="orgdaily_day"),
        ]

    def __str__(self) -> str:
        return f"{self.day} org={self.organization_id} {self.model}"
