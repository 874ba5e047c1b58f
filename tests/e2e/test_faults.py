"""Faults: nothing is lost and every billed response is recorded exactly once.

- A short run of ``loadtest faults`` (its own Redis, database, emulator and worker hosts): 529s,
  500s, resets and slow replies, worker hosts SIGKILLed mid-call, Redis restarts and a 7 s
  outage with calls in flight, database locks, the web server SIGKILLed under a burst of API
  clients retrying with idempotency keys — then lost == 0, double_billed == 0, no duplicate
  submission, no worker host exited, and audit_log == the emulator's ledger exactly.
- The billed-response journal, step by step: a worker killed after the API billed its answer
  (while it waits on a locked database to record it) — the reaper records that answer instead
  of calling the API a second time.
- A dispatched request whose RQ job cannot run (never enqueued, or taken by a thread that died
  before it took the running lease) is queued again without waiting for its dispatch lease.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.db import connection

from llm_calls.emulator.process import EmulatorProcess
from queueing import journal, leases, services
from queueing.dispatcher import llm_queue
from queueing.models import LLMRequest
from queueing.scheduler import get_scheduler
from ratelimit_project.loadtest.faults import database_locked
from ratelimit_project.loadtest.stack import CHILD_FLAG
from tests.usage.factories import make_user
from usage.models import AuditLog

ROOT = Path(__file__).resolve().parents[2]
MODEL = "claude-sonnet-5-5"
TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)

# The short CI version: 12 s of load; leases and the reaper's grace shortened so recovery takes
# seconds; kills timed outside the few milliseconds between "the API billed it" and "the
# journal has it", the one window the gateway cannot close (see queueing/journal.py), which
# the full benchmark (docs/benchmarks/faults.json) measures instead.
SHORT_RUN = {
    "kills": 3,
    "redis_restarts": 2,
    "db_locks": 2,
    "rate": 4,
    "lease_ttl_s": 6,
    "orphan_grace_s": 5,
    "dispatch_lease_ttl_s": 30,
    "avoid_unjournaled": 1,
    "drain_s": 40,
    "web_clients": 6,
    "web_requests": 2,
}
# One outage long enough for the leases of calls in flight to run out (lease_ttl_s above).
SHORT_OUTAGE_S = "7"


@pytest.mark.slow
def test_short_fault_run_loses_nothing_and_bills_exactly_once(tmp_path: Path) -> None:
    # Run the scenario as the loadtest command's child does, in a private VAR_DIR: its own
    # SQLite database and Redis, so the suite's shared Redis and database are never touched.
    env = {**os.environ, CHILD_FLAG: "1", "VAR_DIR": str(tmp_path), "LOG_LEVEL": "WARNING"}
    for name in ("REDIS_URL", "DATABASE_URL", "ANTHROPIC_BASE_URL"):
        env.pop(name, None)
    options = [arg for key, value in SHORT_RUN.items() for arg in ("--opt", f"{key}={value}")]
    run = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "loadtest", "faults", "--duration", "16"]
        + ["--redis-outage-s", SHORT_OUTAGE_S]
        + options,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    summary = {k: v for k, v in result.items() if k not in ("events", "config")}

    assert result["kills"] == 3 and result["redis_restarts"] == 2 and result["db_locks"] == 2
    assert result["redis_outages"] == 1 and result["longest_outage_s"] >= 7, summary
    assert result["web_burst"]["kills"] == 1, summary
    # Every API client got its answer, under its Idempotency-Key, and none was saved twice.
    assert result["web_burst"]["answered"] == 12 and result["web_burst"]["gave_up"] == 0, summary
    assert result["duplicate_submissions"] == 0, summary
    assert result["worker_exits"] == 0, summary
    assert result["submitted"] >= 30, summary
    assert sum(result["faults_seen_by_emulator_log"].values()) > 0, summary
    assert result["retries"] > 0, summary
    assert result["recovered"] > 0, summary  # the kills did hit calls in flight
    assert result["lost"] == 0, summary
    assert result["terminal"] == result["submitted"], summary
    assert result["double_billed"] == 0, summary
    assert result["ledger_entries_without_audit_row"] == 0, summary
    assert result["match"] is True, summary
    assert result["audit_tokens"] == result["emulator_tokens"] > 0, summary


# --- the journal, step by step ------------------------------------------------------------------


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = quote(db.get("USER") or "")
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    return (
        f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}"
        f"/{db['NAME']}"
    )


@pytest.fixture
def worker_host(
    transactional_db: None, wired: EmulatorProcess, settings, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``manage.py llm_worker`` in its own process, on this test's database, Redis and emulator,
    with a 3 s running lease (this process's reaper knows it too)."""
    settings.GATEWAY_LEASE_TTL_S = 3
    env = {
        **os.environ,
        "VAR_DIR": str(tmp_path),
        "DATABASE_URL": _database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "ANTHROPIC_BASE_URL": wired.base_url,
        "ANTHROPIC_API_KEY": settings.ANTHROPIC_API_KEY,
        "GATEWAY_LEASE_TTL_S": "3",
        "LOG_LEVEL": "WARNING",
    }
    env.pop(CHILD_FLAG, None)
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "llm_worker", "--threads", "2"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    log.close()


