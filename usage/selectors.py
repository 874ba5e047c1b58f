"""Reads for the dashboards, the JSON API, CSV exports and /metrics.

Everything over a date range reads the rollup tables (``UsageDaily``,
``OrganizationUsageDaily``, ``SessionUsage``), never a GROUP BY over ``audit_log``; only one
session's calls (few, by index), the streamed audit export and a gateway key's spend (a quota
counter's rebuild; ``spend_since``) read ``audit_log``. Pages and
JSON build their numbers from the same ``Totals.as_dict()``, so they cannot disagree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, Generic, TypeVar

from django.contrib.auth import get_user_model
from django.db.models import ExpressionWrapper, F, FloatField, Q, QuerySet, Sum

from organizations.models import Organization
from usage.forms import DateRange
from usage.models import (
    AuditLog,
    OrganizationUsageDaily,
    Outcome,
    ServiceTier,
    SessionUsage,
    Speed,
    UnpricedModel,
    UsageCounters,
    UsageDaily,
    UserUsageDaily,
)
from usage.pricing import pico_to_usd, pico_to_usd_str

USERS_PER_PAGE = 100
SESSIONS_PER_PAGE = 50
SESSION_CALLS_LIMIT = 1000  # per JSON page: a chart of more calls than this is unreadable anyway


@dataclass
class Totals:
    """Summed counters of some rollup rows, and the figures derived from them.

    ``cache_hit_rate`` is cache-read tokens over all input tokens (plain input + cache writes +
    cache reads); ``saved_usd`` is the uncached cost minus the cost actually billed. A cost
    total is never shown without ``unpriced_calls`` beside it: calls on a model with no price
    are in it at $0. (Fields: the rollup counters, ``UsageCounters.COUNTER_FIELDS``; a test
    holds the two equal.)
    """

    requests: int = 0
    errors: int = 0
    response_cache_hits: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_5m_tokens: int = 0
    cache_creation_1h_tokens: int = 0
    cache_read_input_tokens: int = 0
    thinking_tokens: int = 0
    web_search_requests: int = 0
    cost_pico_usd: int = 0
    uncached_cost_pico_usd: int = 0
    latency_ms_sum: int = 0
    queue_wait_ms_sum: int = 0
    price_missing: int = 0  # calls on a model with no price: in cost_pico_usd at $0

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], prefix: str = "") -> Totals:
        """From counter values keyed by field name (``prefix`` + name for SUM annotations,
        which may not reuse a model field's name). An empty SUM (NULL) is 0."""
        return cls(**{f.name: int(values.get(prefix + f.name) or 0) for f in fields(cls)})

    def add(self, other: Totals) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    @property
    def cache_write_tokens(self) -> int:
        return self.cache_creation_5m_tokens + self.cache_creation_1h_tokens

    @property
    def total_input_tokens(self) -> int:
        return self.input_tokens + self.cache_write_tokens + self.cache_read_input_tokens

    @property
    def total_tokens(self) -> int:
        return self.total_input_tokens + self.output_tokens

    @property
    def cache_hit_rate(self) -> float:
        total = self.total_input_tokens
        return round(self.cache_read_input_tokens / total, 4) if total else 0.0

    @property
    def cost_usd(self) -> Decimal:
        return pico_to_usd(self.cost_pico_usd)

    @property
    def uncached_cost_usd(self) -> Decimal:
        return pico_to_usd(self.uncached_cost_pico_usd)

    @property
    def saved_usd(self) -> Decimal:
        return pico_to_usd(self.uncached_cost_pico_usd - self.cost_pico_usd)

    @property
    def avg_latency_ms(self) -> float:
        return round(self.latency_ms_sum / self.requests, 1) if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape. Money is an exact decimal string; ratios are numbers."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "response_cache_hits": self.response_cache_hits,
            "retries": self.retries,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_write_5m_tokens": self.cache_creation_5m_tokens,
            "cache_write_1h_tokens": self.cache_creation_1h_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cache_read_tokens": self.cache_read_input_tokens,
            "total_input_tokens": self.total_input_tokens,
            "total_tokens": self.total_tokens,
            "cache_hit_rate": self.cache_hit_rate,
            "thinking_tokens": self.thinking_tokens,
            "web_search_requests": self.web_search_requests,
            "cost_usd": pico_to_usd_str(self.cost_pico_usd),
            "unpriced_calls": self.price_missing,
            "uncached_cost_usd": pico_to_usd_str(self.uncached_cost_pico_usd),
            "saved_usd": pico_to_usd_str(self.uncached_cost_pico_usd - self.cost_pico_usd),
            "avg_latency_ms": self.avg_latency_ms,
        }


