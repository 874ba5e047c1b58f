"""Every URL × every kind of visitor: who may see what, and CSRF on everything that writes.

The URL list comes from the real root URLconf (``all_routes``), so a URL added later is
covered at once: our own apps' URLs must have a row in ``TABLE`` (the test fails naming any URL
without one); the admin site's and django-rq's generated URLs follow their own rule (staff only).

Visitors: anonymous, the owner of the data, another user, staff, the owner's API token (no
session), the /metrics scrape token, and the admin of the owner's organization (a membership
role, not staff). "The owner's data" is recognised by a marker (the owner's session id), which
must show where the owner, staff or (on the organization's pages) its admin look and nowhere
else. A second organization, the rival, has an admin, a member, a session, a cost and a key
of its own: the owner's organization admin gets none of it (``test_an_org_admin_…``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from llm_calls.emulator.process import EmulatorProcess
from llm_calls.types import Usage
from organizations.models import Membership, Organization
from queueing import services
from queueing.auth import api_token_create
from queueing.models import ApiToken, LLMRequest, Quota
from tests.e2e.conftest import (
    MODEL,
    Route,
    admin_ids,
    all_routes,
    body_text,
    route_path,
    url_values,
)
from tests.usage.factories import make_org, make_user
from usage import services as usage_services
from usage.models import AuditLog
from usage.pricing import pico_to_usd, pico_to_usd_str
from usage.templatetags.usage_format import usd

pytestmark = pytest.mark.django_db

MARKER = "owner-sess-q7x"  # the owner's session id: where it shows, the owner's data shows
METRICS_TOKEN = "metrics-scrape-token-e2e"
LOGIN_PAGES = ("/accounts/login/", "/admin/login/")
ROLES = ("anon", "owner", "other", "staff", "owner_token", "metrics_token", "org_admin")
# The organization's own pages, exports and actions: its admins and staff only.
ORG_RULES = frozenset({"org", "org_index"})
QUOTA_MARK = 4242  # a member's daily token limit an org admin's POST sets
KEY_MARK = "intruder-made-key"  # the name of a key an org admin's POST makes


# --- expectations --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    status: frozenset[int]
    login: bool = False  # a 302 must lead to a login page
    marker: bool | None = None  # the owner's data must (True) / must not (False) be in the body
    effect: bool | None = None  # a state-changing request: must it have happened?


def _s(*codes: int) -> frozenset[int]:
    return frozenset(codes)


OK = Expect(_s(200))
HIDDEN = Expect(_s(404), marker=False)


@dataclass(frozen=True)
class Access:
    """How one URL treats each visitor. ``kind``: page / csv (session login, anonymous is
    redirected to the login page), json / json-csv (a usage JSON endpoint, or its
    ``?format=csv``: session login, anonymous gets the JSON 401) or api (session or API token,
    anonymous gets 401)."""

    rule: str
    kind: str = "page"
    marker: bool = False  # the owner's marker is part of what the owner sees here
    method: str = "GET"
    overrides: dict[str, Expect] = field(default_factory=dict)
    probe: str = ""  # a POST: how to tell it happened (PROBES; default: by the rule)
    done: frozenset[int] = frozenset({302})  # a POST that happened answers this

    def expect(self, role: str) -> Expect:
        if role == "org_admin" and self.rule not in ORG_RULES:
            # Anywhere but the organization's own pages its admin is one more member: the
            # staff pages and another user's data stay closed to them.
            role = "other"
        if role in self.overrides:
            return self.overrides[role]
        if role == "metrics_token" and self.kind == "csv" and self.rule != "scrape":
            # The export takes gateway keys: a script sending anything else is told its key
            # is not one (a JSON 401), not sent to a login page it cannot use.
            return Expect(_s(401), marker=False, effect=False)
        role = self._effective_role(role)
        if role == "anon":
            return self._anonymous()
        return getattr(self, f"_{self.rule}")(role)

    def _effective_role(self, role: str) -> str:
        if role == "owner_token":
            # Gateway keys open the APIs and usage's JSON and CSV, never a page or the admin.
            return "owner" if self.kind in ("api", "json", "json-csv", "csv") else "anon"
        if role == "metrics_token":
            return "staff" if self.rule == "scrape" else "anon"
        return role

    def _anonymous(self) -> Expect:
        if self.rule == "public":
            return Expect(_s(200, 302, 405), marker=False)
        if self.rule == "scrape":
            return Expect(_s(401, 403), marker=False)
        if self.rule == "admin":
            return Expect(_s(302), login=True, marker=False)
        if self.kind in ("api", "json", "json-csv"):
            return Expect(_s(401), marker=False, effect=False)
        return Expect(_s(302), login=True, marker=False, effect=False)

    def _mine(self) -> Expect:
        return Expect(_s(200), marker=True if self.marker else None)

    # rules: one per kind of URL
    def _public(self, role: str) -> Expect:
        return Expect(_s(200, 302, 405), marker=False)

    def _own(self, role: str) -> Expect:
        """Data of whoever asks: everyone sees only their own."""
        return self._mine() if role == "owner" else Expect(_s(200), marker=False)

    def _owned(self, role: str) -> Expect:
        """The URL names the owner's object: the owner and staff see it, others get 404."""
        return HIDDEN if role == "other" else self._mine()

    def _staff(self, role: str) -> Expect:
        if role == "staff":
            return OK
        return Expect(_s(302, 403, 404), login=True, marker=False)

    def _scrape(self, role: str) -> Expect:
        return OK if role == "staff" else Expect(_s(401, 403), marker=False)

    def _admin(self, role: str) -> Expect:
        if role == "staff":
            # 302/404: no such object; 403: bad parameters; 405: a POST-only action
            return Expect(_s(200, 302, 403, 404, 405))
        return Expect(_s(302), login=True, marker=False)

    def _create(self, role: str) -> Expect:
        return Expect(_s(202) if self.kind == "api" else _s(302), effect=True)

    def _org(self, role: str) -> Expect:
        """The owner's organization's page, export or action: its admin and staff get it;
        its other members — the owner among them — are refused (403), and change nothing."""
        if role in ("staff", "org_admin"):
            if self.method == "POST":
                return Expect(self.done, effect=True)
            return self._mine()
        return Expect(_s(403), marker=False, effect=False if self.method == "POST" else None)

    def _org_index(self, role: str) -> Expect:
        """/org/: staff choose among the organizations; an admin goes straight to theirs."""
        if role == "org_admin":
            return Expect(_s(302), marker=False)
        return self._org(role)

    def _cancel(self, role: str) -> Expect:
        if role == "other":
            return Expect(_s(404), marker=False, effect=False)
        return Expect(_s(200) if self.kind == "api" else _s(302), effect=True)


