"""The requests the queueing benchmarks send: the cached ``eta`` workload's are the demo's,
and every other scenario's are what they were."""

from __future__ import annotations

import random
import re

import pytest

from llm_calls.tokens import estimate_input_tokens
from llm_calls.validation import check_message_params
from queueing.models import LLMRequest
from ratelimit_project import demo
from ratelimit_project.loadtest import backlog, eta

Status = LLMRequest.Status


@pytest.fixture
def cached_streams(db) -> list[backlog.Stream]:
    return eta.cached_streams(eta.cached_config({}, {}))


def test_a_cached_workload_request_is_the_demos_shared_prefix_and_a_valid_body(
    cached_streams: list[backlog.Stream],
) -> None:
    rng = random.Random(3)
    for stream in cached_streams[:6]:
        params = backlog.message_params(stream, rng)
        check_message_params(params)  # raises InvalidRequest for a body the gateway refuses
        assert params["system"] == demo.handbook_prompt()
        assert params["tools"] == [demo.request_tool()]
        assert params["max_tokens"] == demo.MAX_TOKENS
        (message,) = params["messages"]
        output, thinking = (
            int(re.findall(rf"\[\[emulator:{name}=(\d+)\]\]", message["content"])[0])
            for name in ("output_tokens", "thinking_tokens")
        )
        assert 30 <= output <= 100 and 0 <= thinking <= 40
        assert output + thinking <= params["max_tokens"]
        # The shared prefix is thousands of tokens; the question after it is short.
        whole = estimate_input_tokens(params)
        question = estimate_input_tokens({**params, "system": "", "tools": []})
        assert whole > 6_000 and question < 400


def test_the_cached_workload_mixes_the_demos_queued_classes_and_skewed_users(
    cached_streams: list[backlog.Stream],
) -> None:
    assert {s.priority for s in cached_streams} == {"approval", "interactive", "query"}
    assert len({s.user.pk for s in cached_streams}) == 12
    by_user: dict[int, float] = {}
    for stream in cached_streams:
        by_user[stream.user.pk] = by_user.get(stream.user.pk, 0) + stream.traffic_weight
    assert max(by_user.values()) == pytest.approx(3 * min(by_user.values()))


@pytest.mark.django_db(transaction=True)
def test_a_follow_up_carries_the_session_s_question_and_real_answer(
    redis_client, cached_streams: list[backlog.Stream]
) -> None:
    stream = cached_streams[0]
    assert stream.sessions is not None
    stream.sessions.follow_up = 1.0
    rng = random.Random(5)
    first = backlog.submit(stream, rng)
    # Still waiting for its answer: the next request opens another session.
    second = backlog.submit(stream, rng)
    rows = LLMRequest.objects.in_bulk([first.request_id, second.request_id])
    assert rows[first.request_id].session_id != rows[second.request_id].session_id
    LLMRequest.objects.filter(pk=first.request_id).update(
        status=Status.SUCCEEDED, result={"text": "Section 4 applies."}
    )
    third = LLMRequest.objects.get(pk=backlog.submit(stream, rng).request_id)
    assert third.session_id == rows[first.request_id].session_id
    roles = [m["role"] for m in third.params["messages"]]
    assert roles == ["user", "assistant", "user"]
    assert third.params["messages"][1]["content"] == "Section 4 applies."


def test_a_default_stream_still_sends_one_message_of_random_words() -> None:
    stream = backlog.Stream("s", user=None)  # type: ignore[arg-type]
    params = backlog.message_params(stream, random.Random(1))
    assert set(params) == {"model", "messages", "max_tokens"}
    assert params["max_tokens"] == 50
    (message,) = params["messages"]
    assert message["content"].endswith(" [[emulator:output_tokens=50]]")
    assert "thinking_tokens" not in message["content"]
    # Seed for seed the same text as before the new options (same draws in the same order).
    rng = random.Random(1)
    size = rng.randint(200, 1400)
    assert message["content"] == backlog.prompt(rng, size, 50)
