"""Everything a benchmark needs, on loopback, started and stopped by the scenario itself.

``python manage.py loadtest X`` re-runs itself in a child process whose ``VAR_DIR`` is a fresh
``var/bench/<scenario>/`` directory, so the benchmark gets its own SQLite database (unless
``DATABASE_URL`` is set) and never touches the developer's data. Inside that child, ``Stack``
starts a private redis-server, the Anthropic emulator and worker hosts (``manage.py llm_worker``,
the documented worker command) as subprocesses sharing that database and Redis.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command

from llm_calls.emulator.process import EmulatorProcess
from ratelimit_project import redis as project_redis

CHILD_FLAG = "GW_LOADTEST_CHILD"
ROOT = Path(__file__).resolve().parents[2]


def in_child() -> bool:
    return os.environ.get(CHILD_FLAG) == "1"


def rerun_in_child(scenario: str, argv: list[str]) -> int:
    """Run this loadtest again in a fresh process with its own VAR_DIR; stream its output."""
    var_dir = ROOT / "var" / "bench" / scenario
    shutil.rmtree(var_dir, ignore_errors=True)
    var_dir.mkdir(parents=True)
    env = {**os.environ, CHILD_FLAG: "1", "VAR_DIR": str(var_dir)}
    env.pop("REDIS_URL", None)  # the stack starts its own
    return subprocess.call([sys.executable, str(ROOT / "manage.py"), *argv], env=env, cwd=ROOT)


class Stack:
    """Private Redis + emulator + worker hosts. Use as a context manager."""

    def __init__(
        self,
        *,
        emulator: dict[str, Any] | None = None,
        rate_limits: dict[str, dict[str, int]] | None = None,
        worker_env: dict[str, str] | None = None,
        redis_appendfsync: str = "always",
        debug: bool = True,
        redis_dir: str = "redis",
    ) -> None:
        self.var_dir = Path(settings.VAR_DIR)
        # debug=False runs workers and this process as production does (DJANGO_DEBUG off): with
        # DEBUG on, Django records every SQL query in memory, which costs CPU on hot paths.
        self.debug = debug
        self._saved_debug = settings.DEBUG
        # "everysec" is the embedded server's (the default deployment's) policy; "always" fsyncs
        # before every write's reply (see PrivateRedis).
        # ``redis_dir`` (under VAR_DIR): a scenario that runs several stacks one after the other
        # gives each its own, or the next server would load the previous one's AOF (its limiter
        # buckets, learned limits and queue) on start.
        self.redis = project_redis.PrivateRedis(
            self.var_dir / redis_dir, appendfsync=redis_appendfsync
        )
        self.emulator = EmulatorProcess(**(emulator or {}))
        self.rate_limits = rate_limits
        self.worker_env = worker_env or {}
        self.workers: list[subprocess.Popen[bytes]] = []
        self.web: subprocess.Popen[bytes] | None = None
        self.web_port = 0
        self.serve: subprocess.Popen[bytes] | None = None
        self.serve_port = 0

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> Stack:
        self.redis.start()
        self._point_settings_at(self.redis.url)
        call_command("migrate", verbosity=0, interactive=False)
        self.emulator.start()
        settings.ANTHROPIC_BASE_URL = self.emulator.base_url
        settings.ANTHROPIC_API_KEY = "sk-ant-bench-key"
        if self.rate_limits is not None:
            settings.GATEWAY_RATE_LIMITS = self.rate_limits
        if not self.debug:
            settings.DEBUG = False
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_workers(graceful=False)
        self.kill_web()
        self.kill_serve()
        self.emulator.stop()
        self.redis.stop()
        settings.DEBUG = self._saved_debug

    def _point_settings_at(self, url: str) -> None:
        settings.EMBEDDED_REDIS = False
        settings.REDIS_URL = url
        for queue in settings.RQ_QUEUES.values():
            queue["URL"] = url
        project_redis.reset_clients()

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "VAR_DIR": str(self.var_dir),
            "REDIS_URL": self.redis.url,
            "ANTHROPIC_BASE_URL": self.emulator.base_url,
            "ANTHROPIC_API_KEY": "sk-ant-bench-key",
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
            **self.worker_env,
        }
        if self.rate_limits is not None:
            env["GATEWAY_RATE_LIMITS_JSON"] = json.dumps(self.rate_limits)
        if not self.debug:
            env.setdefault("DJANGO_DEBUG", "0")
            env.setdefault("SECRET_KEY", "loadtest-only-" + self.redis.url)
            # One machine: its processes share one SQLite file unless DATABASE_URL is set.
            env.setdefault("GATEWAY_ALLOW_SQLITE", "1")
        env.pop(CHILD_FLAG, None)
        return env

    # -- workers ----------------------------------------------------------------------------
    def start_worker(
        self, *, threads: int = 64, processes: int = 1, engine: str | None = None
    ) -> subprocess.Popen[bytes]:
        """The documented worker command: ``python manage.py llm_worker --threads N`` (with
        ``--engine`` when one is named, to compare the two)."""
        log = open(self.var_dir / f"worker-{len(self.workers)}.log", "ab")  # noqa: SIM115 - lives as long as the worker
        process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "llm_worker",
                "--threads",
                str(threads),
                "--processes",
                str(processes),
                *(["--engine", engine] if engine else []),
            ],
            env=self.env(),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(process)
        return process

    def wait_for_workers(self, *, threads: int, timeout_s: float = 60.0) -> None:
        """Block until the running worker hosts together offer ``threads`` calls in flight
        (``queueing.workers.live_hosts``), so a measurement does not include the hosts'
        start-up (Django setup, imports, registering their RQ threads)."""
        from queueing.workers import live_hosts

        def offered() -> int:
            return sum(int(host["capacity"]) for host in live_hosts())

        deadline = time.monotonic() + timeout_s
        while offered() < threads:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"worker hosts offer {offered()} of {threads} calls in flight after "
                    f"{timeout_s:g} s; see {self.var_dir}/worker-*.log"
                )
            for process in self.workers:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"worker host {process.pid} exited with {process.returncode}; "
                        f"see {self.var_dir}/worker-*.log"
                    )
            time.sleep(0.1)

    def kill_worker(self, process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        os.killpg(process.pid, sig)
        process.wait()

    def stop_workers(self, *, graceful: bool = True, timeout_s: float = 60.0) -> None:
        for process in self.workers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM if graceful else signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        for process in self.workers:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.workers = [p for p in self.workers if p.poll() is None]

    # -- web server -------------------------------------------------------------------------
    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start_web(self, *, timeout_s: float = 60.0) -> subprocess.Popen[bytes]:
        """The web server (``runserver --noreload``, as the demo runs it) on a free port, kept
        on that port across restarts; returns once it answers HTTP."""
        self.web_port = self.web_port or project_redis.free_port()
        self.web = self._start_server(
            ["runserver", "--noreload", f"127.0.0.1:{self.web_port}"],
            port=self.web_port,
            log_name="web.log",
            what="the web server",
            timeout_s=timeout_s,
        )
        return self.web

    def kill_web(self) -> None:
        """SIGKILL the web server, the way a crashed or OOM-killed one goes."""
        _kill_group(self.web)

    # -- the ASGI server (pages, JSON API and the Anthropic-compatible endpoint) -------------
    @property
    def serve_url(self) -> str:
        return f"http://127.0.0.1:{self.serve_port}"

    def start_serve(self, *, timeout_s: float = 60.0) -> subprocess.Popen[bytes]:
        """The documented server command, ``python manage.py serve --port P`` (uvicorn: the
        pages, the JSON API and the Anthropic API's own paths under ``/v1/``), on a free port
        kept across restarts; returns once it accepts connections (uvicorn binds only after the
        application is imported, so it then answers)."""
        self.serve_port = self.serve_port or project_redis.free_port()
        self.serve = self._start_server(
            ["serve", "--port", str(self.serve_port)],
            port=self.serve_port,
            log_name="serve.log",
            what="manage.py serve",
            timeout_s=timeout_s,
        )
        return self.serve

    def kill_serve(self) -> None:
        """SIGKILL the ``serve`` process (and any processes it started)."""
        _kill_group(self.serve)

    def _start_server(
        self, args: list[str], *, port: int, log_name: str, what: str, timeout_s: float
    ) -> subprocess.Popen[bytes]:
        """``manage.py *args`` in its own process group, logging to ``log_name``; returns once
        ``port`` accepts connections."""
        log = open(self.var_dir / log_name, "ab")  # noqa: SIM115 - lives as long as the server
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=self.env(),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=1),
            ):
                return process
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start; see {self.var_dir}/{log_name}")
            time.sleep(0.1)

    def restart_redis(self) -> None:
        self.redis.restart()
        project_redis.reset_clients()


def _kill_group(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def rss_mb(pids: list[int]) -> float:
    """Resident memory of these processes and all their descendants, in MB."""
    seen: set[int] = set()
    todo = list(pids)
    total_kb = 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kb += int(line.split()[1])
        todo.extend(int(c) for c in children)
    return total_kb / 1024


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by these live processes and their live
    descendants."""
    seen: set[int] = set()
    todo = list(pids)
    ticks = 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
        todo.extend(int(c) for c in children)
    return ticks / os.sysconf("SC_CLK_TCK")


def percentile(samples: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (0.5 = median) by nearest rank; 0.0 for no samples."""
    ordered = sorted(samples)
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(len(ordered), rank) - 1]


def make_users(*, count: int, prefix: str = "bench") -> list[Any]:
    """``count`` active users, members of one organization ``<prefix>-org``, no quotas."""
    from django.contrib.auth.models import User

    from organizations.models import Membership, Organization

    org, _ = Organization.objects.get_or_create(name=f"{prefix}-org")
    users = []
    for number in range(count):
        user, created = User.objects.get_or_create(username=f"{prefix}-{number}")
        if created:
            Membership.objects.create(user=user, organization=org)
        users.append(user)
    return users


@contextlib.contextmanager
def quiet_http_logs() -> Iterator[None]:
    """Silence per-request INFO lines (httpx, the SDK's retry notes, our retry warnings) while a
    scenario makes thousands of calls; the scenario's JSON must stay readable."""
    names = ("anthropic", "httpx", "httpx2", "llm_calls.retry")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
