"""Reads for the queue pages and the JSON API. A user only ever sees their own requests and
their own limits; an organization's admin also reads its members' limits and gateway keys
(``organization_*`` below, each scoped to the one organization it is given)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from organizations.models import Membership, Organization
from organizations.selectors import organization_members
from queueing import quotas
from queueing.models import ApiToken, LLMRequest, Quota, QuotaAlert
from usage.forms import DateRange
from usage.selectors import Totals, audit_spend_since, iter_users

PENDING = (LLMRequest.Status.QUEUED, LLMRequest.Status.DISPATCHED, LLMRequest.Status.RUNNING)


def request_for_user(*, user: Any, pk: int) -> LLMRequest:
    """The request if ``user`` may see it (owner or staff); 404 otherwise, never 403, so that
    ids of other users' requests reveal nothing."""
    qs = LLMRequest.objects.all() if user.is_staff else LLMRequest.objects.filter(user_id=user.pk)
    try:
        return qs.get(pk=pk)
    except LLMRequest.DoesNotExist:
        raise Http404("No such request.") from None


def requests_for_user(
    *, user: Any, status: str | None = None, limit: int = 100
) -> QuerySet[LLMRequest]:
    qs = LLMRequest.objects.filter(user_id=user.pk).order_by("-created_at")
    if status == "pending":
        qs = qs.filter(status__in=PENDING)
    elif status == "finished":
        qs = qs.exclude(status__in=PENDING)
    elif status:
        qs = qs.filter(status=status)
    return qs[:limit]


def status_counts() -> dict[str, int]:
    rows = LLMRequest.objects.values("status").annotate(n=Count("pk"))
    return {row["status"]: row["n"] for row in rows}


def request_as_json(
    request: LLMRequest, *, position: dict[str, Any] | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": request.pk,
        "status": request.status,
        "session_id": request.session_id,
        "model": request.model,
        "priority": request.priority,
        "max_tokens": request.max_tokens,
        "created_at": request.created_at.isoformat() if request.created_at else None,
        "dispatched_at": request.dispatched_at.isoformat() if request.dispatched_at else None,
        "finished_at": request.finished_at.isoformat() if request.finished_at else None,
        "predicted_wait_s": request.predicted_wait_s,
        "attempts": request.attempts,
        "estimated_input_tokens": request.estimated_input_tokens,
    }
    if position is not None:
        data.update(position)
    if request.is_terminal:
        data["error"] = (
            {"type": request.error_type, "message": request.error_message}
            if request.error_type
            else None
        )
        data["result"] = request.result
    return data


# --- a person's own quotas -----------------------------------------------------------------

# The pace a forecast extrapolates: the last hour's spend, which follows what someone is doing
# now (a day's average would call a busy afternoon safe because the morning was quiet).
PACE_WINDOW = dt.timedelta(hours=1)

_LIMITS: tuple[tuple[str, quotas.Period, str], ...] = (
    ("tokens_per_day", "day", "tokens"),
    ("tokens_per_month", "month", "tokens"),
    ("usd_per_day", "day", "usd"),
    ("usd_per_month", "month", "usd"),
)