_P = "sum_"
_SUMS = {_P + name: Sum(name) for name in UsageCounters.COUNTER_FIELDS}


def _owner(user_id: int | None) -> Q:
    """Rows of this user, or system rows (no user) for None."""
    return Q(user__isnull=True) if user_id is None else Q(user_id=user_id)


def _summed(row: Mapping[str, Any]) -> Totals:
    return Totals.from_mapping(row, prefix=_P)


def _totals(qs: QuerySet[Any]) -> Totals:
    return _summed(qs.aggregate(**_SUMS))


def _rollup_qs(
    *, user_id: int | None, organization_id: int | None, date_range: DateRange, per_model: bool
) -> QuerySet[Any]:
    """The smallest rollup that answers for a scope over the range.

    Everyone (both None) and one organization read the organization rollup; one user reads
    the per-user rollup (all models together) unless ``per_model``; one user *within* an
    organization reads the per-model rollup, the only one carrying both columns — so an
    organization admin never sees what a member spent while billed to another organization.
    """
    days = Q(day__gte=date_range.start, day__lte=date_range.end)
    if user_id is None:
        qs: QuerySet[Any] = OrganizationUsageDaily.objects.filter(days)
        return qs if organization_id is None else qs.filter(organization_id=organization_id)
    if organization_id is not None:
        return UsageDaily.objects.filter(days, user_id=user_id, organization_id=organization_id)
    if per_model:
        return UsageDaily.objects.filter(days, user_id=user_id)
    return UserUsageDaily.objects.filter(days, user_id=user_id)


def _organization(organization_id: int | None) -> Q:
    """Rows billed to this organization, or every row for None (no organization scope)."""
    return Q() if organization_id is None else Q(organization_id=organization_id)


# --- one user, one organization, or everyone, over a range ------------------------------------
#
# Every reader below takes ``organization_id`` (None: no organization scope): the rows billed to
# that organization only. The organization admin's pages are these same readers so scoped.


def usage_summary(
    *, user_id: int | None, date_range: DateRange, organization_id: int | None = None
) -> Totals:
    """Totals for one user, one organization, or everyone (``user_id`` None)."""
    return _totals(
        _rollup_qs(
            user_id=user_id,
            organization_id=organization_id,
            date_range=date_range,
            per_model=False,
        )
    )


@dataclass
class DayUsage:
    day: dt.date
    totals: Totals

    def as_dict(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), **self.totals.as_dict()}


def usage_by_day(
    *, user_id: int | None, date_range: DateRange, organization_id: int | None = None
) -> list[DayUsage]:
    """One entry per day of the range (days without calls are zeros, so charts keep scale)."""
    qs = _rollup_qs(
        user_id=user_id, organization_id=organization_id, date_range=date_range, per_model=False
    )
    by_day = {
        row["day"]: _summed(row) for row in qs.values("day").annotate(**_SUMS).order_by("day")
    }
    return [DayUsage(day=d, totals=by_day.get(d) or Totals()) for d in date_range.each_day()]


@dataclass
class ModelUsage:
    model: str
    totals: Totals

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, **self.totals.as_dict()}


def usage_by_model(
    *, user_id: int | None, date_range: DateRange, organization_id: int | None = None
) -> list[ModelUsage]:
    qs = _rollup_qs(
        user_id=user_id, organization_id=organization_id, date_range=date_range, per_model=True
    )
    rows = qs.values("model").annotate(**_SUMS).order_by("model")
    result = [ModelUsage(model=r["model"], totals=_summed(r)) for r in rows]
    result.sort(key=lambda m: (-m.totals.cost_pico_usd, m.model))
    return result


def billed_to_organization(*, user_id: int, organization_id: int) -> bool:
    """Whether any of ``user_id``'s usage was billed to the organization (a former member's
    history stays the organization's)."""
    # pk lookups: an id too large for the database is "none", not an overflow (it is a URL's)
    return UsageDaily.objects.filter(user__pk=user_id, organization__pk=organization_id).exists()


# --- sessions ----------------------------------------------------------------------------------


@dataclass
class SessionRow:
    session_id: str
    user_id: int | None
    first_at: dt.datetime
    last_at: dt.datetime
    totals: Totals

    def as_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "user_id": self.user_id,
            "first_at": self.first_at.isoformat(),
            "last_at": self.last_at.isoformat(),
            **self.totals.as_dict(),
        }