def a(rule: str, kind: str = "page", **kw: Any) -> Access:
    return Access(rule, kind, **kw)


def staff_only(kind: str, **staff: Expect) -> Access:
    """``?user=all``: staff only, and to anyone else it is as if nothing were there (404)."""
    return a("staff", kind, overrides={"owner": HIDDEN, "other": HIDDEN, **staff})


USER = "?user={user_id}"
ORG = "?org={org_id}"
ORG_USER = ORG + "&user={user_id}"
SUBMIT_JSON = {
    "session_id": "intruder-made",
    "model": MODEL,
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 5,
}
SUBMIT_FORM = {**SUBMIT_JSON, "prompt": "hi", "priority": "query", "messages": ""}

# key (URL name, or the route text of unnamed ones) -> variants: (suffix, access, body)
Variant = tuple[str, Access, dict[str, Any] | None]
TABLE: dict[str, list[Variant]] = {
    "": [("", a("public"), None)],
    "login": [("", a("public"), None)],
    "logout": [("", a("public"), None)],
    "password_change": [("", a("public"), None)],
    "password_change_done": [("", a("public"), None)],
    "password_reset": [("", a("public"), None)],
    "password_reset_done": [("", a("public"), None)],
    "password_reset_confirm": [("", a("public"), None)],
    "password_reset_complete": [("", a("public"), None)],
    "admin:login": [("", a("public"), None)],
    "admin:logout": [("", a("public"), None)],
    "metrics": [("", a("scrape"), None)],
    # The probes answer anyone (a load balancer has no login) and tell nobody's data;
    # readiness is 503 while no worker host is alive, as in this test.
    "healthz": [("", a("public", "json"), None)],
    "readyz": [
        (
            "",
            a("public", "json", overrides={r: Expect(_s(200, 503), marker=False) for r in ROLES}),
            None,
        )
    ],
    "django_rq:metrics": [("", a("scrape"), None)],
    "admin/rq/^stats.json/?$": [("", a("scrape", "json"), None)],
    "admin/rq/^stats.json/(?P<token>[\\w]+)?/?$": [("", a("scrape", "json"), None)],
    # usage
    "usage:mine": [("", a("own", marker=True), None)],
    "usage:caching": [
        ("", a("own"), None),
        (USER, a("owned"), None),
        ("?user=all", staff_only("page"), None),
    ],
    "usage:session": [("", a("owned", marker=True), None)],
    "usage:user": [
        ("", a("owned", marker=True, overrides={"other": Expect(_s(403), marker=False)}), None)
    ],
    "usage:user-session": [("", a("owned", marker=True), None)],
    "usage:users": [("", a("staff"), None)],
    "usage:orgs": [("", a("staff"), None)],
    "usage:reconciliation": [("", a("staff"), None)],
    "usage:uncached-prefixes": [("", a("staff"), None)],
    "usage:api-users": [
        ("", a("staff", "json"), None),
        ("?format=csv", a("staff", "json-csv"), None),
    ],
    "usage:api-orgs": [
        ("", a("staff", "json"), None),
        ("?format=csv", a("staff", "json-csv"), None),
    ],
    "usage:api-sessions": [
        ("", a("own", "json", marker=True), None),
        (USER, a("owned", "json", marker=True), None),
        (USER + "&format=csv", a("owned", "json-csv", marker=True), None),
        ("?user=all", staff_only("json", staff=Expect(_s(400))), None),
    ],
    "usage:api-session-calls": [
        # without ?user= it is the caller's own session of that name: staff have none
        ("", a("owned", "json", marker=True, overrides={"staff": HIDDEN}), None),
        (USER, a("owned", "json", marker=True), None),
        (USER + "&format=csv", a("owned", "json-csv"), None),
    ],
    "usage:export-audit": [
        ("", a("own", "csv", marker=True), None),
        (USER, a("owned", "csv", marker=True), None),
        ("?user=all", staff_only("csv"), None),
    ],
    # organizations: a person's own preferences (nobody's data; the page needs a login)
    "settings": [("", a("own"), None)],
    # queueing
    "queueing:my_queue": [
        ("", a("own", marker=True), None),
        ("", a("create", method="POST"), SUBMIT_FORM),
    ],
    "queueing:request": [("", a("owned", marker=True), None)],
    "queueing:cancel": [("", a("cancel", method="POST"), {})],
    "queueing:staff_queue": [("", a("staff"), None)],
    # the staff page's poller: the API's JSON errors (401 signed out, 403 not staff)
    "queueing:staff_queue_data": [("", a("staff", "api"), None)],
    "queueing:api_requests": [
        ("", a("own", "api", marker=True), None),
        ("?status=finished", a("own", "api", marker=True), None),
        ("", a("create", "api", method="POST"), SUBMIT_JSON),
    ],
    "queueing:api_request": [("", a("owned", "api", marker=True), None)],
    "queueing:api_result": [("", a("owned", "api", marker=True), None)],
    "queueing:api_cancel": [("", a("cancel", "api", method="POST"), {})],
    "queueing:api_queue_stats": [("", a("staff", "api"), None)],
    # everyone's own limits (the owner's marker is in no quota: none may show anyone else's)
    "queueing:api_quota": [("", a("own", "api"), None)],
    # the organization's pages (the owner's organization): its admin and staff only
    "org:index": [("", a("org_index"), None)],
    "org:usage": [("", a("org"), None)],
    "org:user": [("", a("org", marker=True), None)],
    "org:user-session": [("", a("org", marker=True), None)],
    "org:members": [("", a("org"), None)],
    "org:member-quota": [
        ("", a("org"), None),
        (
            "",
            a("org", method="POST", probe="org_quota"),
            {"tokens_per_day": str(QUOTA_MARK), "weight": "1"},
        ),
    ],
    "org:keys": [
        ("", a("org"), None),
        # the page that shows the new key once answers 200 itself
        (
            "",
            a("org", method="POST", probe="org_key", done=_s(200)),
            {"owner": "{user_id}", "name": KEY_MARK},
        ),
    ],
    "org:key-revoke": [("", a("org", method="POST", probe="org_revoke"), {})],
}
# ...and its exports: usage's JSON and CSV with ?org=
TABLE["usage:api-users"] += [
    (ORG, a("org", "json"), None),
    (ORG + "&format=csv", a("org", "json-csv"), None),
]
TABLE["usage:api-sessions"] += [
    (ORG_USER, a("org", "json", marker=True), None),
    (ORG_USER + "&format=csv", a("org", "json-csv", marker=True), None),
]
TABLE["usage:api-session-calls"] += [
    (ORG_USER, a("org", "json", marker=True), None),
    (ORG_USER + "&format=csv", a("org", "json-csv"), None),
]
TABLE["usage:export-audit"] += [
    (ORG, a("org", "csv", marker=True), None),
    (ORG_USER, a("org", "csv", marker=True), None),
]
for _name in ("summary", "daily", "models"):
    TABLE[f"usage:api-{_name}"] = [
        ("", a("own", "json"), None),
        (USER, a("owned", "json"), None),
        ("?format=csv", a("own", "json-csv"), None),
        ("?user=all", staff_only("json"), None),
        (ORG, a("org", "json"), None),
        (ORG + "&format=csv", a("org", "json-csv"), None),
        (ORG_USER, a("org", "json"), None),
    ]

