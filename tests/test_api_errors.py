"""Issue 11: the JSON API answers in JSON also when the path or the method is wrong.

Unknown paths under ``/api/`` and ``/usage/api/`` get ``{"error": {"type": "not_found", …}}``
with 404 — with DEBUG on too, where Django would otherwise show its page listing every URL
pattern — and a known endpoint called with a method it does not take gets a JSON 405 with an
``Allow`` header. The HTML pages keep their HTML 404. Runs on the real root URLconf.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from tests.usage.factories import make_user

pytestmark = pytest.mark.django_db

UNKNOWN_API_PATHS = [
    "/api/v1/nope",
    "/api/v2/requests",
    "/api/v1/requests/abc",
    "/api/v1/requests/1/nope",
    "/api/v1/requests/",  # the real one has no trailing slash
    "/api/",
    "/usage/api/nope.json",
    "/usage/api/sessions/s-1/nope",
    "/usage/api/",
]


@pytest.fixture(params=[False, True], ids=["debug-off", "debug-on"])
def debug(request: pytest.FixtureRequest, settings) -> bool:
    settings.DEBUG = request.param
    return request.param


@pytest.fixture
def user() -> User:
    return make_user("alice")


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def json_error(response, status: int, kind: str) -> str:
    """The error message, after checking the answer is the API's JSON error."""
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == kind
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    return message


def is_html(response) -> bool:
    return response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("path", UNKNOWN_API_PATHS)
def test_unknown_api_paths_answer_a_json_404(path: str, debug: bool, user: User) -> None:
    for client in (Client(), logged_in(user)):
        response = client.get(path)
        assert path in json_error(response, 404, "not_found")
        assert b"urlpatterns" not in response.content and b"URLconf" not in response.content


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_unknown_api_paths_answer_json_404_to_every_method(method: str, user: User) -> None:
    """Also a session's write without a CSRF token: nothing is there to protect, and an API
    client should learn that the path is wrong, not get Django's HTML CSRF page."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = getattr(client, method)("/api/v1/nope", data={}, content_type="application/json")
    json_error(response, 404, "not_found")


def test_a_path_with_an_encoded_newline_is_caught_too(debug: bool) -> None:
    json_error(Client().get("/api/v1/x%0Ay"), 404, "not_found")
    json_error(Client().get("/usage/api/x%0A"), 404, "not_found")


def test_the_catch_alls_leave_every_url_reversible() -> None:
    """reverse() indexes every pattern of the URLconf at once: one it cannot read breaks the
    reversing of all of them (every redirect and link)."""
    assert reverse("queueing:api_requests") == "/api/v1/requests"
    assert reverse("usage:api-summary") == "/usage/api/summary.json"
    assert reverse("api_not_found") == "/api/"


def test_the_api_prefix_without_its_slash_leads_to_the_json_404(debug: bool) -> None:
    response = Client().get("/api", follow=True)
    assert response.redirect_chain == [("/api/", 301)]
    json_error(response, 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("delete", "/api/v1/requests", "GET, POST"),
        ("put", "/api/v1/requests", "GET, POST"),
        ("post", "/api/v1/requests/1", "GET"),
        ("delete", "/api/v1/requests/1/result", "GET"),
        ("get", "/api/v1/requests/1/cancel", "POST"),
        ("post", "/api/v1/queue/stats", "GET"),
    ],
)
def test_a_wrong_method_answers_a_json_405_with_allow(
    method: str, path: str, allow: str, debug: bool, user: User
) -> None:
    for client in (Client(), logged_in(user)):
        response = getattr(client, method)(path)
        json_error(response, 405, "method_not_allowed")
        assert response["Allow"] == allow


def test_the_real_endpoints_still_answer(user: User) -> None:
    client = logged_in(user)
    response = client.get("/api/v1/requests")
    assert response.status_code == 200 and response.json() == {"requests": []}
    assert client.get("/api/v1/requests/999999").json()["error"]["type"] == "not_found"
    assert client.get("/usage/api/summary.json").status_code == 200
    assert Client().get("/api/v1/requests").status_code == 401


@pytest.mark.parametrize(
    "path", ["/nope/", "/queue/requests/999999/", "/usage/nope/", "/apinope/", "/usage/apinope/"]
)
def test_html_pages_keep_their_html_404(path: str, debug: bool, user: User) -> None:
    response = logged_in(user).get(path)
    assert response.status_code == 404
    assert is_html(response)
