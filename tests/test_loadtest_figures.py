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


# --- eta: the headline is the worst workload; targets per workload; the burst pattern -------


def test_eta_headline_is_the_worst_workload_and_a_workload_without_figures_is_worst() -> None:
    from ratelimit_project.loadtest.eta import worst_of

    plain = {"median_abs_pct_error": 4.0, "p90_abs_pct_error": 60.0}
    cached = {"median_abs_pct_error": 40.0, "p90_abs_pct_error": 35.0}
    headline = worst_of({"plain": plain, "cached": cached})
    assert headline["median_abs_pct_error"] == 40.0
    assert headline["p90_abs_pct_error"] == 60.0
    assert headline["worst_workload"] == {
        "median_abs_pct_error": "cached",
        "p90_abs_pct_error": "plain",
    }
    # Nothing scored (None) cannot hide behind a good workload.
    unscored = {"median_abs_pct_error": None, "p90_abs_pct_error": None}
    headline = worst_of({"plain": plain, "cached": unscored})
    assert headline["median_abs_pct_error"] is None
    assert headline["worst_workload"]["p90_abs_pct_error"] == "cached"
    assert worst_of({"plain": plain})["p90_abs_pct_error"] == 60.0


@pytest.mark.parametrize(
    ("median", "p90", "met"),
    [(25.0, 50.0, (True, True)), (25.1, 10.0, (False, True)), (3.0, 50.5, (True, False))],
)
def test_eta_targets_are_judged_per_figure(median: float, p90: float, met: tuple) -> None:
    from ratelimit_project.loadtest.eta import targets_met

    result = targets_met({"median_abs_pct_error": median, "p90_abs_pct_error": p90})
    assert (result["median_abs_pct_error"], result["p90_abs_pct_error"]) == met
    assert targets_met({"median_abs_pct_error": None, "p90_abs_pct_error": None}) == {
        "median_abs_pct_error": False,
        "p90_abs_pct_error": False,
    }


def test_eta_score_counts_short_waits_apart_and_unpredicted_ones_as_missing() -> None:
    from ratelimit_project.loadtest import backlog
    from ratelimit_project.loadtest.eta import _score

    def outcome(predicted: float | None, actual: float | None) -> backlog.Outcome:
        item = backlog.Submitted(1, "u", "query", 0.0, 100, 0, predicted, predicted)
        dispatched = None if actual is None else 100.0 + actual
        return backlog.Outcome(item, "succeeded", 100.0, dispatched, 0)

    outcomes = [outcome(10, 10), outcome(15, 10), outcome(5, 10), outcome(0.1, 0.2)]
    outcomes += [outcome(None, 3), outcome(4, None)]
    scored = _score(outcomes, floor=0.5, predicted=lambda o: o.item.predicted_wait_s)
    assert scored["requests_scored"] == 3
    assert scored["median_abs_pct_error"] == 50.0
    assert scored["excluded_count"] == 1
    assert scored["not_dispatched_or_unpredicted"] == 2


def test_eta_cached_arrivals_open_with_a_rush_then_alternate_bursts_and_pauses() -> None:
    from ratelimit_project.loadtest.eta import burst_load, cached_config

    cfg = cached_config({}, {})
    loads = [burst_load(t, cfg) for t in (0, 39.9, 40, 49.9, 50, 59.9, 60, 119.9)]
    assert loads == [2.5, 2.5, 1.8, 1.8, 0.2, 0.2, 1.8, 0.2]
    assert burst_load(cfg["duration_s"], cfg) == cfg["tail_load"] == 0.0
    # The demo's arithmetic: over the window, 1.5x what the RPM limit allows.
    assert cfg["mean_load"] == pytest.approx(1.5, abs=0.01)


def test_eta_opts_go_to_every_workload_that_has_them_or_to_the_one_named() -> None:
    from ratelimit_project.loadtest.eta import split_opts

    both = ("plain", "cached")
    assert split_opts({"users": "3", "cached.threads": "8"}, both) == {
        "plain": {"users": "3"},
        "cached": {"users": "3", "threads": "8"},
    }
    assert split_opts({"load": "1.1"}, both) == {"plain": {"load": "1.1"}, "cached": {}}
    with pytest.raises(ValueError, match="high_load"):
        split_opts({"high_load": "3"}, ("plain",))
    with pytest.raises(ValueError, match="nonsense"):
        split_opts({"cached.nonsense": "1"}, both)
