"""Issue 11: the usage JSON endpoints refuse in the JSON API's error shape.

``{"error": {"type", "message"}}`` as ``/api/`` answers (``ratelimit_project.api_errors``): a
method they do not take is a 405 naming ``Allow``, signed out is a 401 (not a redirect to the
login page), someone else's or a missing record is a 404, a staff endpoint is a 403 to others,
and a filter they cannot use is a 400 — none of them Django's HTML pages. The pages and the audit
CSV export keep the login redirect and their HTML (test_views).
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from queueing.auth import api_token_create
from tests.usage.factories import api_client
from tests.usage.world import RANGE, World, build_world

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.usage.urls")]

MINE = [
    "/usage/api/summary.json",
    "/usage/api/daily.json",
    "/usage/api/models.json",
    "/usage/api/sessions.json",
    "/usage/api/sessions/s-a/calls.json",
]
STAFF_ONLY = ["/usage/api/users.json", "/usage/api/orgs.json"]
EVERY_JSON_ENDPOINT = MINE + STAFF_ONLY


@pytest.fixture
def world() -> World:
    return build_world()


def logged_in(user: User, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def json_error(response, status: int, kind: str) -> str:
    """The message, after checking the answer is the API's JSON error and nothing else."""
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == kind
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    return message


@pytest.mark.parametrize("path", EVERY_JSON_ENDPOINT)
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_a_write_method_gets_a_json_405_naming_get_and_head(
    world: World, path: str, method: str
) -> None:
    """Also a session's POST without a CSRF token: the endpoint changes nothing, so the client
    learns the method is wrong instead of getting Django's HTML CSRF page."""
    for client in (Client(), logged_in(world.staff, csrf=True)):
        response = getattr(client, method)(path, data={}, content_type="application/json")
        assert "GET" in json_error(response, 405, "method_not_allowed")
        assert response["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("path", EVERY_JSON_ENDPOINT)
def test_head_is_answered_like_get(world: World, path: str) -> None:
    response = logged_in(world.staff).head(f"{path}?user={world.alice.pk}&{RANGE}")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.content == b""


@pytest.mark.parametrize("path", EVERY_JSON_ENDPOINT)
def test_signed_out_gets_a_json_401_not_the_login_page(world: World, path: str) -> None:
    for suffix in ("", "?format=csv"):
        response = Client().get(path + suffix)
        assert "log in" in json_error(response, 401, "authentication_error")
        assert "Location" not in response


def test_a_gateway_key_reads_its_owners_usage_and_nobody_elses(world: World) -> None:
    """Scripts read usage with a gateway key (Bearer or x-api-key), as the owner would."""
    alice = api_client(world.alice)
    mine = alice.get(f"/usage/api/summary.json?{RANGE}")
    assert mine.status_code == 200 and mine.json()["user_id"] == world.alice.pk
    assert mine.json()["totals"]["requests"] > 0
    # someone else's data stays hidden, and the staff endpoints stay staff-only
    assert alice.get(f"/usage/api/summary.json?user={world.bob.pk}").status_code == 404
    assert json_error(alice.get(STAFF_ONLY[0]), 403, "permission_error") == "Staff only."
    _, raw = api_token_create(user=world.alice, name="x-api-key style")
    by_header = Client(HTTP_X_API_KEY=raw).get(f"/usage/api/daily.json?{RANGE}")
    assert by_header.status_code == 200
    csv_export = alice.get(f"/usage/export/audit.csv?{RANGE}")
    assert csv_export.status_code == 200
    assert b"s-a" in b"".join(csv_export.streaming_content)  # type: ignore[attr-defined]


def test_a_bad_key_is_a_json_401_and_the_export_still_redirects_a_browser(world: World) -> None:
    for bad in ("gwt_not-a-key", ""):
        response = Client(HTTP_AUTHORIZATION=f"Bearer {bad}").get("/usage/api/summary.json")
        assert "key" in json_error(response, 401, "authentication_error")
    assert Client(HTTP_X_API_KEY="nope").get("/usage/export/audit.csv").status_code == 401
    assert Client().get("/usage/export/audit.csv").status_code == 302  # to the login page


@pytest.mark.parametrize("path", STAFF_ONLY)
def test_staff_endpoints_answer_a_json_403_to_others(world: World, path: str) -> None:
    for suffix in ("", "?format=csv"):
        response = logged_in(world.alice).get(path + suffix)
        assert json_error(response, 403, "permission_error") == "Staff only."


def test_a_missing_or_someone_elses_record_is_a_json_404(world: World) -> None:
    alice = logged_in(world.alice)
    bob = world.bob.pk
    # a session that does not exist, and bob's session of the same name as alice's
    assert (
        json_error(alice.get("/usage/api/sessions/no-such/calls.json"), 404, "not_found")
        == "No such session."
    )
    assert (
        json_error(alice.get(f"/usage/api/sessions/s-a/calls.json?user={bob}"), 404, "not_found")
        == "No such user."
    )
    # another user's numbers, and everyone's: as if they did not exist
    for path in ("summary", "daily", "models", "sessions"):
        for who in (bob, "all"):
            response = alice.get(f"/usage/api/{path}.json?user={who}")
            assert json_error(response, 404, "not_found") == "No such user."
    # staff naming a user who does not exist
    staff = logged_in(world.staff)
    missing = json_error(staff.get("/usage/api/summary.json?user=999999"), 404, "not_found")
    assert missing == "No such user."
    # the CSV of a missing session answers the same JSON 404, before any CSV is streamed
    csv = alice.get("/usage/api/sessions/no-such/calls.json?format=csv")
    json_error(csv, 404, "not_found")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/usage/api/summary.json?days=abc", "days='abc' is not a whole number of days."),
        ("/usage/api/daily.json?start=2026-03-05&end=2026-03-01", "start (2026-03-05) is after"),
        ("/usage/api/models.json?start=2026-03-01", "end is missing"),
        ("/usage/api/sessions.json?page=0", "page must be 1 or more, got 0."),
        ("/usage/api/sessions.json?user=all", "Sessions are listed per user; give user=<id>."),
        ("/usage/api/sessions/s-a/calls.json?user=someone", "user='someone' is not a user id"),
        ("/usage/api/sessions/s-a/calls.json?user={alice}&page=x", "page='x'"),
        ("/usage/api/users.json?sort=vibes", "sort='vibes' is not one of"),
        ("/usage/api/orgs.json?days=0", "days must be between 1 and 3660, got 0."),
    ],
)
def test_a_bad_filter_is_a_json_400(world: World, path: str, message: str) -> None:
    response = logged_in(world.staff).get(path.format(alice=world.alice.pk))
    assert message in json_error(response, 400, "invalid_request")


def test_the_audit_export_keeps_its_login_redirect_and_its_400_has_the_api_shape(
    world: World,
) -> None:
    signed_out = Client().get("/usage/export/audit.csv")
    assert signed_out.status_code == 302
    assert signed_out["Location"].startswith("/accounts/login/")
    bad = logged_in(world.alice).get("/usage/export/audit.csv?days=abc")
    assert "days='abc'" in json_error(bad, 400, "invalid_request")


def test_the_endpoints_still_answer(world: World) -> None:
    alice = logged_in(world.alice)
    assert alice.get(f"/usage/api/summary.json?{RANGE}").json()["totals"]["requests"] == 4
    calls = alice.get("/usage/api/sessions/s-a/calls.json").json()["calls"]
    assert len(calls) == 2
    assert logged_in(world.staff).get(f"/usage/api/users.json?{RANGE}").status_code == 200