@dataclass(frozen=True)
class QuotaLine:
    """One limit of the user or their organization, as its holder reads it: used (billed),
    held (by requests in progress), what is left, when it resets, and where the last hour's
    pace leads."""

    holder: str  # "you", the organization's name, or one of the user's gateway keys
    period: str  # "day" | "month"
    unit: str  # "tokens" | "usd"
    limit: int | Decimal
    used: int | Decimal
    held: int | Decimal
    resets_at: dt.datetime
    pace_per_hour: int | Decimal
    reaches_limit_at: dt.datetime | None  # before the reset, at the last hour's pace

    @property
    def remaining(self) -> int | Decimal:
        return max(self.limit - self.used - self.held, 0)

    @property
    def percent_used(self) -> float:
        return float((self.used + self.held) / self.limit * 100) if self.limit else 100.0

    @property
    def label(self) -> str:
        return f"{'daily' if self.period == 'day' else 'monthly'} {'USD' if self.unit == 'usd' else 'tokens'}"

    def forecast(self) -> str:
        """In words: "reached", or when the last hour's pace reaches the limit, or that it
        does not before the reset."""
        stamp = "%Y-%m-%d %H:%M UTC" if self.period == "month" else "%H:%M UTC"
        if self.remaining <= 0:
            return f"reached; resets {self.resets_at:{stamp}}"
        if not self.pace_per_hour:
            return "no use in the last hour"
        pace = (
            f"${self.pace_per_hour:,.4f}/h"
            if self.unit == "usd"
            else f"{self.pace_per_hour:,} tokens/h"
        )
        if self.reaches_limit_at is None:
            return f"at the last hour's pace ({pace}) it lasts until it resets"
        return (
            f"at the last hour's pace ({pace}) you reach it around {self.reaches_limit_at:{stamp}}"
        )

    def as_json(self) -> dict[str, Any]:
        def number(value: int | Decimal) -> int | str:
            return str(value) if isinstance(value, Decimal) else value

        return {
            "holder": self.holder,
            "quota": self.label,
            "period": self.period,
            "unit": self.unit,
            "limit": number(self.limit),
            "used": number(self.used),
            "held": number(self.held),
            "remaining": number(self.remaining),
            "percent_used": round(self.percent_used, 1),
            "resets_at": self.resets_at.isoformat(),
            "pace_per_hour": number(self.pace_per_hour),
            "reaches_limit_at": self.reaches_limit_at.isoformat()
            if self.reaches_limit_at
            else None,
            "forecast": self.forecast(),
        }


def quota_lines(*, user: Any, now: dt.datetime | None = None) -> list[QuotaLine]:
    """Every limit that applies to ``user``'s calls (their own quota, their organization's,
    their gateway keys' budgets), with what Redis counts now; empty when no limit is set."""
    moment = now or timezone.now()
    membership = Membership.objects.filter(user_id=user.pk).select_related("organization").first()
    holders: list[tuple[str, quotas.HolderKind, int, str]] = [("you", "user", user.pk, "user_id")]
    if membership is not None:
        org = membership.organization
        holders.append((org.name, "organization", org.pk, "organization_id"))
    # The budgets of the user's own gateway keys (each counts only that key's calls).
    budgeted = ApiToken.objects.filter(user_id=user.pk, revoked=False, quota__isnull=False)
    for key in budgeted.order_by("pk"):
        holders.append((f"key '{key.name}' ({key.prefix}…)", "key", key.pk, "api_token_id"))
    lines: list[QuotaLine] = []
    for name, kind, holder_id, column in holders:
        quota = Quota.objects.filter(**{column: holder_id}).first()
        if quota is None:
            continue
        limits = [(f, p, u) for f, p, u in _LIMITS if getattr(quota, f) is not None]
        if not limits:
            continue
        counted = quotas.usage_now(holder_kind=kind, holder_id=holder_id, now=moment)
        recent = audit_spend_since(since=moment - PACE_WINDOW, **{column: holder_id})
        tokens_pace, usd_pace = recent.total_tokens, recent.cost_usd
        for field_name, period, unit in limits:
            limit = getattr(quota, field_name)
            now_counts = counted[period]
            used = now_counts["tokens_used"] if unit == "tokens" else now_counts["usd_used"]
            held = now_counts["tokens_held"] if unit == "tokens" else now_counts["usd_held"]
            pace: int | Decimal = tokens_pace if unit == "tokens" else usd_pace
            reaches = None
            left = limit - used - held
            if pace and left > 0:
                at = moment + dt.timedelta(hours=float(left / pace))
                reaches = at if at < now_counts["resets_at"] else None
            lines.append(
                QuotaLine(
                    holder=name,
                    period=period,
                    unit=unit,
                    limit=limit,
                    used=used,
                    held=held,
                    resets_at=now_counts["resets_at"],
                    pace_per_hour=pace,
                    reaches_limit_at=reaches,
                )
            )
    return lines


@dataclass(frozen=True)
class AlertNotice:
    """A threshold the user or their organization passed in the current period, in words."""

    text: str
    at: dt.datetime
    threshold: int


