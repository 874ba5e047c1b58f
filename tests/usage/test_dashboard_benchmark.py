"""The dashboard benchmark runs end to end (tiny) and reports every view's timings."""

from __future__ import annotations

from pathlib import Path

import pytest

from ratelimit_project.loadtest import dashboard


@pytest.mark.slow
def test_dashboard_scenario_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    result = dashboard.run(
        {"extra": {"rows": "3000", "users": "20", "sessions": "50", "requests": "2"}}
    )
    assert result["rows"] == 3000
    assert result["database"] == "sqlite"
    assert {"my_usage_90d", "api_session_calls", "staff_users_90d", "metrics"} <= set(
        result["views"]
    )
    for timing in result["views"].values():
        assert 0 < timing["p50_ms"] <= timing["p95_ms"]
    assert result["max_p95_ms"] == max(t["p95_ms"] for t in result["views"].values())
    assert (tmp_path / "bench" / "dashboard.sqlite3").exists()
