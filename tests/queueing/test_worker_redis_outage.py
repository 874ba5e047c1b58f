"""A worker host rides out a Redis outage (issue 11): a real ``manage.py llm_worker`` process,
a real redis-server stopped for seconds with a call in flight and started again on its port.

After the outage the same process must still be alive, the call that was in flight must have
finished (billed once), and new requests must run on it with all of its threads. A warm
shutdown (SIGTERM) during an outage must not wait on threads stuck reconnecting.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rq import Worker

from llm_calls.emulator.process import EmulatorProcess
from queueing import services, workers
from queueing.models import LLMRequest
from ratelimit_project import redis as project_redis
from tests.conftest import subprocess_database_url
from tests.usage.factories import make_user
from usage import services as usage_services

ROOT = Path(__file__).resolve().parents[2]
THREADS = 4
MODEL = "claude-sonnet-5-5"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker_redis(settings: Any, tmp_path: Path) -> Iterator[project_redis.PrivateRedis]:
    """A Redis of this test's own, so stopping it disturbs no other test."""
    server = project_redis.PrivateRedis(tmp_path / "redis", appendfsync="everysec").start()
    settings.REDIS_URL = server.url
    project_redis.reset_clients()
    yield server
    server.stop()
    project_redis.reset_clients()


@dataclass
class Host:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def assert_alive(self) -> None:
        assert self.process.poll() is None, (
            f"the worker host exited ({self.process.returncode}):\n{self.log_tail()}"
        )

    @property
    def prefix(self) -> str:
        """How the host names its RQ threads: ``<hostname>.<pid>.<slot>.<started>``."""
        return f"{socket.gethostname()}.{self.process.pid}."


@pytest.fixture(params=["loop", "threads"])
def host(
    request: pytest.FixtureRequest,
    worker_redis: project_redis.PrivateRedis,
    emulator: EmulatorProcess,
    settings: Any,
    tmp_path: Path,
) -> Iterator[Host]:
    """``manage.py llm_worker --threads 4`` (each engine) on this test's database, Redis and emulator."""
    usage_services.prices_seed_defaults()
    usage_services.price_cache_clear()
    log_path = tmp_path / "worker.log"
    env = {
        **os.environ,
        "ANTHROPIC_API_KEY": "sk-ant-test-outage",
        "ANTHROPIC_BASE_URL": emulator.base_url,
        "REDIS_URL": worker_redis.url,
        "DATABASE_URL": subprocess_database_url(),
        "VAR_DIR": str(tmp_path / "var"),
        "LOG_LEVEL": "WARNING",
        "LLM_RETRY_BASE_S": "0.01",
        "LLM_RETRY_CAP_S": "0.05",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "llm_worker",
                "--threads",
                str(THREADS),
                # Both engines: with threads, the calls after the outage need the RQ threads
                # it lost to have been started again; with the loop, its own dispatcher feeds it.
                "--engine",
                request.param,
            ],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Host(process, log_path)
    try:
        _wait_for(
            "the worker host's threads to register",
            lambda: Worker.count(connection=project_redis.get_redis()) >= THREADS,
            60,
            running,
        )
        yield running
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_for(what: str, check: Callable[[], Any], timeout_s: float, host: Host) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        host.assert_alive()
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{host.log_tail()}")


def _ask(user: Any, text: str) -> LLMRequest:
    return services.submit_request(
        user=user,
        session_id="outage",
        model=MODEL,
        messages=[{"role": "user", "content": f"{text} [[emulator:output_tokens=10]]"}],
        max_tokens=20,
    )


def _statuses(rows: list[LLMRequest]) -> dict[int, str]:
    return dict(LLMRequest.objects.filter(pk__in=[r.pk for r in rows]).values_list("pk", "status"))


def _all_succeeded(rows: list[LLMRequest]) -> bool:
    return set(_statuses(rows).values()) == {LLMRequest.Status.SUCCEEDED}


def _only_live_host() -> str:
    """The one worker host announcing itself (``workers.live_hosts``): the process that ran
    whatever ran since its last announcement, Redis having been back for it to announce."""
    (entry,) = workers.live_hosts()
    return str(entry["host"])


