"""Dashboards, their JSON, and CSV exports. Thin: parse, check access, call selectors, render.

Access: every view needs a login; a user sees only their own data — another user's data
answers 404, exactly like data that does not exist — and staff see everyone's. An
organization's admin (``organizations.selectors.organization_for_admin``) sees that
organization's: its pages under ``/org/<id>/``, and the JSON and CSV below with ``?org=<id>``
(the whole organization, or ``&user=<id>`` one of its users), always only the rows billed to it.
Every JSON endpoint also answers ``?format=csv`` (streamed) for billing. The JSON endpoints
(``json_endpoint``) take GET and HEAD and answer every refusal in the JSON API's error shape
(``ratelimit_project.api_errors``): 400 / 401 / 403 / 404 / 405, never a login redirect or an
HTML page; the pages and the audit CSV export keep the login redirect and Django's pages.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.module_loading import import_string
from django.views.decorators.csrf import csrf_exempt

from llm_calls import caching as caching_stats
from llm_calls.types import Usage
from organizations import selectors as org_selectors
from organizations.models import Organization
from ratelimit_project import api_errors
from usage import pricing, reconcile, selectors, services
from usage.csv_safety import csv_cell
from usage.forms import DateRange, FilterError, parse_choice, parse_date_range, parse_page

SESSION_CALLS_PER_PAGE = 100
ALL = "all"


# --- helpers -------------------------------------------------------------------------------------


def _date_range(request: HttpRequest) -> DateRange:
    return parse_date_range(params=request.GET, today=timezone.now().date())


def _me(request: HttpRequest) -> int:
    pk = request.user.pk
    if pk is None:  # login_required ran first; this only satisfies the type checker
        raise PermissionDenied("Log in first.")
    return int(pk)


def _subject_user_id(request: HttpRequest, raw: str | int | None) -> int | None:
    """Whose data a request may read: itself by default; staff may name any user, or ``all``
    (returned as None). Naming someone else without staff rights is a 404, as if they did
    not exist."""
    me = request.user.pk
    if raw in (None, ""):
        return me
    if raw == ALL:
        if not request.user.is_staff:
            raise Http404("No such user.")
        return None
    try:
        user_id = int(raw)  # type: ignore[arg-type]
    except ValueError:
        raise FilterError(f"user={raw!r} is not a user id (or 'all').") from None
    if user_id == me:
        return me
    if not request.user.is_staff:
        raise Http404("No such user.")
    if not get_user_model()._default_manager.filter(pk=user_id).exists():
        raise Http404("No such user.")
    return user_id


def _org_scope(request: HttpRequest) -> Organization | None:
    """``?org=<id>``: the organization a JSON or CSV request reads, if its admin (or staff)
    asks — 403 for its other members, 404 for anyone else; None without the parameter."""
    raw = request.GET.get("org")
    if raw in (None, ""):
        return None
    try:
        organization_id = int(raw)
    except ValueError:
        raise FilterError(f"org={raw!r} is not an organization id.") from None
    return org_selectors.organization_for_admin(user=request.user, organization_id=organization_id)


def _org_subject_id(organization: Organization, raw: str | int | None) -> int | None:
    """Whose rows within an organization: all of them (None) by default or for ``all``; else
    one user who belongs to it or whose usage was billed to it (a former member's history is
    still the organization's). Anyone else is a 404, as if they did not exist."""
    if raw in (None, "", ALL):
        return None
    try:
        user_id = int(raw)  # type: ignore[arg-type]
    except ValueError:
        raise FilterError(f"user={raw!r} is not a user id (or 'all').") from None
    return _org_user_id(organization, user_id)


def _org_user_id(organization: Organization, user_id: int) -> int:
    """``user_id`` if they belong to the organization or their usage was billed to it; 404
    otherwise (another organization's users are as good as nonexistent)."""
    if org_selectors.is_member(
        organization_id=organization.pk, user_id=user_id
    ) or selectors.billed_to_organization(user_id=user_id, organization_id=organization.pk):
        return user_id
    raise Http404("No such user.")


def _scope(request: HttpRequest) -> tuple[int | None, int | None]:
    """(user_id, organization_id) a JSON or CSV request reads: with ``?org=`` the
    organization's rows (``user_id`` None: all of them); without it ``_subject_user_id``'s
    user, or everyone for staff."""
    organization = _org_scope(request)
    if organization is None:
        return _subject_user_id(request, request.GET.get("user")), None
    return _org_subject_id(organization, request.GET.get("user")), organization.pk


def _require_staff(request: HttpRequest) -> None:
    if not request.user.is_staff:
        raise PermissionDenied("Staff only.")


def _wants_csv(request: HttpRequest) -> bool:
    return request.GET.get("format") == "csv"


class _Echo:
    def write(self, value: str) -> str:
        return value


# The selectors' rows carry money as exact decimal strings (the JSON shape). In a CSV they are
# numbers we wrote, so they go out as Decimals: csv_cell then leaves them alone, where a
# negative saving as text ("-0.005") would get the formula-guarding quote and stop adding up.
# Decimal() refuses anything that is not a number, so no user text can pass as money.
MONEY_COLUMNS = frozenset({"cost_usd", "uncached_cost_usd", "saved_usd"})


def csv_response(
    *, filename: str, header: Sequence[str], rows: Iterable[dict[str, Any]]
) -> StreamingHttpResponse:
    """Stream rows as CSV (header first) without building the file in memory. Every cell goes
    through ``csv_cell``, so no user-chosen text reaches a spreadsheet as a formula."""
    writer = csv.writer(_Echo())
    money = [column in MONEY_COLUMNS for column in header]

    def cells(row: dict[str, Any]) -> list[object]:
        values = (row.get(column, "") for column in header)
        return [
            csv_cell(Decimal(value) if is_money and isinstance(value, str) else value)
            for is_money, value in zip(money, values, strict=True)
        ]

    def lines() -> Iterator[str]:
        yield writer.writerow([csv_cell(column) for column in header])
        for row in rows:
            yield writer.writerow(cells(row))

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


TOTALS_COLUMNS = tuple(selectors.Totals().as_dict())


def _bad_filter_page(request: HttpRequest, error: FilterError) -> HttpResponse:
    return render(request, "usage/filter_error.html", {"error": str(error)}, status=400)


def _bad_filter_json(problem: FilterError) -> JsonResponse:
    return api_errors.error(400, "invalid_request", str(problem))


JSON_METHODS = ("GET", "HEAD")
JsonView = Callable[..., HttpResponseBase]


def presented_key(request: HttpRequest) -> str | None:
    """A gateway key sent as ``Authorization: Bearer <key>`` or ``x-api-key``."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


def _key_user(raw: str) -> Any | None:
    """The user a gateway key belongs to, by ``USAGE_KEY_AUTHENTICATOR`` (a dotted path to
    ``raw key -> user or None``; the keys live in ``queueing``, which this app must not
    import). None for a bad key, or when no authenticator is configured."""
    path = getattr(settings, "USAGE_KEY_AUTHENTICATOR", "")
    if not path:
        return None
    authenticate: Callable[[str], Any] = import_string(path)
    return authenticate(raw)


def _signed_in(request: HttpRequest) -> HttpResponse | None:
    """Make sure a session or a gateway key says who is asking; else the JSON 401."""
    if request.user.is_authenticated:
        return None
    raw = presented_key(request)
    if raw is None:
        return api_errors.error(
            401,
            "authentication_error",
            "log in first, or send a gateway key (Authorization: Bearer <key> or x-api-key)",
        )
    user = _key_user(raw)
    if user is None:
        return api_errors.error(
            401, "authentication_error", "invalid, revoked or expired gateway key"
        )
    request.user = user
    return None


def json_endpoint(view: JsonView) -> JsonView:
    """A usage JSON endpoint (its ``?format=csv`` too): read-only, for a logged-in session or a
    gateway key, and every refusal in the JSON API's shape — 405 with ``Allow`` for another
    method, 401 signed out or with a bad key, and the views' own ``FilterError`` (400),
    ``PermissionDenied`` (403) and ``Http404`` (404)."""

    @csrf_exempt  # it takes only GET and HEAD, which change nothing: a POST gets the JSON 405,
    @wraps(view)  # not Django's HTML CSRF page
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method not in JSON_METHODS:
            return api_errors.method_not_allowed(JSON_METHODS)
        refused = _signed_in(request)
        if refused is not None:
            return refused
        try:
            return view(request, *args, **kwargs)
        except FilterError as problem:
            return _bad_filter_json(problem)
        except PermissionDenied as denied:
            return api_errors.error(403, "permission_error", str(denied) or "permission denied")
        except Http404 as missing:
            return api_errors.error(404, "not_found", str(missing) or "not found")

    return wrapper


def _page(request: HttpRequest, template: str, context: dict[str, Any]) -> HttpResponse:
    """Render a usage page; staff also see which models have calls recorded without a price
    (until those are priced), wherever they look at costs."""
    if request.user.is_staff:
        context = {**context, "unpriced_models": selectors.unpriced_models()}
    return render(request, template, context)


def _scope_dict(user_id: int | None, organization_id: int | None) -> dict[str, Any]:
    """Whose figures a JSON answer holds: ``user_id`` always (None: everyone, or the whole
    organization), and ``organization_id`` when scoped to one."""
    scope: dict[str, Any] = {"user_id": user_id}
    if organization_id is not None:
        scope["organization_id"] = organization_id
    return scope


def _range_dict(date_range: DateRange) -> dict[str, Any]:
    return {
        "start": date_range.start.isoformat(),
        "end": date_range.end.isoformat(),
        "days": date_range.days,
    }


# --- pages ---------------------------------------------------------------------------------------


def _dashboard(
    request: HttpRequest, subject_id: int, organization: Organization | None = None
) -> HttpResponse:
    """A user's dashboard: all of their usage, or (``organization``, for its admin) only what
    was billed to that organization, with the charts and exports scoped alike."""
    try:
        date_range = _date_range(request)
        page = parse_page(params=request.GET)
    except FilterError as error:
        return _bad_filter_page(request, error)
    subject = get_user_model()._default_manager.get(pk=subject_id)
    org_id = organization.pk if organization is not None else None
    totals = selectors.usage_summary(
        user_id=subject_id, date_range=date_range, organization_id=org_id
    )
    sessions = selectors.sessions_for_user(
        user_id=subject_id, date_range=date_range, page=page, organization_id=org_id
    )
    is_self = subject_id == request.user.pk and organization is None
    if organization is not None:
        user_q = f"&org={organization.pk}&user={subject_id}"
    else:
        user_q = "" if is_self else f"&user={subject_id}"
    return _page(
        request,
        "usage/dashboard.html",
        {
            "subject": subject,
            "is_self": is_self,
            "org": organization,
            "org_tab": "usage",
            "range": date_range,
            "range_query": date_range.as_query(),
            "api_query": date_range.as_query() + user_q,
            "totals": totals.as_dict(),
            "models": [
                m.as_dict()
                for m in selectors.usage_by_model(
                    user_id=subject_id, date_range=date_range, organization_id=org_id
                )
            ],
            "sessions": sessions,
            "session_rows": [s.as_dict() for s in sessions.items],
        },
    )


@login_required
def my_usage(request: HttpRequest) -> HttpResponse:
    return _dashboard(request, _me(request))


@login_required
def user_usage(request: HttpRequest, user_id: int) -> HttpResponse:
    """Staff drill-down: the same page as "my usage", for another user."""
    if user_id != request.user.pk:
        _require_staff(request)
    if not get_user_model()._default_manager.filter(pk=user_id).exists():
        raise Http404("No such user.")
    return _dashboard(request, user_id)


def _session_page(
    request: HttpRequest,
    owner_id: int | None,
    session_id: str,
    organization: Organization | None = None,
) -> HttpResponse:
    """One session's page; with ``organization`` (its admin) only if it was billed to it."""
    org_id = organization.pk if organization is not None else None
    session = selectors.session_for_user(
        user_id=owner_id, session_id=session_id, organization_id=org_id
    )
    if session is None:
        raise Http404("No such session.")
    try:
        page = parse_page(params=request.GET)
    except FilterError as error:
        return _bad_filter_page(request, error)
    offset = (page - 1) * SESSION_CALLS_PER_PAGE
    calls = selectors.session_calls(
        user_id=owner_id,
        session_id=session_id,
        limit=SESSION_CALLS_PER_PAGE,
        offset=offset,
        organization_id=org_id,
    )
    calls_total = session.totals.requests
    owner = get_user_model()._default_manager.filter(pk=owner_id).first() if owner_id else None
    if organization is not None:
        user_q = f"?org={organization.pk}&user={owner_id}"
    else:
        user_q = "" if owner_id == request.user.pk else f"?user={owner_id if owner_id else ALL}"
    return _page(
        request,
        "usage/session.html",
        {
            "org": organization,
            "org_tab": "usage",
            "session": session,
            "totals": session.totals.as_dict(),
            "owner": owner,
            "calls": calls,
            "calls_total": calls_total,
            "chart_truncated": calls_total > selectors.SESSION_CALLS_LIMIT,
            "chart_limit": selectors.SESSION_CALLS_LIMIT,
            "page": page,
            "has_previous": page > 1,
            "has_next": offset + SESSION_CALLS_PER_PAGE < calls_total,
            "calls_url": reverse("usage:api-session-calls", args=[session_id]) + user_q,
        },
    )


@login_required
def session_detail(request: HttpRequest, session_id: str) -> HttpResponse:
    """One of my sessions. Staff opening someone else's session id land on its owner's."""
    if selectors.session_for_user(user_id=request.user.pk, session_id=session_id):
        return _session_page(request, request.user.pk, session_id)
    if request.user.is_staff:
        owner_id = selectors.session_owner_id(session_id=session_id)
        if owner_id is not None or selectors.session_for_user(user_id=None, session_id=session_id):
            return _session_page(request, owner_id, session_id)
    raise Http404("No such session.")


@login_required
def user_session_detail(request: HttpRequest, user_id: int, session_id: str) -> HttpResponse:
    if user_id != request.user.pk and not request.user.is_staff:
        raise Http404("No such session.")
    # A pk lookup tolerates any integer; the session query's user_id filter would overflow.
    if not get_user_model()._default_manager.filter(pk=user_id).exists():
        raise Http404("No such session.")
    return _session_page(request, user_id, session_id)


def _users_params(request: HttpRequest) -> tuple[DateRange, str, bool, int]:
    date_range = _date_range(request)
    sort = parse_choice(params=request.GET, name="sort", choices=selectors.USER_SORTS)
    order = parse_choice(params=request.GET, name="order", choices=("desc", "asc"))
    page = parse_page(params=request.GET)
    return date_range, sort, order == "desc", page


@login_required
def users_list(request: HttpRequest) -> HttpResponse:
    _require_staff(request)
    try:
        date_range, sort, descending, page = _users_params(request)
    except FilterError as error:
        return _bad_filter_page(request, error)
    users = selectors.users_page(date_range=date_range, sort=sort, descending=descending, page=page)
    return _page(
        request,
        "usage/users.html",
        {
            "range": date_range,
            "range_query": date_range.as_query(),
            "sort": sort,
            "order": "desc" if descending else "asc",
            "sorts": selectors.USER_SORTS,
            "extra_query": f"&sort={sort}&order={'desc' if descending else 'asc'}",
            "keep_params": [("sort", sort), ("order", "desc" if descending else "asc")],
            "users": users,
            "user_rows": [u.as_dict() for u in users.items],
            "rank_offset": (page - 1) * selectors.USERS_PER_PAGE,
            "overall": selectors.usage_summary(user_id=None, date_range=date_range).as_dict(),
        },
    )


@login_required
def orgs_list(request: HttpRequest) -> HttpResponse:
    _require_staff(request)
    try:
        date_range = _date_range(request)
    except FilterError as error:
        return _bad_filter_page(request, error)
    orgs = selectors.orgs_usage(date_range=date_range)
    return _page(
        request,
        "usage/orgs.html",
        {
            "range": date_range,
            "range_query": date_range.as_query(),
            "org_rows": [o.as_dict() for o in orgs],
        },
    )


# --- an organization, for its admins (and staff) ----------------------------------------------


ORG_USERS_SHOWN = 50  # the page's table and chart; the users CSV has every one


@login_required
def org_usage(request: HttpRequest, org_id: int) -> HttpResponse:
    """One organization's usage: totals, days, models and users — only rows billed to it."""
    organization = org_selectors.organization_for_admin(user=request.user, organization_id=org_id)
    try:
        date_range = _date_range(request)
    except FilterError as error:
        return _bad_filter_page(request, error)
    org_id = organization.pk
    users = selectors.users_page(
        date_range=date_range, sort="cost", per_page=ORG_USERS_SHOWN, organization_id=org_id
    )
    return _page(
        request,
        "usage/org.html",
        {
            "org": organization,
            "org_tab": "usage",
            "range": date_range,
            "range_query": date_range.as_query(),
            "api_query": f"{date_range.as_query()}&org={organization.pk}",
            "totals": selectors.usage_summary(
                user_id=None, date_range=date_range, organization_id=org_id
            ).as_dict(),
            "models": [
                m.as_dict()
                for m in selectors.usage_by_model(
                    user_id=None, date_range=date_range, organization_id=org_id
                )
            ],
            "users": users,
            "user_rows": [u.as_dict() for u in users.items],
        },
    )


@login_required
def org_user_usage(request: HttpRequest, org_id: int, user_id: int) -> HttpResponse:
    """A member's dashboard as their organization's admin sees it: what was billed to it."""
    organization = org_selectors.organization_for_admin(user=request.user, organization_id=org_id)
    return _dashboard(request, _org_user_id(organization, user_id), organization)


@login_required
def org_user_session(
    request: HttpRequest, org_id: int, user_id: int, session_id: str
) -> HttpResponse:
    organization = org_selectors.organization_for_admin(user=request.user, organization_id=org_id)
    return _session_page(request, _org_user_id(organization, user_id), session_id, organization)


@login_required
def reconciliation(request: HttpRequest) -> HttpResponse:
    """Staff: our audit_log against Anthropic's usage and cost reports, per day (the latest
    ``manage.py reconcile`` figures of each day)."""
    _require_staff(request)
    return _page(
        request,
        "usage/reconciliation.html",
        {
            "day_rows": [reconcile.page_row(row) for row in reconcile.recent_days()],
            "last_run": reconcile.latest_run(),
        },
    )


@login_required
def uncached_prefixes(request: HttpRequest) -> HttpResponse:
    """Staff: the prompt prefixes sent at full price most, with what they cost and why the
    planner left them uncached — what to cache next."""
    _require_staff(request)
    today = timezone.now().date()
    rows = []
    for prefix in caching_stats.uncached_prefixes(limit=50):
        price = services.price_for(model=prefix.model, on=today)
        cost = (
            pricing.call_cost_usd(usage=Usage(input_tokens=prefix.uncached_tokens), price=price)
            if price is not None
            else None
        )
        rows.append(
            {
                "prefix": prefix,
                "cost_usd": cost,
                "last_seen": dt.datetime.fromtimestamp(prefix.last_seen, dt.UTC),
            }
        )
    return _page(request, "usage/uncached_prefixes.html", {"rows": rows})


@login_required
def caching(request: HttpRequest) -> HttpResponse:
    """Prompt-caching insight: hit rate, tokens read vs written, money saved — mine, or (staff,
    ``?user=all``) everyone's with the users who save most."""
    try:
        date_range = _date_range(request)
        subject_id = _subject_user_id(request, request.GET.get("user"))
    except FilterError as error:
        return _bad_filter_page(request, error)
    top_savers = None
    if request.user.is_staff and subject_id is None:
        top_savers = [
            u.as_dict()
            for u in selectors.users_page(date_range=date_range, sort="saved", per_page=20).items
        ]
    user_q = "" if subject_id == request.user.pk else f"&user={subject_id or ALL}"
    return _page(
        request,
        "usage/caching.html",
        {
            "range": date_range,
            "range_query": date_range.as_query(),
            "api_query": date_range.as_query() + user_q,
            "scope_all": subject_id is None,
            "extra_query": "&user=all" if subject_id is None else "",
            "keep_params": [("user", ALL)] if subject_id is None else [],
            "subject_id": subject_id,
            "totals": selectors.usage_summary(user_id=subject_id, date_range=date_range).as_dict(),
            "models": [
                m.as_dict()
                for m in selectors.usage_by_model(user_id=subject_id, date_range=date_range)
            ],
            "top_savers": top_savers,
        },
    )


# --- JSON (and CSV) ------------------------------------------------------------------------------


@json_endpoint
def summary_json(request: HttpRequest) -> HttpResponseBase:
    date_range = _date_range(request)
    subject_id, org_id = _scope(request)
    totals = selectors.usage_summary(
        user_id=subject_id, date_range=date_range, organization_id=org_id
    ).as_dict()
    if _wants_csv(request):
        return csv_response(
            filename="usage-summary.csv",
            header=("start", "end", *TOTALS_COLUMNS),
            rows=[{"start": date_range.start, "end": date_range.end, **totals}],
        )
    return JsonResponse(
        {"range": _range_dict(date_range), **_scope_dict(subject_id, org_id), "totals": totals}
    )


@json_endpoint
def daily_json(request: HttpRequest) -> HttpResponseBase:
    date_range = _date_range(request)
    subject_id, org_id = _scope(request)
    days = [
        d.as_dict()
        for d in selectors.usage_by_day(
            user_id=subject_id, date_range=date_range, organization_id=org_id
        )
    ]
    if _wants_csv(request):
        return csv_response(filename="usage-daily.csv", header=("day", *TOTALS_COLUMNS), rows=days)
    return JsonResponse(
        {"range": _range_dict(date_range), **_scope_dict(subject_id, org_id), "days": days}
    )


@json_endpoint
def models_json(request: HttpRequest) -> HttpResponseBase:
    date_range = _date_range(request)
    subject_id, org_id = _scope(request)
    models = [
        m.as_dict()
        for m in selectors.usage_by_model(
            user_id=subject_id, date_range=date_range, organization_id=org_id
        )
    ]
    if _wants_csv(request):
        return csv_response(
            filename="usage-models.csv", header=("model", *TOTALS_COLUMNS), rows=models
        )
    return JsonResponse(
        {"range": _range_dict(date_range), **_scope_dict(subject_id, org_id), "models": models}
    )


SESSION_COLUMNS = ("session_id", "user_id", "first_at", "last_at", *TOTALS_COLUMNS)


@json_endpoint
def sessions_json(request: HttpRequest) -> HttpResponseBase:
    date_range = _date_range(request)
    subject_id, org_id = _scope(request)
    page = parse_page(params=request.GET)
    if subject_id is None:
        raise FilterError("Sessions are listed per user; give user=<id>.")
    if _wants_csv(request):
        rows = (
            s.as_dict()
            for s in selectors.iter_sessions_for_user(
                user_id=subject_id, date_range=date_range, organization_id=org_id
            )
        )
        return csv_response(filename="usage-sessions.csv", header=SESSION_COLUMNS, rows=rows)
    sessions = selectors.sessions_for_user(
        user_id=subject_id, date_range=date_range, page=page, organization_id=org_id
    )
    return JsonResponse(
        {
            "range": _range_dict(date_range),
            **_scope_dict(subject_id, org_id),
            "page": sessions.number,
            "has_next": sessions.has_next,
            "total": sessions.total,
            "sessions": [s.as_dict() for s in sessions.items],
        }
    )


CALL_COLUMNS = selectors.CALL_COLUMNS


@json_endpoint
def session_calls_json(request: HttpRequest, session_id: str) -> HttpResponseBase:
    owner_id, org_id = _scope(request)
    # ?user=all means "the system's session" (no user) here; only staff get that far. Within
    # an organization a session id names nothing without its user (ids are per user).
    if org_id is not None and owner_id is None:
        raise FilterError("Sessions are per user; give user=<id> with org=<id>.")
    session = selectors.session_for_user(
        user_id=owner_id, session_id=session_id, organization_id=org_id
    )
    if session is None:
        raise Http404("No such session.")
    if _wants_csv(request):
        rows = (
            c.as_dict()
            for c in selectors.iter_session_calls(
                user_id=owner_id, session_id=session_id, organization_id=org_id
            )
        )
        return csv_response(filename="session-calls.csv", header=CALL_COLUMNS, rows=rows)
    page = parse_page(params=request.GET)
    per_page = selectors.SESSION_CALLS_LIMIT
    calls = selectors.session_calls(
        user_id=owner_id,
        session_id=session_id,
        limit=per_page,
        offset=(page - 1) * per_page,
        organization_id=org_id,
    )
    return JsonResponse(
        {
            "session": session.as_dict(),
            "page": page,
            "has_next": page * per_page < session.totals.requests,
            "calls": [c.as_dict() for c in calls],
        }
    )


USER_COLUMNS = ("user_id", "username", *TOTALS_COLUMNS)


@json_endpoint
def users_json(request: HttpRequest) -> HttpResponseBase:
    """Every user's totals (staff), or one organization's users' (``?org=``, its admin)."""
    organization = _org_scope(request)
    if organization is None:
        _require_staff(request)
    org_id = organization.pk if organization is not None else None
    date_range, sort, descending, page = _users_params(request)
    if _wants_csv(request):
        rows = (
            u.as_dict()
            for u in selectors.iter_users(date_range=date_range, sort=sort, organization_id=org_id)
        )
        return csv_response(filename="usage-users.csv", header=USER_COLUMNS, rows=rows)
    users = selectors.users_page(
        date_range=date_range,
        sort=sort,
        descending=descending,
        page=page,
        organization_id=org_id,
    )
    return JsonResponse(
        {
            "range": _range_dict(date_range),
            **({"organization_id": org_id} if org_id is not None else {}),
            "sort": sort,
            "order": "desc" if descending else "asc",
            "page": users.number,
            "has_next": users.has_next,
            "users": [u.as_dict() for u in users.items],
        }
    )


ORG_COLUMNS = ("organization_id", "name", *TOTALS_COLUMNS)


@json_endpoint
def orgs_json(request: HttpRequest) -> HttpResponseBase:
    _require_staff(request)
    date_range = _date_range(request)
    orgs = [o.as_dict() for o in selectors.orgs_usage(date_range=date_range)]
    if _wants_csv(request):
        return csv_response(filename="usage-orgs.csv", header=ORG_COLUMNS, rows=orgs)
    return JsonResponse({"range": _range_dict(date_range), "organizations": orgs})


AUDIT_COLUMNS = (*CALL_COLUMNS, *selectors.AUDIT_EXTRA_COLUMNS)


def audit_csv(request: HttpRequest) -> HttpResponseBase:
    """Every call in the range as CSV (mine; staff: ``?user=<id>`` or ``?user=all``; an
    organization's admin: ``?org=<id>``, with ``&user=<id>`` for one of its users). A browser
    signed out goes to the login page; a script may send a gateway key."""
    if not request.user.is_authenticated:
        if presented_key(request) is None:
            return redirect_to_login(request.get_full_path())
        refused = _signed_in(request)
        if refused is not None:
            return refused
    try:
        date_range = _date_range(request)
        subject_id, org_id = _scope(request)
    except FilterError as error:
        return _bad_filter_json(error)
    return csv_response(
        filename=f"audit-{date_range.start}-{date_range.end}.csv",
        header=AUDIT_COLUMNS,
        rows=selectors.iter_audit_rows(
            user_id=subject_id, date_range=date_range, organization_id=org_id
        ),
    )