def _session_row(s: SessionUsage) -> SessionRow:
    return SessionRow(
        session_id=s.session_id,
        user_id=s.user_id,
        first_at=s.first_at,
        last_at=s.last_at,
        totals=Totals.from_mapping({f: getattr(s, f) for f in UsageCounters.COUNTER_FIELDS}),
    )


T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    items: list[T]
    number: int
    has_next: bool
    total: int | None = None

    @property
    def has_previous(self) -> bool:
        return self.number > 1


def sessions_for_user(
    *,
    user_id: int,
    date_range: DateRange,
    page: int = 1,
    per_page: int = SESSIONS_PER_PAGE,
    organization_id: int | None = None,
) -> Page[SessionRow]:
    """A user's sessions active in the range, newest first, each with its whole-session totals."""
    qs = SessionUsage.objects.filter(
        _organization(organization_id),
        user_id=user_id,
        last_at__gte=date_range.start_datetime(),
        first_at__lt=date_range.end_datetime_exclusive(),
    ).order_by("-last_at", "-id")
    total = qs.count()
    offset = (page - 1) * per_page
    rows = [_session_row(s) for s in qs[offset : offset + per_page]]
    return Page(items=rows, number=page, has_next=offset + per_page < total, total=total)


def iter_sessions_for_user(
    *, user_id: int, date_range: DateRange, organization_id: int | None = None
) -> Iterator[SessionRow]:
    qs = SessionUsage.objects.filter(
        _organization(organization_id),
        user_id=user_id,
        last_at__gte=date_range.start_datetime(),
        first_at__lt=date_range.end_datetime_exclusive(),
    ).order_by("-last_at", "-id")
    for s in qs.iterator(chunk_size=2000):
        yield _session_row(s)


def session_for_user(
    *, user_id: int | None, session_id: str, organization_id: int | None = None
) -> SessionRow | None:
    s = SessionUsage.objects.filter(
        _owner(user_id), _organization(organization_id), session_id=session_id
    ).first()
    return None if s is None else _session_row(s)


def session_owner_id(*, session_id: str) -> int | None:
    """For staff opening a session id without saying whose: the most recently active owner."""
    return (
        SessionUsage.objects.filter(session_id=session_id)
        .order_by("-last_at")
        .values_list("user_id", flat=True)
        .first()
    )


@dataclass
class CallRow:
    id: int
    occurred_at: dt.datetime
    model: str
    outcome: str
    attempts: int
    final_status: int | None
    error_type: str
    input_tokens: int
    output_tokens: int
    cache_write_tokens: int
    cache_read_tokens: int
    thinking_tokens: int
    web_search_requests: int
    service_tier: str
    speed: str
    inference_geo: str
    price_band: int
    cost_pico_usd: int
    uncached_cost_pico_usd: int
    latency_ms: int
    queue_wait_ms: int
    request_id: str
    price_missing: bool

    @property
    def cache_hit(self) -> bool:
        return self.cache_read_tokens > 0

    @property
    def cost_usd(self) -> Decimal:
        return pico_to_usd(self.cost_pico_usd)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "occurred_at": self.occurred_at.isoformat(),
            "model": self.model,
            "outcome": self.outcome,
            "attempts": self.attempts,
            "final_status": self.final_status,
            "error_type": self.error_type,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_hit": self.cache_hit,
            "thinking_tokens": self.thinking_tokens,
            "web_search_requests": self.web_search_requests,
            "service_tier": self.service_tier,
            "speed": self.speed,
            "inference_geo": self.inference_geo,
            "price_band": self.price_band,
            "cost_usd": pico_to_usd_str(self.cost_pico_usd),
            "uncached_cost_usd": pico_to_usd_str(self.uncached_cost_pico_usd),
            "latency_ms": self.latency_ms,
            "queue_wait_ms": self.queue_wait_ms,
            "request_id": self.request_id,
            "price_missing": self.price_missing,
        }


CALL_COLUMNS = (
    "id",
    "occurred_at",
    "model",
    "outcome",
    "attempts",
    "final_status",
    "error_type",
    "input_tokens",
    "output_tokens",
    "cache_write_tokens",
    "cache_read_tokens",
    "cache_hit",
    "thinking_tokens",
    "web_search_requests",
    "service_tier",
    "speed",
    "inference_geo",
    "price_band",
    "cost_usd",
    "uncached_cost_usd",
    "latency_ms",
    "queue_wait_ms",
    "request_id",
    "price_missing",
)
"""The keys of ``CallRow.as_dict()``, in export order."""

