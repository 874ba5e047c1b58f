"""The planner on real parts: reuse statistics in the isolated Redis, bodies billed by the emulator."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from llm_calls.caching import (
    EWMA_ALPHA,
    Observation,
    ReuseTracker,
    plan_for_call,
)
from llm_calls.emulator.process import EmulatorProcess
from llm_calls.retry import RetryPolicy
from llm_calls.services import send_message
from llm_calls.validation import check_message_params
from ratelimit_project.redis import free_port

MODEL = "claude-sonnet-5-5"
SYSTEM = "You are the support assistant of Example Corp. " * 520  # 6,110 tokens
FAST = RetryPolicy(max_retries=2, base_s=0.01, cap_s=0.05, total_cap_s=10.0)


def body(question: str, system: str = SYSTEM) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 50,
        "system": system,
        "messages": [{"role": "user", "content": f"{question} [[emulator:output_tokens=10]]"}],
    }


def test_tracker_records_count_last_seen_and_interval_ewma(redis_client) -> None:
    tracker = ReuseTracker()
    seen = [Observation("abc", 600)]
    first = tracker.lookup_and_observe(model=MODEL, observations=seen, now=1000.0)
    assert first.now == 1000.0 and first.get("abc") is None  # never seen before this call
    second = tracker.lookup_and_observe(model=MODEL, observations=seen, now=1060.0)
    stats = second.get("abc")
    assert stats is not None and (stats.count, stats.last_seen, stats.interval_s) == (
        1,
        1000.0,
        None,
    )
    third = tracker.lookup_and_observe(model=MODEL, observations=seen, now=1180.0).get("abc")
    assert third is not None and (third.count, third.interval_s) == (2, 60.0)
    # the third call's gap (120 s) is folded into the EWMA: what the planner used then, and
    # what the tracker stored
    expected = EWMA_ALPHA * 120 + (1 - EWMA_ALPHA) * 60
    assert third.interval_with_gap(1180.0) == pytest.approx(expected)
    key = f"gw:cache:prefix:{MODEL}:abc"
    assert 0 < redis_client.ttl(key) <= 600  # forgotten after its memory
    for _ in range(2):  # lookup only reads
        stored = tracker.lookup(model=MODEL, prefix_hashes=["abc"], now=2000.0).get("abc")
        assert stored is not None and stored.count == 3
        assert stored.interval_s == pytest.approx(expected)


def test_tracker_uses_the_redis_clock_by_default(redis_client) -> None:
    stats = ReuseTracker().lookup_and_observe(model=MODEL, observations=[Observation("x", 60)])
    server_now = float(".".join(str(p) for p in redis_client.time()))
    assert abs(stats.now - server_now) < 5


def test_plan_for_call_is_one_redis_round_trip(redis_client) -> None:
    plan_for_call(params=body("warm the script cache"))  # first call loads the Lua script

    def calls() -> dict[str, int]:
        return {k: v["calls"] for k, v in redis_client.info("commandstats").items()}

    before = calls()
    plan_for_call(params=body("How do I reset my password?"))
    after = calls()
    changed = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    # One EVALSHA from the client; the rest ran inside that script (and our INFO).
    assert changed.pop("cmdstat_evalsha") == 1
    assert set(changed) <= {
        "cmdstat_info",
        "cmdstat_time",
        "cmdstat_hmget",
        "cmdstat_hset",
        "cmdstat_expire",
    }


def test_ttl_follows_observed_reuse(redis_client) -> None:
    tracker = ReuseTracker()
    first = plan_for_call(params=body("q1"), tracker=tracker, now=10_000.0)
    assert [(bp.kind, bp.ttl) for bp in first.added] == [("system", "5m")]
    assert "first sight" in first.added[0].reason
    # The same system prompt every ten minutes: 5m would expire between uses, 1h pays off.
    second = plan_for_call(params=body("q2"), tracker=tracker, now=10_600.0)
    assert [(bp.kind, bp.ttl) for bp in second.added] == [("system", "1h")]
    # Then every few seconds: the EWMA comes down under 5 minutes and 5m is cheaper again.
    for i in range(12):
        latest = plan_for_call(params=body(f"q{i}"), tracker=tracker, now=10_610.0 + 5 * i)
    assert [(bp.kind, bp.ttl) for bp in latest.added] == [("system", "5m")]


def test_planner_off_touches_nothing(redis_client, settings) -> None:
    settings.CACHE_PLANNER_ENABLED = False
    params = body("q")
    plan = plan_for_call(params=params)
    assert plan.body == params and plan.added == ()
    assert redis_client.keys("gw:cache:*") == []


def test_redis_down_still_plans_on_priors(caplog) -> None:
    dead = ReuseTracker(client=redis.Redis(port=free_port(), socket_connect_timeout=0.5))
    plan = plan_for_call(params=body("q"), tracker=dead, enabled=True)
    assert [(bp.kind, bp.ttl) for bp in plan.added] == [("system", "5m")]
    assert "reuse tracker unavailable" in caplog.text


# --- billed by the emulator ---------------------------------------------------------------------


@pytest.fixture
def claude(emulator: EmulatorProcess, settings) -> EmulatorProcess:
    settings.ANTHROPIC_BASE_URL = emulator.base_url
    settings.ANTHROPIC_API_KEY = "sk-ant-caching-tests"
    return emulator


def test_planned_bodies_are_accepted_and_the_shared_prefix_is_read_from_cache(
    claude: EmulatorProcess, redis_client
) -> None:
    usages = []
    for question in ("Where is my order?", "Can I change my address?", "Do you ship to Norway?"):
        plan = plan_for_call(params=body(question))
        check_message_params(plan.body)
        usages.append(send_message(params=plan.body, policy=FAST, cache_planner=False).usage)
    write, *reads = usages
    assert write.cache_creation_input_tokens >= 6000 and write.cache_read_input_tokens == 0
    for usage in reads:
        assert usage.cache_read_input_tokens == write.cache_creation_input_tokens
        assert usage.cache_creation_input_tokens == 0
        assert usage.cache_read_input_tokens / usage.total_input_tokens > 0.95


def test_without_the_planner_nothing_is_cached(claude: EmulatorProcess, redis_client) -> None:
    for question in ("Where is my order?", "Can I change my address?"):
        plan = plan_for_call(params=body(question), enabled=False)
        usage = send_message(params=plan.body, policy=FAST, cache_planner=False).usage
        assert usage.cache_read_input_tokens == 0 and usage.cache_creation_input_tokens == 0


def test_one_hour_choice_is_billed_as_a_one_hour_write(
    claude: EmulatorProcess, redis_client
) -> None:
    tracker = ReuseTracker()
    plan_for_call(params=body("first"), tracker=tracker, now=50_000.0)
    plan = plan_for_call(params=body("ten minutes later"), tracker=tracker, now=50_600.0)
    usage = send_message(params=plan.body, policy=FAST, cache_planner=False).usage
    assert usage.cache_creation_1h > 6000 and usage.cache_creation_5m == 0


def test_multi_turn_conversation_reads_the_previous_turns(
    claude: EmulatorProcess, redis_client
) -> None:
    messages: list[dict[str, Any]] = []
    reads = []
    for turn in range(4):
        messages.append(
            {
                "role": "user",
                "content": f"Turn {turn}: tell me more. [[emulator:output_tokens=300]]",
            }
        )
        params = {"model": MODEL, "max_tokens": 400, "system": SYSTEM, "messages": list(messages)}
        plan = plan_for_call(params=params)
        result = send_message(params=plan.body, policy=FAST, cache_planner=False)
        reads.append(result.usage.cache_read_input_tokens)
        messages.append({"role": "assistant", "content": result.text})
    # Turn 0 writes the system prompt; every later turn reads at least it; from turn 3 on the
    # conversation mark (placed once turn 2 showed the conversation goes on) is read as well.
    assert reads[0] == 0
    assert all(r >= 6000 for r in reads[1:])
    assert reads[3] > reads[2] + 300