def alert_notices(*, user: Any, now: dt.datetime | None = None) -> list[AlertNotice]:
    """The 80% / 100% alerts of this day and month for ``user`` and their organization,
    newest first: what the person sees on their pages (admins also get mail)."""
    moment = now or timezone.now()
    today, month_start = moment.date(), moment.date().replace(day=1)
    org_id = Membership.objects.filter(user_id=user.pk).values_list("organization_id", flat=True)
    daily = (QuotaAlert.Metric.DAILY_TOKENS, QuotaAlert.Metric.DAILY_USD)
    alerts = (
        QuotaAlert.objects.filter(Q(user_id=user.pk) | Q(organization_id__in=list(org_id)))
        .filter(
            Q(metric__in=daily, period_start=today)
            | (~Q(metric__in=daily) & Q(period_start=month_start))
        )
        .select_related("organization")
        .order_by("-created_at")
    )
    notices = []
    for alert in alerts:
        org = alert.organization
        whose = "your" if org is None else f"{org.name}'s"
        label = alert.get_metric_display()
        notices.append(
            AlertNotice(
                text=f"{alert.threshold}% of {whose} {label} quota used ({alert.amount_text})",
                at=alert.created_at,
                threshold=alert.threshold,
            )
        )
    return notices


# --- an organization, for its admins ---------------------------------------------------------


@dataclass(frozen=True)
class MemberRow:
    """One member (person or service account) of an organization as its admin manages them:
    their own quota (None: none — the organization's applies), the weight the scheduler gives
    them, their keys in use, and what was billed to the organization today and this month."""

    membership: Membership
    quota: Quota | None
    weight: Decimal
    own_weight: bool  # False: inherited from the organization
    active_keys: int
    today: Totals
    month: Totals


def organization_member_rows(
    *, organization: Organization, today: dt.date | None = None
) -> list[MemberRow]:
    """Every member of the organization with their limits and spend (a few queries, not a few
    per member: quotas, key counts and the two periods' spend are read for all at once)."""
    day = today or timezone.now().date()
    memberships = list(organization_members(organization=organization))
    user_ids = [m.user_id for m in memberships]
    quotas_by_user = {q.user_id: q for q in Quota.objects.filter(user_id__in=user_ids)}
    org_quota = Quota.objects.filter(organization=organization).first()
    org_weight = org_quota.weight if org_quota is not None else Decimal(1)
    keys = dict(
        ApiToken.objects.filter(user_id__in=user_ids, revoked=False)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))
        .values("user_id")
        .annotate(n=Count("pk"))
        .values_list("user_id", "n")
    )
    spend: dict[str, dict[int | None, Totals]] = {}
    for name, start in (("today", day), ("month", day.replace(day=1))):
        billed = iter_users(date_range=DateRange(start, day), organization_id=organization.pk)
        spend[name] = {row.user_id: row.totals for row in billed}
    rows: list[MemberRow] = []
    for membership in memberships:
        quota = quotas_by_user.get(membership.user_id)
        rows.append(
            MemberRow(
                membership=membership,
                quota=quota,
                weight=quota.weight if quota is not None else org_weight,
                own_weight=quota is not None,
                active_keys=keys.get(membership.user_id, 0),
                today=spend["today"].get(membership.user_id) or Totals(),
                month=spend["month"].get(membership.user_id) or Totals(),
            )
        )
    return rows


def organization_keys(*, organization: Organization) -> QuerySet[ApiToken]:
    """The gateway keys of the organization's members and service accounts, in use first,
    newest first. A key follows its user: one who left the organization takes theirs along."""
    return (
        ApiToken.objects.filter(user__membership__organization=organization)
        .select_related("user", "user__membership", "quota")
        .order_by("revoked", "-created_at", "-pk")
    )


def organization_key(*, organization: Organization, key_id: int) -> ApiToken:
    """A key of one of the organization's members or service accounts; 404 for any other, as
    for a key that does not exist."""
    token = organization_keys(organization=organization).filter(pk=key_id).first()
    if token is None:
        raise Http404("No such gateway key.")
    return token
