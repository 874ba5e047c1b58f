"""Queueing tests' own fixtures (``gateway``, the whole stack on real parts, is in
tests/conftest.py: the endpoint's tests use it too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ratelimit_project import redis as project_redis


@pytest.fixture
def own_redis(settings, tmp_path: Path):
    """A Redis of this test's own, so stopping it (an outage) disturbs no other test."""
    server = project_redis.PrivateRedis(tmp_path / "redis").start()
    settings.REDIS_URL = server.url
    project_redis.reset_clients()
    yield server
    server.stop()
    project_redis.reset_clients()
