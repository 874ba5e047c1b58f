"""The retry policy as pure functions: delay schedule, jitter, what is retried, retry-after."""

from __future__ import annotations

import email.utils
import pickle
import statistics

import pytest

from llm_calls.client import AttemptFailure, parse_retry_after
from llm_calls.retry import ClaudeCallError, RetryPolicy, is_retryable
from llm_calls.types import Attempt


def test_default_ceilings_double_from_one_second_up_to_the_cap() -> None:
    ceilings = RetryPolicy().ceilings()
    assert [next(ceilings) for _ in range(7)] == [1, 2, 4, 8, 16, 16, 16]


def test_ceilings_follow_base_and_cap() -> None:
    ceilings = RetryPolicy(base_s=0.5, cap_s=3.0).ceilings()
    assert [next(ceilings) for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize("ceiling", [1.0, 2.0, 4.0, 8.0, 16.0])
def test_full_jitter_spreads_waits_over_zero_to_the_ceiling(ceiling: float) -> None:
    policy = RetryPolicy()
    waits = [policy.wait_s(ceiling_s=ceiling, retry_after_s=None) for _ in range(2000)]
    assert all(0.0 <= wait <= ceiling for wait in waits)
    # Full jitter (not "equal jitter" or none): short and long waits both occur, mean ≈ half.
    assert min(waits) < 0.05 * ceiling
    assert max(waits) > 0.95 * ceiling
    assert 0.4 * ceiling < statistics.fmean(waits) < 0.6 * ceiling


def test_retry_after_is_a_floor_not_a_replacement() -> None:
    policy = RetryPolicy()
    # A retry-after above the ceiling always wins …
    assert {policy.wait_s(ceiling_s=1.0, retry_after_s=3.0) for _ in range(200)} == {3.0}
    # … and below it, it only lifts the short jittered waits.
    waits = [policy.wait_s(ceiling_s=16.0, retry_after_s=2.0) for _ in range(2000)]
    assert min(waits) >= 2.0
    assert max(waits) > 12.0


def test_policy_reads_settings_at_call_time(settings) -> None:
    settings.LLM_RETRY_MAX_RETRIES = 2
    settings.LLM_RETRY_BASE_S = 0.25
    settings.LLM_RETRY_CAP_S = 4
    settings.LLM_RETRY_TOTAL_CAP_S = 30
    assert RetryPolicy.from_settings() == RetryPolicy(
        max_retries=2, base_s=0.25, cap_s=4.0, total_cap_s=30.0
    )


def test_default_policy_matches_the_project_defaults() -> None:
    assert RetryPolicy.from_settings() == RetryPolicy(
        max_retries=5, base_s=1.0, cap_s=16.0, total_cap_s=120.0
    )


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"max_retries": -1}, "max_retries"), ({"base_s": -0.5}, "base_s"), ({"cap_s": -1}, "cap_s")],
)
def test_nonsense_policy_is_refused_with_the_field_named(kwargs: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        RetryPolicy(**kwargs)


def _failure(
    status: int | None, error_type: str | None = None, error_code: str | None = None
) -> AttemptFailure:
    return AttemptFailure(status=status, error_type=error_type, message="m", error_code=error_code)


@pytest.mark.parametrize(
    ("failure", "retryable"),
    [
        (_failure(408, "timeout_error"), True),
        (_failure(409, "conflict_error"), True),
        (_failure(429, "rate_limit_error"), True),
        (_failure(500, "api_error"), True),
        (_failure(502), True),
        (_failure(503), True),
        (_failure(504, "timeout_error"), True),
        (_failure(529, "overloaded_error"), True),
        (_failure(None, "connection_error"), True),
        (_failure(None, "timeout"), True),
        (_failure(200, "overloaded_error"), True),
        (_failure(200, "api_error"), True),
        (_failure(400, "invalid_request_error"), False),
        (_failure(401, "authentication_error"), False),
        (_failure(402, "billing_error"), False),
        (_failure(403, "permission_error"), False),
        (_failure(404, "not_found_error"), False),
        (_failure(413, "request_too_large"), False),
        (_failure(429, "rate_limit_error", "enforced_spend_limit_reached"), False),
        (_failure(200, "invalid_request_error"), False),
        (_failure(501), False),
    ],
    ids=lambda value: value.describe() if isinstance(value, AttemptFailure) else str(value),
)
def test_what_is_retried(failure: AttemptFailure, retryable: bool) -> None:
    assert is_retryable(failure) is retryable


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5


def test_retry_after_seconds_and_case_insensitive_names() -> None:
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "0.25"}) == 0.25


def test_retry_after_http_date() -> None:
    now = 1_800_000_000.0
    header = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"retry-after": header}, now=now) == pytest.approx(30.0, abs=1.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=now) == 0.0


@pytest.mark.parametrize("headers", [{}, {"retry-after": "soon"}, {"retry-after": "nan"}])
def test_missing_or_garbage_retry_after_is_none(headers: dict[str, str]) -> None:
    assert parse_retry_after(headers) is None


def test_claude_call_error_survives_pickling() -> None:
    attempt = Attempt(
        number=1, status=529, error_type="overloaded_error", request_id="req_1", duration_ms=3.0
    )
    error = ClaudeCallError(
        "Claude call failed after 1 attempt: HTTP 529",
        attempts=1,
        last_status=529,
        last_error_type="overloaded_error",
        request_id="req_1",
        retryable=True,
        attempt_log=(attempt,),
    )
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error)
    assert (copy.attempts, copy.last_status, copy.request_id, copy.retryable) == (
        1,
        529,
        "req_1",
        True,
    )
    assert copy.attempt_log == (attempt,)
