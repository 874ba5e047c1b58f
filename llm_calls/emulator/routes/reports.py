"""The Admin API's usage and cost reports, served from the emulator's own ledger.

``GET /v1/organizations/usage_report/messages`` adds up the billed responses of the ledger into
time buckets (``1m`` / ``1h`` / ``1d``, snapped to UTC; default ``1d``), optionally grouped and
filtered the way the real API does; ``GET /v1/organizations/cost_report`` prices the same rows
with the emulator's own price table (``prices.py``) into daily buckets, amounts in cents as
exact decimal strings. Both answer admin keys only (``EmulatorConfig.admin_key_prefix``,
``sk-ant-admin`` by default); any other key gets 401 ``authentication_error``.

Every bucket of the range is returned, empty ones with ``results: []``; an ungrouped bucket
with usage has one row, a grouped one a row per group. Paging is by bucket: ``limit`` buckets
a page, ``has_more`` and ``next_page``, an opaque cursor (``page_`` + base64 of the next
bucket's start, the shape of the real API's tokens) that the next request sends as ``page``
with the same other parameters.

What the emulator has no notion of is always null: workspaces (every key is in the default
workspace, whose ``workspace_id`` is null), user accounts and service accounts. Data is visible
as soon as it is billed (the real API takes minutes), on the emulator's clock.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aiohttp import web

from llm_calls.emulator import prices
from llm_calls.emulator.errors import ApiError, invalid
from llm_calls.emulator.http_layer import _api_key, authenticate, json_response
from llm_calls.emulator.ledger import api_key_id
from llm_calls.emulator.model_catalog import model_lookup
from llm_calls.emulator.state import STATE_KEY, EmulatorState

BUCKET_SECONDS = {"1m": 60, "1h": 3600, "1d": 86400}
# Default and largest ``limit`` (buckets per page) per bucket width.
USAGE_LIMITS = {"1d": (7, 31), "1h": (24, 168), "1m": (60, 1440)}
COST_LIMITS = {"1d": (7, 31)}

USAGE_GROUPS = (
    "api_key_id",
    "workspace_id",
    "model",
    "service_tier",
    "context_window",
    "inference_geo",
    "speed",
    "account_id",
    "service_account_id",
)
COST_GROUPS = ("workspace_id", "description")
SERVICE_TIERS = ("standard", "batch", "priority", "priority_on_demand", "flex", "flex_discount")
CONTEXT_WINDOWS = ("0-200k", "200k-1M")
INFERENCE_GEOS = ("global", "us", "not_available")
SPEEDS = ("standard", "fast")
# Grouping or filtering by speed needs this beta, as on the real API.
FAST_MODE_BETA = "fast-mode-2026-02-01"
LONG_CONTEXT_ABOVE = 200_000

# Usage filters: query name -> the dimension it restricts (with its allowed values, if fixed).
USAGE_FILTERS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "api_key_ids": ("api_key_id", None),
    "workspace_ids": ("workspace_id", None),
    "models": ("model", None),
    "service_tiers": ("service_tier", SERVICE_TIERS),
    "context_window": ("context_window", CONTEXT_WINDOWS),
    "inference_geos": ("inference_geo", INFERENCE_GEOS),
    "speeds": ("speed", SPEEDS),
    "account_ids": ("account_id", None),
    "service_account_ids": ("service_account_id", None),
}
SCALARS = ("starting_at", "ending_at", "bucket_width", "limit", "page")

TOKEN_LABELS = {
    prices.UNCACHED_INPUT: "Input Tokens",
    prices.OUTPUT: "Output Tokens",
    prices.CACHE_READ: "Cache Read Input Tokens",
    prices.CACHE_WRITE_5M: "Cache Write (5m) Input Tokens",
    prices.CACHE_WRITE_1H: "Cache Write (1h) Input Tokens",
}


# -- auth and query ----------------------------------------------------------------------------


def authenticate_admin(request: web.Request, state: EmulatorState) -> str:
    """Auth and version as everywhere, then: only an admin key may read the reports. A standard
    key is refused as the real API refuses an unknown one (401 ``invalid x-api-key``)."""
    fingerprint = authenticate(request)
    if not _api_key(request).startswith(state.config.admin_key_prefix):
        raise ApiError(401, "invalid x-api-key")
    return fingerprint


def _betas(request: web.Request) -> set[str]:
    return {
        beta.strip()
        for header in request.headers.getall("anthropic-beta", [])
        for beta in header.split(",")
        if beta.strip()
    }


@dataclass(frozen=True)
class Query:
    starting_at: float
    ending_at: float | None
    width: str
    limit: int
    page: str | None
    group_by: tuple[str, ...]
    filters: dict[str, frozenset[str]]


def _name(key: str) -> str:
    return key[:-2] if key.endswith("[]") else key


def _timestamp(name: str, raw: str) -> float:
    try:
        moment = dt.datetime.fromisoformat(raw.strip())
    except ValueError:
        raise invalid(f"{name}: Input should be a valid RFC 3339 datetime, got {raw!r}") from None
    if moment.tzinfo is None:
        raise invalid(f"{name}: Input should have a timezone (RFC 3339), got {raw!r}")
    return moment.timestamp()


def parse_query(
    request: web.Request,
    *,
    groups: tuple[str, ...],
    filters: dict[str, tuple[str, tuple[str, ...] | None]],
    limits: dict[str, tuple[int, int]],
) -> Query:
    """The report's query string, checked: a 400 naming the parameter for anything wrong.
    List parameters may be sent as ``name[]`` (the docs' spelling) or ``name``."""
    lists: dict[str, list[str]] = {}
    scalars: dict[str, str] = {}
    for key, value in request.query.items():
        name = _name(key)
        if name == "group_by" or name in filters:
            lists.setdefault(name, []).append(value)
        elif name in SCALARS:
            if name in scalars:
                raise invalid(f"{name}: Input should be a single value")
            scalars[name] = value
        else:
            raise invalid(f"{name}: unknown query parameter")
    if "starting_at" not in scalars:
        raise invalid("starting_at: Field required")
    starting_at = _timestamp("starting_at", scalars["starting_at"])
    ending_at = _timestamp("ending_at", scalars["ending_at"]) if "ending_at" in scalars else None
    if ending_at is not None and ending_at <= starting_at:
        raise invalid("ending_at: must be after starting_at")
    width = scalars.get("bucket_width", "1d")
    if width not in limits:
        allowed = " or ".join(repr(w) for w in limits)
        raise invalid(f"bucket_width: Input should be {allowed}")
    default_limit, max_limit = limits[width]
    raw_limit = scalars.get("limit")
    try:
        limit = default_limit if raw_limit is None else int(raw_limit)
    except ValueError:
        raise invalid("limit: Input should be a valid integer") from None
    if not 1 <= limit <= max_limit:
        raise invalid(
            f"limit: Input should be between 1 and {max_limit} for bucket_width {width!r}"
        )
    group_by: list[str] = []
    for value in lists.pop("group_by", []):
        if value not in groups:
            raise invalid(f"group_by: Input should be {' or '.join(repr(g) for g in groups)}")
        if value not in group_by:
            group_by.append(value)
    chosen: dict[str, frozenset[str]] = {}
    for name, values in lists.items():
        allowed_values = filters[name][1]
        if allowed_values is not None:
            for value in values:
                if value not in allowed_values:
                    options = " or ".join(repr(v) for v in allowed_values)
                    raise invalid(f"{name}: Input should be {options}")
        chosen[filters[name][0]] = frozenset(values)
    if ("speed" in group_by or "speed" in chosen) and FAST_MODE_BETA not in _betas(request):
        raise invalid(
            f"speed: grouping or filtering by speed requires the {FAST_MODE_BETA!r} beta "
            "(anthropic-beta header)"
        )
    return Query(
        starting_at=starting_at,
        ending_at=ending_at,
        width=width,
        limit=limit,
        page=scalars.get("page"),
        group_by=tuple(group_by),
        filters=chosen,
    )


# -- buckets and paging ------------------------------------------------------------------------


def rfc3339(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def page_token(seconds: int) -> str:
    return "page_" + base64.b64encode(rfc3339(seconds).encode()).decode()


def _page_start(token: str, *, first: int, end: int, step: int) -> int:
    try:
        if not token.startswith("page_"):
            raise ValueError(token)
        text = base64.b64decode(token[len("page_") :], validate=True).decode()
        seconds = int(dt.datetime.fromisoformat(text).timestamp())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid("page: invalid page token") from None
    if (seconds - first) % step or not first <= seconds < end:
        raise invalid("page: invalid page token (not a page of this query)")
    return seconds


@dataclass(frozen=True)
class Window:
    """The buckets of one page: starts ``first, first+step, …`` below ``stop``; ``next_start``
    is where the next page begins (None: this is the last one)."""

    first: int
    stop: int
    step: int
    next_start: int | None

    def starts(self) -> range:
        return range(self.first, self.stop, self.step)

    def bucket_of(self, moment: float) -> int | None:
        start = math.floor(moment / self.step) * self.step
        return start if self.first <= start < self.stop else None


def window(query: Query, now: float) -> Window:
    """Buckets that start on or after ``starting_at`` (snapped down to the bucket's start in
    UTC) and end on or before ``ending_at`` (default: the end of the bucket holding now)."""
    step = BUCKET_SECONDS[query.width]
    first = math.floor(query.starting_at / step) * step
    end_at = query.ending_at if query.ending_at is not None else math.ceil(now / step) * step
    end = max(first, math.floor(end_at / step) * step)
    start = (
        first if query.page is None else _page_start(query.page, first=first, end=end, step=step)
    )
    stop = min(end, start + query.limit * step)
    return Window(start, stop, step, stop if stop < end else None)


def _page_body(win: Window, rows: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "data": [
            {
                "starting_at": rfc3339(start),
                "ending_at": rfc3339(start + win.step),
                "results": rows.get(start, []),
            }
            for start in win.starts()
        ],
        "has_more": win.next_start is not None,
        "next_page": page_token(win.next_start) if win.next_start is not None else None,
    }


# -- the ledger's rows, as the reports see them --------------------------------------------------


def context_window(usage: dict[str, Any]) -> str:
    return "200k-1M" if prices.prompt_tokens(usage) > LONG_CONTEXT_ABOVE else "0-200k"


def inference_geo(model: str, row: dict[str, Any]) -> str:
    """What the request asked (``global`` unless ``us``); ``not_available`` for models that do
    not take ``inference_geo`` (older than Claude 4.6)."""
    info = model_lookup(model)
    if info is not None and not info.inference_geo:
        return "not_available"
    return str(row.get("inference_geo") or "global")


def dimensions(fingerprint: str, row: dict[str, Any]) -> dict[str, str | None]:
    """Every dimension the reports group or filter by, for one billed response."""
    return {
        "api_key_id": api_key_id(fingerprint),
        "workspace_id": None,
        "model": row["model"],
        "service_tier": row["service_tier"],
        "context_window": context_window(row["usage"]),
        "inference_geo": inference_geo(row["model"], row),
        "speed": str(row.get("speed") or "standard"),
        "account_id": None,
        "service_account_id": None,
    }


def _matches(dims: dict[str, str | None], filters: dict[str, frozenset[str]]) -> bool:
    for dimension, wanted in filters.items():
        value = dims[dimension]
        if dimension == "model" and value is not None:
            if not {value, prices.canonical_model(value)} & wanted:
                return False
        elif value is None or value not in wanted:
            return False
    return True


def billed_rows(
    state: EmulatorState, win: Window, filters: dict[str, frozenset[str]]
) -> Iterable[tuple[int, dict[str, str | None], dict[str, Any]]]:
    """(bucket start, dimensions, ledger row) of every billed response in the page's buckets
    that passes the filters."""
    for fingerprint, account in state.ledger.keys.items():
        for row in account["requests"]:
            start = win.bucket_of(float(row["time"]))
            if start is None:
                continue
            dims = dimensions(fingerprint, row)
            if _matches(dims, filters):
                yield start, dims, row


def _sort_key(key: tuple[str | None, ...]) -> tuple[tuple[bool, str], ...]:
    return tuple((value is not None, value or "") for value in key)


# -- usage report ------------------------------------------------------------------------------


def _empty_usage() -> dict[str, int]:
    return {
        "uncached_input_tokens": 0,
        "cache_5m": 0,
        "cache_1h": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 0,
        "web_search_requests": 0,
    }


def _add_usage(total: dict[str, int], usage: dict[str, Any]) -> None:
    counts = prices.token_counts(usage)
    total["uncached_input_tokens"] += counts[prices.UNCACHED_INPUT]
    total["cache_5m"] += counts[prices.CACHE_WRITE_5M]
    total["cache_1h"] += counts[prices.CACHE_WRITE_1H]
    total["cache_read_input_tokens"] += counts[prices.CACHE_READ]
    total["output_tokens"] += counts[prices.OUTPUT]
    server_tools = usage.get("server_tool_use") or {}
    total["web_search_requests"] += int(server_tools.get("web_search_requests", 0))


def usage_report(state: EmulatorState, query: Query, *, with_speed: bool) -> dict[str, Any]:
    win = window(query, state.now())
    grouped: dict[int, dict[tuple[str | None, ...], dict[str, int]]] = {}
    for start, dims, row in billed_rows(state, win, query.filters):
        key = tuple(dims[name] for name in query.group_by)
        total = grouped.setdefault(start, {}).setdefault(key, _empty_usage())
        _add_usage(total, row["usage"])
    rows: dict[int, list[dict[str, Any]]] = {}
    for start, groups in grouped.items():
        for key in sorted(groups, key=_sort_key):
            total = groups[key]
            values = dict(zip(query.group_by, key, strict=True))
            result: dict[str, Any] = {
                "uncached_input_tokens": total["uncached_input_tokens"],
                "cache_creation": {
                    "ephemeral_1h_input_tokens": total["cache_1h"],
                    "ephemeral_5m_input_tokens": total["cache_5m"],
                },
                "cache_read_input_tokens": total["cache_read_input_tokens"],
                "output_tokens": total["output_tokens"],
                "server_tool_use": {"web_search_requests": total["web_search_requests"]},
            }
            for name in USAGE_GROUPS:
                if name != "speed" or with_speed:
                    result[name] = values.get(name)
            rows.setdefault(start, []).append(result)
    return _page_body(win, rows)


async def handle_usage_report(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    authenticate_admin(request, state)
    query = parse_query(request, groups=USAGE_GROUPS, filters=USAGE_FILTERS, limits=USAGE_LIMITS)
    with_speed = FAST_MODE_BETA in _betas(request)
    return json_response(usage_report(state, query, with_speed=with_speed))


# -- cost report -------------------------------------------------------------------------------

# A cost line's identity when grouping by description: what its price depends on.
LineKey = tuple[str | None, ...]  # (model, cost_type, token_type, tier, window, geo, speed)
TOKEN_ORDER = {kind: i for i, kind in enumerate(prices.TOKEN_TYPES)}


def description(key: LineKey) -> str:
    """The emulator's wording of a cost line, e.g. "Claude Sonnet 4.6 Usage - Input Tokens
    (Batch)"; it names everything that makes the line's price, so lines never merge."""
    model, cost_type, token_type, tier, window_, geo, speed = key
    if cost_type == "web_search":
        return "Web Search"
    info = model_lookup(model or "")
    name = info.display_name if info is not None else str(model)
    text = f"{name} Usage - {TOKEN_LABELS[str(token_type)]}"
    qualifiers = [
        label
        for label, applies in (
            ("Batch", tier == "batch"),
            ("Long Context", window_ == "200k-1M"),
            ("US-only inference", geo == "us"),
            ("Fast mode", speed == "fast"),
        )
        if applies
    ]
    return text + (f" ({', '.join(qualifiers)})" if qualifiers else "")


def _line_key(dims: dict[str, str | None], charge: prices.Charge) -> LineKey:
    if charge.cost_type == "web_search":
        return (None, "web_search", None, None, None, None, None)
    return (
        dims["model"],
        "tokens",
        charge.token_type,
        dims["service_tier"],
        dims["context_window"],
        dims["inference_geo"],
        dims["speed"],
    )


def _line_order(key: LineKey) -> tuple[Any, ...]:
    model, cost_type, token_type, tier, window_, geo, speed = key
    return (
        cost_type != "tokens",
        model or "",
        tier or "",
        speed or "",
        geo or "",
        window_ or "",
        TOKEN_ORDER.get(token_type or "", 0),
    )


def cost_report(state: EmulatorState, query: Query) -> dict[str, Any]:
    win = window(query, state.now())
    by_description = "description" in query.group_by
    grouped: dict[int, dict[LineKey, Decimal]] = {}
    for start, dims, row in billed_rows(state, win, {}):
        day = dt.datetime.fromtimestamp(float(row["time"]), dt.UTC).date()
        price = prices.price_for(row["model"], speed=str(dims["speed"]), on=day)
        if price is None:
            continue  # an unpriced model (or speed): tokens in the usage report, no cost line
        lines = grouped.setdefault(start, {})
        for charge in prices.charges(price, row["usage"]):
            key: LineKey = _line_key(dims, charge) if by_description else ()
            lines[key] = lines.get(key, Decimal(0)) + charge.usd
    rows: dict[int, list[dict[str, Any]]] = {}
    for start, lines in grouped.items():
        for key in sorted(lines, key=_line_order) if by_description else list(lines):
            rows.setdefault(start, []).append(_cost_row(key, lines[key], by_description))
    return _page_body(win, rows)


def _cost_row(key: LineKey, usd: Decimal, by_description: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "amount": prices.cents_text(usd),
        "currency": "USD",
        "cost_type": None,
        "context_window": None,
        "description": None,
        "inference_geo": None,
        "model": None,
        "service_tier": None,
        "token_type": None,
        "workspace_id": None,
    }
    if by_description:
        model, cost_type, token_type, tier, window_, geo, _speed = key
        row.update(
            cost_type=cost_type,
            description=description(key),
            model=model,
            token_type=token_type,
            service_tier=tier,
            context_window=window_,
            inference_geo=geo,
        )
    return row


async def handle_cost_report(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    authenticate_admin(request, state)
    query = parse_query(request, groups=COST_GROUPS, filters={}, limits=COST_LIMITS)
    return json_response(cost_report(state, query))
