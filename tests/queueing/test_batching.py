"""The batch route end to end: bulk requests → one Message Batch at the emulator → results on
their rows → audit rows at batch prices that add up to exactly what the emulator billed."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.db import close_old_connections
from django.utils import timezone

from llm_calls import batches as llm_batches
from llm_calls.client import close_clients
from llm_calls.emulator.process import EmulatorProcess
from llm_calls.retry import RetryPolicy
from queueing import batching, quotas, services
from queueing.models import LLMRequest
from ratelimit_project.redis import free_port
from tests.usage.factories import make_user
from usage import pricing
from usage import services as usage_services
from usage.models import AuditLog

MODEL = "claude-sonnet-5-5"
FAST = RetryPolicy(max_retries=1, base_s=0.01, cap_s=0.05, total_cap_s=5.0)
Status = LLMRequest.Status


@pytest.fixture
def route(emulator: EmulatorProcess, redis_client, settings, db) -> Iterator[EmulatorProcess]:
    settings.ANTHROPIC_BASE_URL = emulator.base_url
    settings.ANTHROPIC_API_KEY = "sk-ant-batch-tests"
    settings.BATCH_POLL_INTERVAL_S = 0
    emulator.configure(batch_latency_ms=50)
    usage_services.prices_seed_defaults()
    usage_services.price_cache_clear()
    yield emulator
    close_clients()


def submit(user: Any, text: str, output_tokens: int = 20, **kw: Any) -> LLMRequest:
    return services.submit_request(
        user=user,
        session_id="bulk-1",
        model=MODEL,
        messages=[
            {"role": "user", "content": f"{text} [[emulator:output_tokens={output_tokens}]]"}
        ],
        max_tokens=100,
        priority="bulk",
        batch=True,
        **kw,
    )


def poll_until_handled(expected: int, timeout_s: float = 15.0) -> int:
    handled = 0
    deadline = time.monotonic() + timeout_s
    while handled < expected and time.monotonic() < deadline:
        handled += batching.poll_batches(policy=FAST)
        time.sleep(0.05)
    return handled


def test_bulk_requests_go_out_as_one_batch_and_are_billed_at_half_price(
    route: EmulatorProcess,
) -> None:
    user = make_user("bulk-owner")
    rows = [submit(user, f"Classify ticket {i}: " + "text " * 50) for i in range(5)]

    batch_id = batching.collect_and_submit(max_batch=100, max_wait_s=0, policy=FAST)
    assert batch_id is not None and batch_id.startswith("msgbatch_")
    assert (
        batching.collect_and_submit(max_batch=100, max_wait_s=0, policy=FAST) is None
    )  # all taken
    claimed = LLMRequest.objects.filter(pk__in=[r.pk for r in rows])
    assert {(r.status, r.batch_id, r.dispatch_count) for r in claimed} == {
        (Status.RUNNING, batch_id, 1)
    }
    assert route.ledger()["totals"]["requests"] == 0  # nothing processed yet, nothing billed

    assert poll_until_handled(5) == 5

    done = LLMRequest.objects.filter(pk__in=[r.pk for r in rows]).order_by("pk")
    assert [r.status for r in done] == [Status.SUCCEEDED] * 5
    assert all(
        r.result and r.result["text"] and r.result["usage"]["service_tier"] == "batch" for r in done
    )
    audit = list(AuditLog.objects.order_by("llm_request_id"))
    assert [a.client_request_id for a in audit] == [f"llmreq-{r.pk}-d1" for r in done]
    assert {a.service_tier for a in audit} == {AuditLog.ServiceTier.BATCH}
    price = usage_services.price_for(model=MODEL, on=timezone.now().date())
    assert price is not None
    for row in audit:
        tokens = pricing.Usage(
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            cache_creation_input_tokens=row.cache_creation_input_tokens,
            cache_read_input_tokens=row.cache_read_input_tokens,
            cache_creation_5m=row.cache_creation_5m_tokens,
            cache_creation_1h=row.cache_creation_1h_tokens,
        )
        standard = pricing.call_cost_usd(usage=tokens, price=price, service_tier="standard")
        assert row.cost_usd == standard / 2 and row.cost_usd > 0

    ledger = route.ledger()
    billed = [r for key in ledger["keys"].values() for r in key["requests"]]
    assert {(r["service_tier"], r["batch_id"]) for r in billed} == {("batch", batch_id)}
    for field in (
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ):
        assert ledger["totals"][field] == sum(getattr(a, field) for a in audit), field
    assert ledger["totals"]["requests"] == len(audit)

    # quota: the reservation became the actual spend, nothing left held or in flight
    held = quotas.usage_now(holder_kind="user", holder_id=user.pk)
    assert held["day"]["tokens_held"] == 0 and held["in_flight"] == 0
    assert held["day"]["tokens_used"] == sum(a.total_input_tokens + a.output_tokens for a in audit)

    assert batching.poll_batches(policy=FAST) == 0  # delivered exactly once
    assert AuditLog.objects.count() == 5


def test_batch_waits_to_fill_until_the_oldest_has_waited_long_enough(
    route: EmulatorProcess,
) -> None:
    user = make_user("patient")
    submit(user, "one")
    assert batching.collect_and_submit(max_batch=3, max_wait_s=60) is None
    assert LLMRequest.objects.get().status == Status.QUEUED
    submit(user, "two")
    submit(user, "three")
    assert batching.collect_and_submit(max_batch=3, max_wait_s=60, policy=FAST) is not None
    LLMRequest.objects.filter(status=Status.RUNNING).update(batch_id="done-elsewhere")
    submit(user, "four")
    LLMRequest.objects.filter(status=Status.QUEUED).update(
        created_at=timezone.now() - dt.timedelta(seconds=61)
    )
    assert batching.collect_and_submit(max_batch=3, max_wait_s=60, policy=FAST) is not None


def test_concurrent_collectors_never_take_the_same_row(
    emulator: EmulatorProcess, redis_client, settings, transactional_db
) -> None:
    settings.ANTHROPIC_BASE_URL = emulator.base_url
    settings.ANTHROPIC_API_KEY = "sk-ant-batch-race"
    user = make_user("racer")
    pks = [submit(user, f"item {i}").pk for i in range(12)]
    submitted: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def collect() -> None:
        try:
            start.wait()
            while (
                batch_id := batching.collect_and_submit(max_batch=2, max_wait_s=0, policy=FAST)
            ) is not None:
                submitted.append(batch_id)
        except BaseException as error:  # surfaced below
            errors.append(error)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=collect) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    close_clients()
    assert errors == []
    rows = LLMRequest.objects.filter(pk__in=pks)
    assert {r.status for r in rows} == {Status.RUNNING}
    assert len(submitted) == len(set(submitted)) == 6
    assert sorted(r.batch_id for r in rows) == sorted(submitted * 2)
    # every row went out exactly once, under its first dispatch number
    assert {r.dispatch_count for r in rows} == {1}


def test_invalid_request_errors_fail_the_row_with_the_api_message(route: EmulatorProcess) -> None:
    user = make_user("sloppy")
    good = submit(user, "fine")
    # Written around submit_request's checks: the API rejects it inside the batch.
    bad = LLMRequest.objects.create(
        user=user,
        session_id="bulk-1",
        model=MODEL,
        priority="bulk",
        max_tokens=50,
        use_batch=True,
        params={"messages": [{"role": "user", "content": "hi"}], "temperature": 7},
    )
    assert batching.collect_and_submit(max_batch=10, max_wait_s=0, policy=FAST)
    assert poll_until_handled(2) == 2
    good.refresh_from_db()
    bad.refresh_from_db()
    assert good.status == Status.SUCCEEDED
    assert bad.status == Status.FAILED and bad.dispatch_count == 1  # not retried
    assert bad.error_type == "invalid_request_error"
    assert "temperature" in bad.error_message and "Message Batch" in bad.error_message
    failed = AuditLog.objects.get(llm_request=bad)
    assert failed.outcome == AuditLog.Outcome.FAILED and failed.cost_pico_usd == 0


def test_server_side_error_is_retried_once_in_a_new_batch(route: EmulatorProcess) -> None:
    user = make_user("unlucky")
    row = submit(user, "retry me")
    first = batching.collect_and_submit(max_batch=10, max_wait_s=0, policy=FAST)
    assert first is not None
    row.refresh_from_db()
    overloaded = llm_batches.BatchResult(
        custom_id=f"llmreq-{row.pk}-d1",
        outcome="errored",
        error_type="overloaded_error",
        error_message="Overloaded",
    )
    # (the emulator only errors on bad input, so this result is fed in as the API would send it)
    assert batching._deliver(first, llm_batches.retrieve_batch(batch_id=first), [overloaded]) == 1
    row.refresh_from_db()
    assert (row.status, row.batch_id, row.dispatch_count) == (Status.QUEUED, "", 1)

    second = batching.collect_and_submit(max_batch=10, max_wait_s=0, policy=FAST)
    assert second is not None and second != first
    assert poll_until_handled(1) == 1  # the stale first batch's result (d1) is ignored
    row.refresh_from_db()
    assert row.status == Status.SUCCEEDED and row.dispatch_count == 2
    assert list(AuditLog.objects.values_list("client_request_id", flat=True)) == [
        f"llmreq-{row.pk}-d2"
    ]


def test_server_side_error_on_the_retry_fails_the_row(route: EmulatorProcess) -> None:
    user = make_user("very-unlucky")
    row = submit(user, "retry me")
    LLMRequest.objects.filter(pk=row.pk).update(
        status=Status.RUNNING, batch_id="msgbatch_x", dispatch_count=2
    )
    row.refresh_from_db()
    result = llm_batches.BatchResult(
        custom_id=f"llmreq-{row.pk}-d2",
        outcome="errored",
        error_type="api_error",
        error_message="boom",
    )
    status = llm_batches.BatchStatus("msgbatch_x", "ended", {}, None, None, None)
    assert batching._deliver("msgbatch_x", status, [result]) == 1
    row.refresh_from_db()
    assert row.status == Status.FAILED and row.error_type == "api_error"
    assert "gave up after 2 batches" in row.error_message
    assert quotas.usage_now(holder_kind="user", holder_id=user.pk)["in_flight"] == 0


def test_canceled_batch_fails_its_rows_with_a_clear_reason(route: EmulatorProcess) -> None:
    route.configure(batch_latency_ms=60_000)
    user = make_user("canceller")
    rows = [submit(user, f"q{i}") for i in range(3)]
    batch_id = batching.collect_and_submit(max_batch=10, max_wait_s=0, policy=FAST)
    assert batch_id is not None
    assert batching.poll_batches(policy=FAST) == 0  # still in progress
    llm_batches.cancel_batch(batch_id=batch_id, policy=FAST)
    assert poll_until_handled(3) == 3
    for row in LLMRequest.objects.filter(pk__in=[r.pk for r in rows]):
        assert row.status == Status.FAILED and row.error_type == "batch_canceled"
        assert "canceled before this request was processed" in row.error_message
    assert route.ledger()["totals"]["requests"] == 0
    assert sum(a.cost_pico_usd for a in AuditLog.objects.all()) == 0
    held = quotas.usage_now(holder_kind="user", holder_id=user.pk)
    assert held["day"]["tokens_held"] == 0 and held["day"]["tokens_used"] == 0


def test_expired_result_fails_the_row(route: EmulatorProcess) -> None:
    user = make_user("slowpoke")
    row = submit(user, "too late")
    LLMRequest.objects.filter(pk=row.pk).update(
        status=Status.RUNNING, batch_id="msgbatch_old", dispatch_count=1
    )
    expired = llm_batches.BatchResult(custom_id=f"llmreq-{row.pk}-d1", outcome="expired")
    status = llm_batches.BatchStatus("msgbatch_old", "ended", {}, None, None, None)
    batching._deliver("msgbatch_old", status, [expired])
    row.refresh_from_db()
    assert row.status == Status.FAILED and row.error_type == "batch_expired"
    assert "expired (24 h)" in row.error_message


def test_batch_unknown_to_the_api_fails_its_rows(route: EmulatorProcess) -> None:
    user = make_user("orphan")
    row = submit(user, "lost")
    LLMRequest.objects.filter(pk=row.pk).update(
        status=Status.RUNNING, batch_id="msgbatch_gone", dispatch_count=1
    )
    assert batching.poll_batches(policy=FAST) == 1
    row.refresh_from_db()
    assert row.status == Status.FAILED and row.error_type == "batch_not_found"
    assert "msgbatch_gone" in row.error_message


def test_unreachable_api_puts_the_rows_back_in_the_queue(
    route: EmulatorProcess, settings, caplog
) -> None:
    user = make_user("offline")
    row = submit(user, "later")
    settings.ANTHROPIC_BASE_URL = f"http://127.0.0.1:{free_port()}"
    assert batching.collect_and_submit(max_batch=10, max_wait_s=0, policy=FAST) is None
    row.refresh_from_db()
    assert (row.status, row.batch_id, row.dispatch_count) == (Status.QUEUED, "", 1)
    assert f"llmreq-{row.pk}-d1" in caplog.text  # named, in case the API did create it
    settings.ANTHROPIC_BASE_URL = route.base_url
    assert batching.collect_and_submit(max_batch=10, max_wait_s=0, policy=FAST) is not None
    assert poll_until_handled(1) == 1
    row.refresh_from_db()
    assert row.status == Status.SUCCEEDED
    assert AuditLog.objects.get().client_request_id == f"llmreq-{row.pk}-d2"


def test_refused_credentials_keep_the_rows_queued(route: EmulatorProcess, settings) -> None:
    settings.ANTHROPIC_API_KEY = "sk-bad-key-for-this-test"
    user = make_user("misconfigured")
    row = submit(user, "hello")
    assert batching.collect_and_submit(max_batch=10, max_wait_s=0, policy=FAST) is None
    row.refresh_from_db()
    assert row.status == Status.QUEUED and row.batch_id == ""


def test_stale_claims_are_recovered_and_fresh_ones_are_not(route: EmulatorProcess) -> None:
    user = make_user("crashed-collector")
    old, fresh = submit(user, "a"), submit(user, "b")
    LLMRequest.objects.filter(pk=old.pk).update(
        status=Status.DISPATCHED,
        batch_id="claim:dead",
        dispatched_at=timezone.now() - dt.timedelta(hours=1),
    )
    LLMRequest.objects.filter(pk=fresh.pk).update(
        status=Status.DISPATCHED, batch_id="claim:alive", dispatched_at=timezone.now()
    )
    assert batching.recover_stale_claims() == 1
    old.refresh_from_db()
    fresh.refresh_from_db()
    assert (old.status, old.batch_id) == (Status.QUEUED, "")
    assert (fresh.status, fresh.batch_id) == (Status.DISPATCHED, "claim:alive")


def test_run_batch_cycle_submits_and_later_delivers(route: EmulatorProcess) -> None:
    user = make_user("cycler")
    rows = [submit(user, f"c{i}") for i in range(3)]
    cycle = batching.run_batch_cycle(max_batch=2, max_wait_s=0, policy=FAST)
    assert len(cycle.submitted) == 2  # 2 + 1 requests
    deadline = time.monotonic() + 15
    while (
        LLMRequest.objects.filter(status=Status.SUCCEEDED).count() < 3
        and time.monotonic() < deadline
    ):
        batching.run_batch_cycle(max_batch=2, max_wait_s=0, policy=FAST)
        time.sleep(0.05)
    assert {r.status for r in LLMRequest.objects.filter(pk__in=[r.pk for r in rows])} == {
        Status.SUCCEEDED
    }


def test_custom_ids_round_trip() -> None:
    assert batching.custom_id_for(request_id=42, dispatch=3) == "llmreq-42-d3"
    assert batching.parse_custom_id("llmreq-42-d3") == (42, 3)
    assert batching.parse_custom_id("someone-else") is None
    assert Decimal("0.5") == pricing.BATCH_MULTIPLIER
