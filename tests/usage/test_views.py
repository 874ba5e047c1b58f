from __future__ import annotations

import csv
import datetime as dt
import io
import re
from html import unescape

import pytest
from django.test import Client

from llm_calls.types import Usage
from tests.usage.factories import at, make_user, record
from tests.usage.world import RANGE, World, build_world
from usage import selectors
from usage.forms import DateRange
from usage.templatetags.usage_format import num, pct, usd

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.usage.urls")]


@pytest.fixture
def world() -> World:
    return build_world()


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def stat(html: str, name: str) -> str:
    match = re.search(rf'data-stat="{name}"[^>]*>([^<]*)<', html)
    assert match, f"no stat {name} on the page"
    return match.group(1)


def csv_rows(response) -> list[dict[str, str]]:
    assert response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_my_usage_page_shows_hand_computed_numbers_that_match_the_json(world: World) -> None:
    client = client_for(world.alice)
    page = client.get(f"/usage/?{RANGE}")
    assert page.status_code == 200
    html = page.content.decode()
    assert stat(html, "requests") == "4"
    assert stat(html, "errors") == "1"
    assert stat(html, "retries") == "6"
    assert stat(html, "total_input_tokens") == "15,110"
    assert stat(html, "cache_hit_rate") == "59.6%"
    assert stat(html, "cost_usd") == "$0.0206"  # 0.02056 shown to 4 places
    assert stat(html, "uncached_cost_usd") == "$0.0399"
    assert stat(html, "saved_usd") == "$0.0193"
    assert 'title="0.02056 USD"' in html  # the exact amount

    totals = client.get(f"/usage/api/summary.json?{RANGE}").json()["totals"]
    assert totals["cost_usd"] == "0.02056"
    assert totals["uncached_cost_usd"] == "0.03986"
    assert totals["saved_usd"] == "0.0193"
    assert totals["cache_hit_rate"] == 0.5956
    assert stat(html, "cost_usd") == usd(totals["cost_usd"])
    assert stat(html, "total_input_tokens") == num(totals["total_input_tokens"])
    assert stat(html, "cache_hit_rate") == pct(totals["cache_hit_rate"])
    # both sessions listed, with their totals; bob's session of the same name is not
    assert html.count('data-session="s-a"') == 1
    assert 'data-session="s-b"' in html
    assert "bob" not in html
    # the charts point at the JSON with the same range
    src = "/usage/api/daily.json?" + RANGE.replace("&", "&amp;")
    assert f'data-chart="daily-tokens" data-src="{src}"' in html


def test_daily_json_has_every_day_with_its_numbers(world: World) -> None:
    body = client_for(world.alice).get(f"/usage/api/daily.json?{RANGE}").json()
    assert [d["day"] for d in body["days"]] == ["2026-03-01", "2026-03-02", "2026-03-03"]
    first, second, third = body["days"]
    assert (first["requests"], first["cost_usd"], first["cache_read_tokens"]) == (2, "0.0105", 9000)
    assert (second["requests"], second["errors"], second["cost_usd"]) == (1, 1, "0")
    assert (third["cache_write_1h_tokens"], third["cost_usd"], third["saved_usd"]) == (
        5000,
        "0.01006",
        "-0.005",  # a 1-hour write costs more than it saves on its first call
    )


def test_models_and_sessions_json(world: World) -> None:
    client = client_for(world.alice)
    models = client.get(f"/usage/api/models.json?{RANGE}").json()["models"]
    assert [(m["model"], m["cost_usd"]) for m in models] == [  # dearest first
        ("claude-sonnet-4-5", "0.0105"),
        ("claude-haiku-4-5", "0.01006"),
    ]
    sessions = client.get(f"/usage/api/sessions.json?{RANGE}").json()
    assert sessions["total"] == 2
    by_id = {s["session_id"]: s for s in sessions["sessions"]}
    assert by_id["s-a"]["cost_usd"] == "0.0105"
    assert by_id["s-b"]["errors"] == 1


