"""Queue and limiter gauges for ``/metrics``: the staff queue page's numbers, at scrape time.

Read from Redis (scheduler depth, limiter buckets, 429s) and the database (requests by status)
on every scrape, like ``usage.metrics``: worker processes are separate, so nothing is counted in
this process's memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from queueing.overview import queue_overview
from usage.metrics import PREFIX, register_collector

REDIS_UP = f"{PREFIX}_redis_up"
REDIS_UP_HELP = "1 when the queue's Redis answered this scrape; the queue gauges need it."


class QueueCollector(Collector):
    def describe(self) -> list[Any]:
        return []  # collecting reads Redis and the database: never at registration

    def collect(self) -> Iterator[Metric]:
        try:
            overview = queue_overview()
        except redis.RedisError:
            # A scrape during an outage still answers, and says so: alert on redis_up == 0.
            yield GaugeMetricFamily(REDIS_UP, REDIS_UP_HELP, value=0)
            return
        yield GaugeMetricFamily(REDIS_UP, REDIS_UP_HELP, value=1)
        by_status = GaugeMetricFamily(
            f"{PREFIX}_llm_requests", "Requests by status (all time).", labels=["status"]
        )
        for status, count in sorted(overview["counts"].items()):
            by_status.add_metric([status], count)
        yield by_status
        yield GaugeMetricFamily(
            f"{PREFIX}_in_flight",
            "Requests dispatched or running now.",
            value=overview["in_flight"],
        )
        depth = GaugeMetricFamily(
            f"{PREFIX}_queue_depth_requests",
            "Queued requests per priority class.",
            labels=["priority"],
        )
        depth_tokens = GaugeMetricFamily(
            f"{PREFIX}_queue_depth_tokens",
            "Queued tokens (estimate) per priority class.",
            labels=["priority"],
        )
        for row in overview["classes"]:
            depth.add_metric([row["name"]], row["requests"])
            depth_tokens.add_metric([row["name"]], row["tokens"])
        yield depth
        yield depth_tokens
        user_depth = GaugeMetricFamily(
            f"{PREFIX}_queue_depth_user_requests",
            "Queued requests per user (top 50).",
            labels=["user"],
        )
        for row in overview["users"]:
            user_depth.add_metric([str(row["user"])], row["requests"])
        yield user_depth
        level = GaugeMetricFamily(
            f"{PREFIX}_limiter_level",
            "What the rate limiter holds now per bucket (may be negative).",
            labels=["model_class", "bucket"],
        )
        paused = GaugeMetricFamily(
            f"{PREFIX}_limiter_paused_seconds",
            "Seconds dispatch stays paused after a 429.",
            labels=["model_class"],
        )
        limited = CounterMetricFamily(
            f"{PREFIX}_rate_limit_errors", "429s received from Anthropic.", labels=["model_class"]
        )
        for row in overview["limiter"]:
            for bucket in ("requests", "input_tokens", "output_tokens"):
                if row[bucket] is not None:
                    level.add_metric([row["model_class"], bucket], row[bucket])
            paused.add_metric([row["model_class"]], row["paused_s"])
            limited.add_metric([row["model_class"]], row["rate_limited"])
        yield from (level, paused, limited)


COLLECTOR = QueueCollector()
register_collector(COLLECTOR)
