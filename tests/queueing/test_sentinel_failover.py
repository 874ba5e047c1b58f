"""The gateway across a Sentinel failover (issue 17): requests submitted through
``submit_request`` and run by a worker host — dispatcher, limiter and scheduler Lua scripts, RQ
threads, reaper — against ``REDIS_URL=redis+sentinel://…``, while the master is SIGKILLed and
the sentinel promotes its replica.

Nothing may be lost (every request ends succeeded) and nothing billed twice: the emulator's
ledger bills each request exactly once, ``audit_log`` has exactly one row per request, and
their token totals are equal. Writes the master had acknowledged but not yet sent to the
replica are lost with it (Redis replicates asynchronously); the database is the source of
truth and the reaper puts back what Redis forgot — the same recovery as after a Redis restart:
submissions that found no master are queued by the reaper, and a call that finished while there
was none is recorded from the billed-response journal's file (``queueing.journal``).
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db.models import Sum
from rq import Worker

from llm_calls.client import close_clients
from llm_calls.emulator.process import EmulatorProcess
from queueing import conf, services, workers
from queueing.models import LLMRequest
from ratelimit_project import redis as project_redis
from tests.sentinel_support import SentinelGroup, wait_until
from tests.usage.factories import make_user
from usage import services as usage_services
from usage.models import AuditLog

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

THREADS = 8  # calls in flight at most (the loop engine feeds them from fewer RQ threads)
REQUESTS = 40
KILL_AFTER = 20  # submitted before the master is killed; the rest during and after the failover
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens")
DISPATCH_ID = re.compile(r"^llmreq-(\d+)-d\d+")


@pytest.fixture
def sentinel_redis(settings: Any, tmp_path: Path) -> Iterator[SentinelGroup]:
    group = SentinelGroup(tmp_path / "sentinel-group").start()
    settings.REDIS_URL = group.url
    settings.EMBEDDED_REDIS = False
    project_redis.reset_clients()
    yield group
    project_redis.reset_clients()
    group.stop()


def _worker_host(engine: str) -> workers.WorkerHost:
    return workers.WorkerHost(threads=THREADS, idle_poll_s=1, engine=engine)


def _ask(user: Any, n: int) -> LLMRequest:
    return services.submit_request(
        user=user,
        session_id="failover",
        model="claude-sonnet-5-5",
        messages=[{"role": "user", "content": f"Question {n}. [[emulator:output_tokens=12]]"}],
        max_tokens=40,
    )


def _statuses(pks: list[int]) -> Counter[str]:
    return Counter(LLMRequest.objects.filter(pk__in=pks).values_list("status", flat=True))


@pytest.mark.parametrize("engine", conf.WORKER_ENGINES)
def test_a_sentinel_failover_mid_traffic_loses_nothing_and_bills_nothing_twice(
    engine: str,
    sentinel_redis: SentinelGroup,
    emulator: EmulatorProcess,
    settings: Any,
    transactional_db: None,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.ANTHROPIC_BASE_URL = emulator.base_url
    settings.ANTHROPIC_API_KEY = "sk-ant-test-failover"
    settings.VAR_DIR = tmp_path / "var"  # the billed-response journal's files (queueing.journal)
    settings.LLM_RETRY_BASE_S = 0.01
    settings.LLM_RETRY_CAP_S = 0.05
    # Recover quickly what the failover made Redis forget: the reaper looks at requests older
    # than 2 s, and a running call's lease (renewed every second) lasts 3 s.
    settings.GATEWAY_ORPHAN_GRACE_S = 2.0
    settings.GATEWAY_LEASE_TTL_S = 3
    usage_services.prices_seed_defaults()
    usage_services.price_cache_clear()
    emulator.configure(latency_ms=400)  # calls are in flight when the master dies

    host = _worker_host(engine)
    thread = threading.Thread(target=host.run, name="worker-host", daemon=True)
    thread.start()
    try:
        wait_until(
            "the worker host's threads to register",
            lambda: Worker.count(connection=project_redis.get_redis()) >= host.threads,
            30,
        )
        user = make_user("failover-user")
        pks: list[int] = []
        unfinished_at_kill = 0
        killed_at = 0.0
        for n in range(REQUESTS):
            if n == KILL_AFTER:
                unfinished_at_kill = sum(
                    count
                    for status, count in _statuses(pks).items()
                    if status not in LLMRequest.TERMINAL
                )
                sentinel_redis.master.kill()
                killed_at = time.monotonic()
            pks.append(_ask(user, n).pk)  # kept in the database even while Redis is away
            time.sleep(0.05)
        new_port = sentinel_redis.wait_for_failover(from_port=sentinel_redis.master.port)
        failover_s = time.monotonic() - killed_at

        wait_until(
            f"all {REQUESTS} requests to finish",
            lambda: (
                sum(_statuses(pks).values()) == REQUESTS
                and set(_statuses(pks)) <= LLMRequest.TERMINAL
            ),
            60,
        )
        assert thread.is_alive(), "the worker host stopped"
    finally:
        host.stop.set()
        thread.join(timeout=30)
        close_clients()

    # The failover hit traffic: calls were in flight, and submissions found no master.
    assert unfinished_at_kill > 0, "the master died with nothing in flight"
    assert any(
        "Redis unavailable while queueing" in record.getMessage() for record in caplog.records
    ), "no submission arrived while there was no master"
    assert new_port == sentinel_redis.replica.port
    assert failover_s < 20, failover_s
    assert int(project_redis.get_redis().info("server")["tcp_port"]) == new_port

    # Nothing lost: every request succeeded.
    assert _statuses(pks) == Counter({LLMRequest.Status.SUCCEEDED: REQUESTS})

    # Nothing billed twice: the API billed each request once, and audit_log has one row each.
    ledger = emulator.ledger()
    billed = Counter(
        int(match.group(1))
        for key in ledger["keys"].values()
        for entry in key["requests"]
        if (match := DISPATCH_ID.match(entry["client_request_id"] or ""))
    )
    assert billed == Counter({pk: 1 for pk in pks})
    audit_rows = AuditLog.objects.filter(llm_request_id__in=pks)
    assert Counter(audit_rows.values_list("llm_request_id", flat=True)) == Counter(
        {pk: 1 for pk in pks}
    )
    assert set(audit_rows.values_list("outcome", flat=True)) == {AuditLog.Outcome.SUCCESS}
    sums = audit_rows.aggregate(**{name: Sum(name) for name in TOKEN_FIELDS})
    assert {name: int(sums[name]) for name in TOKEN_FIELDS} == {
        name: int(ledger["totals"][name]) for name in TOKEN_FIELDS
    }
    assert ledger["totals"]["requests"] == REQUESTS
