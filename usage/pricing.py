"""Exact cost maths for Claude calls. Pure functions: no database, no settings, no floats.

Money is ``Decimal`` end to end. Costs are stored as whole **picodollars** (1e-12 USD) in
integer columns: SQLite keeps ``DECIMAL`` columns as binary floats (15 significant digits) and
adds them in floating point, so a ``DecimalField`` rollup would drift; integers add exactly on
every database. A price with at most ``PRICE_DECIMAL_PLACES`` decimals (USD per million tokens)
times any multiplier below gives a per-token rate with at most 12 decimals, so every cost is a
whole number of picodollars — nothing is rounded, ever (``usd_to_pico`` refuses if it would be).

Cache tokens are counted once each, at their own multiplier of the input price:
input x1, 5-minute cache write x1.25, 1-hour cache write x2, cache read x0.1; output at the
output price; the batch tier halves all of it (and stacks with the cache multipliers).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal, localcontext

from llm_calls.types import Usage

PER_MILLION = Decimal(1_000_000)
CACHE_WRITE_5M_MULTIPLIER = Decimal("1.25")
CACHE_WRITE_1H_MULTIPLIER = Decimal(2)
CACHE_READ_MULTIPLIER = Decimal("0.1")
BATCH_MULTIPLIER = Decimal("0.5")

# Prices are USD per million tokens with at most this many decimals (a thousandth of a cent
# per million tokens: far finer than any published price), so costs stay whole picodollars.
PRICE_DECIMAL_PLACES = 3
PICO_PER_USD = 10**12

SERVICE_TIERS = ("standard", "batch", "priority")

# Wide enough that no product or quotient here is ever rounded (28 digits would already do for
# any real call; this removes the question).
_EXACT = Context(prec=80)

# List prices on 2026-01-01 (ANTHROPIC_API.md): model id -> (input, output) USD per Mtok.
# The data migration 0002 seeds the same table; this copy serves tests and seed_usage.
LIST_PRICES: dict[str, tuple[Decimal, Decimal]] = {
    "claude-opus-4-8": (Decimal(5), Decimal(25)),
    "claude-opus-4-7": (Decimal(5), Decimal(25)),
    "claude-opus-4-6": (Decimal(5), Decimal(25)),
    "claude-opus-4-5": (Decimal(5), Decimal(25)),
    "claude-opus-4-1": (Decimal(15), Decimal(75)),
    "claude-opus-4-0": (Decimal(15), Decimal(75)),
    "claude-sonnet-4-6": (Decimal(3), Decimal(15)),
    "claude-sonnet-4-5": (Decimal(3), Decimal(15)),
    "claude-sonnet-4-0": (Decimal(3), Decimal(15)),
    "claude-haiku-4-5": (Decimal(1), Decimal(5)),
    "claude-3-5-haiku-latest": (Decimal("0.80"), Decimal(4)),
}


@dataclass(frozen=True)
class Price:
    """A model's list price in USD per million tokens (standard tier, no caching)."""

    input_usd_per_mtok: Decimal
    output_usd_per_mtok: Decimal


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


def validate_usage(*, usage: Usage) -> None:
    """Refuse token counts that cannot be billed (negative or inconsistent)."""
    for name in (
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "cache_creation_5m",
        "cache_creation_1h",
    ):
        value = getattr(usage, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"usage.{name} must be a non-negative integer, got {value!r}.")
    cache_writes(usage=usage)


def tier_multiplier(*, service_tier: str) -> Decimal:
    """Batch halves every price. Priority tier is billed at list price here (its commitments
    are contracted separately), standard at list price."""
    if service_tier == "batch":
        return BATCH_MULTIPLIER
    if service_tier in ("standard", "priority"):
        return Decimal(1)
    raise ValueError(
        f"unknown service_tier {service_tier!r}; expected one of {', '.join(SERVICE_TIERS)}."
    )


