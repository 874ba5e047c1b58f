"""``manage.py demo`` end to end: a real subprocess, its own SQLite database and embedded Redis.

The demo process submits through the queue while the worker host it started (a second process)
dispatches and runs the calls: requests only succeed if both found the same embedded Redis.
The demo runs twice in one ``VAR_DIR``, as for someone who types ``make demo`` twice; each run's
``Summary:`` line must add up and show no 429.
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

from tests.demo_summary import FINAL_STATES, Summary, parse_summary

ROOT = Path(__file__).resolve().parents[2]
ENDPOINT_LINE = re.compile(
    r"Anthropic-compatible endpoint: (?P<sent>\d+) calls from the helpdesk app with the "
    r"official SDK \((?P<streamed>\d+) streamed\), (?P<refused>\d+) refused by a quota, "
    r"(?P<errors>\d+) client errors"
)


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


def checked_summary(run: subprocess.CompletedProcess[str], label: str) -> Summary:
    """The run's summary, after what holds for every demo run: it exited cleanly, every request
    it counts is in a final state, none drew a 429, and audit_log agrees with the emulator."""
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"{label}: {output[-4000:]}"
    summary = parse_summary(run.stdout)
    assert summary is not None, f"{label}: {output[-4000:]}"
    assert summary.in_states(FINAL_STATES) == summary.submitted, f"{label}: {summary}"
    assert summary.figures["429s"] == "0", f"{label}: {summary}"
    assert "audit_log vs the emulator's ledger: exact match" in run.stdout, label
    # Part of the traffic came from an app using the official SDK against /v1/messages.
    endpoint = ENDPOINT_LINE.search(run.stdout)
    assert endpoint is not None, f"{label}: {output[-4000:]}"
    assert int(endpoint["sent"]) >= 1 and int(endpoint["streamed"]) <= int(endpoint["sent"]), (
        endpoint[0]
    )
    assert endpoint["errors"] == "0", endpoint[0]
    return summary


@pytest.mark.slow
def test_demo_twice_in_a_row_sends_cached_traffic_adds_up_and_cleans_up(tmp_path: Path) -> None:
    """Two ``make demo`` in a row: one database and one embedded Redis data directory, so the
    second run starts on what the first left (today's quota use, the learned limiter state)
    against a new emulator whose prompt cache is cold."""
    env = demo_env(tmp_path)
    # A key in the environment must not send the demo to the real API without --real.
    env["ANTHROPIC_API_KEY"] = "sk-ant-test-not-a-real-key"
    db_path = tmp_path / "db.sqlite3"
    try:
        first = manage("demo", "--no-serve", "--duration", "10", env=env, timeout=240)
        with sqlite3.connect(db_path) as db:
            succeeded_first = db.execute(
                "SELECT count(*) FROM queueing_llmrequest WHERE status = 'succeeded'"
            ).fetchone()[0]
            cache_reads = db.execute(
                "SELECT count(*) FROM audit_log WHERE cache_read_input_tokens > 0"
            ).fetchone()[0]
            users = db.execute("SELECT count(*) FROM auth_user").fetchone()[0]
        second = manage("demo", "--no-serve", "--duration", "10", env=env, timeout=240)
    finally:
        manage("demo", "--stop", env=env, timeout=90)  # whatever a failed run left behind

    one = checked_summary(first, "first run")
    assert "--real was not given: using the emulator" in first.stdout
    assert one.submitted >= 10
    assert one.count("done") >= one.submitted - 2  # a quota rejection or two (dave's is tiny)
    assert one.count("failed") == 0
    assert one.count("cache hits") >= 50  # the shared handbook prompt is read from the cache
    assert succeeded_first == one.count("done")
    assert cache_reads >= one.count("done") // 2
    assert users >= 21

    two = checked_summary(second, "second run")
    assert two.submitted >= 10
    assert two.count("failed") == 0
    assert two.count("cache hits") >= 50
    with sqlite3.connect(db_path) as db:
        by_status = dict(
            db.execute("SELECT status, count(*) FROM queueing_llmrequest GROUP BY status")
        )
        rejected_users = {
            name
            for (name,) in db.execute(
                "SELECT DISTINCT u.username FROM queueing_llmrequest r "
                "JOIN auth_user u ON u.id = r.user_id WHERE r.status = 'rejected'"
            )
        }
    # Each run counted its own requests, and only those.
    assert sum(by_status.values()) == one.submitted + two.submitted
    assert by_status.get("succeeded", 0) == one.count("done") + two.count("done")
    assert rejected_users <= {"dave"}  # only the deliberately small quota says no

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
