"""Issue 11: no CSV export hands a spreadsheet a formula. Text a user chose (session ids, model
names, usernames, organization names, error types) that starts like a formula is downloaded
with a leading ``'``; the numbers we write stay numbers."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from llm_calls.types import Usage
from tests.usage.factories import at, make_org, make_user, record
from tests.usage.world import RANGE, World, build_world
from usage.csv_safety import csv_cell
from usage.models import Outcome

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.usage.urls")]

# What an attacker would name a session (or a user, or an organization).
HOSTILE = [
    '=HYPERLINK("http://evil","x")',
    "@SUM(1)",
    "+1",
    "-1+2",
    "\t=1+1",
    "\r=1+1",
]


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def csv_rows(response) -> list[dict[str, str]]:
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body, newline="")))


def neutralised(text: str) -> str:
    return "'" + text


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        *[(text, "'" + text) for text in HOSTILE],
        ("s-1", "s-1"),  # a formula character later on is harmless
        ("a=b", "a=b"),
        ("", ""),
        (1110, 1110),
        (-3, -3),
        (0.596, 0.596),
        (True, True),
        (None, None),
        (Decimal("-0.005"), "-0.005"),
        (Decimal("0.0000001"), "0.0000001"),  # plain notation, not 1E-7
    ],
)
def test_csv_cell_quotes_text_that_starts_a_formula_and_leaves_numbers_alone(
    value: object, cell: object
) -> None:
    assert csv_cell(value) == cell


def test_the_audit_export_neutralises_hostile_session_ids_and_keeps_numbers(user_world) -> None:
    alice = user_world
    audit = csv_rows(
        client_for(alice).get("/usage/export/audit.csv?start=2026-03-01&end=2026-03-01")
    )
    by_session = {row["session_id"]: row for row in audit}
    assert sorted(by_session) == sorted(neutralised(text) for text in HOSTILE)
    row = by_session[neutralised('=HYPERLINK("http://evil","x")')]
    # 1000 in, 200 out on sonnet-4-5 ($3/$15 per M): $0.006, the same text as the JSON shows
    assert (row["input_tokens"], row["output_tokens"], row["cost_usd"]) == ("1000", "200", "0.006")
    assert row["id"].isdigit() and row["user_id"] == str(alice.pk)
    assert row["model"] == "claude-sonnet-4-5"


def test_hostile_model_names_and_error_types_are_neutralised(user_world) -> None:
    alice = user_world
    record(
        user=alice,
        session_id="plain",
        model="=cmd|' /C calc'!A0",
        occurred_at=at("2026-03-01", 13),
        outcome=Outcome.FAILED,
        error_type="@overloaded",
    )
    client = client_for(alice)
    audit = csv_rows(client.get("/usage/export/audit.csv?start=2026-03-01&end=2026-03-01"))
    (failed,) = [r for r in audit if r["session_id"] == "plain"]
    assert failed["model"] == "'=cmd|' /C calc'!A0"
    assert failed["error_type"] == "'@overloaded"
    calls = csv_rows(client.get(reverse("usage:api-session-calls", args=["plain"]) + "?format=csv"))
    assert [(c["model"], c["error_type"]) for c in calls] == [
        ("'=cmd|' /C calc'!A0", "'@overloaded")
    ]
    models = csv_rows(
        client.get("/usage/api/models.json?start=2026-03-01&end=2026-03-01&format=csv")
    )
    assert "'=cmd|' /C calc'!A0" in {m["model"] for m in models}


def test_the_sessions_and_session_calls_exports_neutralise_session_ids(user_world) -> None:
    alice = user_world
    client = client_for(alice)
    sessions = csv_rows(
        client.get("/usage/api/sessions.json?start=2026-03-01&end=2026-03-01&format=csv")
    )
    assert sorted(s["session_id"] for s in sessions) == sorted(neutralised(t) for t in HOSTILE)
    assert {s["requests"] for s in sessions} == {"1"}
    assert {s["input_tokens"] for s in sessions} == {"1000"}
    calls = csv_rows(
        client.get(reverse("usage:api-session-calls", args=["@SUM(1)"]) + "?format=csv")
    )
    assert [(c["model"], c["input_tokens"], c["cost_usd"]) for c in calls] == [
        ("claude-sonnet-4-5", "1000", "0.006")
    ]


def test_staff_exports_neutralise_usernames_and_org_names() -> None:
    org = make_org('=HYPERLINK("http://evil","x")')
    mallory = make_user("@mallory", org=org)
    plus = make_user("+1", org=org)
    staff = make_user("boss", staff=True)
    record(user=mallory, org=org, occurred_at=at("2026-03-01"), usage=Usage(1000, 200))
    record(user=plus, org=org, occurred_at=at("2026-03-01"), usage=Usage(1000, 200))
    client = client_for(staff)
    users = csv_rows(client.get("/usage/api/users.json?start=2026-03-01&end=2026-03-01&format=csv"))
    assert sorted((u["username"], u["cost_usd"]) for u in users) == [
        ("'+1", "0.006"),
        ("'@mallory", "0.006"),
    ]
    orgs = csv_rows(client.get("/usage/api/orgs.json?start=2026-03-01&end=2026-03-01&format=csv"))
    assert [(o["name"], o["requests"], o["cost_usd"]) for o in orgs] == [
        ('\'=HYPERLINK("http://evil","x")', "2", "0.012")
    ]


def test_negative_savings_stay_numbers(world: World) -> None:
    """The 1h cache write on 2026-03-03 cost more than sending it uncached: a negative saving,
    which is a number we wrote and must not get the formula-guarding quote."""
    daily = csv_rows(client_for(world.alice).get(f"/usage/api/daily.json?{RANGE}&format=csv"))
    by_day = {d["day"]: d for d in daily}
    assert by_day["2026-03-03"]["saved_usd"] == "-0.005"
    assert Decimal(by_day["2026-03-03"]["saved_usd"]) == Decimal("0.00506") - Decimal("0.01006")
    assert [d["cost_usd"] for d in daily] == ["0.0105", "0", "0.01006"]
    summary = csv_rows(client_for(world.alice).get(f"/usage/api/summary.json?{RANGE}&format=csv"))
    assert [(s["cost_usd"], s["saved_usd"], s["cache_hit_rate"]) for s in summary] == [
        ("0.02056", "0.0193", "0.5956")  # 9000 / 15110, rounded as in the JSON
    ]


@pytest.fixture
def world() -> World:
    return build_world()


@pytest.fixture
def user_world():
    """alice, with one sonnet call (1000 in, 200 out) in each hostile-named session."""
    alice = make_user("alice")
    for minute, session_id in enumerate(HOSTILE):
        record(
            user=alice,
            session_id=session_id,
            occurred_at=at("2026-03-01", 12, minute),
            usage=Usage(input_tokens=1000, output_tokens=200),
        )
    return alice
