"""Reconciliation of ``audit_log`` against Anthropic's own books (the Admin API's usage and
cost reports), per UTC day.

What is compared. The usage report is read grouped by ``api_key_id``, ``model``,
``service_tier``, ``context_window`` and ``inference_geo``; the cost report grouped by
``description`` (one amount per model, token type, tier, context window and geo). A *cell* is
one day × model × tier × context window × geo (``us`` or not) × token type (uncached input,
5-minute writes, 1-hour writes, cache reads, output, web searches). In each cell:

- ``R`` = the report's tokens on the gateway's own key (setting ``ANTHROPIC_API_KEY_ID``),
  ``A`` = ``audit_log``'s tokens (billed rows only: response-cache hits never reached the API);
- **unattributed** = ``max(0, R - A)``: billed on the gateway's key, not in ``audit_log`` —
  traffic that used the organization's key without going through the gateway. It does not
  break ``match``. (The reports are sums per day: such traffic cannot be told apart from a
  call the gateway made and failed to record, which the gateway's own guarantee — every billed
  response recorded exactly once — rules out; the page names both causes.)
- **missing_from_audit** = ``max(0, A - R)``: in ``audit_log`` but missing from Anthropic's
  books for our key (recorded twice, on the wrong day, model or tier, or a provisional bucket
  not yet complete). It breaks ``match``.
- **price drift** = Anthropic's price of the matched tokens ``min(R, A)`` minus ours (the rates
  recorded on the audit rows), plus any cost line with no tokens behind it. Anthropic's price
  of a cell is its cost-report amount over the cell's tokens on every key, so it is exact when a
  cell has one rate (always, except Haiku 5.5's 100k band and fast mode, which the reports do
  not split). A day's drift within ``RECONCILE_COST_TOLERANCE_USD`` (default half a cent: the
  report's amounts are cents, "to the cent") still matches.
- Traffic on *other* keys of the organization is not the gateway's: shown as ``other keys``.

Amounts stay exact: picodollars as ``Decimal`` (1 cent = 10**10 pico), rounded only when
printed.

Provisional days: the real API delays its data (minutes, plus late corrections), so a day is
*final* only once it ended ``RECONCILE_SETTLE_HOURS`` (default 24) ago; until then its row is
marked provisional and is recomputed on every run.

Idempotent and resumable: each day has one ``ReconciliationDay`` row, replaced by every run
that covers it (same inputs, same row); a day already final and matched is not fetched again
(``refetch=True`` recomputes it). Every run is kept as a ``ReconciliationRun`` with its result.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Case, CharField, F, Sum, Value, When
from django.db.models.functions import TruncDate
from django.utils import timezone

from llm_calls import client, conf
from llm_calls.retry import ClientResponse, RetryPolicy, call_with_retry
from usage.models import AuditLog, Outcome, ReconciliationDay, ReconciliationRun, ServiceTier

PICO_PER_CENT = Decimal(10**10)
PICO_PER_USD = Decimal(10**12)
LONG_CONTEXT_ABOVE = 200_000  # the reports' context_window split: "0-200k" / "200k-1M"

# Token types, in the cost report's spelling; "web_search" is the per-search cost line.
UNCACHED = "uncached_input_tokens"
WRITE_5M = "cache_creation.ephemeral_5m_input_tokens"
WRITE_1H = "cache_creation.ephemeral_1h_input_tokens"
READ = "cache_read_input_tokens"
OUTPUT = "output_tokens"
WEB_SEARCH = "web_search"
TOKEN_TYPES = (UNCACHED, WRITE_5M, WRITE_1H, READ, OUTPUT)
KINDS = (*TOKEN_TYPES, WEB_SEARCH)

# audit_log column and its recorded rate, per kind.
_AUDIT_COLUMNS = {
    UNCACHED: ("input_tokens", "input_rate_pico_usd"),
    WRITE_5M: ("cache_creation_5m_tokens", "cache_write_5m_rate_pico_usd"),
    WRITE_1H: ("cache_creation_1h_tokens", "cache_write_1h_rate_pico_usd"),
    READ: ("cache_read_input_tokens", "cache_read_rate_pico_usd"),
    OUTPUT: ("output_tokens", "output_rate_pico_usd"),
    WEB_SEARCH: ("web_search_requests", "web_search_rate_pico_usd"),
}

# (day, model, service_tier, context_window, geo) — geo is "us" or "global" (the reports'
# "not_available", for models without the parameter, counts as global: no x1.1).
CellKey = tuple[dt.date, str, str, str, str]
_DAY_CELL = ("", "", "", "")  # web search: one cost line a day, no model or tier


class ReconcileError(Exception):
    """The reconciliation cannot run (bad configuration or window); the message says why."""


# --- settings (read at call time, so override_settings applies) --------------------------------


def gateway_api_key_id() -> str:
    """The ``api_key_id`` under which Anthropic's usage report lists the gateway's key."""
    value = str(getattr(settings, "ANTHROPIC_API_KEY_ID", "") or "").strip()
    if not value:
        raise ImproperlyConfigured(
            "ANTHROPIC_API_KEY_ID is not set: set it to the id of the gateway's API key as the "
            "usage report lists it (Claude Console → API keys; for the emulator, "
            "EmulatorProcess.api_key_id(key) or POST /_emulator/api_key_id)."
        )
    return value


def settle_hours() -> float:
    return float(getattr(settings, "RECONCILE_SETTLE_HOURS", 24))


def alert_usd() -> float:
    """Unattributed spend (USD, per run) above which /metrics raises the reconciliation alert."""
    return float(getattr(settings, "RECONCILE_ALERT_USD", 1.0))


def cost_tolerance_pico() -> Decimal:
    return Decimal(str(getattr(settings, "RECONCILE_COST_TOLERANCE_USD", "0.005"))) * PICO_PER_USD


# --- fetching -----------------------------------------------------------------------------------


def _rfc3339(day: dt.date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def _all_pages(
    fetch: Callable[..., ClientResponse[dict[str, Any]]],
    query: Mapping[str, Any],
    policy: RetryPolicy,
) -> Iterator[dict[str, Any]]:
    """Every bucket of a report, following ``next_page``; each page under the retry policy."""
    page: str | None = None
    while True:
        q: dict[str, Any] = dict(query, page=page) if page else dict(query)

        def attempt(_n: int, q: dict[str, Any] = q) -> ClientResponse[dict[str, Any]]:
            return fetch(query=q)

        outcome = call_with_retry(attempt=attempt, policy=policy)
        body = outcome.response.value
        yield from body.get("data") or []
        page = body.get("next_page")
        if not body.get("has_more") or not page:
            return


def _bucket_day(bucket: Mapping[str, Any]) -> dt.date:
    return dt.date.fromisoformat(str(bucket["starting_at"])[:10])


def _geo(value: object) -> str:
    return "us" if value == "us" else "global"


@dataclass
class Cell:
    """One day × model × tier × context window × geo, every figure per kind."""

    ours_key: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    all_keys: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    audit: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    audit_cost_pico: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    their_cost_pico: dict[str, Decimal | None] = field(
        default_factory=lambda: dict.fromkeys(KINDS, None)
    )


def _usage_counts(result: Mapping[str, Any]) -> dict[str, int]:
    creation = result.get("cache_creation") or {}
    tools = result.get("server_tool_use") or {}
    return {
        UNCACHED: int(result.get("uncached_input_tokens") or 0),
        WRITE_5M: int(creation.get("ephemeral_5m_input_tokens") or 0),
        WRITE_1H: int(creation.get("ephemeral_1h_input_tokens") or 0),
        READ: int(result.get("cache_read_input_tokens") or 0),
        OUTPUT: int(result.get("output_tokens") or 0),
        WEB_SEARCH: int(tools.get("web_search_requests") or 0),
    }


@dataclass
class Books:
    """Both sides for a window: cells, plus cost lines that belong to no token cell."""

    cells: dict[CellKey, Cell] = field(default_factory=dict)
    other_costs_pico: dict[dt.date, Decimal] = field(default_factory=dict)

    def cell(self, key: CellKey) -> Cell:
        return self.cells.setdefault(key, Cell())


def fetch_reports(
    *, books: Books, since: dt.date, until: dt.date, key_id: str, policy: RetryPolicy
) -> None:
    """Read both reports for the whole days ``since``..``until`` (inclusive) into ``books``."""
    window = {
        "starting_at": _rfc3339(since),
        "ending_at": _rfc3339(until + dt.timedelta(days=1)),
        "bucket_width": "1d",
        "limit": 31,
    }
    usage_query = {
        **window,
        "group_by": ["api_key_id", "model", "service_tier", "context_window", "inference_geo"],
    }
    for bucket in _all_pages(client.usage_report, usage_query, policy):
        day = _bucket_day(bucket)
        for result in bucket.get("results") or []:
            key = (
                day,
                str(result.get("model") or ""),
                str(result.get("service_tier") or ""),
                str(result.get("context_window") or ""),
                _geo(result.get("inference_geo")),
            )
            counts = _usage_counts(result)
            cell = books.cell(key)
            searches = books.cell((day, *_DAY_CELL))
            ours = result.get("api_key_id") == key_id
            for kind in TOKEN_TYPES:
                cell.all_keys[kind] += counts[kind]
                if ours:
                    cell.ours_key[kind] += counts[kind]
            searches.all_keys[WEB_SEARCH] += counts[WEB_SEARCH]
            if ours:
                searches.ours_key[WEB_SEARCH] += counts[WEB_SEARCH]

    cost_query = {**window, "group_by": ["description"]}
    for bucket in _all_pages(client.cost_report, cost_query, policy):
        day = _bucket_day(bucket)
        for line in bucket.get("results") or []:
            pico = Decimal(str(line.get("amount") or "0")) * PICO_PER_CENT
            cost_type = line.get("cost_type")
            token_type = line.get("token_type")
            if cost_type == "tokens" and token_type in TOKEN_TYPES:
                key = (
                    day,
                    str(line.get("model") or ""),
                    str(line.get("service_tier") or ""),
                    str(line.get("context_window") or ""),
                    _geo(line.get("inference_geo")),
                )
                kind = str(token_type)
            elif cost_type == "web_search":
                key, kind = (day, *_DAY_CELL), WEB_SEARCH
            else:  # code execution, sessions: not the Messages API the gateway relays
                books.other_costs_pico[day] = books.other_costs_pico.get(day, Decimal(0)) + pico
                continue
            cell = books.cell(key)
            cell.their_cost_pico[kind] = (cell.their_cost_pico[kind] or Decimal(0)) + pico


_TIER_NAMES = {tier.value: tier.label for tier in ServiceTier}


def read_audit(*, books: Books, since: dt.date, until: dt.date) -> None:
    """audit_log's billed rows for the days ``since``..``until`` into ``books``' cells."""
    start = dt.datetime.combine(since, dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    prompt = F("input_tokens") + F("cache_creation_input_tokens") + F("cache_read_input_tokens")
    sums: dict[str, Any] = {}
    for kind, (column, rate) in _AUDIT_COLUMNS.items():
        sums[f"t_{kind}"] = Sum(column)
        sums[f"c_{kind}"] = Sum(F(column) * F(rate))
    # The context window is per call, so it is decided per row (in SQL) before summing.
    base = (
        AuditLog.objects.filter(occurred_at__gte=start, occurred_at__lt=end)
        .exclude(outcome=Outcome.RESPONSE_CACHE_HIT)
        .alias(prompt=prompt)
        .annotate(
            day=TruncDate("occurred_at", tzinfo=dt.UTC),
            window=Case(
                When(prompt__gt=LONG_CONTEXT_ABOVE, then=Value("200k-1M")),
                default=Value("0-200k"),
                output_field=CharField(),
            ),
        )
        .values("day", "model", "service_tier", "inference_geo", "window")
        .annotate(**sums)
        .order_by()
    )
    row: dict[str, Any]
    for row in base:  # type: ignore[assignment]  # the sums' names are built per kind
        day = row["day"]
        tier = _TIER_NAMES.get(row["service_tier"], "unknown")
        key = (day, row["model"], tier, row["window"], _geo(row["inference_geo"]))
        cell = books.cell(key)
        searches = books.cell((day, *_DAY_CELL))
        for kind in KINDS:
            target = searches if kind == WEB_SEARCH else cell
            target.audit[kind] += int(row[f"t_{kind}"] or 0)
            target.audit_cost_pico[kind] += int(row[f"c_{kind}"] or 0)


# --- comparing ----------------------------------------------------------------------------------

_SUMMARY_TOKENS = {
    "input_tokens": (UNCACHED,),
    "output_tokens": (OUTPUT,),
    "cache_read_input_tokens": (READ,),
    "cache_creation_input_tokens": (WRITE_5M, WRITE_1H),
}


@dataclass
class DayFigures:
    """One day's comparison; token dicts are per kind, money in exact picodollars."""

    day: dt.date
    final: bool
    ours: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    theirs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    unattributed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    missing: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    our_cost: Decimal = Decimal(0)
    their_cost: Decimal = Decimal(0)  # the whole organization's bill for the day
    their_cost_our_key: Decimal = Decimal(0)
    unattributed_cost: Decimal = Decimal(0)
    missing_cost: Decimal = Decimal(0)
    other_keys_cost: Decimal = Decimal(0)
    other_costs: Decimal = Decimal(0)
    price_drift: Decimal = Decimal(0)
    by_model: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def match(self) -> bool:
        return not any(self.missing.values()) and abs(self.price_drift) <= cost_tolerance_pico()

    def causes(self) -> list[str]:
        """The likely cause of each difference, in words for the page."""
        out = []
        if any(self.unattributed.values()):
            out.append(
                f"Unattributed spend ({usd_text(self.unattributed_cost)}): traffic on the "
                "gateway's key that did not go through the gateway (or a call billed but never "
                "recorded)."
            )
        if any(self.missing.values()):
            out.append(
                f"Recorded but not billed on our key ({usd_text(self.missing_cost)}): a call "
                "recorded twice or under the wrong day, model or tier"
                + (", or the report has not caught up yet." if not self.final else ".")
            )
        if abs(self.price_drift) > cost_tolerance_pico():
            out.append(
                f"Price-sheet drift ({usd_text(self.price_drift)}): Anthropic's price differs "
                "from our price × tokens — check the price sheet for this day."
            )
        elif self.price_drift:
            out.append("Rounding only (within the tolerance).")
        if self.other_keys_cost:
            out.append(
                f"Other keys of the organization: {usd_text(self.other_keys_cost)} (not the "
                "gateway's)."
            )
        if not self.final:
            out.append("Provisional: Anthropic's figures for this day may still change.")
        return out or ["Everything agrees."]

    def as_json(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "final": self.final,
            "match": self.match,
            "ours": self.ours,
            "theirs_our_key": self.theirs,
            "unattributed": self.unattributed,
            "missing_from_audit": self.missing,
            "pico_usd": {
                name: str(_exact(getattr(self, name)))
                for name in (
                    "our_cost",
                    "their_cost",
                    "their_cost_our_key",
                    "unattributed_cost",
                    "missing_cost",
                    "other_keys_cost",
                    "other_costs",
                    "price_drift",
                )
            },
            "by_model": self.by_model,
            "causes": self.causes(),
        }


