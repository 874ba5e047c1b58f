"""Quota admission: may this user (their organization, the gateway key used) spend this much more?

``Quota`` rows (per user, per organization and per gateway key — a key's is its *budget*) cap
tokens and US dollars per UTC day and per UTC month, the number of requests in progress, and
which priority classes may be used. A request made with a key counts against all three
holders: the key's budget never lifts its user's or organization's own quota, the tightest wins.

Protocol (keyed by request id, so every step is idempotent — a redelivered job cannot double
count): ``admit`` reserves the request's WORST-CASE cost (estimated input + max_tokens, and its
price) → the call → ``settle`` replaces the reservation by the actual cost (call it after the
call is recorded in ``audit_log``) → or ``release`` gives the reservation back when nothing was
billed (cancelled, failed).

What is atomic. ``admit`` is ONE Lua script (``queueing/lua/quota_admit.lua``) over every counter
of every holder — user, organization and key × day and month × tokens and micro-USD — and
every in-flight set: it checks all of them and charges all of them, or none. Fifty concurrent
submissions against room for ten admit exactly ten. ``settle`` and ``release`` are one script
each. Money is counted in integer micro-dollars.

Counters live per holder and period (``gw:q:user:7:day:20261130``, ``gw:q:key:3:month:202611``)
with a TTL past the period's end. A counter that does not exist (a new period, or Redis lost
its data) is first rebuilt from the database by a *usage loader* ``(holder_kind, holder_id,
period_start) -> (tokens, usd)`` (``GATEWAY_QUOTA_USAGE_LOADER`` or the ``usage_loader``
argument; by default zeros; the project's, ``audit_log_usage_loader``, reads a key's spend
from the audit rows of its requests). After a Redis restart, reservations of requests in
progress are gone: until those settle they do not count against ``max_concurrent`` or the
held amounts.

``settle`` raises a ``QuotaAlert`` (row, WARNING log, mail to ``ADMINS`` when configured) the
first time a holder passes 80% / 100% of a quota (a key's budget) in a period.
"""

from __future__ import annotations

import calendar
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Any, Literal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import mail_admins
from django.db import IntegrityError, transaction
from django.db.models import Q

from organizations.models import Organization
from queueing import conf
from queueing.conf import UsageLoader
from queueing.lua import LuaScript
from queueing.models import ApiToken, Quota, QuotaAlert
from ratelimit_project.redis import get_redis

log = logging.getLogger(__name__)

_LIB = ["quota_lib"]
_ADMIT = LuaScript("quota_admit", prelude=_LIB)
_SETTLE = LuaScript("quota_settle", prelude=_LIB)
_RELEASE = LuaScript("quota_release", prelude=_LIB)

MICRO = Decimal("1000000")
HolderKind = Literal["user", "organization", "key"]
Period = Literal["day", "month"]
_PERIODS: tuple[Period, ...] = ("day", "month")
_KEY_KIND = {"user": "user", "organization": "org", "key": "key"}
# counters stay readable a day past their period: a request settled after midnight still finds
# the counter its reservation was held on
_PERIOD_GRACE = timedelta(days=1)


@dataclass(frozen=True)
class QuotaCheck:
    """The outcome of ``admit``. On refusal ``quota`` names it (e.g. "user daily tokens"),
    ``used`` counts what is used plus what requests in progress hold, and ``message`` is
    ready to show to the user."""

    admitted: bool
    quota: str | None = None
    limit: int | Decimal | None = None
    used: int | Decimal | None = None
    resets_at: datetime | None = None
    message: str = ""


@dataclass(frozen=True)
class QuotaAlertEvent:
    """A threshold a holder passed during ``settle`` (a ``QuotaAlert`` row was written)."""

    holder_kind: HolderKind
    holder_id: int
    holder_name: str
    quota: str  # e.g. "organization monthly USD"
    threshold: int  # percent
    used: int | Decimal
    limit: int | Decimal
    period_start: date
    alert_id: int | None


@dataclass(frozen=True)
class _Holder:
    kind: HolderKind
    id: int
    quota: Quota | None


def _zero_loader(kind: str, holder_id: int, period_start: datetime) -> tuple[int, Decimal]:
    return 0, Decimal("0")


# --- time and periods ------------------------------------------------------------------------


def _now(now: datetime | float | None) -> datetime:
    if now is None:
        seconds, micros = get_redis().time()  # one clock for every process: the Redis server's
        return datetime.fromtimestamp(seconds + micros / 1_000_000, UTC)
    if isinstance(now, datetime):
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware (UTC)")
        return now.astimezone(UTC)
    return datetime.fromtimestamp(float(now), UTC)