_OUTCOME_NAMES = {o.value: o.name.lower() for o in Outcome}
_TIER_NAMES = {t.value: t.label for t in ServiceTier}
_SPEED_NAMES = {s.value: s.label for s in Speed}
_CALL_COLUMNS = (
    "id",
    "occurred_at",
    "model",
    "outcome",
    "attempts",
    "final_status",
    "error_type",
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "thinking_tokens",
    "web_search_requests",
    "service_tier",
    "speed",
    "inference_geo",
    "price_band",
    "cost_pico_usd",
    "uncached_cost_pico_usd",
    "latency_ms",
    "queue_wait_ms",
    "request_id",
    "price_missing",
)


def _call_row(v: dict[str, Any]) -> CallRow:
    return CallRow(
        id=v["id"],
        occurred_at=v["occurred_at"],
        model=v["model"],
        outcome=_OUTCOME_NAMES.get(v["outcome"], str(v["outcome"])),
        attempts=v["attempts"],
        final_status=v["final_status"],
        error_type=v["error_type"],
        input_tokens=v["input_tokens"],
        output_tokens=v["output_tokens"],
        cache_write_tokens=v["cache_creation_input_tokens"],
        cache_read_tokens=v["cache_read_input_tokens"],
        thinking_tokens=v["thinking_tokens"],
        web_search_requests=v["web_search_requests"],
        service_tier=_TIER_NAMES.get(v["service_tier"], str(v["service_tier"])),
        speed=_SPEED_NAMES.get(v["speed"], str(v["speed"])),
        inference_geo=v["inference_geo"],
        price_band=v["price_band"],
        cost_pico_usd=v["cost_pico_usd"],
        uncached_cost_pico_usd=v["uncached_cost_pico_usd"],
        latency_ms=v["latency_ms"],
        queue_wait_ms=v["queue_wait_ms"],
        request_id=v["request_id"],
        price_missing=v["price_missing"],
    )


def session_calls(
    *,
    user_id: int | None,
    session_id: str,
    limit: int = SESSION_CALLS_LIMIT,
    offset: int = 0,
    organization_id: int | None = None,
) -> list[CallRow]:
    """A session's calls in time order (by the (session_id, occurred_at) index), ``limit``
    of them from ``offset``."""
    qs = (
        AuditLog.objects.filter(
            _owner(user_id), _organization(organization_id), session_id=session_id
        )
        .order_by("occurred_at", "id")
        .values(*_CALL_COLUMNS)
    )
    return [_call_row(v) for v in qs[offset : offset + limit]]


def iter_session_calls(
    *, user_id: int | None, session_id: str, organization_id: int | None = None
) -> Iterator[CallRow]:
    """Every call of a session in time order, streamed (the CSV export)."""
    qs = (
        AuditLog.objects.filter(
            _owner(user_id), _organization(organization_id), session_id=session_id
        )
        .order_by("occurred_at", "id")
        .values(*_CALL_COLUMNS)
    )
    for v in qs.iterator(chunk_size=2000):
        yield _call_row(v)


AUDIT_EXTRA_COLUMNS = (
    "user_id",
    "organization_id",
    "session_id",
    "priority",
    # what each call was billed at, per token in picodollars (so a bill can be checked)
    "input_rate_pico_usd",
    "cache_write_5m_rate_pico_usd",
    "cache_write_1h_rate_pico_usd",
    "cache_read_rate_pico_usd",
    "output_rate_pico_usd",
    "web_search_rate_pico_usd",
)
"""The billing export's columns beyond ``CALL_COLUMNS``."""


def iter_audit_rows(
    *, user_id: int | None, date_range: DateRange, organization_id: int | None = None
) -> Iterator[dict[str, Any]]:
    """Every audit row in the range (one user's, one organization's, or everyone's), for the
    billing export: its counts, cost, and the rates it was billed at."""
    qs = AuditLog.objects.filter(
        _organization(organization_id),
        occurred_at__gte=date_range.start_datetime(),
        occurred_at__lt=date_range.end_datetime_exclusive(),
    )
    if user_id is not None:
        qs = qs.filter(user_id=user_id)
    columns = (*_CALL_COLUMNS, *AUDIT_EXTRA_COLUMNS)
    for v in qs.order_by("occurred_at", "id").values(*columns).iterator(chunk_size=5000):
        call = _call_row(v).as_dict()
        call.update((name, v[name]) for name in AUDIT_EXTRA_COLUMNS)
        yield call


