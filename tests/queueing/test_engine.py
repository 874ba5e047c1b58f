"""The call engine: a worker host's calls held by one event loop (queueing.engine)."""

from __future__ import annotations

import threading
import time

import pytest
from rq.exceptions import NoSuchJobError
from rq.job import Job

from queueing import dispatcher, engine, leases, services, workers
from queueing.models import LLMRequest
from ratelimit_project import redis as project_redis
from tests.usage.factories import make_user
from usage.models import AuditLog

MODEL = "claude-sonnet-5-5"
# ``wired`` (tests/conftest.py): the project pointed at the emulator, on a transactional database.
pytestmark = pytest.mark.django_db(transaction=True)


def ask(user, number: int, **kw) -> LLMRequest:
    return services.submit_request(
        user=user,
        session_id="engine",
        model=MODEL,
        messages=[{"role": "user", "content": f"question {number} [[emulator:output_tokens=10]]"}],
        max_tokens=200,
        **kw,
    )


def start_host(**kw) -> tuple[workers.WorkerHost, threading.Thread]:
    host = workers.WorkerHost(idle_poll_s=1, **kw)
    thread = threading.Thread(target=host.run, name="worker-host", daemon=True)
    thread.start()
    return host, thread


def wait_all(rows: list[LLMRequest], timeout_s: float = 60) -> list[LLMRequest]:
    return [services.wait_for_result(request_id=r.pk, timeout_s=timeout_s) for r in rows]


def test_one_loop_holds_more_calls_than_the_host_has_threads(wired, settings) -> None:
    settings.GATEWAY_WORKER_INTAKE_THREADS = 2
    settings.GATEWAY_DISPATCH_BACKLOG = 64
    wired.configure(latency_ms=1500)
    user = make_user("many")
    rows = [ask(user, n) for n in range(40)]
    host, thread = start_host(threads=40, engine="loop")
    try:
        done = wait_all(rows)
    finally:
        host.stop.set()
        thread.join(timeout=30)
    assert host.threads == 2  # RQ threads: they only feed the loop
    assert [r.status for r in done] == [LLMRequest.Status.SUCCEEDED] * 40
    # Two threads running calls inline would have held two at a time.
    assert wired.stats()["max_in_flight"] >= 20
    assert AuditLog.objects.filter(outcome=AuditLog.Outcome.SUCCESS).count() == 40
    assert wired.ledger()["totals"]["requests"] == 40


def test_capacity_bounds_the_calls_in_flight(wired, settings) -> None:
    settings.GATEWAY_DISPATCH_BACKLOG = 64
    wired.configure(latency_ms=400)
    user = make_user("bounded")
    rows = [ask(user, n) for n in range(15)]
    host, thread = start_host(threads=3, engine="loop")
    try:
        done = wait_all(rows)
    finally:
        host.stop.set()
        thread.join(timeout=30)
    assert [r.status for r in done] == [LLMRequest.Status.SUCCEEDED] * 15
    assert wired.stats()["max_in_flight"] == 3


def test_retries_wait_on_the_loop_and_bill_once(wired) -> None:
    wired.configure(script=[{"status": 529}, {"status": 429, "retry_after": 1}])
    host, thread = start_host(threads=4, engine="loop")
    try:
        (done,) = wait_all([ask(make_user("retried"), 1)])
    finally:
        host.stop.set()
        thread.join(timeout=30)
    assert done.status == LLMRequest.Status.SUCCEEDED
    assert done.attempts == 3
    audit = AuditLog.objects.get(llm_request=done)
    assert audit.attempts == 3
    assert wired.ledger()["totals"]["requests"] == 1


def test_a_call_that_fails_for_good_is_recorded_once_with_its_reason(wired) -> None:
    wired.configure(script=[{"status": 400}])
    host, thread = start_host(threads=4, engine="loop")
    try:
        (done,) = wait_all([ask(make_user("refused"), 1)], timeout_s=30)
    finally:
        host.stop.set()
        thread.join(timeout=30)
    assert done.status == LLMRequest.Status.FAILED
    assert done.error_type == "invalid_request_error"
    assert "not retried" in done.error_message
    assert AuditLog.objects.filter(llm_request=done, outcome=AuditLog.Outcome.FAILED).count() == 1
    assert not leases.is_held(done.pk)