def call_cost_usd(*, usage: Usage, price: Price, service_tier: str | None = None) -> Decimal:
    """What Anthropic bills for one response, exactly.

    ``input x p_in + write_5m x p_in x 1.25 + write_1h x p_in x 2 + read x p_in x 0.1
    + output x p_out``, per million tokens, x0.5 on the batch tier. ``service_tier`` defaults
    to the one the response reported (``usage.service_tier``).
    """
    validate_usage(usage=usage)
    writes = cache_writes(usage=usage)
    p_in, p_out = price.input_usd_per_mtok, price.output_usd_per_mtok
    tier = service_tier if service_tier is not None else usage.service_tier
    with localcontext(_EXACT):
        micro = (
            usage.input_tokens * p_in
            + writes.five_minute * p_in * CACHE_WRITE_5M_MULTIPLIER
            + writes.one_hour * p_in * CACHE_WRITE_1H_MULTIPLIER
            + usage.cache_read_input_tokens * p_in * CACHE_READ_MULTIPLIER
            + usage.output_tokens * p_out
        )
        return micro * tier_multiplier(service_tier=tier) / PER_MILLION


def uncached_cost_usd(*, usage: Usage, price: Price, service_tier: str | None = None) -> Decimal:
    """The same call had nothing been cached: every input token (plain, written or read) at
    the base input price, output at the output price, x0.5 on the batch tier."""
    validate_usage(usage=usage)
    tier = service_tier if service_tier is not None else usage.service_tier
    with localcontext(_EXACT):
        micro = usage.total_input_tokens * price.input_usd_per_mtok + (
            usage.output_tokens * price.output_usd_per_mtok
        )
        return micro * tier_multiplier(service_tier=tier) / PER_MILLION


def worst_case_cost_usd(*, price: Price, input_tokens: int, max_tokens: int) -> Decimal:
    """An upper bound for a call before it is made (quota reservations): every input token
    written to a 1-hour cache (the dearest way to pay for input) and ``max_tokens`` of output,
    at the standard tier."""
    if input_tokens < 0 or max_tokens < 0:
        raise ValueError("input_tokens and max_tokens must be non-negative.")
    with localcontext(_EXACT):
        micro = input_tokens * price.input_usd_per_mtok * CACHE_WRITE_1H_MULTIPLIER + (
            max_tokens * price.output_usd_per_mtok
        )
        return micro / PER_MILLION


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


@dataclass(frozen=True)
class RateCard:
    """Per-token prices in whole picodollars for one (price, tier): integer-only costing for
    bulk work (seed_usage). Same numbers as ``call_cost_usd`` — a test holds them equal."""

    input: int
    write_5m: int
    write_1h: int
    read: int
    output: int
    uncached_input: int

    def cost_pico(self, *, usage: Usage) -> int:
        writes = cache_writes(usage=usage)
        return (
            usage.input_tokens * self.input
            + writes.five_minute * self.write_5m
            + writes.one_hour * self.write_1h
            + usage.cache_read_input_tokens * self.read
            + usage.output_tokens * self.output
        )

    def uncached_cost_pico(self, *, usage: Usage) -> int:
        return usage.total_input_tokens * self.uncached_input + usage.output_tokens * self.output


def rate_card(*, price: Price, service_tier: str = "standard") -> RateCard:
    tier = tier_multiplier(service_tier=service_tier)

    def per_token(usd_per_mtok: Decimal, multiplier: Decimal) -> int:
        with localcontext(_EXACT):
            return usd_to_pico(usd_per_mtok * multiplier * tier / PER_MILLION)

    p_in, p_out = price.input_usd_per_mtok, price.output_usd_per_mtok
    return RateCard(
        input=per_token(p_in, Decimal(1)),
        write_5m=per_token(p_in, CACHE_WRITE_5M_MULTIPLIER),
        write_1h=per_token(p_in, CACHE_WRITE_1H_MULTIPLIER),
        read=per_token(p_in, CACHE_READ_MULTIPLIER),
        output=per_token(p_out, Decimal(1)),
        uncached_input=per_token(p_in, Decimal(1)),
    )


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