def _exact(value: Decimal) -> Decimal:
    """A picodollar amount as a whole number when it is one, else as it is."""
    return value.to_integral_value() if value == value.to_integral_value() else value.normalize()


def usd(pico: Decimal | int) -> Decimal:
    return Decimal(pico) / PICO_PER_USD


def usd_number(pico: Decimal | int) -> float:
    """USD for the JSON line: a number rounded to a millionth of a dollar (1/10,000 cent)."""
    return float(usd(pico).quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN))


def usd_text(pico: Decimal | int) -> str:
    return f"${usd(pico).quantize(Decimal('0.000001'), rounding=ROUND_HALF_EVEN)}"


def compare(*, books: Books, days: Iterable[dt.date], now: dt.datetime) -> list[DayFigures]:
    settle = dt.timedelta(hours=settle_hours())
    figures = {
        day: DayFigures(
            day=day,
            final=dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC) + settle
            <= now,
        )
        for day in days
    }
    for day, pico in books.other_costs_pico.items():
        if day in figures:
            figures[day].other_costs += pico
    for key, cell in books.cells.items():
        fig = figures.get(key[0])
        if fig is None:
            continue
        model = fig.by_model.setdefault(
            key[1] or WEB_SEARCH, {"ours": 0, "theirs_our_key": 0, "unattributed": 0, "missing": 0}
        )
        for kind in KINDS:
            ours, theirs, all_keys = cell.audit[kind], cell.ours_key[kind], cell.all_keys[kind]
            their_cost = cell.their_cost_pico[kind]
            matched = min(ours, theirs)
            fig.ours[kind] += ours
            fig.theirs[kind] += theirs
            fig.unattributed[kind] += theirs - matched
            fig.missing[kind] += ours - matched
            for name, value in (
                ("ours", ours),
                ("theirs_our_key", theirs),
                ("unattributed", theirs - matched),
                ("missing", ours - matched),
            ):
                model[name] += value
            our_cost = Decimal(cell.audit_cost_pico[kind])
            fig.our_cost += our_cost
            our_rate = our_cost / ours if ours else Decimal(0)
            fig.missing_cost += (ours - matched) * our_rate
            if their_cost is None:
                # No cost line: a model without a price (both sides 0) or a tier the cost
                # report leaves out (Priority Tier); nothing to compare the price with.
                continue
            fig.their_cost += their_cost
            if not all_keys:
                fig.price_drift += their_cost  # billed with no tokens behind it
                continue
            rate = their_cost / all_keys
            fig.their_cost_our_key += theirs * rate
            fig.unattributed_cost += (theirs - matched) * rate
            fig.other_keys_cost += (all_keys - theirs) * rate
            fig.price_drift += matched * rate - matched * our_rate
    return [figures[day] for day in sorted(figures)]