@pytest.mark.parametrize(
    ("outage_s", "comes_back_empty"),
    [pytest.param(8, False, id="8s"), pytest.param(20, True, id="20s-comes-back-empty")],
)
def test_a_worker_host_rides_out_a_redis_outage_with_a_call_in_flight(
    host: Host,
    worker_redis: project_redis.PrivateRedis,
    emulator: EmulatorProcess,
    outage_s: float,
    comes_back_empty: bool,
) -> None:
    user = make_user("outage-user")
    emulator.configure(latency_ms=1500)
    in_flight = _ask(user, "Still answering when Redis goes away.")
    _wait_for(
        "the call to start", lambda: _statuses([in_flight]) == {in_flight.pk: "running"}, 20, host
    )

    worker_redis.stop()
    if comes_back_empty:
        shutil.rmtree(worker_redis.directory)  # like production: a Redis that keeps nothing on disk
    back_at = time.monotonic() + outage_s
    while time.monotonic() < back_at:
        host.assert_alive()
        time.sleep(0.2)
    worker_redis.start()
    host.assert_alive()

    # The call in flight finished and was recorded once, Redis or not.
    _wait_for("the call in flight to be recorded", lambda: _all_succeeded([in_flight]), 20, host)

    # New work runs on this same process...
    emulator.configure(latency_ms=0)
    after = _ask(user, "Are you back?")
    _wait_for("a request submitted after the outage", lambda: _all_succeeded([after]), 20, host)
    _wait_for("the host to announce itself again", lambda: bool(workers.live_hosts()), 5, host)
    assert _only_live_host() == host.prefix.rstrip(".")

    # ...with every one of its threads: four calls of 1.5 s are all in flight at once.
    emulator.configure(latency_ms=1500)
    together = [_ask(user, f"Together {n}.") for n in range(THREADS)]
    _wait_for("four calls at once", lambda: _all_succeeded(together), 20, host)
    host.assert_alive()
    times = list(
        LLMRequest.objects.filter(pk__in=[r.pk for r in together]).values_list(
            "started_at", "finished_at"
        )
    )
    starts = [started for started, _ in times if started is not None]
    ends = [finished for _, finished in times if finished is not None]
    assert len(starts) == len(ends) == THREADS and max(starts) < min(ends), times
    assert _only_live_host() == host.prefix.rstrip(".")

    # Every call was billed once: none ran again after the outage.
    assert emulator.ledger()["totals"]["requests"] == 2 + THREADS
    # The host said so once, not once per thread (nor RQ for each of its threads) — at its
    # next look at Redis, up to RESPAWN_MAX_WAIT_S after Redis is back (the calls above need
    # no RQ thread of its own: its dispatcher hands them to its engine).
    _wait_for(
        "the host to say the outage is over",
        lambda: "outage over" in host.log_path.read_text(errors="replace"),
        workers.RESPAWN_MAX_WAIT_S + 5,
        host,
    )
    log = host.log_path.read_text(errors="replace")
    assert log.count("Redis unreachable") == 1 and log.count("outage over") == 1, host.log_tail()
    assert "could not connect to Redis instance" not in log


def test_a_warm_shutdown_during_a_redis_outage_finishes_the_call_in_flight_and_exits(
    host: Host, worker_redis: project_redis.PrivateRedis, emulator: EmulatorProcess
) -> None:
    emulator.configure(latency_ms=1500)
    in_flight = _ask(make_user("leaving"), "Answer me before you go.")
    _wait_for(
        "the call to start", lambda: _statuses([in_flight]) == {in_flight.pk: "running"}, 20, host
    )
    worker_redis.stop()
    time.sleep(1.0)  # the idle threads are now reconnecting
    began = time.monotonic()
    host.process.send_signal(signal.SIGTERM)
    try:
        code = host.process.wait(timeout=25)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"still shutting down after 25 s with Redis down\n{host.log_tail()}"
        ) from None
    assert code == 0, host.log_tail()
    assert time.monotonic() - began < 25
    assert "stopped" in host.log_tail()
    # Warm: the call in flight was finished and recorded before the process left.
    assert _statuses([in_flight]) == {in_flight.pk: LLMRequest.Status.SUCCEEDED}
    assert emulator.ledger()["totals"]["requests"] == 1
