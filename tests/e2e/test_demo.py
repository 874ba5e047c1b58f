"""``manage.py demo`` end to end: a real subprocess, its own SQLite database and embedded Redis.

The demo process submits through the queue while the worker host it started (a second process)
dispatches and runs the calls: requests only succeed if both found the same embedded Redis.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]


def demo_env(var_dir: Path) -> dict[str, str]:
    env = {**os.environ, "VAR_DIR": str(var_dir), "LOG_LEVEL": "WARNING"}
    for name in ("REDIS_URL", "DATABASE_URL", "ANTHROPIC_BASE_URL", "DEMO_PORT"):
        env.pop(name, None)
    return env


def manage(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_demo_sends_cached_traffic_through_the_queue_and_cleans_up(tmp_path: Path) -> None:
    env = demo_env(tmp_path)
    # A key in the environment must not send the demo to the real API without --real.
    env["ANTHROPIC_API_KEY"] = "sk-ant-test-not-a-real-key"
    try:
        run = manage("demo", "--no-serve", "--duration", "10", env=env, timeout=240)
    finally:
        manage("demo", "--stop", env=env, timeout=90)  # whatever a failed run left behind
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "--real was not given: using the emulator" in run.stdout

    summary = re.search(
        r"^Summary: (\d+) submitted \| .*done (\d+) \| failed (\d+) \| .*cache hits (\d+)%",
        run.stdout,
        re.M,
    )
    assert summary, output[-4000:]
    submitted, done, failed, hit_rate = (int(g) for g in summary.groups())
    assert submitted >= 10
    assert done >= submitted - 2  # at most a quota rejection or two (dave's quota is tiny)
    assert failed == 0
    assert hit_rate >= 50  # the shared handbook prompt is read from the cache
    assert "audit_log vs the emulator's ledger: exact match" in run.stdout

    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        succeeded = db.execute(
            "SELECT count(*) FROM queueing_llmrequest WHERE status = 'succeeded'"
        ).fetchone()[0]
        cache_reads = db.execute(
            "SELECT count(*) FROM audit_log WHERE cache_read_input_tokens > 0"
        ).fetchone()[0]
        users = db.execute("SELECT count(*) FROM auth_user").fetchone()[0]
    assert succeeded == done
    assert cache_reads >= done // 2
    assert users >= 21

    # Everything the demo started is gone: its pid file and the embedded Redis it started.
    assert not (tmp_path / "demo" / "pids.json").exists()
    sock = tmp_path / "redis" / "redis.sock"
    if sock.exists():
        with pytest.raises(redis.ConnectionError):
            redis.Redis(unix_socket_path=str(sock), socket_timeout=1).ping()


def test_demo_refuses_real_mode_without_an_api_key(tmp_path: Path) -> None:
    env = demo_env(tmp_path)
    env.pop("ANTHROPIC_API_KEY", None)
    run = manage("demo", "--real", "--no-serve", env=env, timeout=60)
    assert run.returncode != 0
    assert "--real needs ANTHROPIC_API_KEY" in run.stderr
    # Refused before anything started or was written.
    assert not (tmp_path / "demo").exists()
    assert not (tmp_path / "redis").exists()
    assert not (tmp_path / "db.sqlite3").exists()
