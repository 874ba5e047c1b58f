"""Injected faults: scripted per attempt, or random but reproducible from a seed."""

from __future__ import annotations

import time

# Tests prove the emulator against the unmodified official SDK, so they import it directly.
import anthropic  # noqa: TID251
import pytest

from llm_calls.emulator.process import EmulatorProcess

from .emulator_support import MODEL, body, raw_call, sdk, user


def _ask(client: anthropic.Anthropic) -> anthropic.types.Message:
    return client.messages.create(model=MODEL, max_tokens=50, messages=user("hi"))


def test_script_plays_one_action_per_request_in_order(emulator: EmulatorProcess) -> None:
    emulator.configure(
        script=[
            {"status": 429, "retry_after": 2},
            {"status": 529},
            {"status": 500},
            {"status": 503},
            {"status": 408},
            {"status": 400},
            {"status": 429, "spend_limit": True},
            {"ok": True},
        ]
    )
    client = sdk(emulator)
    with pytest.raises(anthropic.RateLimitError) as rate_limited:
        _ask(client)
    assert rate_limited.value.response.headers["retry-after"] == "2"
    with pytest.raises(anthropic.InternalServerError) as overloaded:
        _ask(client)
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}  # type: ignore[index]
    for status, error_type in ((500, "api_error"), (503, "api_error"), (408, "timeout_error")):
        with pytest.raises(anthropic.APIStatusError) as caught:
            _ask(client)
        assert caught.value.status_code == status
        assert caught.value.body["error"]["type"] == error_type  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError):
        _ask(client)
    with pytest.raises(anthropic.RateLimitError) as spend:
        _ask(client)
    assert spend.value.body["error"]["details"]["error_code"] == "enforced_spend_limit_reached"  # type: ignore[index]
    assert "retry-after" not in spend.value.response.headers
    assert _ask(client).usage.output_tokens > 0
    assert _ask(client).usage.output_tokens > 0, "script used up: back to normal"

    log = emulator.log()
    assert [entry["status"] for entry in log] == [429, 529, 500, 503, 408, 400, 429, 200, 200]
    assert emulator.ledger()["totals"]["requests"] == 2, "only the successes are billed"


def test_faulted_requests_do_not_use_up_the_rate_limit(emulator: EmulatorProcess) -> None:
    emulator.configure(rpm=1, itpm=0, otpm=0, script=[{"status": 529}, {"status": 500}])
    assert raw_call(emulator, "/v1/messages", body()).status == 529
    assert raw_call(emulator, "/v1/messages", body()).status == 500
    assert raw_call(emulator, "/v1/messages", body()).status == 200


def test_connection_reset_closes_without_a_response(emulator: EmulatorProcess) -> None:
    emulator.configure(script=[{"reset": True}])
    with pytest.raises(anthropic.APIConnectionError):
        _ask(sdk(emulator))
    entry = emulator.log()[0]
    assert entry["status"] == 0 and entry["error_type"] == "connection_reset"
    assert emulator.ledger()["totals"]["requests"] == 0
    assert _ask(sdk(emulator)).content, "the server is fine afterwards"


def test_midstream_error_raises_in_the_sdk_and_is_not_billed(emulator: EmulatorProcess) -> None:
    emulator.configure(script=[{"midstream": True}, {"midstream": True}])
    client = sdk(emulator)
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        for event in client.messages.create(
            model=MODEL,
            max_tokens=300,
            stream=True,
            messages=user("hi [[emulator:output_tokens=200]]"),
        ):
            received.append(event.type)
    assert caught.value.status_code == 200
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert received[0] == "message_start" and "content_block_delta" in received
    assert "message_stop" not in received
    with (
        pytest.raises(anthropic.APIStatusError),
        client.messages.stream(model=MODEL, max_tokens=300, messages=user("again")) as stream,
    ):
        stream.get_final_message()
    assert emulator.ledger()["totals"]["requests"] == 0
    assert [entry["error_type"] for entry in emulator.log()] == [
        "overloaded_error",
        "overloaded_error",
    ]


def test_midstream_on_a_plain_request_is_a_529(emulator: EmulatorProcess) -> None:
    emulator.configure(script=[{"midstream": True}])
    assert raw_call(emulator, "/v1/messages", body()).status == 529


def test_slow_reply_adds_latency(emulator: EmulatorProcess) -> None:
    emulator.configure(script=[{"slow_ms": 600}])
    started = time.monotonic()
    assert raw_call(emulator, "/v1/messages", body()).status == 200
    assert time.monotonic() - started >= 0.6


def test_bad_script_is_refused_with_a_clear_error(emulator: EmulatorProcess) -> None:
    response = raw_call(emulator, "/_emulator/config", {"script": [{"status": 418}]})
    assert response.status == 400
    assert "script[0].status" in response.json["error"]["message"]


def _outcomes(emulator: EmulatorProcess, count: int) -> list[int]:
    return [raw_call(emulator, "/v1/messages", body()).status for _ in range(count)]


def test_random_faults_are_reproducible_from_the_seed(emulator: EmulatorProcess) -> None:
    emulator.configure(seed=7, fault_rate_529=0.3, fault_rate_500=0.2)
    first = _outcomes(emulator, 30)
    assert set(first) == {200, 500, 529}
    emulator.configure(seed=7)  # same seed: the fault stream starts over
    assert _outcomes(emulator, 30) == first
    emulator.configure(seed=8)
    assert _outcomes(emulator, 30) != first
