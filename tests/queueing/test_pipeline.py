"""End to end through the queue: submit → scheduler → limiter → RQ worker → emulator → audit_log."""

from __future__ import annotations

import pytest

from queueing import services
from queueing.models import LLMRequest
from tests.usage.factories import make_user
from usage.models import AuditLog

MODEL = "claude-sonnet-5-5"


def ask(user, text: str = "Hello there", **kw):
    return services.submit_request(
        user=user,
        session_id=kw.pop("session_id", "s-1"),
        model=MODEL,
        messages=[{"role": "user", "content": text}],
        # Room for Sonnet 5.5's default adaptive thinking (thinking is output) and an answer.
        max_tokens=kw.pop("max_tokens", 2000),
        **kw,
    )


def ledger_totals(emulator) -> dict:
    return emulator.ledger()["totals"]


def audit_totals() -> dict:
    rows = AuditLog.objects.all()
    return {
        "input_tokens": sum(r.input_tokens for r in rows),
        "output_tokens": sum(r.output_tokens for r in rows),
        "cache_read_input_tokens": sum(r.cache_read_input_tokens for r in rows),
        "cache_creation_input_tokens": sum(r.cache_creation_input_tokens for r in rows),
    }


def test_queued_requests_are_answered_and_billed_exactly_once(gateway) -> None:
    user = make_user("alice")
    submitted = [ask(user, f"question number {i} " * 20) for i in range(6)]
    assert all(r.status == LLMRequest.Status.QUEUED for r in submitted)

    done = [services.wait_for_result(request_id=r.pk, timeout_s=30) for r in submitted]

    assert [r.status for r in done] == [LLMRequest.Status.SUCCEEDED] * 6
    assert all(r.result and r.result["text"] for r in done)
    assert AuditLog.objects.filter(outcome=AuditLog.Outcome.SUCCESS).count() == 6
    ledger = ledger_totals(gateway.emulator)
    assert ledger["requests"] == 6
    totals = audit_totals()
    for key, value in totals.items():
        assert ledger[key] == value, key


def test_call_claude_answers_inline_and_is_tracked(gateway) -> None:
    user = make_user("bob")
    row = services.call_claude(
        user=user,
        session_id="inline",
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=20,
    )
    assert row.status == LLMRequest.Status.SUCCEEDED
    audit = AuditLog.objects.get(llm_request=row)
    assert row.result is not None
    assert audit.output_tokens == row.result["usage"]["output_tokens"] > 0
    assert ledger_totals(gateway.emulator)["requests"] == 1


def test_transient_errors_are_retried_and_attempts_recorded(gateway) -> None:
    gateway.emulator.configure(script=[{"status": 529}, {"status": 429, "retry_after": 1}])
    user = make_user("carol")
    row = services.call_claude(
        user=user,
        session_id="retry",
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=20,
    )
    assert row.status == LLMRequest.Status.SUCCEEDED
    assert row.attempts == 3
    audit = AuditLog.objects.get(llm_request=row)
    assert audit.attempts == 3
    assert ledger_totals(gateway.emulator)["requests"] == 1


def test_a_bad_request_fails_once_with_a_clear_reason_and_no_tokens(gateway) -> None:
    gateway.emulator.configure(script=[{"status": 400}])
    user = make_user("dave")
    with pytest.raises(services.RequestFailed) as failure:
        services.call_claude(
            user=user,
            session_id="bad",
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=20,
        )
    row = failure.value.request
    assert row.status == LLMRequest.Status.FAILED
    assert row.attempts == 1
    assert "invalid_request_error" in row.error_message
    audit = AuditLog.objects.get(llm_request=row)
    assert audit.outcome == AuditLog.Outcome.FAILED
    assert audit.input_tokens == audit.output_tokens == 0
    assert ledger_totals(gateway.emulator)["requests"] == 0


def test_cancel_removes_a_queued_request(gateway) -> None:
    gateway.host.stop.set()  # nothing dispatches while we cancel
    user = make_user("erin")
    other = make_user("frank")
    row = ask(user)
    with pytest.raises(LLMRequest.DoesNotExist):
        services.cancel_request(request=row, by_user=other)
    cancelled = services.cancel_request(request=row, by_user=user)
    assert cancelled.status == LLMRequest.Status.CANCELLED
    with pytest.raises(services.CannotCancel):
        services.cancel_request(request=cancelled, by_user=user)
