"""Concurrent workers cannot lose or duplicate rollup increments (SQLite and PostgreSQL).

Each case runs ``tests/usage/rollup_race.py`` in a fresh process on a throwaway database, so
the threads really race on separate connections with real transactions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")


def _run_race(database_url: str, tmp_path: Path) -> dict:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "VAR_DIR": str(tmp_path / "var"),
        "DJANGO_SETTINGS_MODULE": "ratelimit_project.settings",
        "LOG_LEVEL": "ERROR",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tests.usage.rollup_race"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check(result: dict) -> None:
    assert result["errors"] == []
    assert result["audit_rows"] == result["expected_rows"]
    assert result["duplicate_rows"] == 6  # one per round, although all 8 threads sent it
    for name, totals in result["rollups"].items():
        assert totals == result["audit"], name
    assert result["ok"] is True


def test_threaded_rollups_on_sqlite_file(tmp_path: Path) -> None:
    result = _run_race(f"sqlite:///{tmp_path / 'race.sqlite3'}", tmp_path)
    assert result["vendor"] == "sqlite"
    _check(result)


def test_threaded_rollups_on_postgresql(tmp_path: Path) -> None:
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    name = f"usage_race_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        base = POSTGRES_URL.rsplit("/", 1)[0]
        result = _run_race(f"{base}/{name}", tmp_path)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    assert result["vendor"] == "postgresql"
    _check(result)