def test_session_page_lists_calls_in_time_order(world: World) -> None:
    client = client_for(world.alice)
    page = client.get("/usage/sessions/s-a/")
    assert page.status_code == 200
    html = page.content.decode()
    assert stat(html, "requests") == "2"
    assert stat(html, "cost_usd") == "$0.0105"
    assert html.index("09:00:00") < html.index("10:00:00")
    assert 'data-chart="session-calls"' in html
    calls = client.get("/usage/api/sessions/s-a/calls.json").json()["calls"]
    assert [(c["input_tokens"], c["cache_read_tokens"], c["cost_usd"]) for c in calls] == [
        (1000, 0, "0.006"),
        (100, 9000, "0.0045"),
    ]
    assert [c["cache_hit"] for c in calls] == [False, True]
    assert calls[1]["attempts"] == 2 and calls[1]["latency_ms"] == 300


def test_csv_exports(world: World) -> None:
    client = client_for(world.alice)
    daily = csv_rows(client.get(f"/usage/api/daily.json?{RANGE}&format=csv"))
    assert [(r["day"], r["requests"], r["cost_usd"]) for r in daily] == [
        ("2026-03-01", "2", "0.0105"),
        ("2026-03-02", "1", "0"),
        ("2026-03-03", "1", "0.01006"),
    ]
    audit = csv_rows(client.get(f"/usage/export/audit.csv?{RANGE}"))
    assert len(audit) == 4
    assert sum(int(r["input_tokens"]) for r in audit) == 1110
    assert {r["cost_usd"] for r in audit} == {"0.006", "0.0045", "0", "0.01006"}
    assert {r["user_id"] for r in audit} == {str(world.alice.pk)}
    sessions = csv_rows(client.get(f"/usage/api/sessions.json?{RANGE}&format=csv"))
    assert sorted(r["session_id"] for r in sessions) == ["s-a", "s-b"]
    calls = csv_rows(client.get("/usage/api/sessions/s-b/calls.json?format=csv"))
    assert [r["outcome"] for r in calls] == ["failed", "success"]

    staff = client_for(world.staff)
    users = csv_rows(staff.get(f"/usage/api/users.json?{RANGE}&format=csv"))
    assert [(r["username"], r["cost_usd"]) for r in users] == [
        ("bob", "0.0765"),
        ("alice", "0.02056"),
    ]
    orgs = csv_rows(staff.get(f"/usage/api/orgs.json?{RANGE}&format=csv"))
    assert [(r["name"], r["cost_usd"], r["requests"]) for r in orgs] == [("Acme", "0.09706", "5")]


def test_staff_users_page_sorts_by_cost_and_by_tokens(world: World) -> None:
    staff = client_for(world.staff)
    html = staff.get(f"/usage/users/?{RANGE}").content.decode()
    assert html.index(">bob<") < html.index(">alice<")  # $0.0765 > $0.02056
    assert stat(html, "cost_usd") == "$0.0971"  # everyone: 0.09706
    html = staff.get(f"/usage/users/?{RANGE}&sort=tokens").content.decode()
    assert html.index(">alice<") < html.index(">bob<")  # 15,420 tokens > 1,100
    body = staff.get(f"/usage/api/users.json?{RANGE}&sort=tokens").json()
    assert [(u["username"], u["total_tokens"]) for u in body["users"]] == [
        ("alice", 15420),
        ("bob", 1100),
    ]
    assert body["has_next"] is False


def test_users_list_paginates(world: World) -> None:
    for i in range(3):
        record(user=make_user(f"extra{i}"), occurred_at=at("2026-03-02", 15))
    staff = client_for(world.staff)
    everyone = staff.get(f"/usage/api/users.json?{RANGE}&sort=requests").json()
    assert len(everyone["users"]) == 5 and everyone["has_next"] is False
    page = selectors.users_page(
        date_range=DateRange(start=dt.date(2026, 3, 1), end=dt.date(2026, 3, 3)),
        sort="requests",
        page=2,
        per_page=2,
    )
    assert page.has_next is True
    assert len(page.items) == 2
    last = selectors.users_page(
        date_range=DateRange(start=dt.date(2026, 3, 1), end=dt.date(2026, 3, 3)),
        sort="requests",
        page=3,
        per_page=2,
    )
    assert (len(last.items), last.has_next) == (1, False)


