"""The whole gateway on real parts: the emulator over HTTP, the isolated Redis, worker threads.

``gateway`` points the project at the emulator and runs a WorkerHost (dispatcher, reaper and
RQ worker threads — the same code ``manage.py llm_worker`` runs) in a background thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_calls.client import close_clients
from llm_calls.emulator.process import EmulatorProcess
from queueing import workers
from ratelimit_project import redis as project_redis
from usage import services as usage_services


class Gateway:
    def __init__(self, emulator: EmulatorProcess, host: workers.WorkerHost) -> None:
        self.emulator = emulator
        self.host = host


@pytest.fixture
def gateway(
    emulator: EmulatorProcess, redis_client, settings, transactional_db
) -> Iterator[Gateway]:
    settings.ANTHROPIC_BASE_URL = emulator.base_url
    settings.ANTHROPIC_API_KEY = "sk-ant-test-gateway"
    settings.LLM_RETRY_BASE_S = 0.01
    settings.LLM_RETRY_CAP_S = 0.05
    usage_services.prices_seed_defaults()
    usage_services.price_cache_clear()
    host = workers.WorkerHost(threads=8, idle_poll_s=1)
    thread = threading.Thread(target=host.run, name="worker-host", daemon=True)
    thread.start()
    yield Gateway(emulator, host)
    host.stop.set()
    thread.join(timeout=30)
    close_clients()


@pytest.fixture
def own_redis(settings, tmp_path: Path):
    """A Redis of this test's own, so stopping it (an outage) disturbs no other test."""
    server = project_redis.PrivateRedis(tmp_path / "redis").start()
    settings.REDIS_URL = server.url
    project_redis.reset_clients()
    yield server
    server.stop()
    project_redis.reset_clients()