# --- every user (staff), or one organization's users (its admins) ----------------------------

USER_SORTS = ("cost", "tokens", "requests", "errors", "saved", "cache_hit_rate")
_ALL_INPUT = (
    F(_P + "input_tokens")
    + F(_P + "cache_creation_5m_tokens")
    + F(_P + "cache_creation_1h_tokens")
    + F(_P + "cache_read_input_tokens")
)
_USER_SORT_EXPR = {
    "cost": F(_P + "cost_pico_usd"),
    "tokens": _ALL_INPUT + F(_P + "output_tokens"),
    "requests": F(_P + "requests"),
    "errors": F(_P + "errors"),
    "saved": F(_P + "uncached_cost_pico_usd") - F(_P + "cost_pico_usd"),
    # +1 keeps users with no input at 0 instead of dividing by zero
    "cache_hit_rate": ExpressionWrapper(
        F(_P + "cache_read_input_tokens") * 1.0 / (_ALL_INPUT + 1), output_field=FloatField()
    ),
}


@dataclass
class UserUsage:
    user_id: int | None
    username: str
    totals: Totals

    def as_dict(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "username": self.username, **self.totals.as_dict()}


def _usernames(user_ids: Iterable[int | None]) -> dict[int | None, str]:
    ids = [i for i in user_ids if i is not None]
    names: dict[int | None, str] = {None: "(system)"}
    names.update(get_user_model()._default_manager.filter(pk__in=ids).values_list("pk", "username"))
    return names


def _users_grouped(
    *, date_range: DateRange, sort: str, descending: bool, organization_id: int | None
) -> QuerySet[Any]:
    """Per-user sums: of the per-user rollup for everyone, of the per-model rollup (which
    alone carries the organization) for one organization's users."""
    if sort not in _USER_SORT_EXPR:
        raise ValueError(f"unknown sort {sort!r}; choose one of {', '.join(USER_SORTS)}")
    order = _USER_SORT_EXPR[sort]
    days = Q(day__gte=date_range.start, day__lte=date_range.end)
    rows: QuerySet[Any] = (
        UserUsageDaily.objects.filter(days)
        if organization_id is None
        else UsageDaily.objects.filter(days, organization_id=organization_id)
    )
    qs = rows.values("user_id").annotate(**_SUMS).annotate(sort_key=order)
    ordering = ("-sort_key", "user_id") if descending else ("sort_key", "user_id")
    return qs.order_by(*ordering)


def users_page(
    *,
    date_range: DateRange,
    sort: str = "cost",
    descending: bool = True,
    page: int = 1,
    per_page: int = USERS_PER_PAGE,
    organization_id: int | None = None,
) -> Page[UserUsage]:
    """Users with usage in the range (billed to ``organization_id`` when given), ``per_page``
    at a time in ``sort`` order.

    One grouped query over the per-user daily rollup (LIMIT per_page + 1 to learn if there is
    more; no separate COUNT over the grouping).
    """
    offset = (page - 1) * per_page
    rows = list(
        _users_grouped(
            date_range=date_range,
            sort=sort,
            descending=descending,
            organization_id=organization_id,
        )[offset : offset + per_page + 1]
    )
    has_next = len(rows) > per_page
    rows = rows[:per_page]
    names = _usernames(r["user_id"] for r in rows)
    return Page(
        items=[
            UserUsage(
                user_id=r["user_id"],
                username=names.get(r["user_id"], f"#{r['user_id']}"),
                totals=_summed(r),
            )
            for r in rows
        ],
        number=page,
        has_next=has_next,
    )


def iter_users(
    *, date_range: DateRange, sort: str = "cost", organization_id: int | None = None
) -> Iterator[UserUsage]:
    """Every user with usage in the range (the CSV export), in ``sort`` order."""
    batch: list[dict[str, Any]] = []

    def flush() -> Iterator[UserUsage]:
        names = _usernames(r["user_id"] for r in batch)
        for r in batch:
            yield UserUsage(
                user_id=r["user_id"],
                username=names.get(r["user_id"], f"#{r['user_id']}"),
                totals=_summed(r),
            )
        batch.clear()

    grouped = _users_grouped(
        date_range=date_range, sort=sort, descending=True, organization_id=organization_id
    )
    for row in grouped.iterator(chunk_size=1000):
        batch.append(row)
        if len(batch) >= 1000:
            yield from flush()
    yield from flush()


