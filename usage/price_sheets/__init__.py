"""Price sheets: price rows as data, in one JSON format (no database here).

A sheet is ``{"sheet": NAME, "description": ..., "prices": [ROW, ...]}``; a ROW is::

    {"model": "claude-haiku-5-5", "speed": "standard" | "fast",
     "effective_from": "2026-10-07", "effective_until": null | "YYYY-MM-DD" (exclusive),
     "input": "0.10", "cache_write_5m": "0.125", "cache_write_1h": "0.20",
     "cache_read": "0.01", "output": "0.50",            # USD per million tokens
     "web_search_per_1k": "10",                          # USD per 1,000 searches
     "note": "where the price comes from",
     "bands": [{"above_prompt_tokens": 100000, "input": "0.50", ...the five rates}]}

Rates are decimal strings (JSON numbers are read as exact decimals too) with at most
``pricing.PRICE_DECIMAL_PLACES`` decimals.

The shipped sheet (``SHIPPED_SHEET``) is the list prices as of its date. It is never edited
after shipping: a later price list is a new file (and a data migration that loads it). The
data migration, ``services.prices_seed_defaults`` (tests, fresh databases) and
``docs/pricing.md`` (``manage.py prices table``) all read it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from usage import pricing

SHIPPED_SHEET = Path(__file__).with_name("2026-12-01.json")

RATE_KEYS = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
ROW_KEYS = (
    "model",
    "speed",
    "effective_from",
    "effective_until",
    *RATE_KEYS,
    "web_search_per_1k",
    "note",
    "bands",
)
BAND_KEYS = ("above_prompt_tokens", *RATE_KEYS)
MODEL_MAX_LENGTH = 100
NOTE_MAX_LENGTH = 500
_MAX_RATE = Decimal(10) ** 9  # DecimalField(max_digits=12, decimal_places=3)


class SheetError(ValueError):
    """A sheet that cannot be loaded; the message names the row and the field."""


@dataclass(frozen=True)
class SheetRow:
    model: str
    speed: str
    effective_from: dt.date
    effective_until: dt.date | None
    rates: pricing.Rates
    web_search_usd_per_1k: Decimal
    note: str = ""
    bands: tuple[pricing.Band, ...] = ()

    @property
    def key(self) -> tuple[str, str, dt.date]:
        return (self.model, self.speed, self.effective_from)

    @property
    def label(self) -> str:
        until = f" until {self.effective_until}" if self.effective_until else ""
        return f"{self.model} ({self.speed}) from {self.effective_from}{until}"

    def price(self) -> pricing.Price:
        return pricing.Price(
            rates=self.rates, bands=self.bands, web_search_usd_per_1k=self.web_search_usd_per_1k
        )


def _rate(where: str, key: str, raw: Any) -> Decimal:
    if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal):
        raise SheetError(f"{where}: field {key!r} must be a decimal string, got {raw!r}.")
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise SheetError(f"{where}: field {key!r} is not a number: {raw!r}.") from None
    if not value.is_finite() or value < 0:
        raise SheetError(f"{where}: field {key!r} must be a non-negative number, got {raw!r}.")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > pricing.PRICE_DECIMAL_PLACES:
        raise SheetError(
            f"{where}: field {key!r} = {raw} has more than {pricing.PRICE_DECIMAL_PLACES} "
            "decimal places (costs must stay whole picodollars)."
        )
    if value >= _MAX_RATE:
        raise SheetError(f"{where}: field {key!r} = {raw} is too large.")
    return value


def _date(where: str, key: str, raw: Any) -> dt.date:
    if not isinstance(raw, str):
        raise SheetError(f"{where}: field {key!r} must be a date string YYYY-MM-DD, got {raw!r}.")
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise SheetError(f"{where}: field {key!r} is not a date (YYYY-MM-DD): {raw!r}.") from None


def _unknown_keys(where: str, data: Mapping[str, Any], known: Sequence[str]) -> None:
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SheetError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}.")


def _rates(where: str, data: Mapping[str, Any]) -> pricing.Rates:
    missing = [k for k in RATE_KEYS if k not in data]
    if missing:
        raise SheetError(f"{where}: field {missing[0]!r} is missing (every rate is explicit).")
    return pricing.Rates(*(_rate(where, k, data[k]) for k in RATE_KEYS))


def _band(where: str, raw: Any) -> pricing.Band:
    if not isinstance(raw, Mapping):
        raise SheetError(f"{where}: a band must be an object, got {raw!r}.")
    _unknown_keys(where, raw, BAND_KEYS)
    threshold = raw.get("above_prompt_tokens")
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold <= 0:
        raise SheetError(
            f"{where}: field 'above_prompt_tokens' must be a positive whole number of tokens, "
            f"got {threshold!r}."
        )
    return pricing.Band(above_prompt_tokens=threshold, rates=_rates(where, raw))


def _row(index: int, raw: Any) -> SheetRow:
    where = f"prices[{index}]"
    if not isinstance(raw, Mapping):
        raise SheetError(f"{where}: a price row must be an object, got {raw!r}.")
    model = raw.get("model")
    if isinstance(model, str) and model:
        where = f"prices[{index}] ({model})"
    _unknown_keys(where, raw, ROW_KEYS)
    if not isinstance(model, str) or not model.strip() or len(model) > MODEL_MAX_LENGTH:
        raise SheetError(
            f"{where}: field 'model' must be a model id of 1 to {MODEL_MAX_LENGTH} characters."
        )
    speed = raw.get("speed", "standard")
    if speed not in pricing.SPEEDS:
        raise SheetError(
            f"{where}: field 'speed' must be one of {', '.join(pricing.SPEEDS)}, got {speed!r}."
        )
    if "effective_from" not in raw:
        raise SheetError(f"{where}: field 'effective_from' is missing.")
    effective_from = _date(where, "effective_from", raw["effective_from"])
    until_raw = raw.get("effective_until")
    effective_until = (
        None if until_raw in (None, "") else _date(where, "effective_until", until_raw)
    )
    if effective_until is not None and effective_until <= effective_from:
        raise SheetError(
            f"{where}: field 'effective_until' ({effective_until}) must be after "
            f"effective_from ({effective_from})."
        )
    rates = _rates(where, raw)
    web_search = _rate(where, "web_search_per_1k", raw.get("web_search_per_1k", "10"))
    note = raw.get("note", "") or ""
    if not isinstance(note, str) or len(note) > NOTE_MAX_LENGTH:
        raise SheetError(f"{where}: field 'note' must be text of at most {NOTE_MAX_LENGTH} chars.")
    bands_raw = raw.get("bands", []) or []
    if not isinstance(bands_raw, list):
        raise SheetError(f"{where}: field 'bands' must be a list.")
    bands = tuple(_band(f"{where} bands[{i}]", b) for i, b in enumerate(bands_raw))
    thresholds = [b.above_prompt_tokens for b in bands]
    if len(set(thresholds)) != len(thresholds):
        raise SheetError(f"{where}: field 'bands' repeats a threshold: {thresholds}.")
    return SheetRow(
        model=model,
        speed=speed,
        effective_from=effective_from,
        effective_until=effective_until,
        rates=rates,
        web_search_usd_per_1k=web_search,
        note=note,
        bands=bands,
    )


def parse_sheet(data: Any) -> list[SheetRow]:
    """Every row of a sheet, checked as a whole: each row's fields, no two rows with the same
    (model, speed, effective_from), no overlapping date ranges. Raises ``SheetError``."""
    if not isinstance(data, Mapping) or not isinstance(data.get("prices"), list):
        raise SheetError('A price sheet is a JSON object with a "prices" list.')
    rows = [_row(i, raw) for i, raw in enumerate(data["prices"])]
    seen: dict[tuple[str, str, dt.date], int] = {}
    for i, row in enumerate(rows):
        if row.key in seen:
            raise SheetError(
                f"prices[{i}] ({row.model}): field 'effective_from' repeats prices[{seen[row.key]}] "
                f"({row.model}, {row.speed}, {row.effective_from})."
            )
        seen[row.key] = i
    clash = pricing.first_overlap(
        (row.model, row.speed, row.effective_from, row.effective_until, f"prices[{i}] {row.label}")
        for i, row in enumerate(rows)
    )
    if clash is not None:
        raise SheetError(f"{clash[0]}: field 'effective_until' overlaps {clash[1]}.")
    return rows


def loads(text: str) -> list[SheetRow]:
    try:
        data = json.loads(text, parse_float=Decimal)  # 0.1 stays 0.1, not a binary float
    except json.JSONDecodeError as exc:
        raise SheetError(f"Not valid JSON: {exc}.") from None
    return parse_sheet(data)


@functools.cache
def shipped_rows() -> tuple[SheetRow, ...]:
    """The rows of the shipped sheet (read once per process; the file never changes)."""
    return tuple(loads(SHIPPED_SHEET.read_text(encoding="utf-8")))


def shipped_price(*, model: str, on: dt.date, speed: str = "standard") -> pricing.Price | None:
    """The shipped sheet's price for ``model`` on ``on``, without a database (loadtests
    computing what a ledger should cost). Billing reads the database: ``services.price_for``."""
    periods = [
        (row.effective_from, row.effective_until, row)
        for row in shipped_rows()
        if row.model == model and row.speed == speed
    ]
    row = pricing.in_force(periods, on=on)
    return None if row is None else row.price()


# --- writing ----------------------------------------------------------------------------------


def _dec(value: Decimal) -> str:
    """Plain decimal text without exponent or trailing zeros: 12.500 -> "12.5", 8.000 -> "8"."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def row_to_data(row: SheetRow) -> dict[str, Any]:
    rates = dict(zip(RATE_KEYS, (_dec(r) for r in row.rates.as_tuple()), strict=True))
    return {
        "model": row.model,
        "speed": row.speed,
        "effective_from": row.effective_from.isoformat(),
        "effective_until": row.effective_until.isoformat() if row.effective_until else None,
        **rates,
        "web_search_per_1k": _dec(row.web_search_usd_per_1k),
        "note": row.note,
        "bands": [
            {
                "above_prompt_tokens": band.above_prompt_tokens,
                **dict(zip(RATE_KEYS, (_dec(r) for r in band.rates.as_tuple()), strict=True)),
            }
            for band in row.bands
        ],
    }


