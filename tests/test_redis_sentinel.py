"""Redis Sentinel (issue 17): ``REDIS_URL=redis+sentinel://…`` reaches the master a real sentinel
names, before and after it fails the master over to its replica; a malformed Sentinel URL is
refused clearly, naming ``REDIS_URL`` and never showing a password; the production settings
take a Sentinel URL as a shared Redis, not an embedded one.

The failover runs on real processes on loopback (``tests/sentinel_support.py``): a master, a
replica and a sentinel; the master is SIGKILLed, as a crashed machine would leave it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from django_rq.connection_utils import get_redis_connection

from queueing import health
from ratelimit_project import redis as project_redis
from tests.sentinel_support import SentinelGroup, wait_until
from tests.test_production_settings import PRODUCTION_ENV, manage

KEYS = 200


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[SentinelGroup]:
    group = SentinelGroup(tmp_path / "sentinel-group").start()
    yield group
    group.stop()


def _on_replica(client: redis.Redis) -> None:
    """Block until the writes so far are on the replica (or fail): what ``WAIT`` promises."""
    assert client.execute_command("WAIT", 1, 1000) == 1


def _server_port(client: redis.Redis) -> int:
    return int(client.info("server")["tcp_port"])


def test_a_sentinel_client_reaches_the_promoted_replica_after_the_master_is_killed(
    sentinel_group: SentinelGroup,
) -> None:
    client = project_redis.new_client(
        url=sentinel_group.url, socket_timeout=1, socket_connect_timeout=1
    )
    try:
        assert _server_port(client) == sentinel_group.master.port
        for n in range(KEYS):
            client.set(f"key:{n}", f"value {n}")
        client.rpush("list", *range(10))
        client.incrby("counter", 41)
        _on_replica(client)

        sentinel_group.master.kill()
        killed_at = time.monotonic()
        # While the sentinel has not yet promoted the replica, commands fail the way a lost
        # Redis does (the project's outage handling expects redis.ConnectionError/TimeoutError).
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            client.ping()
        new_port = sentinel_group.wait_for_failover(from_port=sentinel_group.master.port)
        assert new_port == sentinel_group.replica.port

        # The same client, with no reconfiguration, now works against the new master...
        assert wait_until(
            "the client to write on the new master", lambda: client.incr("counter"), 20
        )
        failover_s = time.monotonic() - killed_at
        assert _server_port(client) == sentinel_group.replica.port
        assert client.info("replication")["role"] == "master"
        # ...and finds everything that had replicated before the master died.
        assert client.get("counter") == b"42"
        assert client.mget([f"key:{n}" for n in range(KEYS)]) == [
            f"value {n}".encode() for n in range(KEYS)
        ]
        assert client.lrange("list", 0, -1) == [str(n).encode() for n in range(10)]
        # Scripts run there too (the limiter and scheduler are Lua scripts).
        assert client.eval("return redis.call('INCR', KEYS[1])", 1, "counter") == 43
    finally:
        client.close()

    # A fresh client from the same URL asks the sentinel and lands on the new master at once.
    fresh = project_redis.new_client(url=sentinel_group.url)
    try:
        assert _server_port(fresh) == sentinel_group.replica.port
        assert fresh.get("key:7") == b"value 7"
    finally:
        fresh.close()
    assert failover_s < 20, failover_s


def test_the_project_clients_all_follow_the_configured_sentinel(
    sentinel_group: SentinelGroup, settings
) -> None:
    """``get_redis`` (every service), the readiness probe and django-rq's own views (which
    connect from ``RQ_QUEUES``) all reach the master the sentinel names, before and after a
    failover."""
    settings.REDIS_URL = sentinel_group.url
    settings.EMBEDDED_REDIS = False
    project_redis.reset_clients()
    health._probes.clear()
    rq_config = project_redis.rq_queue_connection(sentinel_group.url)
    rq_client = get_redis_connection(rq_config)
    try:
        pooled = project_redis.get_redis()
        assert pooled is project_redis.get_redis()  # one pool per process, as for redis://
        pooled.set("written-before", "yes")
        _on_replica(pooled)
        assert _server_port(health.probe_client()) == sentinel_group.master.port
        assert _server_port(rq_client) == sentinel_group.master.port

        sentinel_group.master.kill()
        sentinel_group.wait_for_failover(from_port=sentinel_group.master.port)

        assert wait_until("the pooled client to follow", lambda: pooled.get("written-before"), 20)
        assert _server_port(pooled) == sentinel_group.replica.port
        assert wait_until("the probe to follow", lambda: health.probe_client().ping(), 20)
        assert _server_port(health.probe_client()) == sentinel_group.replica.port
        assert wait_until("django-rq to follow", rq_client.ping, 20)
        assert _server_port(rq_client) == sentinel_group.replica.port
    finally:
        rq_client.close()
        for probe in health._probes.values():
            probe.close()
        health._probes.clear()
        project_redis.reset_clients()


def test_passwords_in_the_url_reach_the_master_and_the_sentinel(tmp_path: Path) -> None:
    """Production Redis and sentinels require auth: the URL's password is the master's (also
    after a failover, on the promoted replica), ``sentinel_password`` the sentinel's."""
    group = SentinelGroup(
        tmp_path / "with-auth", password="data pass/1", sentinel_password="sentinel-pass"
    ).start()
    try:
        url = (
            f"redis+sentinel://:data%20pass%2F1@127.0.0.1:{group.sentinel_port}/mymaster/0"
            "?sentinel_password=sentinel-pass"
        )
        assert url == group.url
        client = project_redis.new_client(url=url, socket_timeout=1)
        client.set("k", "v")
        _on_replica(client)
        group.master.kill()
        group.wait_for_failover(from_port=group.master.port)
        assert wait_until("the client to follow", lambda: client.get("k"), 20) == b"v"
        assert _server_port(client) == group.replica.port
        client.close()
        # Without the sentinel's password the master cannot even be found.
        wrong = project_redis.new_client(url=url.split("?")[0], socket_timeout=1)
        with pytest.raises(redis.ConnectionError):
            wrong.ping()
        wrong.close()
    finally:
        group.stop()