@dataclass
class OrgUsage:
    organization_id: int | None
    name: str
    totals: Totals

    def as_dict(self) -> dict[str, Any]:
        return {
            "organization_id": self.organization_id,
            "name": self.name,
            **self.totals.as_dict(),
        }


def orgs_usage(*, date_range: DateRange) -> list[OrgUsage]:
    """Per-organization totals (calls of users without an organization under "(none)"), by
    cost, dearest first."""
    rows = list(
        OrganizationUsageDaily.objects.filter(day__gte=date_range.start, day__lte=date_range.end)
        .values("organization_id")
        .annotate(**_SUMS)
    )
    names: dict[int | None, str] = {None: "(none)"}
    names.update(
        Organization.objects.filter(
            pk__in=[r["organization_id"] for r in rows if r["organization_id"]]
        ).values_list("pk", "name")
    )
    result = [
        OrgUsage(
            organization_id=r["organization_id"],
            name=names.get(r["organization_id"], f"#{r['organization_id']}"),
            totals=_summed(r),
        )
        for r in rows
    ]
    result.sort(key=lambda o: (-o.totals.cost_pico_usd, o.name))
    return result


def spend_since(
    *,
    since: dt.date,
    user_id: int | None = None,
    organization_id: int | None = None,
    api_token_id: int | None = None,
) -> Totals:
    """Totals from ``since`` (UTC day, inclusive) to now for one user, one organization or one
    gateway key — for quota checks that want billed usage.

    A user's and an organization's come from the rollups. No rollup is kept per key: a key's
    are summed from the audit_log rows of the requests made with it (through
    ``llm_request``, by the lookup's name: usage does not import queueing), with the same
    aggregates that rebuild the rollups. A quota counter is rebuilt rarely (a new period, or
    Redis lost its data), and both foreign keys on the way are indexed.
    """
    if sum(holder is not None for holder in (user_id, organization_id, api_token_id)) != 1:
        raise ValueError("give exactly one of user_id, organization_id and api_token_id")
    if user_id is not None:
        return _totals(UserUsageDaily.objects.filter(user_id=user_id, day__gte=since))
    if api_token_id is not None:
        start = dt.datetime.combine(since, dt.time.min, tzinfo=dt.UTC)
        return audit_spend_since(since=start, api_token_id=api_token_id)
    return _totals(
        OrganizationUsageDaily.objects.filter(organization=organization_id, day__gte=since)
    )


def audit_spend_since(
    *,
    since: dt.datetime,
    user_id: int | None = None,
    organization_id: int | None = None,
    api_token_id: int | None = None,
) -> Totals:
    """Totals of one holder's audit_log rows since a moment (not a whole day: the rollups
    answer those) — a gateway key's spend, or the last hour's pace of a quota."""
    if sum(holder is not None for holder in (user_id, organization_id, api_token_id)) != 1:
        raise ValueError("give exactly one of user_id, organization_id and api_token_id")
    rows = AuditLog.objects.filter(occurred_at__gte=since)
    if user_id is not None:
        rows = rows.filter(user_id=user_id)
    elif organization_id is not None:
        rows = rows.filter(organization_id=organization_id)
    else:
        rows = rows.filter(llm_request__api_token_id=api_token_id)
    return _summed(rows.aggregate(**{_P + c.name: c.total() for c in UsageCounters.COUNTERS}))


# --- unpriced models -----------------------------------------------------------------------------


@dataclass
class UnpricedModelRow:
    model: str
    speed: str
    calls: int
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime


def unpriced_models() -> list[UnpricedModelRow]:
    """Models (and speeds) with calls recorded without a price, newest first: the staff
    notice on the usage pages. A handful of rows at most; empty when everything is priced."""
    return [
        UnpricedModelRow(
            model=u.model,
            speed=_SPEED_NAMES.get(u.speed, str(u.speed)),
            calls=u.calls,
            first_seen_at=u.first_seen_at,
            last_seen_at=u.last_seen_at,
        )
        for u in UnpricedModel.objects.order_by("-last_seen_at", "model")[:50]
    ]


# --- /metrics ---------------------------------------------------------------------------------


def lifetime_totals_by_model() -> list[ModelUsage]:
    """All-time counters per model from the organization rollup (small: days x orgs x models)."""
    rows = OrganizationUsageDaily.objects.values("model").annotate(**_SUMS).order_by("model")
    return [ModelUsage(model=r["model"], totals=_summed(r)) for r in rows]
