"""The worker host's own machinery: batched dispatch, job timeouts, burst mode."""

from __future__ import annotations

import threading
import time

import pytest
from rq.timeouts import JobTimeoutException

from queueing import cpu_gate, dispatcher, leases, services, workers
from queueing.models import LLMRequest
from queueing.scheduler import get_scheduler
from tests.usage.factories import make_user

MODEL = "claude-sonnet-5-5"


def ask(user, number: int) -> LLMRequest:
    return services.submit_request(
        user=user,
        session_id="s-1",
        model=MODEL,
        messages=[{"role": "user", "content": f"question {number}"}],
        max_tokens=20,
    )


@pytest.mark.django_db(transaction=True)
def test_one_dispatch_step_releases_every_head_the_backlog_has_room_for(
    redis_client, settings
) -> None:
    settings.GATEWAY_DISPATCH_BACKLOG = 4
    user = make_user("batch")
    rows = [ask(user, n) for n in range(6)]
    services.cancel_request(request=rows[1], by_user=user)

    step = dispatcher.dispatch_once()

    # The cancelled one is skipped; the rest go in the user's FIFO order, up to the backlog.
    expected = [rows[0].pk, rows[2].pk, rows[3].pk, rows[4].pk]
    assert list(step.dispatched) == expected
    queue = dispatcher.llm_queue()
    assert queue.job_ids == [services.dispatch_job_id(request_id=pk, dispatch=1) for pk in expected]
    statuses = dict(LLMRequest.objects.values_list("pk", "status"))
    assert [statuses[pk] for pk in expected] == [LLMRequest.Status.DISPATCHED] * 4
    assert statuses[rows[5].pk] == LLMRequest.Status.QUEUED
    assert all(leases.is_held(pk) for pk in expected)
    assert not leases.is_held(rows[5].pk)
    # The backlog is full: the next step releases nothing until a thread takes a job.
    assert dispatcher.dispatch_once().dispatched == ()
    assert get_scheduler().contains_many(request_ids=[r.pk for r in rows]) == {rows[5].pk}


@pytest.mark.django_db(transaction=True)
def test_a_request_scheduled_again_during_a_step_is_dispatched_once(
    redis_client, monkeypatch
) -> None:
    user = make_user("rescheduled")
    rows = [ask(user, n) for n in range(3)]
    scheduler_class = type(get_scheduler())
    pop = scheduler_class.pop
    again = {rows[0].pk}

    def pop_while_the_reaper_runs(self, *, request_id: int) -> bool:
        popped = pop(self, request_id=request_id)
        if request_id in again:
            # The reaper, between this pop and the row being marked dispatched: a queued row
            # the scheduler does not hold is scheduled again (services.recover_orphans).
            again.discard(request_id)
            services._schedule(LLMRequest.objects.get(pk=request_id))
        return popped

    monkeypatch.setattr(scheduler_class, "pop", pop_while_the_reaper_runs)
    step = dispatcher.dispatch_once()

    assert sorted(step.dispatched) == [r.pk for r in rows]
    job_ids = dispatcher.llm_queue().job_ids
    assert sorted(job_ids) == sorted(
        services.dispatch_job_id(request_id=r.pk, dispatch=1) for r in rows
    )
    assert get_scheduler().contains_many(request_ids=[r.pk for r in rows]) == set()


@pytest.mark.django_db(transaction=True)
def test_a_row_taken_elsewhere_is_not_dispatched_twice(redis_client) -> None:
    user = make_user("race")
    first, second = ask(user, 1), ask(user, 2)
    # Another dispatcher marked ``first`` between our pop and our transaction.
    assert services.mark_dispatched(request_id=first.pk) == 1

    assert services.mark_dispatched_many(request_ids=[first.pk, second.pk]) == {second.pk: 1}
    assert LLMRequest.objects.get(pk=first.pk).dispatch_count == 1


def _spin(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # bytecode running: an async raise lands here
        time.sleep(0.01)


def test_the_watchdog_interrupts_an_overdue_job_and_spares_one_on_time() -> None:
    outcomes: dict[str, str] = {}

    def job(name: str, runs_for_s: float, timeout_s: float, then_s: float) -> None:
        try:
            with workers.WatchdogDeathPenalty(timeout_s, JobTimeoutException):
                _spin(runs_for_s)
            # The thread lives on past the job's deadline (a worker takes its next job): the
            # disarmed deadline must not fire into it.
            _spin(then_s)
            outcomes[name] = "finished"
        except JobTimeoutException:
            outcomes[name] = "timed out"

    threads = [
        threading.Thread(target=job, args=("slow", 3.0, 0.3, 0.0)),
        threading.Thread(target=job, args=("quick", 0.1, 0.5, 1.0)),
    ]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    threads[0].join(timeout=10)
    assert time.monotonic() - began < 2.0  # the slow one was stopped, not waited for
    threads[1].join(timeout=10)

    assert outcomes == {"slow": "timed out", "quick": "finished"}


@pytest.mark.django_db(transaction=True)
def test_a_burst_host_exits_once_the_queue_is_empty(redis_client) -> None:
    host = workers.WorkerHost(threads=2, dispatch=False, reap=False, burst=True, idle_poll_s=1)
    thread = threading.Thread(target=host.run, daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive()


def test_the_cpu_gate_lets_n_threads_work_and_none_hold_a_slot_while_waiting() -> None:
    cpu_gate.enable(slots=2)
    try:
        lock = threading.Lock()
        now = {"working": 0, "waiting": 0}
        most = {"working": 0, "waiting": 0}

        def stay(state: str, seconds: float) -> None:
            with lock:
                now[state] += 1
                most[state] = max(most[state], now[state])
            time.sleep(seconds)
            with lock:
                now[state] -= 1

        def job() -> None:
            with cpu_gate.working():
                stay("working", 0.02)  # starting the call
                with cpu_gate.waiting():
                    stay("waiting", 0.3)  # the call: slot given up
                stay("working", 0.02)  # recording it

        threads = [threading.Thread(target=job) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)

        assert most["working"] == 2  # never more than the slots doing work at once...
        assert most["waiting"] >= 8  # ...while nearly all of them wait on "the network" together
    finally:
        cpu_gate.disable()
