"""Accounting: prices, one audit row per billed response (or final failure), and rollups.

Money columns are whole picodollars (1e-12 USD) in integer columns; see ``usage.pricing`` for
why (SQLite adds DECIMAL columns in floating point). Each ``*_pico_usd`` column has a
``*_usd`` property that returns the exact ``Decimal``.

Prices are rows (``ModelPrice`` with optional ``PriceBand`` children), one per model, speed and
effective date range, every rate explicit. Each ``AuditLog`` row keeps the per-token rates it
was billed at, so its cost can be recomputed from the row alone.

The rollups (``UsageDaily``, ``UserUsageDaily``, ``SessionUsage``, ``OrganizationUsageDaily``)
are written in the same transaction as each ``AuditLog`` row by ``usage.services.record_call``,
so dashboards read a few small rows instead of aggregating ``audit_log``; ``seed_usage``
rebuilds them with GROUP BY after a bulk load. Their counters are declared once, in
``UsageCounters``, each with how one audit row adds to it and how SQL sums it from audit_log.
Their unique constraints COALESCE the nullable keys to 0 so a system call (no user / no
organization) still has exactly one rollup row per key.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from operator import attrgetter
from typing import Any, ClassVar

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Case, Count, F, Q, Sum, Value, When
from django.db.models.functions import Coalesce

from usage import pricing
from usage.pricing import PRICE_DECIMAL_PLACES, pico_to_usd


class Speed(models.IntegerChoices):
    """``usage.speed`` / the request's ``speed``: fast mode has its own price rows."""

    UNKNOWN = 0, "unknown"  # the API reported a speed we have no price rule for
    STANDARD = 1, "standard"
    FAST = 2, "fast"


PRICE_SPEEDS = [(Speed.STANDARD.value, "standard"), (Speed.FAST.value, "fast")]

_RATE_KWARGS: dict[str, Any] = {
    "max_digits": 12,
    "decimal_places": PRICE_DECIMAL_PLACES,
    "validators": [MinValueValidator(Decimal(0))],
}
RATE_FIELDS = (
    "input_usd_per_mtok",
    "cache_write_5m_usd_per_mtok",
    "cache_write_1h_usd_per_mtok",
    "cache_read_usd_per_mtok",
    "output_usd_per_mtok",
)
"""The five token rates of a price row and of a band, in ``pricing.Rates`` order."""


def _rates_non_negative(name: str, *extra: str) -> models.CheckConstraint:
    return models.CheckConstraint(
        condition=Q(**{f"{field}__gte": 0 for field in (*RATE_FIELDS, *extra)}), name=name
    )


class PriceRates(models.Model):
    """Five rates in USD per million tokens (at most ``PRICE_DECIMAL_PLACES`` decimals)."""

    input_usd_per_mtok = models.DecimalField("input", **_RATE_KWARGS)
    cache_write_5m_usd_per_mtok = models.DecimalField("5-minute cache write", **_RATE_KWARGS)
    cache_write_1h_usd_per_mtok = models.DecimalField("1-hour cache write", **_RATE_KWARGS)
    cache_read_usd_per_mtok = models.DecimalField("cache read", **_RATE_KWARGS)
    output_usd_per_mtok = models.DecimalField("output", **_RATE_KWARGS)

    class Meta:
        abstract = True

    def rates(self) -> pricing.Rates:
        return pricing.Rates(*(Decimal(getattr(self, name)) for name in RATE_FIELDS))


