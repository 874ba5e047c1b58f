"""Real parts for every test: an isolated redis-server and the Anthropic emulator over HTTP.

Nothing here mocks Redis or the SDK. The Redis server and the emulator are started once per
test session on free loopback ports; each test gets them flushed / reset.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from llm_calls.client import close_clients
from llm_calls.emulator.process import EmulatorProcess
from queueing import workers
from ratelimit_project import redis as project_redis
from usage import services as usage_services


@pytest.fixture(scope="session", autouse=True)
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[project_redis.PrivateRedis]:
    server = project_redis.PrivateRedis(Path(tmp_path_factory.mktemp("redis"))).start()
    settings.EMBEDDED_REDIS = False
    settings.REDIS_URL = server.url
    for queue in settings.RQ_QUEUES.values():
        queue["URL"] = server.url
    project_redis.reset_clients()
    yield server
    project_redis.reset_clients()
    server.stop()


@pytest.fixture
def redis_client(redis_server: project_redis.PrivateRedis):
    """The project's own Redis client, on a freshly flushed isolated server."""
    client = project_redis.get_redis()
    client.flushall()
    yield client
    client.flushall()


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorProcess]:
    """One Anthropic emulator per session: no rate limits, no latency, seed 1."""
    with EmulatorProcess(rpm=0, itpm=0, otpm=0, latency_ms=0, seed=1) as server:
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorProcess) -> EmulatorProcess:
    """The session emulator, reset (empty ledger/log/cache, startup config); tests .configure()."""
    emulator_server.reset()
    return emulator_server


def subprocess_database_url() -> str:
    """A DATABASE_URL for subprocesses (worker hosts) that must share this test's database."""
    from django.db import connection

    info = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{info['NAME']}"
    if connection.vendor == "postgresql":
        return (
            f"postgres://{info['USER']}:{info.get('PASSWORD') or ''}@{info['HOST'] or '127.0.0.1'}"
            f":{info['PORT'] or 5432}/{info['NAME']}"
        )
    raise RuntimeError(f"no DATABASE_URL form for {connection.vendor}")


# The whole gateway on real parts: ``gateway`` points the project at the emulator and runs a
# WorkerHost (dispatcher, reaper and RQ worker threads — the same code ``manage.py llm_worker``
# runs) in a background thread.


class Gateway:
    def __init__(self, emulator: EmulatorProcess, host: workers.WorkerHost) -> None:
        self.emulator = emulator
        self.host = host


@pytest.fixture
def wired(emulator: EmulatorProcess, redis_client, settings) -> Iterator[EmulatorProcess]:
    """The emulator (reset, empty log), the project pointed at it, an empty Redis, list prices.

    Needs a database fixture from the test (``db`` or ``transactional_db``)."""
    settings.ANTHROPIC_BASE_URL = emulator.base_url
    settings.ANTHROPIC_API_KEY = "sk-ant-test-e2e"
    settings.LLM_RETRY_BASE_S = 0.01
    settings.LLM_RETRY_CAP_S = 0.05
    usage_services.prices_seed_defaults()
    usage_services.price_cache_clear()
    yield emulator
    close_clients()
    usage_services.price_cache_clear()


@pytest.fixture
def gateway(transactional_db, wired: EmulatorProcess, settings) -> Iterator[Gateway]:
    # The key tests/usage/test_reconcile.py looks up in the emulator's ledger.
    settings.ANTHROPIC_API_KEY = "sk-ant-test-gateway"
    emulator = wired
    host = workers.WorkerHost(threads=8, idle_poll_s=1)
    thread = threading.Thread(target=host.run, name="worker-host", daemon=True)
    thread.start()
    yield Gateway(emulator, host)
    host.stop.set()
    thread.join(timeout=30)
    close_clients()