def _wait_for(what: str, check: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _ask(user: Any, text: str) -> LLMRequest:
    return services.submit_request(
        user=user,
        session_id="faults",
        model=MODEL,
        messages=[{"role": "user", "content": f"{text} [[emulator:output_tokens=30]]"}],
        max_tokens=60,
    )


def test_a_worker_killed_after_the_api_billed_is_recorded_from_the_journal_not_rebilled(
    transactional_db: None, wired: EmulatorProcess, worker_host: subprocess.Popen[bytes]
) -> None:
    wired.configure(latency_ms=1500)
    row = _ask(make_user("journal-user"), "Summarise the quarterly report.")

    def status() -> str:
        return str(LLMRequest.objects.values_list("status", flat=True).get(pk=row.pk))

    _wait_for("the worker to start the call", lambda: status() == "running", 60)
    with database_locked(0):
        # The API answers while the database is locked: the worker journals the billed answer,
        # then blocks recording it. That is when it dies.
        _wait_for(
            "the billed answer in the journal", lambda: journal.pending(request_id=row.pk), 10
        )
        os.killpg(worker_host.pid, signal.SIGKILL)
        worker_host.wait()
    billed = wired.ledger()["totals"]
    assert billed["requests"] == 1
    assert not AuditLog.objects.exists()
    assert status() == "running"

    _wait_for("the dead worker's lease to expire", lambda: not leases.is_held(row.pk), 10)
    assert services.recover_orphans(grace_s=0) == 1

    row.refresh_from_db()
    assert row.status == LLMRequest.Status.SUCCEEDED
    assert row.dispatch_count == 1  # finished from the journal, never dispatched again
    assert row.result and row.result["text"]
    audit = AuditLog.objects.get()
    assert audit.outcome == AuditLog.Outcome.SUCCESS
    assert audit.client_request_id == f"llmreq-{row.pk}-d1"
    assert {name: getattr(audit, name) for name in TOKEN_FIELDS} == {
        name: billed[name] for name in TOKEN_FIELDS
    }
    assert wired.ledger()["totals"]["requests"] == 1  # the API was not called a second time
    assert journal.pending(request_id=row.pk) is None
    assert services.recover_orphans(grace_s=0) == 0  # and nothing is left to recover


@pytest.mark.parametrize(
    "lost_how", ["job never enqueued", "taken, never started", "thread died after starting it"]
)
def test_a_dispatched_request_whose_job_cannot_run_is_queued_again_without_waiting(
    transactional_db: None, wired: EmulatorProcess, redis_client, settings, lost_how: str
) -> None:
    settings.GATEWAY_LEASE_TTL_S = 3  # the reaper trusts missing leases 3 s after Redis started
    row = _ask(make_user("orphan-user"), "Hello")
    scheduler = get_scheduler()
    assert scheduler.pop(request_id=row.pk)
    dispatch = services.mark_dispatched(request_id=row.pk)
    assert dispatch == 1
    leases.take_for_dispatch(row.pk)  # the dispatch lease: held for minutes

    job = llm_queue().enqueue(
        "queueing.jobs.run_request",
        row.pk,
        None,
        dispatch,
        job_id=services.dispatch_job_id(request_id=row.pk, dispatch=dispatch),
    )
    assert services.recover_orphans(grace_s=0) == 0  # its job waits in the queue: leave it
    row.refresh_from_db()
    assert row.status == LLMRequest.Status.DISPATCHED

    queue = llm_queue()
    if lost_how == "job never enqueued":
        job.delete()
    elif lost_how == "taken, never started":
        # A thread moved it off the queue (RQ's BLMOVE) and died, or a Redis restart lost the
        # reply: it sits in RQ's intermediate list, still "queued", and no thread will run it.
        redis_client.lmove(queue.key, queue.intermediate_queue_key)
    else:  # RQ marked it started for a thread whose host died before it took the lease
        pipe = redis_client.pipeline()
        job.prepare_for_execution("dead-host.1", pipe)
        pipe.execute()
    assert services.recover_orphans(grace_s=0) == 1
    row.refresh_from_db()
    assert row.status == LLMRequest.Status.QUEUED
    assert scheduler.contains(request_id=row.pk)
