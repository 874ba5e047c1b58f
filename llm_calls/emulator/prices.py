"""What the emulated Anthropic charges: its own price list, and the cost of one billed response.

The Admin API's cost report (``routes/reports.py``) prices the ledger with this table and
nothing else. The rates are Anthropic's list prices as of 2026-12-01 — the same facts as the
gateway's shipped price sheet (``usage/price_sheets/2026-12-01.json``), copied, not imported:
the emulator plays Anthropic and depends on none of the apps. ``tests/test_model_catalogs_agree.py``
keeps the two copies one fact.

A row holds five explicit token rates in USD per million tokens (input, 5-minute and 1-hour
cache writes, cache read, output) for one model and speed from a date on (until the next row
of that model and speed), web search in USD per 1,000 searches, and optional *bands*: when a
request's prompt (input + cache writes + cache reads) is longer than a band's threshold, every
token of that request, output included, is billed at the band's rates.

On top of a row's token rates: the batch tier x0.5 and US-only inference (``inference_geo
"us"``) x1.1, stacking with each other and with the cache rates. Fast mode is its own row
(``speed "fast"``), not a multiplier; a speed without a row is not priced. Web searches are
charged at the row's price with neither multiplier (Anthropic states both for token prices
only). Thinking tokens are part of ``output_tokens`` and are not added again.

Everything is exact ``Decimal`` arithmetic: rates have at most 3 decimals, so every cost is a
whole number of picodollars and nothing is ever rounded.

Models of the catalogue without a published price (``UNPRICED``) are billed tokens in the usage
report but have no line in the cost report.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .model_catalog import model_lookup

PER_MILLION = Decimal(1_000_000)
PER_THOUSAND = Decimal(1_000)
BATCH_MULTIPLIER = Decimal("0.5")
US_GEO_MULTIPLIER = Decimal("1.1")
STANDARD = "standard"
FAST = "fast"

# The five token kinds a price has, in the names the Admin API's reports use for them.
UNCACHED_INPUT = "uncached_input_tokens"
CACHE_WRITE_5M = "cache_creation.ephemeral_5m_input_tokens"
CACHE_WRITE_1H = "cache_creation.ephemeral_1h_input_tokens"
CACHE_READ = "cache_read_input_tokens"
OUTPUT = "output_tokens"
TOKEN_TYPES = (UNCACHED_INPUT, CACHE_WRITE_5M, CACHE_WRITE_1H, CACHE_READ, OUTPUT)


@dataclass(frozen=True)
class Rates:
    """USD per million tokens."""

    input: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    output: Decimal

    def for_token_type(self, token_type: str) -> Decimal:
        return {
            UNCACHED_INPUT: self.input,
            CACHE_WRITE_5M: self.cache_write_5m,
            CACHE_WRITE_1H: self.cache_write_1h,
            CACHE_READ: self.cache_read,
            OUTPUT: self.output,
        }[token_type]


@dataclass(frozen=True)
class Band:
    """Rates for a request whose prompt is longer than ``above_prompt_tokens`` tokens."""

    above_prompt_tokens: int
    rates: Rates


@dataclass(frozen=True)
class PriceRow:
    model: str
    speed: str
    effective_from: dt.date
    rates: Rates
    web_search_per_1k: Decimal = Decimal(10)
    bands: tuple[Band, ...] = ()
    effective_until: dt.date | None = None  # exclusive; None = until the next row

    def rates_for(self, *, prompt_tokens: int) -> Rates:
        """The band a prompt of this length is billed in (the highest threshold it exceeds)."""
        chosen = self.rates
        for band in sorted(self.bands, key=lambda b: b.above_prompt_tokens):
            if prompt_tokens > band.above_prompt_tokens:
                chosen = band.rates
        return chosen


def _rates(input_: str, write_5m: str, write_1h: str, read: str, output: str) -> Rates:
    return Rates(
        Decimal(input_), Decimal(write_5m), Decimal(write_1h), Decimal(read), Decimal(output)
    )


def _row(
    model: str,
    speed: str,
    effective_from: dt.date,
    *rates: str,
    bands: tuple[Band, ...] = (),
) -> PriceRow:
    return PriceRow(model, speed, effective_from, _rates(*rates), bands=bands)


def _band(above: int, *rates: str) -> Band:
    return Band(above, _rates(*rates))


_D = dt.date

# model, speed, in force from, then input / 5m write / 1h write / cache read / output (USD per
# million tokens); web search $10 per 1,000 everywhere. Row for row the gateway's 2026-12-01
# sheet; a later price list adds rows with a later date, it never edits these.
PRICES: tuple[PriceRow, ...] = (
    _row("claude-fable-5-2", STANDARD, _D(2026, 11, 9), "8", "10", "16", "0.20", "40"),
    _row("claude-fable-5-2", FAST, _D(2026, 11, 9), "16", "20", "32", "0.40", "80"),
    _row("claude-fable-5-1", STANDARD, _D(2026, 9, 1), "10", "12.50", "20", "0.25", "50"),
    _row("claude-fable-5", STANDARD, _D(2026, 6, 9), "10", "12.50", "20", "1.00", "50"),
    _row("claude-mythos-5-1", STANDARD, _D(2026, 1, 1), "10", "12.50", "20", "0.25", "50"),
    _row("claude-mythos-5", STANDARD, _D(2026, 1, 1), "10", "12.50", "20", "1.00", "50"),
    _row("claude-opus-5-5", STANDARD, _D(2026, 9, 22), "4", "5", "8", "0.20", "20"),
    _row("claude-opus-5-5", FAST, _D(2026, 9, 22), "8", "10", "16", "0.40", "40"),
    _row("claude-opus-5", STANDARD, _D(2026, 7, 24), "5", "6.25", "10", "0.50", "25"),
    _row("claude-opus-5", FAST, _D(2026, 7, 24), "10", "12.50", "20", "1.00", "50"),
    _row("claude-opus-4-8", STANDARD, _D(2026, 1, 1), "5", "6.25", "10", "0.50", "25"),
    _row("claude-opus-4-8", FAST, _D(2026, 5, 28), "10", "12.50", "20", "1.00", "50"),
    _row("claude-opus-4-7", STANDARD, _D(2026, 1, 1), "5", "6.25", "10", "0.50", "25"),
    _row("claude-opus-4-6", STANDARD, _D(2026, 1, 1), "5", "6.25", "10", "0.50", "25"),
    _row("claude-opus-4-5", STANDARD, _D(2026, 1, 1), "5", "6.25", "10", "0.50", "25"),
    _row("claude-sonnet-5-5", STANDARD, _D(2026, 9, 28), "2", "2.50", "4", "0.20", "10"),
    _row("claude-sonnet-5-5", STANDARD, _D(2026, 10, 7), "2", "2.50", "4", "0.10", "10"),
    _row("claude-sonnet-5", STANDARD, _D(2026, 6, 30), "2", "2.50", "4", "0.20", "10"),
    _row("claude-sonnet-4-6", STANDARD, _D(2026, 1, 1), "3", "3.75", "6", "0.30", "15"),
    _row("claude-sonnet-4-5", STANDARD, _D(2026, 1, 1), "3", "3.75", "6", "0.30", "15",
         bands=(_band(200_000, "6", "7.50", "12", "0.60", "22.50"),)),
    _row("claude-haiku-5-5", STANDARD, _D(2026, 10, 7), "0.10", "0.125", "0.20", "0.01", "0.50",
         bands=(_band(100_000, "0.50", "0.625", "1.00", "0.05", "2.50"),)),
    _row("claude-haiku-4-5", STANDARD, _D(2026, 1, 1), "1", "1.25", "2", "0.10", "5"),
    # Retired models: their last price, so old ledger rows stay priced.
    _row("claude-opus-4-1", STANDARD, _D(2026, 1, 1), "15", "18.75", "30", "1.50", "75"),
    _row("claude-opus-4-0", STANDARD, _D(2026, 1, 1), "15", "18.75", "30", "1.50", "75"),
    _row("claude-sonnet-4-0", STANDARD, _D(2026, 1, 1), "3", "3.75", "6", "0.30", "15",
         bands=(_band(200_000, "6", "7.50", "12", "0.60", "22.50"),)),
    _row("claude-3-7-sonnet", STANDARD, _D(2026, 1, 1), "3", "3.75", "6", "0.30", "15"),
    _row("claude-3-5-haiku", STANDARD, _D(2026, 1, 1), "0.80", "1", "1.60", "0.08", "4"),
    _row("claude-3-opus", STANDARD, _D(2026, 1, 1), "15", "18.75", "30", "1.50", "75"),
    _row("claude-3-haiku", STANDARD, _D(2026, 1, 1), "0.25", "0.30", "0.50", "0.03", "1.25"),
)  # fmt: skip

# In the catalogue, no published price (the gateway's sheet has none either).
UNPRICED = frozenset({"claude-mythos-5-2", "claude-mythos-preview"})


def canonical_model(model_id: str) -> str:
    """The catalogue id of ``model_id`` (a dated alias names its model); unknown ids as given."""
    info = model_lookup(model_id)
    return info.model_id if info is not None else model_id


def price_for(model_id: str, *, speed: str = STANDARD, on: dt.date) -> PriceRow | None:
    """The row in force on ``on`` for this model (or alias) and speed: the latest one starting
    on or before that day, unless its own end has passed. None: not priced."""
    model = canonical_model(model_id)
    candidates = [
        row
        for row in PRICES
        if row.model == model and row.speed == speed and row.effective_from <= on
    ]
    best = max(candidates, key=lambda row: row.effective_from, default=None)
    if best is None or (best.effective_until is not None and on >= best.effective_until):
        return None
    return best


def token_counts(usage: dict[str, Any]) -> dict[str, int]:
    """A response's ``usage`` as counts per token kind. Without the TTL split every cache write
    is a 5-minute one (the only TTL before the split was reported)."""
    split = usage.get("cache_creation") or {}
    five = int(split.get("ephemeral_5m_input_tokens", 0))
    hour = int(split.get("ephemeral_1h_input_tokens", 0))
    if five + hour != int(usage.get("cache_creation_input_tokens", 0)):
        five, hour = int(usage.get("cache_creation_input_tokens", 0)), 0
    return {
        UNCACHED_INPUT: int(usage.get("input_tokens", 0)),
        CACHE_WRITE_5M: five,
        CACHE_WRITE_1H: hour,
        CACHE_READ: int(usage.get("cache_read_input_tokens", 0)),
        OUTPUT: int(usage.get("output_tokens", 0)),
    }


def prompt_tokens(usage: dict[str, Any]) -> int:
    """What picks a price band (and the context-window tier): input + cache writes + reads."""
    return (
        int(usage.get("input_tokens", 0))
        + int(usage.get("cache_creation_input_tokens", 0))
        + int(usage.get("cache_read_input_tokens", 0))
    )


def multiplier(*, service_tier: str, inference_geo: str) -> Decimal:
    """Batch halves every token rate; US-only inference adds 10%; they stack."""
    factor = BATCH_MULTIPLIER if service_tier == "batch" else Decimal(1)
    if inference_geo == "us":
        factor *= US_GEO_MULTIPLIER
    return factor


@dataclass(frozen=True)
class Charge:
    """One line of what a response cost: a token kind (or web search) in USD, exactly."""

    cost_type: str  # "tokens" | "web_search"
    token_type: str | None  # one of TOKEN_TYPES for token lines
    quantity: int
    usd: Decimal


def charges(row: PriceRow, usage: dict[str, Any]) -> list[Charge]:
    """Every non-empty line of one billed response at ``row``'s prices."""
    rates = row.rates_for(prompt_tokens=prompt_tokens(usage))
    factor = multiplier(
        service_tier=str(usage.get("service_tier", STANDARD)),
        inference_geo=str(usage.get("inference_geo", "global")),
    )
    lines = [
        Charge("tokens", kind, count, count * rates.for_token_type(kind) * factor / PER_MILLION)
        for kind, count in token_counts(usage).items()
        if count
    ]
    searches = int((usage.get("server_tool_use") or {}).get("web_search_requests", 0))
    if searches:
        lines.append(
            Charge("web_search", None, searches, searches * row.web_search_per_1k / PER_THOUSAND)
        )
    return lines


def cents_text(usd: Decimal) -> str:
    """USD as the cost report writes it: a decimal string in cents, exact (fractional cents
    kept, no exponent, no trailing zeros): Decimal("0.0000183") -> "0.00183"."""
    cents = usd * 100
    text = format(cents, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text