def test_warm_shutdown_records_every_call_in_flight_before_the_host_returns(wired) -> None:
    wired.configure(latency_ms=1500)
    user = make_user("draining")
    rows = [ask(user, n) for n in range(6)]
    host, thread = start_host(threads=8, engine="loop")
    deadline = time.monotonic() + 30
    while LLMRequest.objects.filter(status=LLMRequest.Status.RUNNING).count() < 6:
        assert time.monotonic() < deadline, "the calls never started"
        time.sleep(0.05)
    host.stop.set()  # what SIGTERM does
    thread.join(timeout=60)
    assert not thread.is_alive()
    statuses = set(LLMRequest.objects.filter(pk__in=[r.pk for r in rows]).values_list("status"))
    assert statuses == {(LLMRequest.Status.SUCCEEDED,)}
    assert AuditLog.objects.count() == 6
    assert engine.running() is None
    assert all(not leases.is_held(r.pk) for r in rows)


def test_the_thread_engine_still_answers(wired) -> None:
    user = make_user("threads")
    rows = [ask(user, n) for n in range(4)]
    host, thread = start_host(threads=4, engine="threads")
    try:
        done = wait_all(rows)
    finally:
        host.stop.set()
        thread.join(timeout=30)
    assert host.engine is None
    assert [r.status for r in done] == [LLMRequest.Status.SUCCEEDED] * 4


def test_a_host_announces_what_it_offers_and_withdraws_when_it_stops(wired) -> None:
    host, thread = start_host(threads=12, engine="loop")
    deadline = time.monotonic() + 30
    while not workers.live_hosts():
        assert time.monotonic() < deadline, "the host never announced itself"
        time.sleep(0.05)
    (entry,) = workers.live_hosts()
    assert entry["capacity"] == 12
    assert entry["engine"] == "loop"
    assert entry["in_flight"] == 0
    host.stop.set()
    thread.join(timeout=30)
    assert workers.live_hosts() == []


def test_the_hosts_dispatcher_hands_its_engine_the_work_without_rq_jobs(wired) -> None:
    user = make_user("handed")
    rows = [ask(user, n) for n in range(5)]
    host, thread = start_host(threads=8, engine="loop")
    try:
        done = wait_all(rows)
    finally:
        host.stop.set()
        thread.join(timeout=30)
    assert [r.status for r in done] == [LLMRequest.Status.SUCCEEDED] * 5
    for row in done:
        with pytest.raises(NoSuchJobError):
            Job.fetch(
                services.dispatch_job_id(request_id=row.pk, dispatch=1),
                connection=project_redis.get_redis(),
            )
    assert wired.ledger()["totals"]["requests"] == 5


def test_work_handed_to_an_engine_that_never_started_it_runs_once_elsewhere(
    wired, settings
) -> None:
    settings.GATEWAY_LEASE_TTL_S = 3  # the reaper trusts missing leases 3 s after Redis started
    deadline = time.monotonic() + 10
    while leases.may_have_lost_leases():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    user = make_user("stranded")
    rows = [ask(user, n) for n in range(3)]
    # A host whose dispatcher handed work over, then died before its engine started any of it.
    stranded = engine.CallEngine(capacity=8, bookkeeping_threads=1, intake_threads=1)
    step = dispatcher.dispatch_once(engine=stranded)
    assert sorted(step.dispatched) == [r.pk for r in rows]
    assert set(LLMRequest.objects.values_list("status", flat=True)) == {"dispatched"}

    assert services.recover_orphans(grace_s=0) == 3  # no RQ job to wait for: queued again
    host, thread = start_host(threads=8, engine="loop")
    try:
        done = wait_all(rows)
        # The dead host's engine comes back to life late: its stale hand-offs must not call.
        stranded.start()
        assert stranded.drain(timeout_s=10)
    finally:
        stranded.stop()
        host.stop.set()
        thread.join(timeout=30)
    assert [r.status for r in done] == [LLMRequest.Status.SUCCEEDED] * 3
    assert [r.dispatch_count for r in done] == [2, 2, 2]
    assert wired.ledger()["totals"]["requests"] == 3
    assert AuditLog.objects.count() == 3