def test_options_reach_the_connections_to_the_master(sentinel_group: SentinelGroup) -> None:
    client = project_redis.new_client(
        url=sentinel_group.url, socket_timeout=7, health_check_interval=30, max_connections=3
    )
    try:
        client.ping()
        pool = client.connection_pool
        assert pool.max_connections == 3
        assert pool.connection_kwargs["socket_timeout"] == 7
        assert pool.connection_kwargs["health_check_interval"] == 30
        # The sentinels are asked with the short sentinel timeout, not the caller's 7 s.
        manager = pool.sentinel_manager  # type: ignore[attr-defined]
        sentinel_kwargs = manager.sentinels[0].connection_pool.connection_kwargs
        assert sentinel_kwargs["socket_timeout"] == project_redis.DEFAULT_SENTINEL_TIMEOUT_S
    finally:
        client.close()


# --- the URL format -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/mymaster/2",
            project_redis.SentinelTarget(
                sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26380)), service_name="mymaster", db=2
            ),
            id="two-sentinels-and-a-db",
        ),
        pytest.param(
            "redis+sentinel://:s%40cret@sentinel-a,sentinel-b/cache",
            project_redis.SentinelTarget(
                sentinels=(("sentinel-a", 26379), ("sentinel-b", 26379)),
                service_name="cache",
                password="s@cret",
            ),
            id="default-port-and-a-password",
        ),
        pytest.param(
            "redis+sentinel://[::1]:5000/m/0?password=pw&username=gw&sentinel_password=sp"
            "&sentinel_username=su&sentinel_timeout=0.25&min_other_sentinels=2",
            project_redis.SentinelTarget(
                sentinels=(("::1", 5000),),
                service_name="m",
                username="gw",
                password="pw",
                sentinel_username="su",
                sentinel_password="sp",
                sentinel_timeout_s=0.25,
                min_other_sentinels=2,
            ),
            id="ipv6-and-every-option",
        ),
    ],
)
def test_sentinel_urls_parse(url: str, expected: project_redis.SentinelTarget) -> None:
    assert project_redis.parse_sentinel_url(url) == expected
    project_redis.check_url(url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis+sentinel://sentinel-a:26379", "service name"),
        ("redis+sentinel://sentinel-a:26379/", "service name"),
        ("redis+sentinel:///mymaster", "names no sentinel"),
        ("redis+sentinel://sentinel-a:port/mymaster", "invalid port"),
        ("redis+sentinel://sentinel-a:70000/mymaster", "invalid port"),
        ("redis+sentinel://sentinel-a/mymaster/zero", "database number"),
        ("redis+sentinel://sentinel-a/mymaster/0/extra", "more than /service_name/db"),
        ("redis+sentinel://sentinel-a/mymaster?sentinel_pasword=hunter2", "unknown option"),
        ("redis+sentinel://:hunter2@sentinel-a/mymaster?password=hunter2", "given both"),
        ("redis+sentinel://sentinel-a/mymaster?sentinel_timeout=soon", "must be a number"),
        ("redis+sentinel://[::1/mymaster", "IPv6"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_naming_redis_url(url: str, reason: str) -> None:
    with pytest.raises(ImproperlyConfigured) as refused:
        project_redis.new_client(url=url)
    message = str(refused.value)
    assert message.startswith("REDIS_URL=")
    assert reason in message
    assert "redis+sentinel://[[user]:password@]host[:port]" in message  # the expected format
    assert "hunter2" not in message


def test_a_plain_url_that_does_not_parse_is_refused_naming_redis_url() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"^REDIS_URL='http://:\*\*\*@redis-host/0'"):
        project_redis.new_client(url="http://:hunter2@redis-host/0")


def test_redacted_urls_show_no_password() -> None:
    assert (
        project_redis.redacted_url("redis+sentinel://gw:pw@a:1,b:2/m/0?sentinel_password=sp")
        == "redis+sentinel://gw:***@a:1,b:2/m/0?sentinel_password=***"
    )
    assert project_redis.redacted_url("redis://:pw@host:6379/0") == "redis://:***@host:6379/0"
    assert project_redis.redacted_url("redis://host:6379/0") == "redis://host:6379/0"


# --- settings and checks ------------------------------------------------------------------------

SENTINEL_URL = "redis+sentinel://sentinel-1.internal:26379,sentinel-2.internal:26379/gateway/0"


def test_production_settings_accept_a_sentinel_url_as_the_shared_redis(tmp_path: Path) -> None:
    env = {**PRODUCTION_ENV, "REDIS_URL": SENTINEL_URL}
    run = manage(tmp_path, env, "check", "--deploy", "--fail-level", "WARNING")
    assert run.returncode == 0, run.stderr
    assert "System check identified no issues" in run.stdout  # no gateway.W001 (embedded)
    code = (
        "from django.conf import settings; "
        "print('EMBEDDED', settings.EMBEDDED_REDIS); "
        "print('RQ', sorted(settings.RQ_QUEUES['llm']))"
    )
    shell = manage(tmp_path, env, "shell", "-c", code)
    assert shell.returncode == 0, shell.stderr
    assert "EMBEDDED False" in shell.stdout
    # django-rq's views get its Sentinel form, not a URL redis-py cannot read.
    assert "'MASTER_NAME'" in shell.stdout and "'SENTINELS'" in shell.stdout
    assert not (tmp_path / "redis").exists()  # nothing embedded was started


def test_a_malformed_sentinel_url_stops_startup_naming_redis_url(tmp_path: Path) -> None:
    env = {**PRODUCTION_ENV, "REDIS_URL": "redis+sentinel://:hunter2@sentinel-1:26379"}
    run = manage(tmp_path, env, "check")
    assert run.returncode != 0
    assert "ImproperlyConfigured: REDIS_URL='redis+sentinel://:***@sentinel-1:26379'" in run.stderr
    assert "service name" in run.stderr
    assert "hunter2" not in run.stderr


def test_the_redis_url_system_check(settings) -> None:
    from queueing import checks as queueing_checks

    settings.REDIS_URL = "redis+sentinel://sentinel-1/gateway/x"
    errors = queueing_checks.check_queueing_settings()
    assert [(e.id, e.obj) for e in errors] == [("gateway.E001", "REDIS_URL")]
    assert "database number" in errors[0].msg
    settings.REDIS_URL = SENTINEL_URL
    assert queueing_checks.check_queueing_settings() == []