# django-rq pages that cannot work here answer 500 to staff (the scheduler page needs rq-scheduler,
# which this project does not use). Not a leak: everyone else is still turned away. (django-rq's
# admin entry, a table-less model, is switched off: RQ_SHOW_ADMIN_LINK = False.)
_RQ_PAGE_BROKEN = a("admin", overrides={"staff": Expect(_s(200, 500))})
TABLE["django_rq:scheduler_jobs"] = [("", _RQ_PAGE_BROKEN, None)]
# The API prefixes' catch-alls: a JSON 404 for every visitor, whoever asks.
NOT_FOUND_FOR_ALL = a("public", "json", overrides={r: Expect(_s(404), marker=False) for r in ROLES})
TABLE["api_not_found"] = [("", NOT_FOUND_FOR_ALL, None)]
TABLE["usage_api_not_found"] = [("", NOT_FOUND_FOR_ALL, None)]
CATCH_ALLS = ("api_not_found", "usage_api_not_found")


def variants_for(route: Route) -> list[Variant] | None:
    if route.key in TABLE:
        return TABLE[route.key]
    if route.key.startswith(("admin:", "django_rq:")) or route.route.startswith("admin/"):
        return [("", a("admin"), None)]
    return None


# --- the world -------------------------------------------------------------------------------------