def period_bounds(period: Period, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the UTC day or month containing ``now``."""
    if period == "day":
        start = datetime(now.year, now.month, now.day, tzinfo=UTC)
        return start, start + timedelta(days=1)
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    days = calendar.monthrange(now.year, now.month)[1]
    return start, start + timedelta(days=days)


def _counter_key(holder: _Holder, period: Period, start: datetime) -> str:
    stamp = start.strftime("%Y%m%d" if period == "day" else "%Y%m")
    return f"gw:q:{_KEY_KIND[holder.kind]}:{holder.id}:{period}:{stamp}"


def _ttl_until(end: datetime, now: datetime) -> int:
    return max(60, int((end + _PERIOD_GRACE - now).total_seconds()))


# --- money and words -------------------------------------------------------------------------


def _micro_usd(usd: Decimal, *, rounding: str) -> int:
    return int((Decimal(usd) * MICRO).to_integral_value(rounding=rounding))


def _usd(micro: int) -> Decimal:
    return (Decimal(micro) / MICRO).quantize(Decimal("0.000001"))


def _format_usd(value: Decimal) -> str:
    """Cents, unless that would round a small amount away ($0.0042 stays $0.0042)."""
    cents = value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if cents == value or abs(value) >= 1:
        return f"${cents:,}"
    return f"${value.quantize(Decimal('0.0001'), rounding=ROUND_HALF_UP):,}"


def _format_reset(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _holder_name(holder: _Holder) -> str:
    if holder.kind == "user":
        user = get_user_model().objects.filter(pk=holder.id).first()
        return f"user {user.get_username()}" if user else f"user #{holder.id}"
    if holder.kind == "key":
        # the name people gave it and the prefix they can see (never more of the key)
        token = ApiToken.objects.filter(pk=holder.id).only("name", "prefix").first()
        return (
            f"gateway key '{token.name}' ({token.prefix}…)"
            if token
            else f"gateway key #{holder.id}"
        )
    org = Organization.objects.filter(pk=holder.id).only("name").first()
    return f"organization {org.name}" if org else f"organization #{holder.id}"


def _limit_of(holder: _Holder, name: str) -> str:
    """How a refusal names the limit: a key's quota is its budget ("budget of gateway key
    'x' (gwt_…)"), a person's or organization's is a quota ("quota for user alice")."""
    return f"budget of {name}" if holder.kind == "key" else f"quota for {name}"


def _quota_label(kind: HolderKind, period: Period, unit: str) -> str:
    return f"{kind} {'daily' if period == 'day' else 'monthly'} {unit}"


# --- holders ---------------------------------------------------------------------------------


def _holders(*, user_id: int, org_id: int | None, key_id: int | None) -> list[_Holder]:
    """The user, their organization (if any) and the gateway key used (if any), with their
    Quota rows (one query). A holder without a row is still counted, so its usage is known
    the moment it gets one."""
    condition = Q(user_id=user_id)
    if org_id is not None:
        condition |= Q(organization_id=org_id)
    if key_id is not None:
        condition |= Q(api_token_id=key_id)
    quotas = list(Quota.objects.filter(condition))
    by_user = next((q for q in quotas if q.user_id == user_id), None)
    holders = [_Holder("user", user_id, by_user)]
    if org_id is not None:
        by_org = next((q for q in quotas if q.organization_id == org_id), None)
        holders.append(_Holder("organization", org_id, by_org))
    if key_id is not None:
        by_key = next((q for q in quotas if q.api_token_id == key_id), None)
        holders.append(_Holder("key", key_id, by_key))
    return holders


_Counter = tuple[str, _Holder, Period, datetime, datetime]  # key, holder, period, start, end


def _counters(holders: Sequence[_Holder], moment: datetime) -> list[_Counter]:
    """Every counter of these holders in the periods containing ``moment``, in check order."""
    counters: list[_Counter] = []
    for holder in holders:
        for period in _PERIODS:
            start, end = period_bounds(period, moment)
            counters.append((_counter_key(holder, period, start), holder, period, start, end))
    return counters


def _limit_tokens(quota: Quota | None, period: Period) -> int:
    if quota is None:
        return -1
    value = quota.tokens_per_day if period == "day" else quota.tokens_per_month
    return -1 if value is None else int(value)


def _limit_micro_usd(quota: Quota | None, period: Period) -> int:
    if quota is None:
        return -1
    value = quota.usd_per_day if period == "day" else quota.usd_per_month
    return -1 if value is None else _micro_usd(value, rounding=ROUND_HALF_UP)


def _resolve_loader(usage_loader: UsageLoader | None) -> tuple[UsageLoader, bool]:
    """The loader to use, and whether it reads real usage (then it counts recorded calls)."""
    loader = usage_loader or conf.quota_usage_loader()
    if loader is None:
        return _zero_loader, False
    return loader, True


def _initial_figures(
    client: Any,
    keys: Sequence[tuple[str, _Holder, datetime]],
    loader: UsageLoader,
) -> list[tuple[int, int]]:
    """(tokens, micro-USD) from the database for each counter key Redis does not have."""
    pipe = client.pipeline(transaction=False)
    for key, _, _ in keys:
        pipe.exists(key)
    exists = pipe.execute()
    figures: list[tuple[int, int]] = []
    for (_, holder, start), present in zip(keys, exists, strict=True):
        if present:
            figures.append((-1, -1))
            continue
        tokens, usd = loader(holder.kind, holder.id, start)
        figures.append((int(tokens), _micro_usd(Decimal(usd), rounding=ROUND_HALF_UP)))
    return figures


def _check_amounts(tokens: int, usd: Decimal) -> None:
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        raise ValueError(f"tokens must be a whole number >= 0, got {tokens!r}")
    if not isinstance(usd, Decimal | int) or Decimal(usd) < 0 or not Decimal(usd).is_finite():
        raise ValueError(f"usd must be a Decimal >= 0, got {usd!r}")


# --- public API ------------------------------------------------------------------------------


def admit(
    *,
    user_id: int,
    org_id: int | None,
    request_id: int,
    tokens: int,
    usd: Decimal,
    priority: str,
    key_id: int | None = None,
    now: datetime | float | None = None,
    usage_loader: UsageLoader | None = None,
) -> QuotaCheck:
    """Reserve ``tokens`` and ``usd`` (the worst case) for this request against every quota of
    the user, their organization and the gateway key ``key_id`` it came with, or nothing.
    Admitting the same request again is a no-op that answers admitted."""
    _check_amounts(tokens, usd)
    moment = _now(now)
    holders = _holders(user_id=user_id, org_id=org_id, key_id=key_id)

    for holder in holders:
        allowed = list(holder.quota.allowed_priorities or []) if holder.quota else []
        if allowed and priority not in allowed:
            name = _holder_name(holder)
            return QuotaCheck(
                admitted=False,
                quota=f"{holder.kind} allowed priorities",
                message=(
                    f"Priority {priority!r} is not allowed for {name} "
                    f"(allowed: {', '.join(allowed)})."
                ),
            )

    counters = _counters(holders, moment)
    client = get_redis()
    loader, _ = _resolve_loader(usage_loader)
    figures = _initial_figures(client, [(k, h, s) for k, h, _, s, _ in counters], loader)

    ttl = conf.quota_reservation_ttl_s()
    usd_micro = _micro_usd(usd, rounding=ROUND_CEILING)
    args: list[Any] = [
        int(moment.timestamp() * 1_000_000),
        request_id,
        tokens,
        usd_micro,
        len(counters),
        len(holders),
        ttl,
    ]
    for (_key, holder, period, _start, end), (init_tok, init_usd) in zip(
        counters, figures, strict=True
    ):
        args += [
            _limit_tokens(holder.quota, period),
            _limit_micro_usd(holder.quota, period),
            init_tok,
            init_usd,
            _ttl_until(end, moment),
        ]
    inflight_keys = [f"gw:q:{_KEY_KIND[h.kind]}:{h.id}:inflight" for h in holders]
    for holder in holders:
        limit = holder.quota.max_concurrent if holder.quota else None
        args.append(-1 if limit is None else int(limit))
    result = _ADMIT(
        client,
        keys=[
            f"gw:q:res:{request_id}",
            f"gw:q:settled:{request_id}",
            *(key for key, *_ in counters),
            *inflight_keys,
        ],
        args=args,
    )
    if int(result[0]) == 1:
        return QuotaCheck(admitted=True, message="admitted")

    index, committed = int(result[1]), int(result[2])
    if index > 2 * len(counters):
        holder = holders[index - 2 * len(counters) - 1]
        limit = int(holder.quota.max_concurrent or 0) if holder.quota else 0
        name = _holder_name(holder)
        return QuotaCheck(
            admitted=False,
            quota=f"{holder.kind} concurrent requests",
            limit=limit,
            used=committed,
            message=(
                f"Concurrent request limit for {name} reached: {committed:,} of {limit:,} "
                "requests in progress; try again when one finishes."
            ),
        )
    _key, holder, period, _start, end = counters[(index - 1) // 2]
    name = _holder_name(holder)
    what = "Daily" if period == "day" else "Monthly"
    if index % 2 == 1:
        token_limit = _limit_tokens(holder.quota, period)
        return QuotaCheck(
            admitted=False,
            quota=_quota_label(holder.kind, period, "tokens"),
            limit=token_limit,
            used=committed,
            resets_at=end,
            message=(
                f"{what} token {_limit_of(holder, name)} exceeded: {committed:,} of "
                f"{token_limit:,} used, this request needs up to {tokens:,}; resets at "
                f"{_format_reset(end)}."
            ),
        )
    usd_limit = _usd(_limit_micro_usd(holder.quota, period))
    used_usd = _usd(committed)
    return QuotaCheck(
        admitted=False,
        quota=_quota_label(holder.kind, period, "USD"),
        limit=usd_limit,
        used=used_usd,
        resets_at=end,
        message=(
            f"{what} USD {_limit_of(holder, name)} exceeded: {_format_usd(used_usd)} of "
            f"{_format_usd(usd_limit)} used, this request needs up to "
            f"{_format_usd(_usd(usd_micro))}; resets at {_format_reset(end)}."
        ),
    )


def settle(
    *,
    user_id: int,
    org_id: int | None,
    request_id: int,
    tokens: int,
    usd: Decimal,
    key_id: int | None = None,
    now: datetime | float | None = None,
    usage_loader: UsageLoader | None = None,
) -> list[QuotaAlertEvent]:
    """Replace the request's reservation by its actual cost (once; later calls do nothing).

    Call it after the call is recorded in ``audit_log``: a counter rebuilt here from the
    database already includes the call. Works without a reservation too (e.g. it expired):
    the actual cost is still counted. Pass the same holders as to ``admit`` (``key_id`` too):
    the cost is added to the counters of the holders named here. Returns the alerts this
    settlement raised.
    """
    _check_amounts(tokens, usd)
    moment = _now(now)
    holders = _holders(user_id=user_id, org_id=org_id, key_id=key_id)
    counters = _counters(holders, moment)
    client = get_redis()
    loader, loader_reads_usage = _resolve_loader(usage_loader)
    figures = _initial_figures(client, [(k, h, s) for k, h, _, s, _ in counters], loader)
    args: list[Any] = [
        request_id,
        tokens,
        _micro_usd(usd, rounding=ROUND_HALF_UP),
        len(counters),
        conf.quota_reservation_ttl_s(),
        1 if loader_reads_usage else 0,
    ]
    for (_key, _holder, _period, _start, end), (init_tok, init_usd) in zip(
        counters, figures, strict=True
    ):
        args += [init_tok, init_usd, _ttl_until(end, moment)]
    result = _SETTLE(
        client,
        keys=[f"gw:q:res:{request_id}", f"gw:q:settled:{request_id}", *(k for k, *_ in counters)],
        args=args,
    )
    if int(result[0]) != 1:
        return []
    used = [(int(result[1 + 2 * i]), int(result[2 + 2 * i])) for i in range(len(counters))]
    return _raise_alerts(client, counters, used, moment)


def release(
    *,
    user_id: int,
    org_id: int | None,
    request_id: int,
    key_id: int | None = None,
    now: datetime | float | None = None,
) -> None:
    """Give the reservation back (cancelled, or failed before anything was billed). Idempotent.

    The reservation itself names the counters and in-flight sets it holds (every holder's,
    the key's too), so the holders are not looked up; they are taken for symmetry with
    ``admit`` and ``settle``."""
    _RELEASE(get_redis(), keys=[f"gw:q:res:{request_id}"], args=[request_id])


# --- alerts ----------------------------------------------------------------------------------

_METRICS = {
    ("day", "tokens"): QuotaAlert.Metric.DAILY_TOKENS,
    ("month", "tokens"): QuotaAlert.Metric.MONTHLY_TOKENS,
    ("day", "USD"): QuotaAlert.Metric.DAILY_USD,
    ("month", "USD"): QuotaAlert.Metric.MONTHLY_USD,
}


def _raise_alerts(
    client: Any,
    counters: Sequence[_Counter],
    used: Sequence[tuple[int, int]],
    moment: datetime,
) -> list[QuotaAlertEvent]:
    events: list[QuotaAlertEvent] = []
    thresholds = conf.quota_alert_thresholds()
    for (key, holder, period, start, end), (used_tok, used_micro) in zip(
        counters, used, strict=True
    ):
        if holder.quota is None:
            continue
        for unit, spent, limit in (
            ("tokens", used_tok, _limit_tokens(holder.quota, period)),
            ("USD", used_micro, _limit_micro_usd(holder.quota, period)),
        ):
            if limit <= 0:
                continue
            for threshold in thresholds:
                if spent * 100 < limit * threshold:
                    break
                marker = f"{key}:alert:{unit}:{threshold}"
                if not client.set(marker, "1", nx=True, ex=_ttl_until(end, moment)):
                    continue  # already alerted this period
                event = _record_alert(
                    holder=holder,
                    period=period,
                    unit=unit,
                    threshold=threshold,
                    used=spent if unit == "tokens" else _usd(spent),
                    limit=limit if unit == "tokens" else _usd(limit),
                    period_start=start.date(),
                )
                if event is not None:
                    events.append(event)
    return events


_OWNER_FIELD = {"user": "user_id", "organization": "organization_id", "key": "api_token_id"}


def _record_alert(
    *,
    holder: _Holder,
    period: Period,
    unit: str,
    threshold: int,
    used: int | Decimal,
    limit: int | Decimal,
    period_start: date,
) -> QuotaAlertEvent | None:
    """Write the alert row (at most one per holder, metric, threshold and period), log, mail."""
    owner = {_OWNER_FIELD[holder.kind]: holder.id}
    try:
        with transaction.atomic():
            alert = QuotaAlert.objects.create(
                **owner,
                metric=_METRICS[(period, unit)],
                threshold=threshold,
                used=Decimal(used),
                limit=Decimal(limit),
                period_start=period_start,
            )
    except IntegrityError:
        return None  # raised before (Redis forgot its marker): the row is the record
    name = _holder_name(holder)
    label = _quota_label(holder.kind, period, unit)
    shown_used = f"{used:,}" if unit == "tokens" else _format_usd(Decimal(used))
    shown_limit = f"{limit:,}" if unit == "tokens" else _format_usd(Decimal(limit))
    noun = "budget" if holder.kind == "key" else "quota"
    text = (
        f"{name} has used {threshold}% of its {'daily' if period == 'day' else 'monthly'} "
        f"{unit} {noun}: {shown_used} of {shown_limit} (period starting {period_start})."
    )
    log.warning("%s alert: %s", noun, text)
    if getattr(settings, "ADMINS", None):
        mail_admins(
            f"{noun.capitalize()} alert: {name} at {threshold}% ({label})", text, fail_silently=True
        )
    return QuotaAlertEvent(
        holder_kind=holder.kind,
        holder_id=holder.id,
        holder_name=name,
        quota=label,
        threshold=threshold,
        used=used,
        limit=limit,
        period_start=period_start,
        alert_id=alert.pk,
    )


def usage_now(
    *, holder_kind: HolderKind, holder_id: int, now: datetime | float | None = None
) -> dict[str, Any]:
    """What Redis counts for a holder right now (used and held, day and month), for pages."""
    moment = _now(now)
    holder = _Holder(holder_kind, holder_id, None)
    client = get_redis()
    out: dict[str, Any] = {}
    for period in _PERIODS:
        start, end = period_bounds(period, moment)
        row = client.hmget(_counter_key(holder, period, start), ["ut", "uu", "ht", "hu"])
        ut, uu, ht, hu = (int(v) if v is not None else 0 for v in row)
        out[period] = {
            "tokens_used": ut,
            "usd_used": _usd(uu),
            "tokens_held": ht,
            "usd_held": _usd(hu),
            "resets_at": end,
        }
    inflight = client.zcard(f"gw:q:{_KEY_KIND[holder_kind]}:{holder_id}:inflight")
    out["in_flight"] = int(inflight)  # type: ignore[arg-type]
    return out


def audit_log_usage_loader(
    holder_kind: str, holder_id: int, period_start: datetime
) -> tuple[int, Decimal]:
    """Billed tokens and USD since ``period_start`` from the usage rollups (kept in the same
    transaction as every audit_log row), or for a gateway key from the audit_log rows of the
    requests made with it: what a quota counter is rebuilt from after Redis lost it."""
    from usage.selectors import spend_since  # late: usage's selectors are only needed on a rebuild

    since = period_start.date()
    if holder_kind == "user":
        totals = spend_since(since=since, user_id=holder_id)
    elif holder_kind == "key":
        totals = spend_since(since=since, api_token_id=holder_id)
    else:
        totals = spend_since(since=since, organization_id=holder_id)
    return totals.total_tokens, totals.cost_usd