class ModelPrice(PriceRates):
    """A model's price at one speed from ``effective_from`` until ``effective_until``
    (exclusive) — or, when that is empty, until the next row for the same model and speed.

    The price for a call is the row of its model and speed with the latest ``effective_from``
    on or before the call's UTC date, unless that row's ``effective_until`` has passed (then
    there is none). Date ranges of one model and speed never overlap (checked by
    ``usage.services.check_price_rows`` wherever rows are written). Follow a price change by
    adding a row with the new date, not by editing history.
    """

    model = models.CharField(max_length=100)
    speed = models.PositiveSmallIntegerField(choices=PRICE_SPEEDS, default=Speed.STANDARD)
    effective_from = models.DateField()
    effective_until = models.DateField(
        null=True,
        blank=True,
        help_text="Exclusive. Empty: until the next row for the same model and speed.",
    )
    web_search_usd_per_1k = models.DecimalField(
        "web search USD per 1,000 searches", default=Decimal(10), **_RATE_KWARGS
    )
    note = models.CharField(max_length=500, blank=True, help_text="Where the price comes from.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model", "speed", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "speed", "effective_from"],
                name="modelprice_one_per_model_speed_and_date",
            ),
            _rates_non_negative("modelprice_non_negative", "web_search_usd_per_1k"),
            models.CheckConstraint(
                condition=Q(effective_until__isnull=True)
                | Q(effective_until__gt=F("effective_from")),
                name="modelprice_until_after_from",
            ),
            models.CheckConstraint(
                condition=Q(speed__in=[s for s, _ in PRICE_SPEEDS]), name="modelprice_speed"
            ),
        ]

    def __str__(self) -> str:
        speed = "" if self.speed == Speed.STANDARD else f" ({self.get_speed_display()})"
        until = f" until {self.effective_until}" if self.effective_until else ""
        return (
            f"{self.model}{speed} from {self.effective_from}{until}: "
            f"${self.input_usd_per_mtok} in / ${self.output_usd_per_mtok} out per Mtok"
        )

    def to_price(self, bands: list[PriceBand] | None = None) -> pricing.Price:
        """The pure-maths price (``bands``: this row's bands, when the caller prefetched them)."""
        rows = list(self.bands.all()) if bands is None else bands
        return pricing.Price(
            rates=self.rates(),
            bands=tuple(
                pricing.Band(above_prompt_tokens=b.above_prompt_tokens, rates=b.rates())
                for b in rows
            ),
            web_search_usd_per_1k=Decimal(self.web_search_usd_per_1k),
        )


class PriceBand(PriceRates):
    """Rates for a request whose prompt (input + cache writes + cache reads) is longer than
    ``above_prompt_tokens``: then *every* token of that request, output included, is billed at
    these rates instead of the row's base rates."""

    price = models.ForeignKey(ModelPrice, on_delete=models.CASCADE, related_name="bands")
    above_prompt_tokens = models.PositiveBigIntegerField(
        validators=[MinValueValidator(1)],
        help_text="Prompts longer than this many tokens are billed at this band's rates.",
    )

    class Meta:
        ordering = ["price", "above_prompt_tokens"]
        constraints = [
            models.UniqueConstraint(
                fields=["price", "above_prompt_tokens"], name="priceband_one_per_threshold"
            ),
            models.CheckConstraint(
                condition=Q(above_prompt_tokens__gt=0), name="priceband_threshold_positive"
            ),
            _rates_non_negative("priceband_non_negative"),
        ]

    def __str__(self) -> str:
        return f"prompts over {self.above_prompt_tokens:,} tokens"


class UnpricedModel(models.Model):
    """A model (at a speed) that calls were recorded for while it had no price: staff were
    alerted when it first appeared, and see it on the usage pages until it is priced (then
    re-pricing the calls deletes this row)."""

    model = models.CharField(max_length=100)
    speed = models.PositiveSmallIntegerField(choices=Speed.choices, default=Speed.STANDARD)
    first_seen_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    calls = models.BigIntegerField(default=0, help_text="Calls recorded without a price.")

    class Meta:
        ordering = ["-last_seen_at"]
        constraints = [
            models.UniqueConstraint(fields=["model", "speed"], name="unpricedmodel_one_per_key")
        ]

    def __str__(self) -> str:
        speed = "" if self.speed == Speed.STANDARD else f" ({self.get_speed_display()})"
        return f"{self.model}{speed}: {self.calls} unpriced call(s) since {self.first_seen_at}"


class Outcome(models.IntegerChoices):
    SUCCESS = 1, "Success"
    FAILED = 2, "Failed"
    RESPONSE_CACHE_HIT = 3, "Response cache hit"