@dataclass
class Rival:
    """Another organization and everything of it a page could show."""

    org: Organization
    admin: User
    member: User
    session_id: str
    key: ApiToken
    raw_key: str
    cost: Decimal
    cost_text: str  # as JSON and CSV carry it

    @property
    def secrets(self) -> list[str]:
        return [
            self.org.name,
            self.admin.username,
            self.member.username,
            self.session_id,
            usd(self.cost),  # as pages print it
            self.cost_text,
            self.key.prefix,
            self.key.name,
        ]


@dataclass
class World:
    owner: User
    other: User
    staff: User
    org_admin: User  # the admin of owner's and other's organization
    owner_request: LLMRequest  # succeeded, in MARKER's session
    owner_token: str
    values: dict[str, str]
    rival: Rival


@pytest.fixture
def world(wired: EmulatorProcess, settings) -> World:
    settings.METRICS_TOKEN = METRICS_TOKEN
    settings.RQ_API_TOKEN = METRICS_TOKEN
    org = make_org("Intruder Test Org")
    owner = make_user("olivia", org=org)
    other = make_user("mallory", org=org)
    org_admin = make_user("oscar")
    Membership.objects.create(user=org_admin, organization=org, role=Membership.Role.ADMIN)
    staff = make_user("stan", staff=True)
    User.objects.filter(pk=staff.pk).update(is_superuser=True)
    staff.refresh_from_db()
    owner_request = services.call_claude(
        user=owner,
        session_id=MARKER,
        model=MODEL,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=10,
    )
    services.submit_request(
        user=owner,
        session_id=MARKER,
        model=MODEL,
        messages=[{"role": "user", "content": "still waiting"}],
        max_tokens=10,
    )
    usage_services.record_call(
        user=other,
        organization=org,
        session_id="mallory-sess",
        model=MODEL,
        priority="query",
        outcome=AuditLog.Outcome.SUCCESS,
        attempts=1,
        final_status=200,
        error_type="",
        usage=Usage(input_tokens=10, output_tokens=5),
        latency_ms=10,
        queue_wait_ms=0,
        request_id="req_mallory",
    )
    _, raw = api_token_create(user=owner, name="owner's service")
    values = url_values(request=owner_request)
    return World(owner, other, staff, org_admin, owner_request, raw, values, rival_world())


