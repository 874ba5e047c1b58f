"""Readiness: can this web process serve the gateway right now? (``/readyz``; ``/healthz`` is
liveness and needs none of this.)

Four checks, each with short timeouts so a probe never hangs on a dependency that does not
answer:

- ``database``: ``SELECT 1`` on the default database (PostgreSQL's connect timeout is
  ``DB_CONNECT_TIMEOUT_S``, see settings);
- ``redis``: a PING on a client of its own with one-second socket timeouts and no retries (the
  project's pooled client waits longer, for the workers' blocking reads); the embedded Redis is
  probed, never started;
- ``worker``: at least one live worker host — an RQ worker thread registered on the ``llm``
  queue whose heartbeat key (``rq:worker:<name>``, renewed by RQ, gone with a dead host's TTL)
  still exists. Thread names are ``<hostname>.<pid>.<slot>.<started>`` (``workers.WorkerHost``),
  so threads are counted per host process;
- ``limiter``: every configured model class's limiter state reads (the Lua script the
  dispatcher's admission uses, on the same keys), with the limits from settings so that a
  database problem shows as ``database`` only.

Results carry no host names, URLs or exception messages (those can hold addresses and user
names): a failure names its check and the exception's type; the full error goes to the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from django.db import connection
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq.worker import Worker
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from queueing import conf
from queueing.dispatcher import LLM_QUEUE
from queueing.limiter import Limits, RedisRateLimiter
from ratelimit_project.redis import new_client, redis_url

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 1.0
RETRY_AFTER_S = 5
CHECKS = ("database", "redis", "worker", "limiter")

_probe_lock = threading.Lock()
_probes: dict[str, redis.Redis] = {}


def probe_client() -> redis.Redis:
    """A client for readiness probes only: short timeouts, no retries, a small pool."""
    url = redis_url()
    with _probe_lock:
        client = _probes.get(url)
        if client is None:
            client = new_client(
                url=url,
                socket_timeout=PROBE_TIMEOUT_S,
                socket_connect_timeout=PROBE_TIMEOUT_S,
                retry=Retry(NoBackoff(), 0),
                max_connections=20,
            )
            _probes[url] = client
    return client


@dataclass
class Readiness:
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [name for name in CHECKS if not self.checks.get(name, {}).get("ok")]

    @property
    def ready(self) -> bool:
        return not self.failed

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ok" if self.ready else "unavailable"}
        if not self.ready:
            body["failed"] = self.failed
        body["checks"] = self.checks
        return body


def _timed(name: str, probe: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    started = time.monotonic()
    try:
        result = {"ok": True, **probe()}
    except Exception as exc:
        log.warning("readiness check %s failed", name, exc_info=True)
        result = {"ok": False, "error": type(exc).__name__}
    result["ms"] = round((time.monotonic() - started) * 1000, 1)
    if not result["ok"] and "error" not in result:
        result["error"] = "failed"
    return result


def _database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {}


def _redis(client: redis.Redis) -> dict[str, Any]:
    client.ping()
    return {}


def _worker(client: redis.Redis) -> dict[str, Any]:
    keys = [
        k.decode() if isinstance(k, bytes) else str(k)
        for k in client.smembers(WORKERS_BY_QUEUE_KEY % LLM_QUEUE)  # type: ignore[union-attr]
    ]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.exists(key)
    alive = [key for key, exists in zip(keys, pipe.execute(), strict=True) if exists]
    prefix = Worker.redis_worker_namespace_prefix
    hosts = {key[len(prefix) :].rsplit(".", 2)[0] for key in alive}
    result: dict[str, Any] = {"hosts": len(hosts), "threads": len(alive)}
    if not hosts:
        result.update(ok=False, error=f"no live worker host on queue {LLM_QUEUE!r}")
    return result


def _limiter(client: redis.Redis) -> dict[str, Any]:
    configured = conf.rate_limits()

    def limits(model_class: str) -> Limits:
        c = configured[model_class]
        return Limits(rpm=c.rpm, itpm=c.itpm, otpm=c.otpm)

    limiter = RedisRateLimiter(client=client, configured=limits)
    for model_class in sorted(configured):
        limiter.state(model_class=model_class)
    return {"model_classes": len(configured)}


def readiness() -> Readiness:
    result = Readiness()
    result.checks["database"] = _timed("database", _database)
    client = probe_client()
    result.checks["redis"] = _timed("redis", lambda: _redis(client))
    if result.checks["redis"]["ok"]:
        result.checks["worker"] = _timed("worker", lambda: _worker(client))
        result.checks["limiter"] = _timed("limiter", lambda: _limiter(client))
    else:
        for name in ("worker", "limiter"):
            result.checks[name] = {"ok": False, "error": "not checked: Redis is unreachable"}
    return result