class ServiceTier(models.IntegerChoices):
    UNKNOWN = 0, "unknown"  # the API reported a tier we have no price rule for
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
        "organizations.Organization",
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
    thinking_tokens = models.BigIntegerField(
        default=0, help_text="Part of output_tokens (billed as output); informational."
    )
    web_search_requests = models.BigIntegerField(default=0)
    service_tier = models.PositiveSmallIntegerField(
        choices=ServiceTier.choices, default=ServiceTier.STANDARD
    )
    speed = models.PositiveSmallIntegerField(choices=Speed.choices, default=Speed.STANDARD)
    inference_geo = models.CharField(
        max_length=32, blank=True, help_text='As the API reported it: "us" = US-only (x1.1).'
    )

    # What the row was billed at: per-token rates in whole picodollars (per search for web
    # search), batch and US-only multipliers applied, in the band given by price_band (the
    # band's prompt-token threshold; 0 = the base rates). All 0 when price_missing.
    input_rate_pico_usd = models.BigIntegerField(default=0)
    cache_write_5m_rate_pico_usd = models.BigIntegerField(default=0)
    cache_write_1h_rate_pico_usd = models.BigIntegerField(default=0)
    cache_read_rate_pico_usd = models.BigIntegerField(default=0)
    output_rate_pico_usd = models.BigIntegerField(default=0)
    web_search_rate_pico_usd = models.BigIntegerField(default=0)
    price_band = models.BigIntegerField(
        default=0, help_text="Prompt-token threshold of the price band used; 0 = base rates."
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

    @property
    def rate_card(self) -> pricing.RateCard:
        """The rates this row was billed at, as recorded on it."""
        return pricing.RateCard(
            input=self.input_rate_pico_usd,
            cache_write_5m=self.cache_write_5m_rate_pico_usd,
            cache_write_1h=self.cache_write_1h_rate_pico_usd,
            cache_read=self.cache_read_rate_pico_usd,
            output=self.output_rate_pico_usd,
            web_search=self.web_search_rate_pico_usd,
            band=self.price_band,
        )

    def recomputed_costs_pico_usd(self) -> tuple[int, int]:
        """(cost, uncached cost) from this row's own counts and rates: equal to the stored
        ``cost_pico_usd`` and ``uncached_cost_pico_usd`` for every row."""
        card = self.rate_card
        return (
            card.cost_pico_counts(
                input_tokens=self.input_tokens,
                cache_write_5m_tokens=self.cache_creation_5m_tokens,
                cache_write_1h_tokens=self.cache_creation_1h_tokens,
                cache_read_tokens=self.cache_read_input_tokens,
                output_tokens=self.output_tokens,
                web_search_requests=self.web_search_requests,
            ),
            card.uncached_cost_pico_counts(
                prompt_tokens=self.total_input_tokens,
                output_tokens=self.output_tokens,
                web_search_requests=self.web_search_requests,
            ),
        )


class CounterField(models.BigIntegerField):
    """A rollup counter: how one audit row adds to it (``per_row``) and the SQL aggregate over
    audit_log that gives the same total (``total``), declared together so the counter list
    has one home. Migrations see a plain ``BigIntegerField`` (their copies carry neither)."""

    def __init__(
        self,
        *args: Any,
        per_row: Callable[[AuditLog], int] | None = None,
        total: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("default", 0)
        super().__init__(*args, **kwargs)
        self._per_row = per_row
        self._total = total

    def deconstruct(self) -> Any:
        name, _path, args, kwargs = super().deconstruct()
        return name, "django.db.models.BigIntegerField", args, kwargs

    def per_row(self, row: AuditLog) -> int:
        if self._per_row is None:
            raise TypeError(f"counter {self.name} has no per_row rule (a migration's copy?)")
        return self._per_row(row)

    def total(self) -> Any:
        if self._total is None:
            raise TypeError(f"counter {self.name} has no total rule (a migration's copy?)")
        return self._total()


def _summing(column: str) -> CounterField:
    """The sum of an audit_log column."""
    return CounterField(per_row=attrgetter(column), total=lambda: Sum(column))


def _counting(condition: Q, test: Callable[[AuditLog], bool]) -> CounterField:
    """How many audit rows meet ``condition`` (``test`` is the same condition in Python)."""
    return CounterField(
        per_row=lambda row: int(test(row)),
        total=lambda: Sum(Case(When(condition, then=1), default=0)),
    )


class UsageCounters(models.Model):
    """The additive counters every rollup keeps — the one list of them: ``COUNTER_FIELDS``,
    ``usage.services.rollup_increments`` and the rebuild's aggregates all come from these
    fields. ``retries`` sums ``attempts - 1``."""

    requests = CounterField(per_row=lambda row: 1, total=lambda: Count("id"))
    errors = _counting(Q(outcome=Outcome.FAILED), lambda row: row.outcome == Outcome.FAILED)
    response_cache_hits = _counting(
        Q(outcome=Outcome.RESPONSE_CACHE_HIT),
        lambda row: row.outcome == Outcome.RESPONSE_CACHE_HIT,
    )
    retries = CounterField(
        per_row=lambda row: max(row.attempts - 1, 0),
        total=lambda: Sum(Case(When(attempts__gt=0, then=F("attempts") - 1), default=0)),
    )
    input_tokens = _summing("input_tokens")
    output_tokens = _summing("output_tokens")
    cache_creation_5m_tokens = _summing("cache_creation_5m_tokens")
    cache_creation_1h_tokens = _summing("cache_creation_1h_tokens")
    cache_read_input_tokens = _summing("cache_read_input_tokens")
    thinking_tokens = _summing("thinking_tokens")
    web_search_requests = _summing("web_search_requests")
    cost_pico_usd = _summing("cost_pico_usd")
    uncached_cost_pico_usd = _summing("uncached_cost_pico_usd")
    latency_ms_sum = _summing("latency_ms")
    queue_wait_ms_sum = _summing("queue_wait_ms")
    price_missing = _counting(Q(price_missing=True), lambda row: row.price_missing)

    COUNTERS: ClassVar[tuple[CounterField, ...]]
    COUNTER_FIELDS: ClassVar[tuple[str, ...]]

    class Meta:
        abstract = True

    @property
    def cost_usd(self) -> Decimal:
        return pico_to_usd(self.cost_pico_usd)

    @property
    def uncached_cost_usd(self) -> Decimal:
        return pico_to_usd(self.uncached_cost_pico_usd)


UsageCounters.COUNTERS = tuple(
    f for f in UsageCounters._meta.local_fields if isinstance(f, CounterField)
)
UsageCounters.COUNTER_FIELDS = tuple(f.name for f in UsageCounters.COUNTERS)


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
        "organizations.Organization",
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
        "organizations.Organization",
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
        "organizations.Organization",
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


class ReconciliationRun(models.Model):
    """One run of the reconciler (``usage.reconcile``) over the UTC days ``since``..``until``.

    ``result`` holds the command's summary line (``summary``) and every day's figures
    (``days``). Kept for history: the current figures of a day are its ``ReconciliationDay``.
    """

    since = models.DateField()
    until = models.DateField()
    started_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    match = models.BooleanField(
        default=False, help_text="Everything agrees except traffic that bypassed the gateway."
    )
    final = models.BooleanField(default=False, help_text="Every day of the window has settled.")
    result = models.JSONField(default=dict, blank=True)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"reconciliation {self.since}..{self.until} at {self.started_at:%Y-%m-%d %H:%M}"


class ReconciliationDay(models.Model):
    """The current reconciliation of one UTC day: replaced by every run that covers it.

    ``detail`` is the day's figures (tokens per kind, exact picodollar amounts as strings,
    likely causes); ``unattributed_cost_pico_usd`` is Anthropic's price of the traffic on the
    gateway's key that did not go through it (for /metrics).
    """

    day = models.DateField(unique=True)
    run = models.ForeignKey(
        ReconciliationRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    final = models.BooleanField(default=False)
    match = models.BooleanField(default=False)
    unattributed_cost_pico_usd = models.BigIntegerField(default=0)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-day"]

    def __str__(self) -> str:
        return f"{self.day} {'match' if self.match else 'differs'}"


class AuditLogPrune(models.Model):
    """One run of the audit_log retention (``usage.retention``, ``manage.py prune_audit_log``):
    which rows it deleted, where their copy is, and what they added up to.

    Written in the same transaction as each batch it deletes, so it always describes exactly
    what is gone, even after a crash mid-run (``finished_at`` then stays empty). Pruning leaves
    the rollups as they are — the dashboards keep showing the pruned days — so ``totals`` (the
    deleted rows' counters, ``UsageCounters`` names) and ``session_totals`` (those of the rows
    with a session id) are what ``usage.services.rollups_check`` adds to audit_log's own sums
    to balance the rollups.
    """

    started_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cutoff = models.DateTimeField(help_text="Rows that occurred before this were eligible.")
    archive_path = models.CharField(
        max_length=1024, blank=True, help_text="Gzipped CSV of every deleted row; empty: none kept."
    )
    archive_sha256 = models.CharField(max_length=64, blank=True)
    rows = models.BigIntegerField(default=0)
    first_occurred_at = models.DateTimeField(null=True, blank=True)
    last_occurred_at = models.DateTimeField(null=True, blank=True)
    totals = models.JSONField(default=dict, blank=True)
    session_totals = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"pruned {self.rows} audit rows before {self.cutoff:%Y-%m-%d}"