def rival_world() -> Rival:
    org = make_org("Rival Org Zeta")
    admin = make_user("rhea-rival")
    Membership.objects.create(user=admin, organization=org, role=Membership.Role.ADMIN)
    member = make_user("rex-rival", org=org)
    usage_services.record_call(
        user=member,
        organization=org,
        session_id="rival-sess-k3w",
        model=MODEL,
        priority="query",
        outcome=AuditLog.Outcome.SUCCESS,
        attempts=1,
        final_status=200,
        error_type="",
        usage=Usage(input_tokens=2_345_678, output_tokens=77_777),
        latency_ms=10,
        queue_wait_ms=0,
        request_id="req_rival",
    )
    key, raw = api_token_create(user=member, name="rival-router-key")
    pico = AuditLog.objects.get(request_id="req_rival").cost_pico_usd
    return Rival(
        org, admin, member, "rival-sess-k3w", key, raw, pico_to_usd(pico), pico_to_usd_str(pico)
    )


def client_for(world: World, role: str, *, csrf: bool = False) -> Client:
    # A view that crashes must show up as a 500 in the report, not abort the whole walk.
    client = Client(enforce_csrf_checks=csrf, raise_request_exception=False)
    user = {
        "owner": world.owner,
        "other": world.other,
        "staff": world.staff,
        "org_admin": world.org_admin,
    }.get(role)
    if user is not None:
        client.force_login(user)
    if role == "owner_token":
        client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {world.owner_token}"
    if role == "metrics_token":
        client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {METRICS_TOKEN}"
    return client


def fresh_queued_request(world: World) -> LLMRequest:
    return services.submit_request(
        user=world.owner,
        session_id=MARKER,
        model=MODEL,
        messages=[{"role": "user", "content": "cancel me?"}],
        max_tokens=10,
    )


def _probe_cancel(world: World, values: dict[str, str]) -> Callable[[], bool]:
    target = fresh_queued_request(world)
    values["pk"] = str(target.pk)

    def happened() -> bool:
        target.refresh_from_db()
        return target.status == LLMRequest.Status.CANCELLED

    return happened


def _probe_create(world: World, values: dict[str, str]) -> Callable[[], bool]:
    before = LLMRequest.objects.count()
    return lambda: LLMRequest.objects.count() == before + 1


def _probe_org_quota(world: World, values: dict[str, str]) -> Callable[[], bool]:
    member = int(values["user_id"])
    Quota.objects.filter(user_id=member).delete()
    return lambda: Quota.objects.filter(user_id=member, tokens_per_day=QUOTA_MARK).exists()


def _probe_org_key(world: World, values: dict[str, str]) -> Callable[[], bool]:
    before = ApiToken.objects.filter(name=KEY_MARK).count()
    return lambda: ApiToken.objects.filter(name=KEY_MARK).count() > before


def _probe_org_revoke(world: World, values: dict[str, str]) -> Callable[[], bool]:
    key_id = api_token_create(user=world.owner, name="revoke me")[0].pk
    values["key_id"] = str(key_id)
    return lambda: ApiToken.objects.get(pk=key_id).revoked


# A state-changing visit: set the stage (it may name the target in ``values``), and return
# what tells whether the change happened.
PROBES: dict[str, Callable[[World, dict[str, str]], Callable[[], bool]]] = {
    "cancel": _probe_cancel,
    "create": _probe_create,
    "org_quota": _probe_org_quota,
    "org_key": _probe_org_key,
    "org_revoke": _probe_org_revoke,
}


def visit(
    world: World, role: str, route: Route, suffix: str, access: Access, body: Any
) -> str | None:
    """Make one request; return what is wrong with the answer, or None."""
    values = dict(world.values)
    values.update(admin_ids(route))
    # A GET that should change nothing is held to "no request was created".
    probe = PROBES[access.probe or access.rule] if access.method == "POST" else _probe_create
    happened = probe(world, values)
    path = route_path(route, values) + suffix.format(**values)
    client = client_for(world, role)
    if isinstance(body, dict):  # a form field may name the target ("{user_id}")
        body = {k: v.format(**values) if isinstance(v, str) else v for k, v in body.items()}
    if access.method == "POST":
        if access.kind == "api":
            response = client.post(path, data=body, content_type="application/json")
        else:
            response = client.post(path, data=body)
    else:
        response = client.get(path)
    expect = access.expect(role)
    where = f"{access.method} {path} as {role}"
    if response.status_code not in expect.status:
        return f"{where}: status {response.status_code}, expected {sorted(expect.status)}"
    location = response.get("Location", "")
    if response.status_code == 302 and expect.login and not location.startswith(LOGIN_PAGES):
        return f"{where}: redirected to {location!r}, not to a login page"
    text = body_text(response)
    if expect.marker is True and MARKER not in text:
        return f"{where}: the owner's data is missing"
    if expect.marker is False and MARKER in text:
        return f"{where}: shows the owner's data"
    if expect.effect is not None and happened() != expect.effect:
        return f"{where}: the change {'did not happen' if expect.effect else 'happened'}"
    return None