def summary(days: list[dict[str, Any]]) -> dict[str, Any]:
    """The command's last line, exactly the keys the issue lists, from days as stored
    (``DayFigures.as_json``): totals summed exactly, rounded once."""

    def pico(name: str) -> Decimal:
        return sum((Decimal(d["pico_usd"][name]) for d in days), Decimal(0))

    def side(tokens: str, cost: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            name: sum(int(d[tokens][kind]) for d in days for kind in kinds)
            for name, kinds in _SUMMARY_TOKENS.items()
        }
        out["cost_usd"] = usd_number(pico(cost))
        return out

    return {
        "days": [
            {
                "day": d["day"],
                "final": d["final"],
                "match": d["match"],
                "unattributed_cost_usd": usd_number(Decimal(d["pico_usd"]["unattributed_cost"])),
                "price_drift_usd": usd_number(Decimal(d["pico_usd"]["price_drift"])),
            }
            for d in days
        ],
        "match": all(d["match"] for d in days),
        "unattributed": side("unattributed", "unattributed_cost"),
        "missing_from_audit": side("missing_from_audit", "missing_cost"),
        "price_drift_usd": usd_number(pico("price_drift")),
    }


# --- the service --------------------------------------------------------------------------------


def _days(since: dt.date, until: dt.date) -> list[dt.date]:
    return [since + dt.timedelta(days=n) for n in range((until - since).days + 1)]


