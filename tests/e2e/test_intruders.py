"""Every URL × every kind of visitor: who may see what, and CSRF on everything that writes.

The URL list comes from the real root URLconf (``all_routes``), so a URL added later is
covered at once: our own apps' URLs must have a row in ``TABLE`` (the test fails naming any URL
without one); the admin site's and django-rq's generated URLs follow their own rule (staff only).

Visitors: anonymous, the owner of the data, another user, staff, the owner's API token (no
session), and the /metrics scrape token. "The owner's data" is recognised by a marker (the
owner's session id), which must show where the owner or staff look and nowhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from llm_calls.emulator.process import EmulatorProcess
from llm_calls.types import Usage
from queueing import services
from queueing.auth import api_token_create
from queueing.models import ApiToken, LLMRequest
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

pytestmark = pytest.mark.django_db

MARKER = "owner-sess-q7x"  # the owner's session id: where it shows, the owner's data shows
METRICS_TOKEN = "metrics-scrape-token-e2e"
LOGIN_PAGES = ("/accounts/login/", "/admin/login/")
ROLES = ("anon", "owner", "other", "staff", "owner_token", "metrics_token")


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

    def expect(self, role: str) -> Expect:
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
}
for _name in ("summary", "daily", "models"):
    TABLE[f"usage:api-{_name}"] = [
        ("", a("own", "json"), None),
        (USER, a("owned", "json"), None),
        ("?format=csv", a("own", "json-csv"), None),
        ("?user=all", staff_only("json"), None),
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
class World:
    owner: User
    other: User
    staff: User
    owner_request: LLMRequest  # succeeded, in MARKER's session
    owner_token: str
    values: dict[str, str]


@pytest.fixture
def world(wired: EmulatorProcess, settings) -> World:
    settings.METRICS_TOKEN = METRICS_TOKEN
    settings.RQ_API_TOKEN = METRICS_TOKEN
    org = make_org("Intruder Test Org")
    owner = make_user("olivia", org=org)
    other = make_user("mallory", org=org)
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
    return World(owner, other, staff, owner_request, raw, values)


def client_for(world: World, role: str, *, csrf: bool = False) -> Client:
    # A view that crashes must show up as a 500 in the report, not abort the whole walk.
    client = Client(enforce_csrf_checks=csrf, raise_request_exception=False)
    user = {"owner": world.owner, "other": world.other, "staff": world.staff}.get(role)
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


def visit(
    world: World, role: str, route: Route, suffix: str, access: Access, body: Any
) -> str | None:
    """Make one request; return what is wrong with the answer, or None."""
    values = dict(world.values)
    values.update(admin_ids(route))
    target = None
    if access.rule == "cancel":
        target = fresh_queued_request(world)
        values["pk"] = str(target.pk)
    path = route_path(route, values) + suffix.format(**values)
    client = client_for(world, role)
    rows_before = LLMRequest.objects.count()
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
    if expect.effect is not None:
        if access.rule == "cancel":
            assert target is not None
            target.refresh_from_db()
            happened = target.status == LLMRequest.Status.CANCELLED
        else:
            happened = LLMRequest.objects.count() == rows_before + 1
        if happened != expect.effect:
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
