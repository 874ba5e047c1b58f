"""Recording calls: one ``AuditLog`` row plus its rollups, atomically and exactly once.

``record_call`` is the only writer of ``audit_log`` in normal operation (``seed_usage`` bulk
loads synthetic history). It prices the call from an in-process price book, inserts the audit
row and adds the same numbers to ``UsageDaily``, ``SessionUsage`` and
``UserUsageDaily``, ``SessionUsage`` and ``OrganizationUsageDaily`` inside one transaction:
either all of them change or none do.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, connection, models, transaction
from django.db.models import Case, Count, F, Max, Min, Q, Sum, When
from django.db.models.functions import TruncDate
from django.utils import timezone

from llm_calls.types import Usage
from usage import pricing
from usage.models import (
    AuditLog,
    ModelPrice,
    OrganizationUsageDaily,
    Outcome,
    ServiceTier,
    SessionUsage,
    UsageCounters,
    UsageDaily,
    UserUsageDaily,
)

logger = logging.getLogger(__name__)

# Other processes see an admin's price edit within this long; the editing process at once.
PRICE_CACHE_TTL_S = 60.0

_TIERS = {
    "standard": ServiceTier.STANDARD,
    "batch": ServiceTier.BATCH,
    "priority": ServiceTier.PRIORITY,
}


# --- prices ---------------------------------------------------------------------------------


@dataclass
class _PriceBook:
    loaded_at: float
    # model -> [(effective_from, price)] newest first
    by_model: dict[str, list[tuple[dt.date, pricing.Price]]] = field(default_factory=dict)


_price_book: _PriceBook | None = None
_price_lock = threading.Lock()


def price_cache_clear(**_signal_kwargs: Any) -> None:
    """Forget the price book (connected to ModelPrice save/delete, also after commit)."""
    global _price_book
    _price_book = None


def price_cache_clear_on_change(**_signal_kwargs: Any) -> None:
    """Signal receiver: clear now, and again once the edit commits, so a lookup that ran in
    between (and saw the old row) cannot keep the old price until the TTL."""
    price_cache_clear()
    transaction.on_commit(price_cache_clear)


def _load_price_book() -> _PriceBook:
    book = _PriceBook(loaded_at=time.monotonic())
    rows = ModelPrice.objects.order_by("model", "-effective_from").values_list(
        "model", "effective_from", "input_usd_per_mtok", "output_usd_per_mtok"
    )
    for model, effective_from, price_in, price_out in rows:
        book.by_model.setdefault(model, []).append(
            (effective_from, pricing.Price(Decimal(price_in), Decimal(price_out)))
        )
    return book


def price_for(*, model: str, on: dt.date) -> pricing.Price | None:
    """The price in force for ``model`` on ``on`` (UTC date), or ``None`` if there is none.

    Served from an in-process copy of the (small) price table, reloaded after
    ``PRICE_CACHE_TTL_S`` or when a price is edited in this process.
    """
    global _price_book
    book = _price_book
    if book is None or time.monotonic() - book.loaded_at > PRICE_CACHE_TTL_S:
        with _price_lock:
            book = _price_book
            if book is None or time.monotonic() - book.loaded_at > PRICE_CACHE_TTL_S:
                book = _load_price_book()
                _price_book = book
    for effective_from, price in book.by_model.get(model, ()):
        if effective_from <= on:
            return price
    return None


def prices_seed_defaults(*, effective_from: dt.date = dt.date(2026, 1, 1)) -> int:
    """Make sure the list prices exist (tests, fresh databases after a flush). Returns how many
    rows were created; existing rows are left as they are."""
    created = 0
    for model, (price_in, price_out) in pricing.LIST_PRICES.items():
        _, was_created = ModelPrice.objects.get_or_create(
            model=model,
            effective_from=effective_from,
            defaults={"input_usd_per_mtok": price_in, "output_usd_per_mtok": price_out},
        )
        created += int(was_created)
    if created:
        price_cache_clear()
    return created


# --- recording ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PricedCall:
    cost_pico_usd: int
    uncached_cost_pico_usd: int
    price_missing: bool
    service_tier: ServiceTier


def call_price(*, model: str, usage: Usage | None, on: dt.date) -> PricedCall:
    """Cost of one call at the price in force on ``on``. A model with no price (or a tier we
    cannot price) costs 0 with ``price_missing`` set, so the record is kept and can be
    re-priced once the price is known."""
    if usage is None:
        return PricedCall(0, 0, False, ServiceTier.STANDARD)
    pricing.validate_usage(usage=usage)
    tier = _TIERS.get(usage.service_tier)
    if tier is None:
        logger.warning(
            "usage: unknown service tier %r for %s; recorded with cost 0 and price_missing",
            usage.service_tier,
            model,
        )
        return PricedCall(0, 0, True, ServiceTier.STANDARD)
    no_tokens = usage.total_input_tokens == 0 and usage.output_tokens == 0
    price = price_for(model=model, on=on)
    if price is None:
        if no_tokens:
            return PricedCall(0, 0, False, tier)
        logger.warning(
            "usage: no price for model %r on %s; recorded with cost 0 and price_missing",
            model,
            on,
        )
        return PricedCall(0, 0, True, tier)
    return PricedCall(
        cost_pico_usd=pricing.usd_to_pico(pricing.call_cost_usd(usage=usage, price=price)),
        uncached_cost_pico_usd=pricing.usd_to_pico(
            pricing.uncached_cost_usd(usage=usage, price=price)
        ),
        price_missing=False,
        service_tier=tier,
    )


def _coerce_outcome(outcome: Outcome | int | str) -> Outcome:
    if isinstance(outcome, str) and not isinstance(outcome, Outcome):
        try:
            return Outcome[outcome.upper()]
        except KeyError:
            raise ValueError(
                f"unknown outcome {outcome!r}; expected one of "
                f"{', '.join(o.name.lower() for o in Outcome)}."
            ) from None
    try:
        return Outcome(outcome)
    except ValueError:
        raise ValueError(
            f"unknown outcome {outcome!r}; expected one of {', '.join(map(str, Outcome.values))}."
        ) from None


def _check_text(name: str, value: str | None, max_length: int, *, required: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}.")
    if required and not value:
        raise ValueError(f"{name} is required.")
    if len(value) > max_length:
        raise ValueError(f"{name} is {len(value)} characters long; the limit is {max_length}.")
    return value


def _check_count(name: str, value: float | int | None) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}.")
    return round(value)


def _pk(value: models.Model | int | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    return value.pk


def record_call(
    *,
    user: models.Model | int | None,
    organization: models.Model | int | None,
    session_id: str,
    model: str,
    priority: str,
    outcome: Outcome | int | str,
    attempts: int,
    final_status: int | None,
    error_type: str | None,
    usage: Usage | None,
    latency_ms: float | int,
    queue_wait_ms: float | int | None,
    request_id: str | None,
    client_request_id: str | None = None,
    llm_request: models.Model | int | None = None,
    occurred_at: dt.datetime | None = None,
) -> AuditLog:
    """Record one billed response (or one finally failed request, ``usage=None``).

    Atomic with its rollups: the audit row and the four rollup increments commit together or
    not at all (a savepoint when the caller already holds a transaction, so a caller may
    record inside its own transaction, e.g. with the LLMRequest's terminal state).

    Idempotent on ``client_request_id``: if a row with that id exists, it is returned and
    nothing changes — also when two workers race, because the unique index decides. Give each
    billed response its own id (e.g. ``f"{llm_request_id}:{attempt}"``) and a retried job or
    redelivered message can never bill twice.

    Bad input (negative tokens, a 5m/1h split that does not add up, an unknown outcome, an
    over-long field, a naive datetime) raises ``ValueError`` before anything is written.
    ``user``/``organization``/``llm_request`` take an instance or a primary key.
    """
    outcome = _coerce_outcome(outcome)
    session_id = _check_text("session_id", session_id, 128)
    model = _check_text("model", model, 100, required=True)
    priority = _check_text("priority", priority, 32)
    error_type = _check_text("error_type", error_type, 64)
    request_id = _check_text("request_id", request_id, 128)
    client_request_id = _check_text("client_request_id", client_request_id, 128) or None
    attempts_n = _check_count("attempts", attempts)
    latency = _check_count("latency_ms", latency_ms)
    queue_wait = _check_count("queue_wait_ms", queue_wait_ms)
    if final_status is not None and (
        isinstance(final_status, bool) or not isinstance(final_status, int) or final_status < 0
    ):
        raise ValueError(f"final_status must be an HTTP status or None, got {final_status!r}.")
    if occurred_at is None:
        occurred_at = timezone.now()
    elif timezone.is_naive(occurred_at):
        raise ValueError("occurred_at must be timezone-aware (UTC).")
    day = occurred_at.astimezone(dt.UTC).date()

    priced = call_price(model=model, usage=usage, on=day)
    tokens = usage or Usage()
    writes = pricing.cache_writes(usage=tokens)
    row = AuditLog(
        occurred_at=occurred_at,
        user_id=_pk(user),
        organization_id=_pk(organization),
        session_id=session_id,
        llm_request_id=_pk(llm_request),
        model=model,
        priority=priority,
        outcome=outcome,
        attempts=attempts_n,
        final_status=final_status,
        error_type=error_type,
        input_tokens=tokens.input_tokens,
        output_tokens=tokens.output_tokens,
        cache_creation_5m_tokens=writes.five_minute,
        cache_creation_1h_tokens=writes.one_hour,
        cache_creation_input_tokens=writes.five_minute + writes.one_hour,
        cache_read_input_tokens=tokens.cache_read_input_tokens,
        service_tier=priced.service_tier,
        cost_pico_usd=priced.cost_pico_usd,
        uncached_cost_pico_usd=priced.uncached_cost_pico_usd,
        price_missing=priced.price_missing,
        latency_ms=latency,
        queue_wait_ms=queue_wait,
        request_id=request_id,
        client_request_id=client_request_id,
    )
    try:
        with transaction.atomic():
            row.save(force_insert=True)
            _add_to_rollups(row=row, day=day)
    except IntegrityError:
        if client_request_id is not None:
            existing = AuditLog.objects.filter(client_request_id=client_request_id).first()
            if existing is not None:
                return existing
        raise
    return row


def record_response_cache_hit(
    *,
    user: models.Model | int | None,
    organization: models.Model | int | None,
    session_id: str,
    model: str,
    priority: str,
    latency_ms: float | int,
    queue_wait_ms: float | int | None = 0,
    client_request_id: str | None = None,
    llm_request: models.Model | int | None = None,
    occurred_at: dt.datetime | None = None,
) -> AuditLog:
    """A request answered from our response cache: no API call, zero tokens, zero cost."""
    return record_call(
        user=user,
        organization=organization,
        session_id=session_id,
        model=model,
        priority=priority,
        outcome=Outcome.RESPONSE_CACHE_HIT,
        attempts=0,
        final_status=None,
        error_type="",
        usage=None,
        latency_ms=latency_ms,
        queue_wait_ms=queue_wait_ms,
        request_id="",
        client_request_id=client_request_id,
        llm_request=llm_request,
        occurred_at=occurred_at,
    )


# --- rollups --------------------------------------------------------------------------------


def rollup_increments(*, row: AuditLog) -> dict[str, int]:
    """What one audit row adds to every rollup it belongs to (also used by seed_usage's
    consistency check)."""
    return {
        "requests": 1,
        "errors": int(row.outcome == Outcome.FAILED),
        "response_cache_hits": int(row.outcome == Outcome.RESPONSE_CACHE_HIT),
        "retries": max(row.attempts - 1, 0),
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cache_creation_5m_tokens": row.cache_creation_5m_tokens,
        "cache_creation_1h_tokens": row.cache_creation_1h_tokens,
        "cache_read_input_tokens": row.cache_read_input_tokens,
        "cost_pico_usd": row.cost_pico_usd,
        "uncached_cost_pico_usd": row.uncached_cost_pico_usd,
        "latency_ms_sum": row.latency_ms,
        "queue_wait_ms_sum": row.queue_wait_ms,
        "price_missing": int(row.price_missing),
    }


@functools.cache
def _increment_sql(
    *, vendor: str, table: str, key_columns: tuple[tuple[str, bool], ...], bounds: bool
) -> str:
    """``UPDATE <rollup> SET c = c + %s, … WHERE k = %s AND … [IS NULL]`` for one rollup and
    one pattern of NULL keys (NULL never equals anything, so those keys need ``IS NULL``).

    Hand-written because this runs four times per recorded call: building the same UPDATE
    from F() expressions through the ORM costs about a millisecond each. ``bounds`` also
    widens a session's ``first_at``/``last_at`` to include the call.
    """
    quote = connection.ops.quote_name
    sets = [f"{quote(c)} = {quote(c)} + %s" for c in UsageCounters.COUNTER_FIELDS]
    if bounds:
        low, high = ("MIN", "MAX") if vendor == "sqlite" else ("LEAST", "GREATEST")
        sets += [
            f"{quote('first_at')} = {low}({quote('first_at')}, %s)",
            f"{quote('last_at')} = {high}({quote('last_at')}, %s)",
        ]
    where = [f"{quote(c)} IS NULL" if is_null else f"{quote(c)} = %s" for c, is_null in key_columns]
    return f"UPDATE {quote(table)} SET {', '.join(sets)} WHERE {' AND '.join(where)}"


def _adapt(value: Any) -> Any:
    ops = connection.ops
    if isinstance(value, dt.datetime):
        return ops.adapt_datetimefield_value(value)
    if isinstance(value, dt.date):
        return ops.adapt_datefield_value(value)
    return value


def _rollup_increment(
    *,
    model: type[UsageCounters],
    key: dict[str, Any],
    increments: dict[str, int],
    bounds: dt.datetime | None,
) -> int:
    sql = _increment_sql(
        vendor=connection.vendor,
        table=model._meta.db_table,
        key_columns=tuple((column, value is None) for column, value in key.items()),
        bounds=bounds is not None,
    )
    params: list[Any] = [increments[name] for name in UsageCounters.COUNTER_FIELDS]
    if bounds is not None:
        params += [_adapt(bounds), _adapt(bounds)]
    params += [_adapt(value) for value in key.values() if value is not None]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _rollup_add(
    *,
    model: type[UsageCounters],
    key: dict[str, Any],
    increments: dict[str, int],
    bounds: dt.datetime | None = None,
    on_create: dict[str, Any] | None = None,
) -> None:
    """Add ``increments`` to the rollup row for ``key``, creating it if needed.

    Correct under concurrent writers on PostgreSQL and SQLite: the UPDATE is one atomic
    ``col = col + n`` statement; when no row exists yet, the INSERT runs in a savepoint and the
    unique constraint lets exactly one concurrent creator win — the loser's INSERT fails (on
    PostgreSQL after waiting for the winner to commit) and it retries the UPDATE, which then
    sees the committed row (READ COMMITTED takes a fresh snapshot per statement). SQLite
    serialises writers (BEGIN IMMEDIATE), so the race cannot happen there at all.
    """
    if _rollup_increment(model=model, key=key, increments=increments, bounds=bounds):
        return
    try:
        with transaction.atomic():
            model._default_manager.create(**key, **increments, **(on_create or {}))
    except IntegrityError:
        if not _rollup_increment(model=model, key=key, increments=increments, bounds=bounds):
            raise


def _rollup_keys(
    *, row: AuditLog, day: dt.date
) -> list[tuple[type[UsageCounters], dict[str, Any]]]:
    """The rollup rows one audit row belongs to. Busiest row last: the organization's row is
    shared by all its members, so it should be locked for the shortest time (PostgreSQL holds
    row locks until commit)."""
    keys: list[tuple[type[UsageCounters], dict[str, Any]]] = [
        (
            UsageDaily,
            {
                "day": day,
                "user_id": row.user_id,
                "organization_id": row.organization_id,
                "model": row.model,
            },
        )
    ]
    keys.append((UserUsageDaily, {"day": day, "user_id": row.user_id}))
    if row.session_id:
        keys.append((SessionUsage, {"user_id": row.user_id, "session_id": row.session_id}))
    keys.append(
        (
            OrganizationUsageDaily,
            {"day": day, "organization_id": row.organization_id, "model": row.model},
        )
    )
    return keys


def _add_to_rollups(*, row: AuditLog, day: dt.date) -> None:
    increments = rollup_increments(row=row)
    for model, key in _rollup_keys(row=row, day=day):
        if model is SessionUsage:
            _rollup_add(
                model=model,
                key=key,
                increments=increments,
                bounds=row.occurred_at,
                on_create={
                    "first_at": row.occurred_at,
                    "last_at": row.occurred_at,
                    "organization_id": row.organization_id,
                },
            )
        else:
            _rollup_add(model=model, key=key, increments=increments)


# --- fixing billing later ---------------------------------------------------------------------


@dataclass(frozen=True)
class RepriceResult:
    repriced: int
    still_missing: int


def reprice_missing_calls(*, batch_size: int = 500) -> RepriceResult:
    """Price the calls recorded with ``price_missing`` (no price on file then) now that a price
    exists, and move the rollups by the same amounts. Each row is re-priced in its own
    transaction with its rollup corrections, under a row lock, so running this twice (or
    concurrently) never adds a cost twice. Rows still without a price are left flagged."""
    repriced = 0
    last_id = 0
    while True:
        ids = list(
            AuditLog.objects.filter(price_missing=True, id__gt=last_id)
            .order_by("id")
            .values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            break
        last_id = ids[-1]
        for pk in ids:
            repriced += _reprice_one(pk=pk)
    return RepriceResult(
        repriced=repriced, still_missing=AuditLog.objects.filter(price_missing=True).count()
    )


def _reprice_one(*, pk: int) -> int:
    with transaction.atomic():
        row = AuditLog.objects.select_for_update().filter(pk=pk, price_missing=True).first()
        if row is None:
            return 0
        usage = Usage(
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cache_creation_input_tokens=row.cache_creation_input_tokens,
            cache_read_input_tokens=row.cache_read_input_tokens,
            cache_creation_5m=row.cache_creation_5m_tokens,
            cache_creation_1h=row.cache_creation_1h_tokens,
            service_tier=ServiceTier(row.service_tier).label,
        )
        day = row.occurred_at.astimezone(dt.UTC).date()
        priced = call_price(model=row.model, usage=usage, on=day)
        if priced.price_missing:
            return 0
        delta = {
            "cost_pico_usd": priced.cost_pico_usd - row.cost_pico_usd,
            "uncached_cost_pico_usd": priced.uncached_cost_pico_usd - row.uncached_cost_pico_usd,
            "price_missing": -1,
        }
        row.cost_pico_usd = priced.cost_pico_usd
        row.uncached_cost_pico_usd = priced.uncached_cost_pico_usd
        row.price_missing = False
        row.save(update_fields=["cost_pico_usd", "uncached_cost_pico_usd", "price_missing"])
        _adjust_rollups(row=row, day=day, delta=delta)
        return 1


def _adjust_rollups(*, row: AuditLog, day: dt.date, delta: dict[str, int]) -> None:
    updates = {name: F(name) + amount for name, amount in delta.items() if amount}
    for model, key in _rollup_keys(row=row, day=day):
        model._default_manager.filter(**key).update(**updates)


# --- rebuilding rollups ------------------------------------------------------------------------


def _audit_sums(prefix: str) -> dict[str, Any]:
    """SQL aggregates over audit_log that produce each rollup counter (named ``prefix`` + the
    counter, since an annotation may not reuse a model field's name)."""
    one_if = lambda condition: Sum(Case(When(condition, then=1), default=0))  # noqa: E731
    return {
        prefix + "requests": Count("id"),
        prefix + "errors": one_if(Q(outcome=Outcome.FAILED)),
        prefix + "response_cache_hits": one_if(Q(outcome=Outcome.RESPONSE_CACHE_HIT)),
        prefix + "retries": Sum(Case(When(attempts__gt=0, then=F("attempts") - 1), default=0)),
        prefix + "input_tokens": Sum("input_tokens"),
        prefix + "output_tokens": Sum("output_tokens"),
        prefix + "cache_creation_5m_tokens": Sum("cache_creation_5m_tokens"),
        prefix + "cache_creation_1h_tokens": Sum("cache_creation_1h_tokens"),
        prefix + "cache_read_input_tokens": Sum("cache_read_input_tokens"),
        prefix + "cost_pico_usd": Sum("cost_pico_usd"),
        prefix + "uncached_cost_pico_usd": Sum("uncached_cost_pico_usd"),
        prefix + "latency_ms_sum": Sum("latency_ms"),
        prefix + "queue_wait_ms_sum": Sum("queue_wait_ms"),
        prefix + "price_missing": one_if(Q(price_missing=True)),
    }


def _counters(row: Mapping[str, Any], prefix: str) -> dict[str, int]:
    return {name: int(row[prefix + name] or 0) for name in UsageCounters.COUNTER_FIELDS}


@dataclass(frozen=True)
class RebuildResult:
    daily_rows: int
    user_daily_rows: int
    session_rows: int
    organization_rows: int


def rollups_rebuild(*, batch_size: int = 5000) -> RebuildResult:
    """Recompute every rollup from audit_log with GROUP BY, in one transaction.

    For after a bulk load (seed_usage) or to repair; the per-user and organization rollups are
    grouped from the fresh daily rollup, which is far smaller than audit_log. Do not run it while workers
    are recording calls: a call recorded meanwhile could be counted by both paths.
    """
    p = "agg_"
    sums = _audit_sums(p)
    with transaction.atomic():
        UsageDaily.objects.all().delete()
        UserUsageDaily.objects.all().delete()
        SessionUsage.objects.all().delete()
        OrganizationUsageDaily.objects.all().delete()

        daily = (
            AuditLog.objects.annotate(day=TruncDate("occurred_at"))
            .values("day", "user_id", "organization_id", "model")
            .annotate(**sums)
            .order_by()
        )
        n_daily = _bulk_insert(
            UsageDaily,
            (
                UsageDaily(
                    day=r["day"],
                    user_id=r["user_id"],
                    organization_id=r["organization_id"],
                    model=r["model"],
                    **_counters(r, p),
                )
                for r in daily.iterator(chunk_size=batch_size)
            ),
            batch_size,
        )
        sessions = (
            AuditLog.objects.exclude(session_id="")
            .values("user_id", "session_id")
            .annotate(first=Min("occurred_at"), last=Max("occurred_at"), org=Max("organization_id"))
            .annotate(**sums)
            .order_by()
        )
        n_sessions = _bulk_insert(
            SessionUsage,
            (
                SessionUsage(
                    user_id=r["user_id"],
                    session_id=r["session_id"],
                    organization_id=r["org"],
                    first_at=r["first"],
                    last_at=r["last"],
                    **_counters(r, p),
                )
                for r in sessions.iterator(chunk_size=batch_size)
            ),
            batch_size,
        )
        per_user = (
            UsageDaily.objects.values("day", "user_id")
            .annotate(**{p + name: Sum(name) for name in UsageCounters.COUNTER_FIELDS})
            .order_by()
        )
        n_users = _bulk_insert(
            UserUsageDaily,
            (
                UserUsageDaily(day=r["day"], user_id=r["user_id"], **_counters(r, p))
                for r in per_user.iterator(chunk_size=batch_size)
            ),
            batch_size,
        )
        orgs = (
            UsageDaily.objects.values("day", "organization_id", "model")
            .annotate(**{p + name: Sum(name) for name in UsageCounters.COUNTER_FIELDS})
            .order_by()
        )
        n_orgs = _bulk_insert(
            OrganizationUsageDaily,
            (
                OrganizationUsageDaily(
                    day=r["day"],
                    organization_id=r["organization_id"],
                    model=r["model"],
                    **_counters(r, p),
                )
                for r in orgs.iterator(chunk_size=batch_size)
            ),
            batch_size,
        )
    return RebuildResult(
        daily_rows=n_daily,
        user_daily_rows=n_users,
        session_rows=n_sessions,
        organization_rows=n_orgs,
    )


def _bulk_insert(model: type[UsageCounters], objs: Iterable[UsageCounters], batch_size: int) -> int:
    count = 0
    batch: list[UsageCounters] = []
    for obj in objs:
        batch.append(obj)
        if len(batch) >= batch_size:
            model._default_manager.bulk_create(batch)
            count += len(batch)
            batch = []
    if batch:
        model._default_manager.bulk_create(batch)
        count += len(batch)
    return count


def rollups_check() -> list[str]:
    """Differences between the all-time totals of audit_log and of each rollup (empty when
    consistent). Sessions only cover calls with a session id."""
    p = "agg_"
    audit_all = _counters(AuditLog.objects.aggregate(**_audit_sums(p)), p)
    audit_sessions = _counters(
        AuditLog.objects.exclude(session_id="").aggregate(**_audit_sums(p)), p
    )
    problems = []
    for model, expected in (
        (UsageDaily, audit_all),
        (UserUsageDaily, audit_all),
        (SessionUsage, audit_sessions),
        (OrganizationUsageDaily, audit_all),
    ):
        got = _counters(
            model._default_manager.aggregate(
                **{p + name: Sum(name) for name in UsageCounters.COUNTER_FIELDS}
            ),
            p,
        )
        for name in UsageCounters.COUNTER_FIELDS:
            if got[name] != expected[name]:
                problems.append(
                    f"{model.__name__}.{name}: rollup {got[name]} != audit_log {expected[name]}"
                )
    return problems
