"""The retry loop over real HTTP against the emulator: what is retried, how long we wait,
when we give up, and what the caller's hooks see. Attempts are counted in /_emulator/log."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytest

from llm_calls.emulator.process import EmulatorProcess
from llm_calls.retry import (
    GAVE_UP_NOT_RETRYABLE,
    GAVE_UP_RETRY_LIMIT,
    GAVE_UP_TOTAL_CAP,
    ClaudeCallError,
    RetryPolicy,
)
from llm_calls.services import send_message
from llm_calls.types import Attempt

MODEL = "claude-sonnet-5-5"
# Tiny waits so retries cost milliseconds; the retry-after tests use the server's floor.
FAST = RetryPolicy(max_retries=5, base_s=0.01, cap_s=0.05, total_cap_s=30.0)


@pytest.fixture
def claude(emulator: EmulatorProcess, settings) -> EmulatorProcess:
    settings.ANTHROPIC_BASE_URL = emulator.base_url
    settings.ANTHROPIC_API_KEY = "sk-ant-retry-tests-key"
    return emulator


def body(text: str = "hello") -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": f"{text} [[emulator:output_tokens=5]]"}],
    }


def message_attempts(emulator: EmulatorProcess) -> list[dict[str, Any]]:
    return [entry for entry in emulator.log() if entry["path"] == "/v1/messages"]


def billed_requests(emulator: EmulatorProcess) -> int:
    return int(emulator.ledger()["totals"]["requests"])


def test_rate_limited_then_succeeds(claude: EmulatorProcess) -> None:
    claude.configure(script=[{"status": 429, "retry_after": 0}, {"ok": True}])

    result = send_message(params=body(), policy=FAST)

    assert result.text
    assert [a.status for a in result.attempts] == [429, 200]
    assert result.attempts[0].error_type == "rate_limit_error"
    assert [e["status"] for e in message_attempts(claude)] == [429, 200]
    assert result.request_id == message_attempts(claude)[-1]["request_id"]
    assert billed_requests(claude) == 1


def test_retry_after_is_honoured_as_a_floor(claude: EmulatorProcess) -> None:
    claude.configure(script=[{"status": 429, "retry_after": 1}, {"ok": True}])

    result = send_message(params=body(), policy=FAST)

    first, second = message_attempts(claude)
    assert second["time"] - first["time"] >= 1.0  # the server saw us wait
    assert result.attempts[0].retry_after_s == 1.0
    assert result.attempts[0].wait_s >= 1.0
    assert result.latency_ms >= 1000.0


@pytest.mark.parametrize(
    ("key", "script", "model", "status", "error_type", "quoted"),
    [
        ("sk-ant-retry-tests-key", [{"status": 400}], MODEL, 400, "invalid_request_error", ""),
        ("sk-bad-revoked-key", [], MODEL, 401, "authentication_error", ""),
        (
            "sk-ant-retry-tests-key",
            [],
            "claude-nonexistent-9",
            404,
            "not_found_error",
            "model: claude-nonexistent-9",
        ),
    ],
    ids=["400", "401", "404-unknown-model"],
)
def test_client_errors_fail_after_exactly_one_attempt(
    claude: EmulatorProcess,
    settings,
    key: str,
    script: list[dict[str, Any]],
    model: str,
    status: int,
    error_type: str,
    quoted: str,
) -> None:
    settings.ANTHROPIC_API_KEY = key
    if script:
        claude.configure(script=script)

    with pytest.raises(ClaudeCallError) as caught:
        send_message(params={**body(), "model": model}, policy=FAST)

    error = caught.value
    assert len(message_attempts(claude)) == 1
    assert error.attempts == 1
    assert (error.last_status, error.last_error_type) == (status, error_type)
    assert error.retryable is False
    assert error.gave_up_because == GAVE_UP_NOT_RETRYABLE
    assert error.request_id == message_attempts(claude)[0]["request_id"]
    assert str(error).startswith(f"Claude call failed after 1 attempt: HTTP {status} {error_type}")
    assert str(error).endswith("(not retried)")
    assert quoted in str(error)
    assert key not in str(error)


def test_spend_limit_429_is_not_retried(claude: EmulatorProcess) -> None:
    claude.configure(script=[{"status": 429, "spend_limit": True}, {"ok": True}])

    with pytest.raises(ClaudeCallError) as caught:
        send_message(params=body(), policy=FAST)

    assert len(message_attempts(claude)) == 1
    assert caught.value.last_status == 429
    assert caught.value.error_code == "enforced_spend_limit_reached"
    assert caught.value.retryable is False
    assert "enforced_spend_limit_reached" in str(caught.value)


def test_gives_up_after_the_retry_limit(claude: EmulatorProcess) -> None:
    claude.configure(script=[{"status": 529}] * 7)

    with pytest.raises(ClaudeCallError) as caught:
        send_message(params=body(), policy=FAST)

    error = caught.value
    log = message_attempts(claude)
    assert len(log) == 6  # 1 attempt + 5 retries; the 7th scripted 529 is never reached
    assert error.attempts == 6
    assert error.last_status == 529
    assert error.last_error_type == "overloaded_error"
    assert error.request_id == log[-1]["request_id"]
    assert error.retryable is True
    assert error.gave_up_because == GAVE_UP_RETRY_LIMIT
    assert [a.status for a in error.attempt_log] == [529] * 6
    assert [a.request_id for a in error.attempt_log] == [e["request_id"] for e in log]
    assert str(error).startswith("Claude call failed after 6 attempts: HTTP 529 overloaded_error")
    assert f"(request {log[-1]['request_id']})" in str(error)
    assert "retry limit" in str(error)
    assert billed_requests(claude) == 0


def test_total_time_cap_stops_before_a_wait_that_would_pass_it(claude: EmulatorProcess) -> None:
    claude.configure(script=[{"status": 429, "retry_after": 1}] * 4)
    policy = RetryPolicy(max_retries=5, base_s=0.01, cap_s=0.05, total_cap_s=1.5)

    started = time.monotonic()
    with pytest.raises(ClaudeCallError) as caught:
        send_message(params=body(), policy=policy)
    elapsed = time.monotonic() - started

    # Attempt 1, wait 1 s (ends at ~1 s < 1.5 s), attempt 2, next wait would end at ~2 s: stop.
    assert len(message_attempts(claude)) == 2
    assert caught.value.gave_up_because == GAVE_UP_TOTAL_CAP
    assert caught.value.retryable is True
    assert "1.5 s total retry time cap" in str(caught.value)
    assert elapsed < 1.5


def test_connection_reset_is_retried(claude: EmulatorProcess) -> None:
    claude.configure(script=[{"reset": True}, {"ok": True}])

    result = send_message(params=body(), policy=FAST)

    first = result.attempts[0]
    assert (first.status, first.error_type) == (None, "connection_error")
    assert result.attempts[1].status == 200
    assert billed_requests(claude) == 1


def test_client_timeout_is_retried(claude: EmulatorProcess, settings) -> None:
    settings.ANTHROPIC_TIMEOUT_S = 0.4
    claude.configure(script=[{"slow_ms": 1500}, {"ok": True}])

    result = send_message(params=body(), policy=FAST)

    assert (result.attempts[0].status, result.attempts[0].error_type) == (None, "timeout")
    assert result.attempts[1].status == 200


@pytest.mark.parametrize("status", [408, 500, 503])
def test_transient_statuses_are_retried(claude: EmulatorProcess, status: int) -> None:
    claude.configure(script=[{"status": status}, {"ok": True}])

    result = send_message(params=body(), policy=FAST)

    assert [a.status for a in result.attempts] == [status, 200]
    assert [e["status"] for e in message_attempts(claude)] == [status, 200]


def test_midstream_overload_is_retried_and_billed_once(claude: EmulatorProcess) -> None:
    claude.configure(script=[{"midstream": True}, {"ok": True}])

    result = send_message(params=body(), stream=True, policy=FAST)

    first, second = result.attempts
    assert (first.status, first.error_type, first.billed) == (200, "overloaded_error", False)
    assert (second.status, second.billed) == (200, True)
    assert result.text
    assert billed_requests(claude) == 1
    ledger_usage = next(iter(claude.ledger()["keys"].values()))["requests"][0]["usage"]
    assert result.usage.output_tokens == ledger_usage["output_tokens"] == 5


def test_hooks_see_every_attempt_and_every_response_header(claude: EmulatorProcess) -> None:
    # Limits high enough never to trip, but set, so every response carries ratelimit headers.
    claude.configure(
        rpm=1000,
        itpm=1_000_000,
        otpm=100_000,
        script=[{"status": 429, "retry_after": 0}, {"status": 529}, {"ok": True}],
    )
    before: list[int] = []
    attempts: list[Attempt] = []
    headers_seen: list[tuple[int | None, Mapping[str, str]]] = []

    result = send_message(
        params=body(),
        policy=FAST,
        before_attempt=before.append,
        on_attempt=attempts.append,
        on_response_headers=lambda status, headers: headers_seen.append((status, headers)),
    )

    log = message_attempts(claude)
    assert before == [1, 2, 3]
    assert [a.number for a in attempts] == [1, 2, 3]
    assert [a.status for a in attempts] == [429, 529, 200]
    assert [a.request_id for a in attempts] == [e["request_id"] for e in log]
    assert attempts[0].wait_s > 0 or attempts[0].retry_after_s == 0
    assert attempts[2].wait_s == 0 and attempts[2].billed
    assert not attempts[0].billed and not attempts[1].billed
    assert tuple(attempts) == result.attempts
    assert [status for status, _ in headers_seen] == [429, 529, 200]
    for (_status, headers), entry in zip(headers_seen, log, strict=True):
        assert headers["request-id"] == entry["request_id"]
        assert headers["anthropic-ratelimit-requests-limit"] == "1000"
        assert "anthropic-ratelimit-input-tokens-remaining" in headers
    assert headers_seen[0][1]["retry-after"] == "0"


def test_network_failure_reports_no_headers(claude: EmulatorProcess) -> None:
    claude.configure(script=[{"reset": True}, {"ok": True}])
    headers_seen: list[int | None] = []

    send_message(
        params=body(), policy=FAST, on_response_headers=lambda s, h: headers_seen.append(s)
    )

    assert headers_seen == [200]


def test_before_attempt_can_abort_the_retry_loop(claude: EmulatorProcess) -> None:
    claude.configure(script=[{"status": 529}, {"ok": True}])

    class Cancelled(Exception):
        pass

    def admit(number: int) -> None:
        if number > 1:
            raise Cancelled

    with pytest.raises(Cancelled):
        send_message(params=body(), policy=FAST, before_attempt=admit)
    assert len(message_attempts(claude)) == 1


def test_each_attempt_carries_its_own_client_request_id(claude: EmulatorProcess) -> None:
    claude.configure(script=[{"status": 500}, {"ok": True}])

    send_message(params=body(), policy=FAST, client_request_id="job-42")

    assert [e["client_request_id"] for e in message_attempts(claude)] == ["job-42-a1", "job-42-a2"]
