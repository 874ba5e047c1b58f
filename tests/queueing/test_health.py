"""/healthz and /readyz: what a load balancer or an orchestrator asks, on real parts.

A live worker host is the real one (``gateway`` runs ``workers.WorkerHost`` in a thread, which
registers its RQ threads and heartbeats them in Redis); a dead one is what a SIGKILLed host
leaves: its threads still listed on the queue, their heartbeat keys expired.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import Client
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from queueing.dispatcher import LLM_QUEUE


def readyz(client: Client | None = None) -> Any:
    return (client or Client()).get("/readyz")


def test_healthz_answers_ok_and_touches_nothing(settings) -> None:
    # No database access is allowed in this test, and Redis points nowhere.
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]
    assert Client().head("/healthz").status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_other_methods_get_the_json_405(path: str) -> None:
    response = Client().post(path)
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert response.json()["error"]["type"] == "method_not_allowed"


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_over_plain_http_are_not_redirected_to_https(path: str, settings) -> None:
    settings.SECURE_SSL_REDIRECT = True
    assert Client().get("/usage/").status_code == 301
    assert Client().get(path).status_code in (200, 503)


@pytest.mark.django_db
def test_readyz_is_503_naming_worker_when_no_worker_host_is_alive(redis_client) -> None:
    response = readyz()
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failed"] == ["worker"]
    assert body["checks"]["worker"]["hosts"] == 0
    assert {"database", "redis", "limiter"} <= {n for n, c in body["checks"].items() if c["ok"]}


@pytest.mark.django_db
def test_a_dead_hosts_leftover_registrations_do_not_count(redis_client) -> None:
    # What a SIGKILLed host leaves: its threads listed on the queue, heartbeat keys expired.
    redis_client.sadd(WORKERS_BY_QUEUE_KEY % LLM_QUEUE, "rq:worker:gone-host.4242.0.1700000000")
    body = readyz().json()
    assert body["failed"] == ["worker"]
    assert body["checks"]["worker"]["hosts"] == 0


def test_readyz_is_200_once_a_worker_host_is_alive(gateway) -> None:
    deadline = time.monotonic() + 30
    response = readyz()
    while response.status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
        response = readyz()
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok" and "failed" not in body
    assert body["checks"]["worker"]["hosts"] == 1
    assert body["checks"]["worker"]["threads"] >= 1
    assert body["checks"]["limiter"]["model_classes"] >= 1
    assert all(check["ok"] for check in body["checks"].values())
    assert Client().head("/readyz").status_code == 200


@pytest.mark.django_db
def test_readyz_is_503_naming_redis_when_redis_is_unreachable(own_redis) -> None:
    own_redis.stop()
    started = time.monotonic()
    response = readyz()
    assert time.monotonic() - started < 5
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    body = response.json()
    assert body["failed"][0] == "redis"
    assert body["checks"]["redis"] == {
        "ok": False,
        "error": "ConnectionError",
        "ms": body["checks"]["redis"]["ms"],
    }
    assert body["checks"]["database"]["ok"] is True
    assert not body["checks"]["worker"]["ok"] and not body["checks"]["limiter"]["ok"]
    # Nothing about where Redis is.
    assert "127.0.0.1" not in response.content.decode()
    assert str(own_redis.port) not in response.content.decode()
