"""Exact cost maths for Claude calls. Pure functions: no database, no settings, no floats.

Money is ``Decimal`` until it becomes whole **picodollars** (1e-12 USD), and integers from
there on. Costs are stored as picodollars in integer columns: SQLite keeps ``DECIMAL`` columns
as binary floats (15 significant digits) and adds them in floating point, so a
``DecimalField`` rollup would drift; integers add exactly on every database.

A price is **five explicit rates** in USD per million tokens — input, 5-minute cache write,
1-hour cache write, cache read, output — per model, speed and effective date (Anthropic's cache
reads stopped being one multiplier of the input price in 2026), optionally with **bands**: when
a request's prompt (input + cache writes + cache reads) is longer than a band's threshold,
every token of that request, output included, is billed at the band's rates. Each request is
priced on its own.

On top of the row's rates: the batch tier x0.5 and US-only inference (``inference_geo "us"``)
x1.1, both on every token rate and stacking with each other and with the cache rates. Fast mode
is not a multiplier here: it is its own price row (``speed "fast"``). Thinking tokens are
already part of ``output_tokens`` and are not added again. Web search is billed per search at
the row's price per 1,000 searches.

A rate has at most ``PRICE_DECIMAL_PLACES`` decimals; times 0.5 and 1.1 that is at most 5
decimals of USD per million tokens, i.e. a whole number of picodollars per token (1e-6 USD per
million tokens = 1 picodollar per token). So every per-token rate — and every cost — is exact:
nothing is rounded, ever (``usd_to_pico`` refuses if it would be).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal, localcontext
from typing import TypeVar

from llm_calls.types import Usage

__all__ = [
    "BATCH_MULTIPLIER",
    "PICO_PER_USD",
    "PRICE_DECIMAL_PLACES",
    "SERVICE_TIERS",
    "SPEEDS",
    "US_GEO_MULTIPLIER",
    "WORST_CASE_PROMPT_MARGIN",
    "Band",
    "CacheWrites",
    "Price",
    "RateCard",
    "Rates",
    "Usage",
    "cache_writes",
    "call_cost_usd",
    "first_overlap",
    "in_force",
    "geo_multiplier",
    "pico_to_usd",
    "pico_to_usd_str",
    "prompt_tokens",
    "rate_card",
    "tier_multiplier",
    "uncached_cost_usd",
    "usd_to_pico",
    "validate_usage",
    "worst_case_cost_usd",
]

PER_MILLION = Decimal(1_000_000)
PER_THOUSAND = Decimal(1_000)
BATCH_MULTIPLIER = Decimal("0.5")
US_GEO_MULTIPLIER = Decimal("1.1")

# Prices are USD per million tokens (and per 1,000 web searches) with at most this many
# decimals (a thousandth of a cent per million tokens: far finer than any published price), so
# costs stay whole picodollars.
PRICE_DECIMAL_PLACES = 3
PICO_PER_USD = 10**12

SERVICE_TIERS = ("standard", "batch", "priority")
SPEEDS = ("standard", "fast")
# What the API reports in usage.inference_geo: "us" for US-only inference; "global" (the
# default) or nothing otherwise. Any other value is a region we have no price rule for.
GLOBAL_GEOS = ("", "global")
US_GEO = "us"
INFERENCE_GEOS = (*GLOBAL_GEOS, US_GEO)

# A quota reservation is made from an *estimate* of the prompt (local token counting, which can
# run low: the newer tokenizer alone counts ~30% more than the old one on the same text), so the
# worst case picks the price band as if the prompt were this much longer.
WORST_CASE_PROMPT_MARGIN = Decimal("1.2")


# Wide enough that no product or quotient here is ever rounded (28 digits would already do for
# any real call; this removes the question).
_EXACT = Context(prec=80)


@dataclass(frozen=True)
class Rates:
    """Five token rates in USD per million tokens."""

    input: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    output: Decimal

    def as_tuple(self) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal]:
        return (self.input, self.cache_write_5m, self.cache_write_1h, self.cache_read, self.output)


@dataclass(frozen=True)
class Band:
    """Rates for a request whose prompt is longer than ``above_prompt_tokens`` tokens."""

    above_prompt_tokens: int
    rates: Rates


@dataclass(frozen=True)
class Price:
    """What one model costs at one speed on some day: base rates, bands, web search."""

    rates: Rates
    bands: tuple[Band, ...] = ()
    web_search_usd_per_1k: Decimal = Decimal(10)

    def __post_init__(self) -> None:
        thresholds = [b.above_prompt_tokens for b in self.bands]
        if any(t <= 0 for t in thresholds) or len(set(thresholds)) != len(thresholds):
            raise ValueError(f"band thresholds must be positive and distinct, got {thresholds}.")
        # Sorted once here, so band_for can take the last one that applies.
        object.__setattr__(
            self, "bands", tuple(sorted(self.bands, key=lambda b: b.above_prompt_tokens))
        )

    def band_for(self, *, prompt_tokens: int) -> Band | None:
        """The band a request with this many prompt tokens is billed in (None: base rates)."""
        chosen = None
        for band in self.bands:
            if prompt_tokens > band.above_prompt_tokens:
                chosen = band
        return chosen

    def rates_for(self, *, prompt_tokens: int) -> tuple[int, Rates]:
        """(band threshold, rates) for a prompt of this length; threshold 0 = base rates."""
        band = self.band_for(prompt_tokens=prompt_tokens)
        return (0, self.rates) if band is None else (band.above_prompt_tokens, band.rates)


T = TypeVar("T")


def in_force(periods: Sequence[tuple[dt.date, dt.date | None, T]], *, on: dt.date) -> T | None:
    """The item of the period in force on ``on``: of ``(effective_from, effective_until, item)``
    periods of one model and speed, the one with the latest start on or before ``on`` — unless
    its own (exclusive) end has passed, which leaves a gap: no price."""
    best: tuple[dt.date, dt.date | None, T] | None = None
    for period in periods:
        if period[0] <= on and (best is None or period[0] > best[0]):
            best = period
    if best is None or (best[1] is not None and on >= best[1]):
        return None
    return best[2]


def first_overlap(
    periods: Iterable[tuple[str, str, dt.date, dt.date | None, str]],
) -> tuple[str, str] | None:
    """The first two of ``(model, speed, effective_from, effective_until, label)`` periods whose
    date ranges overlap, as (label of the one with the end date, label of the other).

    A period without an end lasts until the next one of its model and speed starts, so it
    never overlaps; one with an end overlaps every later period that starts before that end.
    """
    by_key: dict[tuple[str, str], list[tuple[dt.date, dt.date | None, str]]] = {}
    for model, speed, start, end, label in periods:
        by_key.setdefault((model, speed), []).append((start, end, label))
    for starts in by_key.values():
        starts.sort(key=lambda p: p[0])
        for i, (start, end, label) in enumerate(starts):
            for other_start, _other_end, other_label in starts[i + 1 :]:
                if other_start == start or (end is not None and other_start < end):
                    return (label, other_label)
    return None


@dataclass(frozen=True)
class CacheWrites:
    five_minute: int
    one_hour: int


def cache_writes(*, usage: Usage) -> CacheWrites:
    """Split ``cache_creation_input_tokens`` by TTL.

    Responses from before the API reported the split carry only the total; those writes were
    all 5-minute ones (the only TTL then). A split that disagrees with the total is refused
    rather than guessed at.
    """
    total = usage.cache_creation_input_tokens
    five, hour = usage.cache_creation_5m, usage.cache_creation_1h
    if five + hour == total:
        return CacheWrites(five_minute=five, one_hour=hour)
    if five == 0 and hour == 0:
        return CacheWrites(five_minute=total, one_hour=0)
    raise ValueError(
        f"usage.cache_creation_input_tokens={total} but cache_creation_5m={five} + "
        f"cache_creation_1h={hour} = {five + hour}; the split must add up to the total."
    )


_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "cache_creation_5m",
    "cache_creation_1h",
    "thinking_tokens",
    "web_search_requests",
    "web_fetch_requests",
)


def validate_usage(*, usage: Usage) -> None:
    """Refuse counts that cannot be billed (negative, not integers, or inconsistent)."""
    for name in _COUNTS:
        value = getattr(usage, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"usage.{name} must be a non-negative integer, got {value!r}.")
    cache_writes(usage=usage)


def prompt_tokens(*, usage: Usage) -> int:
    """The prompt length that picks a price band: input + cache writes + cache reads."""
    return usage.total_input_tokens


def tier_multiplier(*, service_tier: str) -> Decimal:
    """Batch halves every token rate. Priority tier is billed at list price here (its
    commitments are contracted separately), standard at list price."""
    if service_tier == "batch":
        return BATCH_MULTIPLIER
    if service_tier in ("standard", "priority"):
        return Decimal(1)
    raise ValueError(
        f"unknown service_tier {service_tier!r}; expected one of {', '.join(SERVICE_TIERS)}."
    )


def geo_multiplier(*, inference_geo: str) -> Decimal:
    """US-only inference costs 1.1x every token rate; global (or unreported) inference 1x."""
    if inference_geo == US_GEO:
        return US_GEO_MULTIPLIER
    if inference_geo in GLOBAL_GEOS:
        return Decimal(1)
    raise ValueError(
        f"unknown inference_geo {inference_geo!r}; expected one of "
        f"{', '.join(repr(g) for g in INFERENCE_GEOS)}."
    )


def usd_to_pico(amount: Decimal) -> int:
    """Whole picodollars for ``amount``; refuses (rather than rounds) a finer amount, which
    can only come from a price with more than ``PRICE_DECIMAL_PLACES`` decimals."""
    pico = amount.scaleb(12, context=_EXACT)
    if pico != pico.to_integral_value():
        raise ValueError(
            f"{amount} USD is not a whole number of picodollars; prices may have at most "
            f"{PRICE_DECIMAL_PLACES} decimal places."
        )
    return int(pico)


def pico_to_usd(pico: int | Decimal | None) -> Decimal:
    """Exact USD for a picodollar amount (``None``, an empty SUM, is zero)."""
    if pico is None:
        return Decimal(0)
    return Decimal(int(pico)).scaleb(-12, context=_EXACT)


def pico_to_usd_str(pico: int) -> str:
    """Exact plain-notation USD for a picodollar amount, without trailing zeros: 18300000000 ->
    "0.0183". Integer arithmetic only (this runs once per row in big JSON and CSV answers)."""
    if pico == 0:
        return "0"
    sign = "-" if pico < 0 else ""
    whole, frac = divmod(abs(pico), PICO_PER_USD)
    if not frac:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:012d}".rstrip("0")


@dataclass(frozen=True)
class RateCard:
    """The rates one request is billed at, in whole picodollars per token (per search for web
    search), batch and geo multipliers already applied; ``band`` is the threshold of the band
    used (0 = base rates). The audit row stores exactly these, so its cost can be recomputed
    from the row alone; seed_usage bills a million rows with them in integer arithmetic."""

    input: int
    cache_write_5m: int
    cache_write_1h: int
    cache_read: int
    output: int
    web_search: int
    band: int = 0

    def cost_pico_counts(
        self,
        *,
        input_tokens: int,
        cache_write_5m_tokens: int,
        cache_write_1h_tokens: int,
        cache_read_tokens: int,
        output_tokens: int,
        web_search_requests: int,
    ) -> int:
        return (
            input_tokens * self.input
            + cache_write_5m_tokens * self.cache_write_5m
            + cache_write_1h_tokens * self.cache_write_1h
            + cache_read_tokens * self.cache_read
            + output_tokens * self.output
            + web_search_requests * self.web_search
        )

    def uncached_cost_pico_counts(
        self, *, prompt_tokens: int, output_tokens: int, web_search_requests: int
    ) -> int:
        """The same request had nothing been cached: every prompt token at the input rate."""
        return (
            prompt_tokens * self.input
            + output_tokens * self.output
            + web_search_requests * self.web_search
        )

    def cost_pico(self, *, usage: Usage) -> int:
        writes = cache_writes(usage=usage)
        return self.cost_pico_counts(
            input_tokens=usage.input_tokens,
            cache_write_5m_tokens=writes.five_minute,
            cache_write_1h_tokens=writes.one_hour,
            cache_read_tokens=usage.cache_read_input_tokens,
            output_tokens=usage.output_tokens,
            web_search_requests=usage.web_search_requests,
        )

    def uncached_cost_pico(self, *, usage: Usage) -> int:
        return self.uncached_cost_pico_counts(
            prompt_tokens=usage.total_input_tokens,
            output_tokens=usage.output_tokens,
            web_search_requests=usage.web_search_requests,
        )


def _per_token_pico(usd_per_mtok: Decimal, multiplier: Decimal) -> int:
    with localcontext(_EXACT):
        return usd_to_pico(usd_per_mtok * multiplier / PER_MILLION)


def rate_card(
    *,
    price: Price,
    prompt_tokens: int = 0,
    service_tier: str = "standard",
    inference_geo: str = "",
) -> RateCard:
    """The per-token rates for one request: the band its prompt falls in, x0.5 on the batch
    tier, x1.1 for US-only inference.

    Web search is charged at the row's per-search price with neither multiplier: Anthropic's
    docs state the batch discount and the US-only premium for *token* prices, and no source
    found (fact-check of 2026-12-02) says either applies to server-tool charges, so we do not
    assume it. Change it here, in one place, if Anthropic says otherwise.
    """
    if prompt_tokens < 0:
        raise ValueError("prompt_tokens must be non-negative.")
    with localcontext(_EXACT):
        multiplier = tier_multiplier(service_tier=service_tier) * geo_multiplier(
            inference_geo=inference_geo
        )
        band, rates = price.rates_for(prompt_tokens=prompt_tokens)
        web_search = usd_to_pico(price.web_search_usd_per_1k / PER_THOUSAND)
    return RateCard(
        input=_per_token_pico(rates.input, multiplier),
        cache_write_5m=_per_token_pico(rates.cache_write_5m, multiplier),
        cache_write_1h=_per_token_pico(rates.cache_write_1h, multiplier),
        cache_read=_per_token_pico(rates.cache_read, multiplier),
        output=_per_token_pico(rates.output, multiplier),
        web_search=web_search,
        band=band,
    )


def usage_rate_card(
    *,
    usage: Usage,
    price: Price,
    service_tier: str | None = None,
    inference_geo: str | None = None,
) -> RateCard:
    """The rate card for a response: its own prompt length, and the tier and geo it reported
    unless overridden."""
    validate_usage(usage=usage)
    return rate_card(
        price=price,
        prompt_tokens=prompt_tokens(usage=usage),
        service_tier=service_tier if service_tier is not None else usage.service_tier,
        inference_geo=inference_geo if inference_geo is not None else usage.inference_geo,
    )


def call_cost_usd(
    *,
    usage: Usage,
    price: Price,
    service_tier: str | None = None,
    inference_geo: str | None = None,
) -> Decimal:
    """What Anthropic bills for one response, exactly: every token kind at its rate in the
    band the prompt falls in, x0.5 batch, x1.1 US-only, plus web searches. ``service_tier`` and
    ``inference_geo`` default to what the response reported."""
    card = usage_rate_card(
        usage=usage, price=price, service_tier=service_tier, inference_geo=inference_geo
    )
    return pico_to_usd(card.cost_pico(usage=usage))


def uncached_cost_usd(
    *,
    usage: Usage,
    price: Price,
    service_tier: str | None = None,
    inference_geo: str | None = None,
) -> Decimal:
    """The same response had nothing been cached: every prompt token (plain, written or read)
    at the applied input rate, output at the output rate, plus web searches."""
    card = usage_rate_card(
        usage=usage, price=price, service_tier=service_tier, inference_geo=inference_geo
    )
    return pico_to_usd(card.uncached_cost_pico(usage=usage))


def worst_case_cost_usd(
    *,
    price: Price,
    prompt_tokens: int,
    max_tokens: int,
    inference_geo: str = "",
    batch: bool = False,
) -> Decimal:
    """An upper bound for a call before it is made (quota reservations).

    Every prompt token at the dearest input-side rate (input, either cache write, cache read)
    and ``max_tokens`` of output, in the band the prompt falls in when it is taken to be
    ``WORST_CASE_PROMPT_MARGIN`` (20%) longer than estimated — or in its own band, if that one
    is dearer — x1.1 for US-only inference, x0.5 for batch. Web searches are not included: how
    many a call makes is not known beforehand (limit them with the tool's ``max_uses``).
    """
    if prompt_tokens < 0 or max_tokens < 0:
        raise ValueError("prompt_tokens and max_tokens must be non-negative.")
    margined = math.ceil(prompt_tokens * WORST_CASE_PROMPT_MARGIN)
    tier = "batch" if batch else "standard"
    worst = 0
    for length in {prompt_tokens, margined}:
        card = rate_card(
            price=price, prompt_tokens=length, service_tier=tier, inference_geo=inference_geo
        )
        dearest_input = max(card.input, card.cache_write_5m, card.cache_write_1h, card.cache_read)
        worst = max(worst, prompt_tokens * dearest_input + max_tokens * card.output)
    return pico_to_usd(worst)