def test_staff_drill_down_and_orgs_page(world: World) -> None:
    staff = client_for(world.staff)
    html = staff.get(f"/usage/users/{world.alice.pk}/?{RANGE}").content.decode()
    assert "Usage of alice" in html
    assert stat(html, "cost_usd") == "$0.0206"
    assert f"/usage/users/{world.alice.pk}/sessions/s-a/" in html
    assert f"user={world.alice.pk}" in html  # charts read alice's JSON, not the staff's own
    session = staff.get(f"/usage/users/{world.bob.pk}/sessions/s-a/").content.decode()
    assert stat(session, "cost_usd") == "$0.0765"
    orgs = staff.get(f"/usage/orgs/?{RANGE}").content.decode()
    assert f'data-org="{world.org.pk}"' in orgs
    assert "$0.0971" in orgs


def test_caching_page(world: World) -> None:
    html = client_for(world.alice).get(f"/usage/caching/?{RANGE}").content.decode()
    assert stat(html, "cache_hit_rate") == "59.6%"
    assert stat(html, "cache_read_tokens") == "9,000"
    assert stat(html, "cache_write_1h_tokens") == "5,000"
    assert stat(html, "saved_usd") == "$0.0193"
    everyone = client_for(world.staff).get(f"/usage/caching/?{RANGE}&user=all").content.decode()
    # everyone: read 9000 of alice's 15110 + bob's 100 input tokens = 15210 -> 59.2%
    assert stat(everyone, "cache_hit_rate") == "59.2%"
    assert "Users who save most" in everyone


def test_a_user_sees_only_their_own_data(world: World) -> None:
    alice = client_for(world.alice)
    # bob's session and bob's numbers are invisible: 404 exactly as if they did not exist
    assert alice.get(f"/usage/users/{world.bob.pk}/sessions/s-a/").status_code == 404
    assert alice.get("/usage/sessions/no-such-session/").status_code == 404
    assert alice.get(f"/usage/api/summary.json?user={world.bob.pk}").status_code == 404
    assert alice.get(f"/usage/api/sessions/s-a/calls.json?user={world.bob.pk}").status_code == 404
    assert alice.get("/usage/api/summary.json?user=all").status_code == 404
    assert alice.get(f"/usage/export/audit.csv?user={world.bob.pk}").status_code == 404
    # staff pages are refused
    assert alice.get("/usage/users/").status_code == 403
    assert alice.get(f"/usage/users/{world.bob.pk}/").status_code == 403
    assert alice.get("/usage/orgs/").status_code == 403
    assert alice.get("/usage/api/users.json").status_code == 403
    # alice's own "s-a" is hers only, though bob used the same session id
    calls = alice.get("/usage/api/sessions/s-a/calls.json").json()["calls"]
    assert {c["model"] for c in calls} == {"claude-sonnet-4-5"}
    # bob sees only bob
    assert (
        client_for(world.bob).get(f"/usage/api/summary.json?{RANGE}").json()["totals"]["cost_usd"]
        == "0.0765"
    )


def test_staff_see_everyone(world: World) -> None:
    staff = client_for(world.staff)
    assert (
        staff.get(f"/usage/api/summary.json?{RANGE}&user={world.bob.pk}").json()["totals"][
            "cost_usd"
        ]
        == "0.0765"
    )
    assert staff.get(f"/usage/api/summary.json?{RANGE}&user=all").json()["totals"]["requests"] == 5
    audit = csv_rows(staff.get(f"/usage/export/audit.csv?{RANGE}&user=all"))
    assert len(audit) == 5
    # a staff member opening a session id they do not own lands on its owner's session
    assert staff.get("/usage/sessions/s-b/").status_code == 200


@pytest.mark.parametrize(
    "url",
    [
        "/usage/",
        "/usage/caching/",
        "/usage/users/",
        "/usage/export/audit.csv",
    ],
)
def test_anonymous_is_sent_to_login(url: str) -> None:
    """The pages and the audit export; the JSON endpoints answer a JSON 401 instead
    (test_json_errors)."""
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("days=abc", "days='abc' is not a whole number of days."),
        ("days=0", "days must be between 1 and 3660, got 0."),
        ("start=2026-03-05&end=2026-03-01", "start (2026-03-05) is after end (2026-03-01)."),
        ("start=2026-13-01&end=2026-12-31", "start='2026-13-01' is not a date; use YYYY-MM-DD"),
        ("start=2026-03-01", "A custom range needs both start and end; end is missing."),
        ("days=7&start=2026-03-01&end=2026-03-02", "Use either days=N or start=…&end=…, not both."),
    ],
)
def test_bad_date_filter_gets_a_clear_error(world: World, query: str, message: str) -> None:
    client = client_for(world.alice)
    page = client.get(f"/usage/?{query}")
    assert page.status_code == 400
    assert message in unescape(page.content.decode())
    api = client.get(f"/usage/api/daily.json?{query}")
    assert api.status_code == 400
    assert api.json()["error"]["type"] == "invalid_request"
    assert message in api.json()["error"]["message"]