def test_every_url_has_an_expectation() -> None:
    missing = [r.route for r in all_routes() if variants_for(r) is None]
    assert not missing, f"URLs without a row in test_intruders.TABLE: {missing}"
    stale = set(TABLE) - {r.key for r in all_routes()}
    assert not stale, f"TABLE rows for URLs that no longer exist: {sorted(stale)}"


@pytest.mark.parametrize("role", ROLES)
def test_each_visitor_sees_exactly_what_they_may(world: World, role: str) -> None:
    problems: list[str] = []
    visited = 0
    for route in all_routes():
        variants = variants_for(route)
        assert variants is not None, route.route
        if role.endswith("_token") and variants[0][1].rule == "admin":
            continue  # tokens are no login: the admin pages treat them as anonymous (checked below)
        for suffix, access, body in variants:
            visited += 1
            problem = visit(world, role, route, suffix, access, body)
            if problem:
                problems.append(problem)
    assert visited > 60
    assert not problems, "\n".join(problems)


# --- an organization admin and another organization ----------------------------------------------


def org_variants() -> list[tuple[Route, str, Access, dict[str, Any] | None]]:
    """Every organization page, export and action: the routes under /org/<id>/ and the usage
    endpoints' ``?org=`` variants."""
    found = []
    for route in all_routes():
        for suffix, access, body in variants_for(route) or []:
            if access.rule == "org" and ("org_id" in route.params or "{org_id}" in suffix):
                found.append((route, suffix, access, body))
    return found


def test_the_org_walk_covers_every_kind_of_org_url() -> None:
    kinds = {(access.kind, access.method) for _, _, access, _ in org_variants()}
    assert kinds == {
        ("page", "GET"),
        ("page", "POST"),
        ("json", "GET"),
        ("json-csv", "GET"),
        ("csv", "GET"),
    }
    assert len(org_variants()) >= 25


def names_a_target(route: Route, suffix: str, body: dict[str, Any] | None) -> bool:
    """Whether a variant names a user, session or key (not only the organization)."""
    named = {"user_id", "session_id", "key_id"} & set(route.params)
    return bool(named) or "{user_id}" in suffix or "{user_id}" in str(body or {})


def _get_or_post(client: Client, path: str, access: Access, body: Any) -> Any:
    if access.method == "POST":
        return client.post(path, data=body)
    return client.get(path)


def test_an_org_admin_gets_nothing_of_another_organization(world: World) -> None:
    """Every organization URL pointed at the rival organization — its id, its member, its
    session, its key — as the owner's organization admin: 403 or 404, nothing of the rival
    in the answer, and no action taken. Naming the rival's member inside one's own
    organization (``?org=<own>&user=<rival's>``, ``/org/<own>/members/<rival's>/quota/``,
    ``/org/<own>/keys/<rival's key>/revoke/``) is a 404 too."""
    rival = world.rival
    rival_values = {
        **world.values,
        "org_id": str(rival.org.pk),
        "user_id": str(rival.member.pk),
        "session_id": rival.session_id,
        "key_id": str(rival.key.pk),
    }
    mixed_values = {**rival_values, "org_id": world.values["org_id"]}
    client = client_for(world, "org_admin")
    problems = []
    checked = 0
    for values in (rival_values, mixed_values):
        for route, suffix, access, body in org_variants():
            if values is mixed_values and not names_a_target(route, suffix, body):
                continue  # the admin's own organization, naming nobody of the rival's
            path = route_path(route, values) + suffix.format(**values)
            form = {k: v.format(**values) for k, v in (body or {}).items()}
            response = _get_or_post(client, path, access, form)
            checked += 1
            where = f"{access.method} {path}"
            refused: tuple[int, ...] = (403, 404)
            if values is mixed_values and access.probe == "org_key":
                refused = (200,)  # the own key form: the rival's member is no choice in it
            if response.status_code not in refused:
                problems.append(f"{where}: {response.status_code}")
            text = body_text(response)
            problems += [f"{where} shows {s!r}" for s in rival.secrets if s in text]
    assert checked >= len(org_variants()) + 10  # the rival's, then the mixed ones
    assert not problems, "\n".join(problems)
    # nothing happened to the rival
    rival.key.refresh_from_db()
    assert not rival.key.revoked
    assert not Quota.objects.filter(user=rival.member).exists()
    assert not ApiToken.objects.filter(name=KEY_MARK).exists()
    assert rival.member.api_tokens.count() == 1