def default_window(now: dt.datetime | None = None) -> tuple[dt.date, dt.date]:
    """The last seven UTC days, today included (today is provisional)."""
    today = (now or timezone.now()).astimezone(dt.UTC).date()
    return today - dt.timedelta(days=6), today


def reconciliation_run(
    *,
    since: dt.date,
    until: dt.date,
    refetch: bool = False,
    policy: RetryPolicy | None = None,
    now: dt.datetime | None = None,
) -> ReconciliationRun:
    """Reconcile the UTC days ``since``..``until`` (inclusive) and store the result.

    Raises ``ReconcileError`` for a bad window or configuration and ``ClaudeCallError`` when a
    report cannot be read after retries (nothing is stored then but the failed run). Days
    already final and matched are taken from their stored rows unless ``refetch``.
    """
    if until < since:
        raise ReconcileError(f"--until {until} is before --since {since}.")
    now = now or timezone.now()
    if since > now.astimezone(dt.UTC).date():
        raise ReconcileError(f"--since {since} is in the future.")
    try:
        key_id = gateway_api_key_id()
        conf.admin_endpoint()
    except ImproperlyConfigured as err:
        raise ReconcileError(str(err)) from err

    days = _days(since, until)
    stored = {row.day: row for row in ReconciliationDay.objects.filter(day__in=days)}
    settled = {day for day, row in stored.items() if row.final and row.match and not refetch}
    todo = [day for day in days if day not in settled]
    run = ReconciliationRun.objects.create(since=since, until=until, started_at=timezone.now())

    computed: list[DayFigures] = []
    if todo:
        books = Books()
        try:
            fetch_reports(
                books=books,
                since=todo[0],
                until=todo[-1],
                key_id=key_id,
                policy=policy or RetryPolicy.from_settings(),
            )
        except Exception as err:
            run.error = f"{type(err).__name__}: {err}"[:500]
            run.finished_at = timezone.now()
            run.save(update_fields=["error", "finished_at"])
            raise
        read_audit(books=books, since=todo[0], until=todo[-1])
        computed = compare(books=books, days=todo, now=now)

    per_day = {d.day.isoformat(): d.as_json() for d in computed}
    for day in settled:
        per_day[day.isoformat()] = stored[day].detail
    ordered = [per_day[d.isoformat()] for d in days]
    line = summary(ordered)
    with transaction.atomic():
        for fig in computed:
            ReconciliationDay.objects.update_or_create(
                day=fig.day,
                defaults={
                    "final": fig.final,
                    "match": fig.match,
                    "detail": fig.as_json(),
                    "run": run,
                    "unattributed_cost_pico_usd": int(fig.unattributed_cost.to_integral_value()),
                },
            )
        run.result = {"summary": line, "days": ordered}
        run.match = bool(line["match"])
        run.final = all(d["final"] for d in ordered)
        run.finished_at = timezone.now()
        run.save(update_fields=["result", "match", "final", "finished_at"])
    return run


# --- reads for the page and /metrics ------------------------------------------------------------


def recent_days(*, limit: int = 31) -> list[ReconciliationDay]:
    return list(ReconciliationDay.objects.order_by("-day")[:limit])


def latest_run() -> ReconciliationRun | None:
    return ReconciliationRun.objects.filter(finished_at__isnull=False, error="").first()


def page_row(row: ReconciliationDay) -> dict[str, Any]:
    """One day for the staff page: token totals (web searches apart), USD amounts, causes."""
    detail = row.detail

    def tokens(side: str) -> int:
        return sum(int(detail.get(side, {}).get(kind, 0)) for kind in TOKEN_TYPES)

    money = {name: usd(Decimal(value)) for name, value in (detail.get("pico_usd") or {}).items()}
    return {
        "day": row.day,
        "final": row.final,
        "match": row.match,
        "ours_tokens": tokens("ours"),
        "theirs_tokens": tokens("theirs_our_key"),
        "unattributed_tokens": tokens("unattributed"),
        "missing_tokens": tokens("missing_from_audit"),
        **{f"{name}_usd": value for name, value in money.items()},
        "causes": detail.get("causes") or [],
        "checked_at": row.run.finished_at if row.run else None,
    }
