"""The response cache on the isolated Redis: identical opted-in requests answered without a call."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from llm_calls import response_cache
from llm_calls.caching import plan_cache
from llm_calls.emulator.process import EmulatorProcess
from llm_calls.retry import RetryPolicy
from llm_calls.services import send_message
from llm_calls.types import Attempt, MessageResult, Usage

MODEL = "claude-sonnet-5-5"
FAST = RetryPolicy(max_retries=1, base_s=0.01, cap_s=0.05, total_cap_s=5.0)


def body(question: str = "What is 2 + 2?", **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 50,
        "system": "Answer briefly. " * 300,  # 1,200 tokens: the planner marks it
        "messages": [{"role": "user", "content": question}],
        **extra,
    }


def answer(text: str = "4") -> MessageResult:
    return MessageResult(
        message_id="msg_1",
        model=MODEL,
        text=text,
        stop_reason="end_turn",
        usage=Usage(input_tokens=420, output_tokens=3),
        request_id="req_1",
        attempts=(
            Attempt(
                number=1,
                status=200,
                error_type=None,
                request_id="req_1",
                duration_ms=5.0,
                billed=True,
            ),
        ),
        latency_ms=5.0,
        content=({"type": "text", "text": text},),
    )


def test_hit_returns_the_stored_answer_with_zero_usage(redis_client) -> None:
    scope = response_cache.scope_for(user_id=7, organization_id=None, shared=False)
    assert response_cache.lookup(params=body(), scope=scope) is None
    response_cache.store(params=body(), scope=scope, result=answer("4"))
    hit = response_cache.lookup(params=body(), scope=scope)
    assert hit is not None
    assert hit.from_response_cache is True
    assert (hit.text, hit.message_id, hit.stop_reason) == ("4", "msg_1", "end_turn")
    assert hit.content == ({"type": "text", "text": "4"},)
    assert hit.usage == Usage() and hit.usage.total_input_tokens == 0
    assert hit.attempts == () and hit.request_id is None


def test_answers_never_cross_users_or_organizations(redis_client) -> None:
    alice = response_cache.scope_for(user_id=1, organization_id=10, shared=False)
    bob = response_cache.scope_for(user_id=2, organization_id=10, shared=False)
    response_cache.store(params=body(), scope=alice, result=answer())
    assert response_cache.lookup(params=body(), scope=bob) is None
    org10 = response_cache.scope_for(user_id=1, organization_id=10, shared=True)
    assert org10 == response_cache.scope_for(user_id=2, organization_id=10, shared=True) == "org:10"
    assert response_cache.lookup(params=body(), scope=org10) is None  # user entry is not org's
    response_cache.store(params=body(), scope=org10, result=answer())
    assert response_cache.lookup(params=body(), scope="org:10") is not None
    assert response_cache.lookup(params=body(), scope="org:11") is None
    # "shared" without an organization stays private to the user
    assert response_cache.scope_for(user_id=3, organization_id=None, shared=True) == "user:3"


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.7},
        {"max_tokens": 51},
        {"model": "claude-haiku-4-5"},
        {"messages": [{"role": "user", "content": "What is 2 + 3?"}]},
        {"metadata": {"user_id": "someone-else"}},
    ],
)
def test_any_change_that_can_change_the_answer_misses(redis_client, change: dict[str, Any]) -> None:
    response_cache.store(params=body(), scope="user:1", result=answer())
    assert response_cache.lookup(params={**body(), **change}, scope="user:1") is None


def test_prompt_cache_marks_stream_and_string_forms_do_not_split_the_key(redis_client) -> None:
    response_cache.store(params=body(), scope="user:1", result=answer())
    planned = plan_cache(params=body(), reuse=None).body  # adds cache_control, system as blocks
    assert planned != body()
    assert response_cache.lookup(params=planned, scope="user:1") is not None
    assert response_cache.lookup(params={**body(), "stream": True}, scope="user:1") is not None
    as_blocks = {
        **body(),
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]}],
    }
    assert response_cache.lookup(params=as_blocks, scope="user:1") is not None


def test_entries_expire_after_the_configured_ttl(redis_client, settings) -> None:
    settings.RESPONSE_CACHE_TTL_S = 120
    response_cache.store(params=body(), scope="user:1", result=answer())
    key = response_cache.cache_key(params=body(), scope="user:1")
    assert 110 <= redis_client.ttl(key) <= 120


def test_bad_ttl_setting_is_a_clear_configuration_error(redis_client, settings) -> None:
    settings.RESPONSE_CACHE_TTL_S = "an hour"
    with pytest.raises(ImproperlyConfigured, match="RESPONSE_CACHE_TTL_S"):
        response_cache.store(params=body(), scope="user:1", result=answer())


def test_empty_scope_is_refused(redis_client) -> None:
    with pytest.raises(ValueError, match="scope"):
        response_cache.lookup(params=body(), scope=" ")


def test_a_hit_is_not_stored_again(redis_client, settings) -> None:
    settings.RESPONSE_CACHE_TTL_S = 100
    response_cache.store(params=body(), scope="user:1", result=answer())
    key = response_cache.cache_key(params=body(), scope="user:1")
    redis_client.expire(key, 5)
    hit = response_cache.lookup(params=body(), scope="user:1")
    assert hit is not None
    response_cache.store(params=body(), scope="user:1", result=hit)
    assert redis_client.ttl(key) <= 5  # reading must not keep an answer alive forever


def test_redis_down_is_a_miss_not_an_error(settings, caplog) -> None:
    from ratelimit_project import redis as project_redis

    settings.REDIS_URL = f"redis://127.0.0.1:{project_redis.free_port()}/0"
    try:
        assert response_cache.lookup(params=body(), scope="user:1") is None
        response_cache.store(params=body(), scope="user:1", result=answer())
    finally:
        project_redis.reset_clients()
    assert "response cache unavailable" in caplog.text


def test_second_identical_call_is_answered_without_the_api(
    emulator: EmulatorProcess, redis_client, settings
) -> None:
    settings.ANTHROPIC_BASE_URL = emulator.base_url
    settings.ANTHROPIC_API_KEY = "sk-ant-response-cache"
    params = body("Name three primes. [[emulator:output_tokens=12]]")
    calls = 0
    texts = []
    for _ in range(3):
        result = response_cache.lookup(params=params, scope="user:5")
        if result is None:
            result = send_message(params=params, policy=FAST)
            calls += 1
            response_cache.store(params=params, scope="user:5", result=result)
        texts.append(result.text)
    assert calls == 1
    assert len(set(texts)) == 1
    assert emulator.ledger()["totals"]["requests"] == 1
