"""The staff queue overview: who goes next per class and per user, calls in flight, the limiter
in words, and its JSON endpoint for the live page. On the real Redis and database (no worker:
nothing leaves the queue unless a test dispatches it)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from llm_calls.catalog import model_class
from queueing import dispatcher, overview, services
from queueing.limiter import get_limiter
from queueing.models import LLMRequest
from queueing.scheduler import get_scheduler
from tests.usage.factories import api_client, make_user

MODEL = "claude-sonnet-5-5"
BUCKET = model_class(MODEL)


def ask(user: Any, *, priority: str = "query", max_tokens: int = 100) -> LLMRequest:
    return services.submit_request(
        user=user,
        session_id="overview",
        model=MODEL,
        messages=[{"role": "user", "content": "how long will this take?"}],
        max_tokens=max_tokens,
        priority=priority,
    )


def dispatch_order() -> list[int]:
    """What the scheduler really dispatches, head by head, until it is empty (destructive)."""
    scheduler = get_scheduler()
    taken = []
    while (item := scheduler.peek()) is not None:
        assert scheduler.pop(request_id=item.request_id)
        taken.append(item.request_id)
    return taken


@pytest.fixture
def queue(redis_client, db) -> dict[str, list[LLMRequest]]:
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    return {
        "alice": [ask(alice, max_tokens=1_000) for _ in range(4)],
        "carol": [ask(carol) for _ in range(2)],
        "bob": [ask(bob, priority="interactive")],
    }


# --- the data ---------------------------------------------------------------------------------


def test_heads_list_each_class_in_dispatch_order_with_position_and_wait(queue) -> None:
    data = overview.queue_overview(detail=True)

    heads = data["heads"]
    assert [r["priority"] for r in heads] == ["interactive"] + ["query"] * 5
    query = [r for r in heads if r["priority"] == "query"]
    assert [r["class_position"] for r in query] == [1, 2, 3, 4, 5]
    # overall: the query class waits for the interactive request (the scheduler's estimate,
    # which also lets the query class's minimum share go before it)
    assert [r["position"] for r in query] == [2, 3, 4, 5, 6]
    bob = get_scheduler().position(request_id=queue["bob"][0].pk)
    assert bob is not None and heads[0]["position"] == bob.position
    # carol's small requests are not stuck behind alice's big ones (fair queueing by tokens)
    assert [r["user"] for r in query] == ["alice", "carol", "carol", "alice", "alice"]
    for row in heads:
        assert row["eta_s"] is not None and row["eta"] == "under 10 s"  # full buckets
        assert row["waited"].endswith(" s") and row["waited_s"] >= 0
    assert [r["request_id"] for r in heads] == dispatch_order()[:6]


def test_each_user_row_names_its_next_request(queue) -> None:
    data = overview.queue_overview(detail=True)

    users = {row["user"]: row for row in data["users"]}
    assert list(users) == ["alice", "carol", "bob"]  # most queued tokens first
    assert data["users_total"] == 3
    alice = users["alice"]
    assert (alice["requests"], alice["next"]["request_id"]) == (4, queue["alice"][0].pk)
    assert alice["next"]["position"] == 2 and alice["next"]["class_position"] == 1
    assert users["bob"]["next"]["request_id"] == queue["bob"][0].pk
    assert users["carol"]["next"]["request_id"] == queue["carol"][0].pk
    assert users["carol"]["next"]["eta"] == "under 10 s"


def test_lists_are_bounded(queue, monkeypatch) -> None:
    monkeypatch.setattr(overview, "HEAD_ROWS", 2)
    monkeypatch.setattr(overview, "USER_ROWS", 2)
    monkeypatch.setattr(overview, "USER_DETAIL_ROWS", 1)

    data = overview.queue_overview(detail=True)

    assert [r["priority"] for r in data["heads"]] == ["interactive", "query", "query"]
    assert [u["user"] for u in data["users"]] == ["alice", "carol"]
    assert data["users_total"] == 3
    assert data["users"][0]["next"] is not None and data["users"][1]["next"] is None


def test_positions_and_waits_stop_at_the_time_budget(queue, monkeypatch) -> None:
    monkeypatch.setattr(overview, "ETA_BUDGET_S", 0.0)

    data = overview.queue_overview(detail=True)

    heads = data["heads"]
    assert len(heads) == 6  # the replay of the scheduler is not part of the budget
    assert [r["class_position"] for r in heads] == [1, 1, 2, 3, 4, 5]
    assert {(r["position"], r["eta"], r["estimated"]) for r in heads} == {
        (None, "not estimated", False)
    }
    assert data["users"][0]["next"]["request_id"] == queue["alice"][0].pk


def test_in_flight_calls_longest_first_capped_with_the_total(queue, monkeypatch) -> None:
    dispatched = dispatcher.dispatch_once().dispatched
    assert len(dispatched) == 7
    oldest = dispatched[-1]  # made the oldest below: the list goes by dispatch time
    LLMRequest.objects.filter(pk=oldest).update(
        status=LLMRequest.Status.RUNNING,
        dispatched_at=timezone.now() - dt.timedelta(minutes=5),
        started_at=timezone.now() - dt.timedelta(minutes=4),
    )
    monkeypatch.setattr(overview, "IN_FLIGHT_ROWS", 3)

    data = overview.queue_overview(detail=True)

    assert data["in_flight"] == 7 and data["counts"].get("queued", 0) == 0
    calls = data["in_flight_calls"]
    assert len(calls) == 3
    assert calls[0]["request_id"] == oldest and calls[0]["status"] == "running"
    assert calls[0]["since"].startswith("running 4 min")
    assert {c["status"] for c in calls[1:]} == {"dispatched"}
    assert calls[1]["since"].startswith("dispatched ")
    assert data["heads"] == [] and data["users"] == []


def test_the_plain_overview_stays_cheap_and_keeps_its_keys(queue) -> None:
    data = overview.queue_overview()

    assert not {"heads", "in_flight_calls"} & set(data)
    assert {"counts", "in_flight", "classes", "users", "limiter"} <= set(data)
    classes = {row["name"]: row for row in data["classes"]}
    assert classes["query"]["requests"] == 6 and classes["interactive"]["requests"] == 1
    assert classes["bulk"]["batch"] is True  # bulk goes to the Message Batches API
    row = next(r for r in data["limiter"] if r["model_class"] == BUCKET)
    assert row["requests"] == 1_000 and row["rate_limited"] == 0  # what /metrics reads
    assert row["idle"] is True and BUCKET in data["limiter_idle"]
    rpm = row["buckets"][0]
    assert (rpm["dimension"], rpm["limit"], rpm["available_pct"]) == ("rpm", 1_000, 100.0)


def test_the_limiter_row_explains_what_it_learned(redis_client, db) -> None:
    limiter = get_limiter()
    for actual in (1_010, 1_020, 1_000):
        limiter.record_estimate(BUCKET, 1_000, actual)
    limiter.observe_headers(
        model_class=BUCKET,
        status=200,
        headers={
            "anthropic-ratelimit-requests-limit": "4000",
            "anthropic-ratelimit-requests-remaining": "3999",
        },
    )

    row = next(r for r in overview.queue_overview()["limiter"] if r["model_class"] == BUCKET)

    words = " ".join(row["explanation"])
    assert "learned from 3 responses" in words
    assert (
        "Limits adopted from the server's headers: 4,000 RPM instead of the configured 1,000"
        in words
    )
    assert row["buckets"][0]["limit"] == 4_000 and row["buckets"][0]["from_server"] is True
    assert row["idle"] is False  # listed in full on the page, not on the "untouched" line


# --- the words ---------------------------------------------------------------------------------


def state(**changes: Any) -> dict[str, Any]:
    """A limiter snapshot as ``RedisRateLimiter.state`` returns it: nothing learned yet."""
    base: dict[str, Any] = {
        "model_class": BUCKET,
        "now": 1_800_000_000.0,
        "levels": {"rpm": 1_000.0, "itpm": 2_000_000.0, "otpm": 400_000.0},
        "limits": {
            "configured": {"rpm": 1_000, "itpm": 2_000_000, "otpm": 400_000},
            "learned": {"rpm": None, "itpm": None, "otpm": None},
            "effective": {"rpm": 1_000, "itpm": 2_000_000, "otpm": 400_000},
        },
        "paused_for_s": 0.0,
        "estimate_factor": 1.0,
        "estimate_mean": 1.0,
        "estimate_deviation": 0.0,
        "estimate_samples": 0,
        "rate_limit_errors": 0,
        "last_429_at": None,
        "levels_lowered": 0,
        "limit_changes": 0,
    }
    base.update(changes)
    return base


def test_words_for_a_limiter_that_has_learned_nothing() -> None:
    assert overview.describe_limiter(state=state()) == [
        "Reserves the local token estimate as it is: no responses to learn a correction from yet.",
        "Limits as configured: no rate-limit headers seen from the server yet.",
    ]


def test_words_for_the_learned_tokenizer_correction() -> None:
    learned = state(
        estimate_factor=1.04, estimate_mean=1.01, estimate_deviation=0.01, estimate_samples=312
    )
    assert overview.describe_limiter(state=learned)[0] == (
        "Reserves 1.04 × the local token estimate (learned from 312 responses: the API counted "
        "1.01 ± 0.01 × our estimate of the input tokens)."
    )
    one = state(estimate_factor=0.9, estimate_mean=0.9, estimate_samples=1)
    assert "learned from 1 response:" in overview.describe_limiter(state=one)[0]


@pytest.mark.parametrize(
    ("learned", "expected"),
    [
        (
            {"rpm": 4_000, "itpm": 2_000_000, "otpm": 0},
            "Limits adopted from the server's headers: 4,000 RPM instead of the configured "
            "1,000 RPM; unlimited OTPM instead of the configured 400,000 OTPM.",
        ),
        (
            {"rpm": 1_000, "itpm": None, "otpm": None},
            "The server's headers confirm the configured limits.",
        ),
    ],
)
def test_words_for_limits_from_the_servers_headers(
    learned: dict[str, int | None], expected: str
) -> None:
    limits = {**state()["limits"], "learned": learned}
    assert overview.describe_limiter(state=state(limits=limits))[1] == expected


def test_words_for_warm_prompt_cache_prefixes_only_when_the_limiter_reports_them() -> None:
    assert not any("warm" in s for s in overview.describe_limiter(state=state()))
    assert overview.describe_limiter(state=state(warm_prefixes=3))[2] == (
        "3 prompt-cache prefixes are known warm on the current upstream: the part of a prompt "
        "they cover is expected as cache reads, not reserved as input."
    )
    assert (
        "1 prompt-cache prefix is known warm"
        in overview.describe_limiter(state=state(warm_prefixes=1))[2]
    )
    assert overview.describe_limiter(state=state(warm_prefixes=0))[2].startswith(
        "No prompt-cache prefix is known warm"
    )


def test_words_for_a_pause_and_429s() -> None:
    words = overview.describe_limiter(
        state=state(
            paused_for_s=12.46,
            rate_limit_errors=3,
            last_429_at=1_800_000_000.0 - 245,
            levels_lowered=1,
        )
    )
    assert words[2:] == [
        "Dispatch is paused for another 12.5 s after a 429.",
        "3 rate-limit errors (429) from the server, the last 4 min 5 s ago.",
        "Buckets lowered to the server's remaining figures 1 time.",
    ]


def test_bucket_figures_read_as_level_of_limit() -> None:
    snapshot = state(levels={"rpm": 250.0, "itpm": -1_500.0, "otpm": None})
    snapshot["limits"]["effective"]["otpm"] = 0
    rpm, itpm, otpm = (
        overview.bucket_figures(state=snapshot, dimension=d) for d in ("rpm", "itpm", "otpm")
    )
    assert (rpm["available_pct"], rpm["text"]) == (25.0, "250 of 1,000")
    assert (itpm["available_pct"], itpm["level"]) == (0.0, -1_500.0)  # overdrawn reads as 0 %
    assert otpm["unlimited"] is True and otpm["text"] == "unlimited"


# --- the JSON endpoint --------------------------------------------------------------------------

DATA = "/queue/staff/data"


def test_staff_get_the_overview_as_json(queue) -> None:
    client = Client()
    client.force_login(make_user("ops", staff=True))

    response = client.get(DATA)

    assert response.status_code == 200
    body = response.json()
    assert body["counts"]["queued"] == 7
    assert [r["request_id"] for r in body["heads"]][:2] == [
        queue["bob"][0].pk,
        queue["alice"][0].pk,
    ]
    assert body["in_flight_calls"] == [] and "generated_at" in body
    assert "no-store" in response["Cache-Control"]


@pytest.mark.django_db
@pytest.mark.parametrize("who", ["anonymous", "user"])
def test_others_get_a_json_refusal_and_no_queue(redis_client, who: str) -> None:
    client = Client()
    if who == "user":
        client.force_login(make_user("curious"))

    response = client.get(DATA)

    assert response["Content-Type"].startswith("application/json")
    expected = {"anonymous": (401, "authentication_error"), "user": (403, "permission_error")}
    assert (response.status_code, response.json()["error"]["type"]) == expected[who]
    assert "heads" not in response.json()


@pytest.mark.django_db
def test_an_api_token_of_a_user_who_is_not_staff_is_refused(redis_client) -> None:
    response = api_client(make_user("scripted")).get(DATA)
    assert response.status_code == 403


@pytest.mark.django_db
def test_while_redis_is_down_the_endpoint_answers_503_json(own_redis) -> None:
    client = Client()
    client.force_login(make_user("oncall", staff=True))
    own_redis.stop()

    response = client.get(DATA)

    assert response.status_code == 503
    assert response["Content-Type"].startswith("application/json")
    assert response["Retry-After"] == "5"
    error = response.json()["error"]
    assert error["type"] == "service_unavailable" and "unreachable" in error["message"]
    page = client.get("/queue/staff/")
    assert page.status_code == 503
    assert b'data-state="unavailable"' in page.content and b"staff_queue.js" in page.content
    assert b"Unknown while the queue is unreachable." in page.content  # not "Nothing queued."
    assert b"Nothing queued." not in page.content