def test_bad_sort_and_page_get_clear_errors(world: World) -> None:
    staff = client_for(world.staff)
    response = staff.get("/usage/api/users.json?sort=vibes")
    assert response.status_code == 400
    assert "sort='vibes' is not one of: cost, tokens" in response.json()["error"]["message"]
    assert staff.get("/usage/api/users.json?page=0").json() == {
        "error": {"type": "invalid_request", "message": "page must be 1 or more, got 0."}
    }


def test_default_range_is_the_last_30_days() -> None:
    user = make_user()
    record(user=user)  # now
    body = client_for(user).get("/usage/api/summary.json").json()
    assert body["range"]["days"] == 30
    assert body["totals"]["requests"] == 1
    assert client_for(user).get("/usage/?days=7").status_code == 200


def test_unpriced_calls_are_shown_beside_every_cost_total(world: World) -> None:
    record(
        user=world.alice,
        session_id="s-a",
        model="claude-next-6",
        occurred_at=at("2026-03-02", 16),
        usage=Usage(input_tokens=500, output_tokens=50),
    )
    alice = client_for(world.alice)
    html = alice.get(f"/usage/?{RANGE}").content.decode()
    assert stat(html, "cost_usd") == "$0.0206"  # the unpriced call is in it at $0 ...
    assert "+ 1 unpriced call<" in html  # ... and said so, beside it
    assert 'data-model="claude-next-6"' in html
    assert 'id="unpriced-models"' not in html  # the staff notice is for staff
    totals = alice.get(f"/usage/api/summary.json?{RANGE}").json()["totals"]
    assert (totals["cost_usd"], totals["unpriced_calls"]) == ("0.02056", 1)
    daily = csv_rows(alice.get(f"/usage/api/daily.json?{RANGE}&format=csv"))
    assert [r["unpriced_calls"] for r in daily] == ["0", "1", "0"]
    session = alice.get("/usage/sessions/s-a/").content.decode()
    assert "+ 1 unpriced call<" in session and ">unpriced</span>" in session
    audit = csv_rows(alice.get(f"/usage/export/audit.csv?{RANGE}"))
    assert {r["price_missing"] for r in audit if r["model"] == "claude-next-6"} == {"True"}

    staff = client_for(world.staff)
    for url in (
        f"/usage/users/?{RANGE}",
        f"/usage/orgs/?{RANGE}",
        f"/usage/caching/?{RANGE}&user=all",
        f"/usage/users/{world.alice.pk}/?{RANGE}",
    ):
        page = staff.get(url).content.decode()
        assert 'data-unpriced-model="claude-next-6"' in page, url
        assert "+ 1 unpriced call<" in page, url
    users = csv_rows(staff.get(f"/usage/api/users.json?{RANGE}&format=csv"))
    assert {r["username"]: r["unpriced_calls"] for r in users} == {"alice": "1", "bob": "0"}


def test_the_audit_export_carries_the_rates_each_call_was_billed_at(world: World) -> None:
    audit = csv_rows(client_for(world.alice).get(f"/usage/export/audit.csv?{RANGE}"))
    cached = next(r for r in audit if r["cache_read_tokens"] == "9000")
    # sonnet 4.5: $3 input = 3,000,000 picodollars a token, cache read $0.30 = 300,000
    assert (cached["input_rate_pico_usd"], cached["cache_read_rate_pico_usd"]) == (
        "3000000",
        "300000",
    )
    # 100*3,000,000 + 9000*300,000 + 100*15,000,000 = 4.5e9 picodollars = $0.0045
    assert cached["cost_usd"] == "0.0045"
