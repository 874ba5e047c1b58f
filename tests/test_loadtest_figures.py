"""The arithmetic behind the benchmark figures (utilization's goodput, percentiles)."""

from __future__ import annotations

import pytest

from ratelimit_project.loadtest.stack import percentile
from ratelimit_project.loadtest.utilization import bucket_level, sustained_rate


def steady(rate_per_s: float, *, until_s: float, every_s: float = 0.5) -> list[tuple[float, int]]:
    amount = int(rate_per_s * every_s)
    return [(every_s * n, amount) for n in range(1, int(until_s / every_s) + 1)]


def test_sustained_rate_is_the_accepted_rate_whatever_the_window_edges() -> None:
    charges = steady(1000, until_s=100)
    assert sustained_rate(charges, t_from=40, t_to=90) == pytest.approx(1000, rel=1e-3)
    # A burst spent before the window does not count; a gap inside it does.
    burst = [(1.0, 60_000), *charges]
    assert sustained_rate(burst, t_from=40, t_to=90) == pytest.approx(1000, rel=1e-3)
    gap = [c for c in charges if not 60 < c[0] <= 70]
    assert sustained_rate(gap, t_from=40, t_to=90) < 900


def test_bucket_level_replays_refill_cap_and_debt() -> None:
    limit = 60_000  # 1,000 per second
    assert bucket_level([], limit=limit, t_start=0, at=30) == limit  # never above full
    assert bucket_level([(1.0, 60_000)], limit=limit, t_start=0, at=1.0) == 0
    assert bucket_level([(1.0, 60_000)], limit=limit, t_start=0, at=11.0) == 10_000
    assert bucket_level([(0.0, 70_000)], limit=limit, t_start=0, at=0.0) == -10_000
    # Accepting exactly the refill keeps the level where it was.
    charges = [(1.0, 60_000), *[(1.0 + t, 500) for t in (0.5 * n for n in range(1, 81))]]
    assert bucket_level(charges, limit=limit, t_start=0, at=41.0) == pytest.approx(0, abs=1)


def test_percentile_is_nearest_rank() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 0.5) == 50
    assert percentile(samples, 0.95) == 95
    assert percentile(samples, 0.99) == 99
    assert percentile([], 0.5) == 0.0
