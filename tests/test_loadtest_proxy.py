"""``manage.py loadtest proxy`` end to end with tiny phases: a real subprocess with its own
VAR_DIR (its own SQLite database, Redis, emulator, worker host and ``manage.py serve``).

Outcomes only: the figures are the benchmark's business, but every required key is there and
no caller of the gateway saw an error or a 429 in any phase.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIRED_KEYS = (
    "added_latency_p50_ms",
    "added_latency_p99_ms",
    "stream_ttft_added_p50_ms",
    "clients",
    "max_in_flight",
    "mean_in_flight",
    "rss_mb",
    "client_errors",
    "client_429s",
    "goodput_ratio",
)
TINY = (
    "calls=10",
    "warmup=2",
    "stream_calls=3",
    "stream_output_tokens=30",
    "clients=40",
    "hold_s=2",
    "ramp_s=0.2",
    "latency_ms=300",
    "threads=32",
    "rpm=120",
    "settle_s=2",
    "limit_latency_ms=100",
)


def test_proxy_scenario_runs_end_to_end_without_client_errors(tmp_path: Path) -> None:
    env = {
        **os.environ,
        # What ``loadtest`` does for itself (stack.rerun_in_child), in a directory of our own.
        "GW_LOADTEST_CHILD": "1",
        "VAR_DIR": str(tmp_path),
        "LOG_LEVEL": "WARNING",
    }
    for name in ("REDIS_URL", "DATABASE_URL"):
        env.pop(name, None)
    out = tmp_path / "proxy.json"
    args = ["loadtest", "proxy", "--duration", "8", "--json", str(out)]
    for pair in TINY:
        args += ["--opt", pair]
    run = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    last = json.loads(run.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == last
    missing = [key for key in REQUIRED_KEYS if key not in last]
    assert missing == []
    assert last["client_errors"] == 0, last["phases"]
    assert last["client_429s"] == 0, last["phases"]
    assert last["clients"] == 40
    assert last["max_in_flight"] > 0
    assert last["phases"]["over_limit"]["answered_in_window"] > 0
    assert set(last["met"]) >= {"client_errors", "client_429s", "goodput", "rss"}