def test_the_org_admins_pages_show_nothing_of_another_organization(world: World) -> None:
    """Everything the admin may open of their own organization opens (and shows the owner's
    data where the walk says it does), and none of it names the rival's users, session, cost
    or key."""
    client = client_for(world, "org_admin")
    problems = []
    for route, suffix, access, _body in org_variants():
        if access.method != "GET":
            continue
        path = route_path(route, world.values) + suffix.format(**world.values)
        response = client.get(path)
        text = body_text(response)
        if response.status_code != 200:
            problems.append(f"{path}: {response.status_code}")
        if access.marker and MARKER not in text:
            problems.append(f"{path}: the owner's data is missing")
        problems += [f"{path} shows {s!r}" for s in world.rival.secrets if s in text]
    assert not problems, "\n".join(problems)


def test_the_rival_admin_sees_their_own_figures(world: World) -> None:
    """The rival's secrets are real figures: its own admin does find them, so their absence
    above means something."""
    rival = world.rival
    client = Client()
    client.force_login(rival.admin)
    page = client.get(f"/org/{rival.org.pk}/").content.decode()
    assert rival.member.username in page and usd(rival.cost) in page
    sessions = client.get(f"/org/{rival.org.pk}/users/{rival.member.pk}/").content.decode()
    assert rival.session_id in sessions
    keys = client.get(f"/org/{rival.org.pk}/keys/").content.decode()
    assert rival.key.prefix in keys and rival.key.name in keys
    audit = body_text(client.get(f"/usage/export/audit.csv?org={rival.org.pk}"))
    assert rival.cost_text in audit


