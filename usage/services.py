"""Recording calls and keeping prices: one ``AuditLog`` row plus its rollups, atomically and
exactly once; price rows checked, loaded, exported; unpriced calls flagged, alerted, re-priced.

``record_call`` is the only writer of ``audit_log`` in normal operation (``seed_usage`` bulk
loads synthetic history). It prices the call from an in-process price book, inserts the audit
row — with the per-token rates it was billed at — and adds the same numbers to
``UsageDaily``, ``UserUsageDaily``, ``SessionUsage`` and ``OrganizationUsageDaily`` inside one
transaction: either all of them change or none do.

A call on a model with no price is never silently free: it is recorded at $0 with
``price_missing``, its model is noted in ``UnpricedModel`` (staff get one warning and one
mail per model, and a notice on the usage pages), and adding the price — admin save or
``prices load`` — re-prices those rows and their rollups once the price has committed.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.core.mail import mail_admins
from django.db import IntegrityError, connection, models, transaction
from django.db.models import F, Max, Min, Sum
from django.db.models.functions import Greatest, TruncDate
from django.utils import timezone

from llm_calls import catalog
from llm_calls.types import CLASSIC_CACHE_RATES, CacheRates, Usage
from usage import price_sheets, pricing
from usage.models import (
    RATE_FIELDS,
    AuditLog,
    AuditLogPrune,
    ModelPrice,
    OrganizationUsageDaily,
    Outcome,
    PriceBand,
    ServiceTier,
    SessionUsage,
    Speed,
    UnpricedModel,
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
_SPEEDS = {"standard": Speed.STANDARD, "fast": Speed.FAST}
_SPEED_NAMES: dict[int, str] = {int(value): name for name, value in _SPEEDS.items()}


# --- the price book -------------------------------------------------------------------------


@dataclass
class _PriceBook:
    loaded_at: float
    # (model, speed) -> [(effective_from, effective_until, price)]
    periods: dict[tuple[str, int], list[tuple[dt.date, dt.date | None, pricing.Price]]] = field(
        default_factory=dict
    )


_price_book: _PriceBook | None = None
_price_lock = threading.Lock()


def price_cache_clear(**_signal_kwargs: Any) -> None:
    """Forget the price book (connected to ModelPrice/PriceBand save/delete, also after commit)."""
    global _price_book
    _price_book = None


def price_cache_clear_on_change(**_signal_kwargs: Any) -> None:
    """Signal receiver: clear now, and again once the edit commits, so a lookup that ran in
    between (and saw the old row) cannot keep the old price until the TTL."""
    price_cache_clear()
    transaction.on_commit(price_cache_clear)


def _load_price_book() -> _PriceBook:
    book = _PriceBook(loaded_at=time.monotonic())
    bands: dict[int, list[PriceBand]] = {}
    for band in PriceBand.objects.all():
        bands.setdefault(band.price_id, []).append(band)
    for row in ModelPrice.objects.all():
        book.periods.setdefault((row.model, row.speed), []).append(
            (row.effective_from, row.effective_until, row.to_price(bands.get(row.pk, [])))
        )
    return book


def price_for(*, model: str, on: dt.date, speed: str = "standard") -> pricing.Price | None:
    """The price (with its bands) in force for ``model`` at ``speed`` on ``on`` (a UTC date),
    or ``None`` if there is none — fast mode is priced only by a fast row, never by another.

    A dated snapshot id (``claude-haiku-4-5-20251001``) is priced as its model. Served from an
    in-process copy of the (small) price table, reloaded after ``PRICE_CACHE_TTL_S`` or when a
    price is edited in this process.
    """
    global _price_book
    speed_value = _SPEEDS.get(speed)
    if speed_value is None:
        return None
    book = _price_book
    if book is None or time.monotonic() - book.loaded_at > PRICE_CACHE_TTL_S:
        with _price_lock:
            book = _price_book
            if book is None or time.monotonic() - book.loaded_at > PRICE_CACHE_TTL_S:
                book = _load_price_book()
                _price_book = book
    periods = (
        book.periods.get((model, speed_value))
        or book.periods.get((catalog.canonical_id(model), speed_value))
        or []
    )
    return pricing.in_force(periods, on=on)


def cache_rates(*, model: str, on: dt.date, speed: str = "standard") -> CacheRates:
    """The model's cache prices relative to its input price, for the cache planner's TTL choice
    (the classic 1.25 / 2 / 0.1 when the model has no price on file)."""
    price = price_for(model=model, on=on, speed=speed)
    if price is None or not price.rates.input:
        return CLASSIC_CACHE_RATES
    rates = price.rates
    return CacheRates(
        write_5m=float(rates.cache_write_5m / rates.input),
        write_1h=float(rates.cache_write_1h / rates.input),
        read=float(rates.cache_read / rates.input),
    )


# --- price rows: checking, loading, exporting -------------------------------------------------


def _row_label(row: ModelPrice) -> str:
    until = f" until {row.effective_until}" if row.effective_until else ""
    return (
        f"{row.model} ({_SPEED_NAMES.get(row.speed, row.speed)}) from {row.effective_from}"
        f"{until} (row #{row.pk})"
    )


def check_price_overlaps(
    *,
    candidates: Sequence[tuple[str, str, dt.date, dt.date | None, str]],
    replacing: Iterable[int] = (),
) -> str | None:
    """Why ``candidates`` — ``(model, speed name, effective_from, effective_until, label)`` rows
    about to be written — cannot join the stored rows (other than the ``replacing`` pks, which
    they supersede), or ``None``: one model and speed never has two prices on one day."""
    replaced = set(replacing)
    candidate_keys = {(model, speed, start) for model, speed, start, _end, _label in candidates}
    stored = []
    for row in ModelPrice.objects.filter(model__in={c[0] for c in candidates}):
        speed = _SPEED_NAMES.get(row.speed, str(row.speed))
        if row.pk in replaced or (row.model, speed, row.effective_from) in candidate_keys:
            continue  # superseded by a candidate (an upsert by key, or the row being edited)
        stored.append((row.model, speed, row.effective_from, row.effective_until, _row_label(row)))
    clash = pricing.first_overlap([*candidates, *stored])
    if clash is None:
        return None
    return f"{clash[0]} overlaps {clash[1]}: one model and speed has one price per day."


def check_model_price(*, row: ModelPrice) -> None:
    """What the admin checks before saving a price row beyond its fields' own validators:
    the end after the start, and no overlap with another row of the same model and speed
    (the error names the other row). Raises ``ValidationError``."""
    if (
        row.effective_until is not None
        and row.effective_from is not None
        and row.effective_until <= row.effective_from
    ):
        raise ValidationError(
            {"effective_until": f"Must be after effective from ({row.effective_from})."}
        )
    if not row.model or row.effective_from is None:
        return
    label = "this price"
    speed = _SPEED_NAMES.get(row.speed, str(row.speed))
    problem = check_price_overlaps(
        candidates=[(row.model, speed, row.effective_from, row.effective_until, label)],
        replacing=[row.pk] if row.pk else [],
    )
    if problem is not None:
        raise ValidationError(problem)


def _sheet_row(row: ModelPrice, bands: Sequence[PriceBand]) -> price_sheets.SheetRow:
    price = row.to_price(list(bands))
    return price_sheets.SheetRow(
        model=row.model,
        speed=_SPEED_NAMES.get(row.speed, "standard"),
        effective_from=row.effective_from,
        effective_until=row.effective_until,
        rates=price.rates,
        web_search_usd_per_1k=price.web_search_usd_per_1k,
        note=row.note,
        bands=price.bands,
    )


def price_rows() -> list[price_sheets.SheetRow]:
    """Every stored price row with its bands, as sheet rows."""
    bands: dict[int, list[PriceBand]] = {}
    for band in PriceBand.objects.all():
        bands.setdefault(band.price_id, []).append(band)
    return price_sheets.sort_rows(
        _sheet_row(row, bands.get(row.pk, [])) for row in ModelPrice.objects.all()
    )


def prices_export() -> str:
    """Every price row with its bands, as a sheet (``prices load`` reads it back)."""
    return price_sheets.dumps(
        price_rows(),
        sheet=f"export {timezone.now():%Y-%m-%d %H:%M} UTC",
        description="Every ModelPrice row with its bands, exported by `manage.py prices export`.",
    )


def _model_price_values(row: price_sheets.SheetRow) -> dict[str, Any]:
    return {
        **dict(zip(RATE_FIELDS, row.rates.as_tuple(), strict=True)),
        "effective_until": row.effective_until,
        "web_search_usd_per_1k": row.web_search_usd_per_1k,
        "note": row.note,
    }


def _write_bands(price: ModelPrice, bands: Sequence[pricing.Band]) -> None:
    price.bands.all().delete()
    PriceBand.objects.bulk_create(
        PriceBand(
            price=price,
            above_prompt_tokens=band.above_prompt_tokens,
            **dict(zip(RATE_FIELDS, band.rates.as_tuple(), strict=True)),
        )
        for band in bands
    )


@dataclass(frozen=True)
class LoadResult:
    rows: int
    created: int
    updated: int
    bands: int
    repriced: RepriceResult | None  # None: re-pricing runs when the caller's transaction commits

    def summary(self, *, source: str) -> str:
        line = (
            f"loaded {self.rows} price row(s) from {source}: {self.created} created, "
            f"{self.updated} updated, {self.bands} band(s)"
        )
        if self.repriced is not None:
            line += (
                f"; re-priced {self.repriced.repriced} unpriced call(s), "
                f"{self.repriced.still_missing} still unpriced"
            )
        return line


def prices_load(*, rows: Sequence[price_sheets.SheetRow]) -> LoadResult:
    """Upsert price rows by (model, speed, effective_from), bands replaced, atomically —
    after checking them all against each other and against the stored rows, so a bad file
    writes nothing — then re-price the calls recorded without a price."""
    candidates = [(r.model, r.speed, r.effective_from, r.effective_until, r.label) for r in rows]
    created = updated = n_bands = 0
    with transaction.atomic():
        problem = check_price_overlaps(candidates=candidates)
        if problem is not None:
            raise price_sheets.SheetError(problem)
        for row in rows:
            price, was_created = ModelPrice.objects.update_or_create(
                model=row.model,
                speed=_SPEEDS[row.speed],
                effective_from=row.effective_from,
                defaults=_model_price_values(row),
            )
            _write_bands(price, row.bands)
            created += int(was_created)
            updated += int(not was_created)
            n_bands += len(row.bands)
    price_cache_clear()
    return LoadResult(
        rows=len(rows),
        created=created,
        updated=updated,
        bands=n_bands,
        repriced=reprice_after_commit(),
    )


def prices_seed_defaults() -> int:
    """Make sure the shipped sheet's prices exist (tests, fresh databases after a flush).
    Returns how many rows were created; existing rows are left as they are."""
    created = 0
    with transaction.atomic():
        for row in price_sheets.shipped_rows():
            price, was_created = ModelPrice.objects.get_or_create(
                model=row.model,
                speed=_SPEEDS[row.speed],
                effective_from=row.effective_from,
                defaults=_model_price_values(row),
            )
            if was_created:
                _write_bands(price, row.bands)
                created += 1
    if created:
        price_cache_clear()
    return created


# --- pricing one call -------------------------------------------------------------------------

NO_RATES = pricing.RateCard(
    input=0, cache_write_5m=0, cache_write_1h=0, cache_read=0, output=0, web_search=0
)


@dataclass(frozen=True)
class PricedCall:
    cost_pico_usd: int
    uncached_cost_pico_usd: int
    price_missing: bool
    service_tier: ServiceTier
    speed: Speed = Speed.STANDARD
    rates: pricing.RateCard = NO_RATES  # what it was billed at (zeros when not priced)
    no_price_row: bool = False  # missing because the model has no price row (not a bad field)


def call_price(*, model: str, usage: Usage | None, on: dt.date) -> PricedCall:
    """Cost of one call at the price in force on ``on`` for its model and speed.

    A call that cannot be priced — no price row, or a tier, speed or inference geo we have no
    rule for — costs 0 with ``price_missing`` set, so the record is kept and can be re-priced
    once the price is known; it is never billed at a guess.
    """
    if usage is None:
        return PricedCall(0, 0, False, ServiceTier.STANDARD)
    pricing.validate_usage(usage=usage)
    tier = _TIERS.get(usage.service_tier, ServiceTier.UNKNOWN)
    speed = _SPEEDS.get(usage.speed, Speed.UNKNOWN)
    problem = ""
    if tier == ServiceTier.UNKNOWN:
        problem = f"unknown service tier {usage.service_tier!r}"
    elif speed == Speed.UNKNOWN:
        problem = f"unknown speed {usage.speed!r}"
    elif usage.inference_geo not in pricing.INFERENCE_GEOS:
        problem = f"unknown inference_geo {usage.inference_geo!r}"
    if problem:
        logger.warning("usage: %s for %s; recorded with cost 0 and price_missing", problem, model)
        return PricedCall(0, 0, True, tier, speed)
    price = price_for(model=model, on=on, speed=usage.speed)
    if price is None:
        if (
            usage.total_input_tokens == 0
            and usage.output_tokens == 0
            and not (usage.web_search_requests)
        ):
            return PricedCall(0, 0, False, tier, speed)
        return PricedCall(0, 0, True, tier, speed, no_price_row=True)
    card = pricing.usage_rate_card(usage=usage, price=price)
    return PricedCall(
        cost_pico_usd=card.cost_pico(usage=usage),
        uncached_cost_pico_usd=card.uncached_cost_pico(usage=usage),
        price_missing=False,
        service_tier=tier,
        speed=speed,
        rates=card,
    )


def _rate_columns(card: pricing.RateCard) -> dict[str, int]:
    return {
        "input_rate_pico_usd": card.input,
        "cache_write_5m_rate_pico_usd": card.cache_write_5m,
        "cache_write_1h_rate_pico_usd": card.cache_write_1h,
        "cache_read_rate_pico_usd": card.cache_read,
        "output_rate_pico_usd": card.output,
        "web_search_rate_pico_usd": card.web_search,
        "price_band": card.band,
    }


RATE_COLUMNS = tuple(_rate_columns(NO_RATES))
"""The audit_log columns that record what a row was billed at."""


def audit_usage(*, row: AuditLog) -> Usage:
    """The usage an audit row records (to price it again)."""
    return Usage(
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cache_creation_input_tokens=row.cache_creation_input_tokens,
        cache_read_input_tokens=row.cache_read_input_tokens,
        cache_creation_5m=row.cache_creation_5m_tokens,
        cache_creation_1h=row.cache_creation_1h_tokens,
        service_tier=ServiceTier(row.service_tier).label,
        thinking_tokens=row.thinking_tokens,
        web_search_requests=row.web_search_requests,
        inference_geo=row.inference_geo,
        speed=Speed(row.speed).label,
    )


# --- unpriced models ----------------------------------------------------------------------------


def _note_unpriced(*, model: str, speed: Speed, at: dt.datetime, on: dt.date) -> None:
    """Count a call recorded without a price. The first one of a model (and speed) creates its
    ``UnpricedModel`` row — exactly one creator even under concurrent writers, by the unique
    constraint — and that writer alone warns and mails the admins, once the call commits."""
    bump = {"calls": F("calls") + 1, "last_seen_at": Greatest(F("last_seen_at"), at)}
    if UnpricedModel.objects.filter(model=model, speed=speed).update(**bump):
        logger.info("usage: another call on unpriced model %r (%s)", model, speed.label)
        return
    try:
        with transaction.atomic():
            UnpricedModel.objects.create(
                model=model, speed=speed, first_seen_at=at, last_seen_at=at, calls=1
            )
    except IntegrityError:
        UnpricedModel.objects.filter(model=model, speed=speed).update(**bump)
        return
    logger.warning(
        "usage: no price for model %r (speed %s) on %s; its calls are recorded with cost 0 and "
        "price_missing until a price is added (admin, or manage.py prices load)",
        model,
        speed.label,
        on,
    )
    transaction.on_commit(functools.partial(_mail_unpriced, model=model, speed=speed.label, on=on))


def _mail_unpriced(*, model: str, speed: str, on: dt.date) -> None:
    mail_admins(
        f"Unpriced Claude model: {model} ({speed})",
        f"A call on {model} (speed {speed}) on {on} was recorded with no price on file: it is "
        "billed at $0 and flagged price_missing, and so is every further call until a price "
        "exists.\n\nAdd the price in the admin (Usage and billing > Model prices) or with "
        "`manage.py prices load FILE`; the recorded calls and their rollups are re-priced "
        "automatically when you do.",
        fail_silently=True,
    )


# --- recording ------------------------------------------------------------------------------


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
    inference_geo = _check_text("usage.inference_geo", tokens.inference_geo, 32)
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
        thinking_tokens=tokens.thinking_tokens,
        web_search_requests=tokens.web_search_requests,
        service_tier=priced.service_tier,
        speed=priced.speed,
        inference_geo=inference_geo,
        **_rate_columns(priced.rates),
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
            if priced.no_price_row:
                _note_unpriced(model=model, speed=priced.speed, at=occurred_at, on=day)
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
    """What one audit row adds to every rollup it belongs to (the counters' own ``per_row``)."""
    return {counter.name: counter.per_row(row) for counter in UsageCounters.COUNTERS}


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
    concurrently) never adds a cost twice. Rows still without a price are left flagged; an
    ``UnpricedModel`` with no flagged call left is deleted (its staff notice goes away)."""
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
    for unpriced in UnpricedModel.objects.all():
        still = AuditLog.objects.filter(
            price_missing=True, model=unpriced.model, speed=unpriced.speed
        ).exists()
        if not still:
            unpriced.delete()
    return RepriceResult(
        repriced=repriced, still_missing=AuditLog.objects.filter(price_missing=True).count()
    )


def reprice_after_commit() -> RepriceResult | None:
    """Re-price unpriced calls once the price just written is committed: now, when no
    transaction is open (and say how it went), else when the caller's transaction commits —
    a re-pricing that ran before the commit would not see the new price from another
    connection, and one that ran inside a transaction later rolled back would bill at a
    price that never existed."""
    if connection.in_atomic_block:
        transaction.on_commit(reprice_missing_calls)
        return None
    return reprice_missing_calls()


def _reprice_one(*, pk: int) -> int:
    with transaction.atomic():
        row = AuditLog.objects.select_for_update().filter(pk=pk, price_missing=True).first()
        if row is None:
            return 0
        day = row.occurred_at.astimezone(dt.UTC).date()
        priced = call_price(model=row.model, usage=audit_usage(row=row), on=day)
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
        for column, value in _rate_columns(priced.rates).items():
            setattr(row, column, value)
        row.save(
            update_fields=[
                "cost_pico_usd",
                "uncached_cost_pico_usd",
                "price_missing",
                *RATE_COLUMNS,
            ]
        )
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
    return {prefix + counter.name: counter.total() for counter in UsageCounters.COUNTERS}


def _counters(row: Mapping[str, Any], prefix: str) -> dict[str, int]:
    return {name: int(row[prefix + name] or 0) for name in UsageCounters.COUNTER_FIELDS}


@dataclass(frozen=True)
class RebuildResult:
    daily_rows: int
    user_daily_rows: int
    session_rows: int
    organization_rows: int


class RollupsRebuildRefused(Exception):
    """audit_log rows were pruned (``usage.retention``): the rollups are the only record of
    those days left, and a rebuild from audit_log would erase them."""


def rollups_rebuild(*, batch_size: int = 5000) -> RebuildResult:
    """Recompute every rollup from audit_log with GROUP BY, in one transaction.

    For after a bulk load (seed_usage) or to repair; the per-user and organization rollups are
    grouped from the fresh daily rollup, which is far smaller than audit_log. Do not run it while workers
    are recording calls: a call recorded meanwhile could be counted by both paths. Refused
    (``RollupsRebuildRefused``) once audit rows have been pruned.
    """
    p = "agg_"
    sums = _audit_sums(p)
    with transaction.atomic():
        pruned = AuditLogPrune.objects.filter(rows__gt=0).aggregate(rows=Sum("rows"))["rows"]
        if pruned:
            raise RollupsRebuildRefused(
                f"{pruned} audit_log rows were pruned (usage.retention); their totals live only "
                "in the rollups, which a rebuild from audit_log would erase."
            )
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
    consistent). Sessions only cover calls with a session id. Rows pruned by the retention
    (``usage.retention``) still count: their totals are on the ``AuditLogPrune`` records."""
    p = "agg_"
    audit_all = _counters(AuditLog.objects.aggregate(**_audit_sums(p)), p)
    audit_sessions = _counters(
        AuditLog.objects.exclude(session_id="").aggregate(**_audit_sums(p)), p
    )
    for prune in AuditLogPrune.objects.only("totals", "session_totals"):
        for name in UsageCounters.COUNTER_FIELDS:
            audit_all[name] += int(prune.totals.get(name, 0))
            audit_sessions[name] += int(prune.session_totals.get(name, 0))
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
