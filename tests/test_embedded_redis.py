"""With REDIS_URL unset, every process finds and shares ONE embedded redis-server (under VAR_DIR),
and production settings refuse to start without a SECRET_KEY."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[1]


def env_for(var_dir: Path) -> dict[str, str]:
    env = {**os.environ, "VAR_DIR": str(var_dir)}
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    return env


def shell(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def tagged(output: str, tag: str) -> str:
    for line in output.splitlines():
        if line.startswith(tag + " "):
            return line[len(tag) + 1 :]
    raise AssertionError(f"no {tag} line in:\n{output}")


WRITE = """
from ratelimit_project.redis import get_redis
r = get_redis()
r.set("shared-by-two-processes", "written by the first")
print("PID", r.info("server")["process_id"])
"""
READ = """
from ratelimit_project.redis import get_redis
r = get_redis()
print("VALUE", r.get("shared-by-two-processes").decode())
print("PID", r.info("server")["process_id"])
"""
STOP = """
from ratelimit_project.redis import stop_embedded_redis
print("STOPPED", stop_embedded_redis())
"""


def test_two_processes_share_one_embedded_redis(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    try:
        first = shell(WRITE, env)
        assert first.returncode == 0, first.stderr
        second = shell(READ, env)
        assert second.returncode == 0, second.stderr
    finally:
        stop = shell(STOP, env)
    server_pid = int(tagged(first.stdout, "PID"))
    assert int(tagged(second.stdout, "PID")) == server_pid
    assert tagged(second.stdout, "VALUE") == "written by the first"
    # The server outlived the process that started it; the stop really ended it.
    assert tagged(stop.stdout, "STOPPED") == "True"
    with pytest.raises(redis.ConnectionError):
        redis.Redis(
            unix_socket_path=str(tmp_path / "redis" / "redis.sock"), socket_timeout=1
        ).ping()


def test_debug_off_without_secret_key_refuses_to_start(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    env["DJANGO_DEBUG"] = "0"
    env.pop("SECRET_KEY", None)
    run = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert "SECRET_KEY is not set and DJANGO_DEBUG is off: refusing to start" in run.stderr