@pytest.mark.parametrize("role", ["owner_token", "metrics_token"])
def test_tokens_do_not_open_the_admin_or_the_rq_dashboard(world: World, role: str) -> None:
    client = client_for(world, role)
    for path in ("/admin/", "/admin/queueing/llmrequest/", "/admin/rq/", "/admin/rq/queues/0/"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith("/admin/login/"), path


def test_api_tokens_are_checked(world: World) -> None:
    stranger = Client(HTTP_AUTHORIZATION="Bearer gwt_made-up-token")
    assert stranger.get("/api/v1/requests").status_code == 401
    ApiToken.objects.update(revoked=True)
    revoked = client_for(world, "owner_token")
    response = revoked.get(f"/api/v1/requests/{world.owner_request.pk}")
    assert response.status_code == 401
    assert MARKER not in response.content.decode()
    # Bearer wins over a session: it is the token's user (none here), not the logged-in one.
    both = client_for(world, "staff")
    both.defaults["HTTP_AUTHORIZATION"] = "Bearer gwt_made-up-token"
    assert both.get("/api/v1/requests").status_code == 401


# --- CSRF ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["owner", "staff"])
def test_no_post_without_a_csrf_token_changes_anything(world: World, role: str) -> None:
    """POST to every URL with a session and no CSRF token: refused (403, or 405 where the URL
    takes no POST at all), and nothing changed."""
    queued = fresh_queued_request(world)
    values = {**world.values, "pk": str(queued.pk)}
    client = client_for(world, role, csrf=True)
    rows_before = LLMRequest.objects.count()
    problems = []
    for route in all_routes():
        path = route_path(route, {**values, **admin_ids(route)})
        body = SUBMIT_JSON if route.key == "queueing:api_requests" else {}
        if route.key.startswith("queueing:api"):
            response = client.post(path, data=body, content_type="application/json")
        else:
            response = client.post(path, data={**SUBMIT_FORM, "action": "delete_selected"})
        refused = (403, 405, 404) if route.key in CATCH_ALLS else (403, 405)
        if response.status_code not in refused:
            problems.append(f"POST {path}: {response.status_code}")
    assert not problems, "\n".join(problems)
    assert LLMRequest.objects.count() == rows_before
    queued.refresh_from_db()
    assert queued.status == LLMRequest.Status.QUEUED
    assert client.get("/usage/").status_code == 200  # still logged in: logout was refused too


def test_forms_and_the_session_api_work_with_the_csrf_token(world: World) -> None:
    client = client_for(world, "owner", csrf=True)
    client.get("/queue/")  # sets the CSRF cookie, as a browser would get it
    token = client.cookies["csrftoken"].value

    response = client.post("/queue/", {**SUBMIT_FORM, "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert LLMRequest.objects.filter(session_id="intruder-made").count() == 1

    refused = client.post("/api/v1/requests", data=SUBMIT_JSON, content_type="application/json")
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "csrf_error"
    accepted = client.post(
        "/api/v1/requests",
        data=SUBMIT_JSON,
        content_type="application/json",
        HTTP_X_CSRFTOKEN=token,
    )
    assert accepted.status_code == 202
    pk = accepted.json()["id"]

    refused = client.post(f"/api/v1/requests/{pk}/cancel")
    assert refused.status_code == 403
    assert LLMRequest.objects.get(pk=pk).status == LLMRequest.Status.QUEUED
    cancelled = client.post(f"/api/v1/requests/{pk}/cancel", HTTP_X_CSRFTOKEN=token)
    assert cancelled.status_code == 200
    assert LLMRequest.objects.get(pk=pk).status == LLMRequest.Status.CANCELLED


def test_token_authenticated_api_needs_no_csrf(world: World) -> None:
    client = client_for(world, "owner_token", csrf=True)
    created = client.post("/api/v1/requests", data=SUBMIT_JSON, content_type="application/json")
    assert created.status_code == 202, created.content
    body = created.json()
    assert body["session_id"] == "intruder-made" and body["status"] == "queued"
    row = LLMRequest.objects.get(pk=body["id"])
    assert row.user == world.owner
    cancelled = client.post(f"/api/v1/requests/{row.pk}/cancel")
    assert cancelled.status_code == 200
    row.refresh_from_db()
    assert row.status == LLMRequest.Status.CANCELLED
    assert "sessionid" not in client.cookies


def test_expectations_are_not_vacuous() -> None:
    """The rules themselves: nobody but owner and staff ever gets the owner's object."""
    for variants in TABLE.values():
        for _suffix, access, _body in variants:
            for role in ("anon", "other", "metrics_token"):
                expected = access.expect(role)
                if access.rule == "owned":
                    assert expected.marker is False and 200 not in expected.status
            if access.rule in ORG_RULES:  # the organization's: none of its plain members
                for role in ("owner", "other", "owner_token", "anon"):
                    expected = access.expect(role)
                    assert expected.marker is False and 200 not in expected.status
                    assert expected.effect in (None, False)
            if access.rule == "owned":  # an org admin is no owner of a member's data
                assert 200 not in access.expect("org_admin").status
            if access.rule == "owned":
                assert replace(access.expect("owner"), marker=None).status == _s(200)


def test_the_rq_dashboard_takes_the_metrics_token() -> None:
    """One scrape token for /metrics and django-rq's stats.json / metrics (see settings.py)."""
    from ratelimit_project import settings as project_settings

    assert project_settings.RQ_API_TOKEN == project_settings.METRICS_TOKEN


POST_FORM = re.compile(r"<form\b[^>]*method=[\"']?post[^>]*>(.*?)</form>", re.I | re.S)


@pytest.mark.parametrize("role", ["owner", "staff"])
def test_every_post_form_on_every_page_carries_a_csrf_token(world: World, role: str) -> None:
    fresh_queued_request(world)  # so the queue page shows its cancel form
    client = client_for(world, role)
    forms = 0
    missing = []
    for route in all_routes():
        path = route_path(route, {**world.values, **admin_ids(route)})
        response = client.get(path)
        if response.status_code != 200 or not response["Content-Type"].startswith("text/html"):
            continue
        for form in POST_FORM.findall(body_text(response)):
            forms += 1
            if 'name="csrfmiddlewaretoken"' not in form:
                missing.append(path)
    assert forms >= 5, "too few forms found to mean anything"
    assert not missing, f"POST forms without a CSRF token: {sorted(set(missing))}"