def dumps(rows: Iterable[SheetRow], *, sheet: str, description: str) -> str:
    """A sheet file for ``rows`` (what ``prices export`` writes and ``prices load`` reads)."""
    data = {
        "sheet": sheet,
        "description": description,
        "prices": [row_to_data(r) for r in sort_rows(rows)],
    }
    return json.dumps(data, indent=2) + "\n"


def sort_rows(rows: Iterable[SheetRow]) -> list[SheetRow]:
    return sorted(rows, key=lambda r: (r.model, pricing.SPEEDS.index(r.speed), r.effective_from))


def _money(value: Decimal) -> str:
    """At least two decimals, more when the rate has them: 0.2 -> 0.20, 0.125 -> 0.125."""
    text = _dec(value)
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def markdown_table(rows: Iterable[SheetRow], *, source: str) -> str:
    """The pricing table of ``docs/pricing.md`` (``manage.py prices table`` prints it)."""
    lines = [
        "# Prices",
        "",
        f"Generated by `python manage.py prices table` from `{source}`; do not edit by hand",
        "(a test fails when this file and the sheet disagree).",
        "",
        "Token rates in USD per million tokens; web search in USD per 1,000 searches. A row is",
        "in force from its date until the next row of the same model and speed (or until its",
        "own end date, exclusive). How a call is billed (`usage/pricing.py`):",
        "",
        "- every token kind at its own rate: input, 5-minute and 1-hour cache writes, cache",
        "  reads, output (thinking tokens are part of output);",
        "- a *band* applies when the prompt (input + cache writes + cache reads) of that one",
        "  request is longer than its threshold: then **every** token of the request, output",
        "  included, is billed at the band's rates;",
        '- batch tier: x0.5 on every token rate; US-only inference (`inference_geo: "us"`):',
        "  x1.1 on every token rate; the two stack with each other and with the cache rates;",
        '- fast mode (`speed: "fast"`) is billed at its own rows; a call at a speed with no',
        "  row is recorded as unpriced, never at another speed's price;",
        "- web search: per search at the row's price ($10 per 1,000 searches, the price",
        "  ANTHROPIC_API.md gives; not found in the current docs), with neither the batch",
        "  discount nor the US-only premium (no source says they apply to tool charges).",
        "",
        "A call on a model with no row for its date and speed is recorded at $0 and flagged",
        "`price_missing`; staff are alerted, and adding the price re-prices it.",
        "",
        "| model | speed | from | until | prompt tokens | input | 5m write | 1h write "
        "| cache read | output | web search / 1k | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sort_rows(rows):
        until = row.effective_until.isoformat() if row.effective_until else ""
        tiers: list[tuple[str, pricing.Rates]] = [
            ("all" if not row.bands else f"≤ {row.bands[0].above_prompt_tokens:,}", row.rates)
        ]
        for i, band in enumerate(row.bands):
            upper = row.bands[i + 1].above_prompt_tokens if i + 1 < len(row.bands) else None
            span = f"> {band.above_prompt_tokens:,}"
            if upper is not None:
                span += f", ≤ {upper:,}"
            tiers.append((span, band.rates))
        for span, rates in tiers:
            cells = [
                row.model,
                row.speed,
                row.effective_from.isoformat(),
                until,
                span,
                *(_money(r) for r in rates.as_tuple()),
                _money(row.web_search_usd_per_1k),
                row.note.replace("|", "\\|"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
