"""``/metrics`` in Prometheus text format, computed from the database at scrape time.

Calls are recorded by separate worker processes, so counters kept in this process's memory
would only see the web server's share. The ``UsageCollector`` therefore reads the rollup
tables on every scrape (one small GROUP BY over ``OrganizationUsageDaily``). Other apps add
their own collectors (queue depth, limiter state…) to the same registry with
``register_collector``.

Access: a staff session, or ``Authorization: Bearer <METRICS_TOKEN>`` when the
``METRICS_TOKEN`` setting is non-empty (empty disables token access). Anyone else gets 403.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from usage import selectors

PREFIX = "claude_gateway"

# auto_describe=False: registering must not run a scrape (and hit the database) at import time.
REGISTRY = CollectorRegistry(auto_describe=False)
_registered: list[Collector] = []
_lock = threading.Lock()


def register_collector(collector: Collector) -> None:
    """Add a collector to the /metrics registry (once; registering it again is a no-op).

    A collector needs ``collect() -> Iterable[Metric]``; give it ``describe()`` returning ``[]``
    if its ``collect`` touches the database, so registration stays free.
    """
    with _lock:
        if any(c is collector for c in _registered):
            return
        REGISTRY.register(collector)
        _registered.append(collector)


def unregister_collector(collector: Collector) -> None:
    with _lock:
        if any(c is collector for c in _registered):
            REGISTRY.unregister(collector)
            _registered[:] = [c for c in _registered if c is not collector]


class UsageCollector(Collector):
    """All-time counters per model, read from the rollups at scrape time.

    ``requests_total`` by outcome (``success``, ``failed``, ``response_cache_hit``), retries,
    tokens by kind, web searches, billed and uncached cost in USD, calls without a price, and
    the cache hit ratio (cache-read tokens over all input tokens) per model and overall.
    """

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        rows = selectors.lifetime_totals_by_model()
        requests = CounterMetricFamily(
            f"{PREFIX}_requests",
            "Recorded Claude requests by outcome.",
            labels=["model", "outcome"],
        )
        retries = CounterMetricFamily(
            f"{PREFIX}_retries", "Retried attempts (attempts beyond the first).", labels=["model"]
        )
        tokens = CounterMetricFamily(
            f"{PREFIX}_tokens", "Billed tokens by kind.", labels=["model", "kind"]
        )
        cost = CounterMetricFamily(
            f"{PREFIX}_cost_usd", "Billed cost in USD (exact in the database).", labels=["model"]
        )
        uncached = CounterMetricFamily(
            f"{PREFIX}_uncached_cost_usd",
            "What the same calls would have cost without prompt caching, USD.",
            labels=["model"],
        )
        searches = CounterMetricFamily(
            f"{PREFIX}_web_search_requests",
            "Web searches run by the server tool (billed per search).",
            labels=["model"],
        )
        price_missing = CounterMetricFamily(
            f"{PREFIX}_price_missing_requests",
            "Calls recorded at $0 because their model had no price on file.",
            labels=["model"],
        )
        latency = CounterMetricFamily(
            f"{PREFIX}_request_latency_seconds_sum",
            "Total end-to-end latency of recorded calls, seconds.",
            labels=["model"],
        )
        hit_ratio = GaugeMetricFamily(
            f"{PREFIX}_cache_hit_ratio",
            "Cache-read tokens / all input tokens, all time.",
            labels=["model"],
        )
        overall = selectors.Totals()
        for row in rows:
            t, model = row.totals, row.model
            overall.add(t)
            success = t.requests - t.errors - t.response_cache_hits
            requests.add_metric([model, "success"], success)
            requests.add_metric([model, "failed"], t.errors)
            requests.add_metric([model, "response_cache_hit"], t.response_cache_hits)
            retries.add_metric([model], t.retries)
            for kind, value in (
                ("input", t.input_tokens),
                ("output", t.output_tokens),
                ("cache_write_5m", t.cache_creation_5m_tokens),
                ("cache_write_1h", t.cache_creation_1h_tokens),
                ("cache_read", t.cache_read_input_tokens),
            ):
                tokens.add_metric([model, kind], value)
            cost.add_metric([model], float(t.cost_usd))
            uncached.add_metric([model], float(t.uncached_cost_usd))
            searches.add_metric([model], t.web_search_requests)
            price_missing.add_metric([model], t.price_missing)
            latency.add_metric([model], t.latency_ms_sum / 1000)
            hit_ratio.add_metric([model], t.cache_hit_rate)
        yield from (
            requests, retries, tokens, cost, uncached, searches, price_missing, latency, hit_ratio
        )  # fmt: skip
        yield GaugeMetricFamily(
            f"{PREFIX}_cache_hit_ratio_overall",
            "Cache-read tokens / all input tokens over every model, all time.",
            value=overall.cache_hit_rate,
        )


register_collector(UsageCollector())


class ReconciliationCollector(Collector):
    """The latest finished ``manage.py reconcile`` run (``usage.reconcile``), at scrape time.

    ``reconciliation_unattributed_usd``: Anthropic's price of the traffic on the gateway's key
    that did not go through it, over the run's window; ``reconciliation_alert`` is 1 when that
    exceeds ``RECONCILE_ALERT_USD`` (default $1) or the run did not match — the gauge a
    Prometheus alerting rule watches. Nothing is exported before the first run.
    """

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        from usage import reconcile  # imports the models: not at module import time

        run = reconcile.latest_run()
        if run is None:
            return
        line = run.result.get("summary") or {}
        unattributed = float((line.get("unattributed") or {}).get("cost_usd") or 0)
        yield GaugeMetricFamily(
            f"{PREFIX}_reconciliation_unattributed_usd",
            "Spend on the gateway's key that bypassed it, latest reconciliation, USD.",
            value=unattributed,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_reconciliation_price_drift_usd",
            "Anthropic's cost minus our price x tokens, latest reconciliation, USD.",
            value=float(line.get("price_drift_usd") or 0),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_reconciliation_match",
            "1 when the latest reconciliation agrees (bypassing traffic aside), else 0.",
            value=1.0 if run.match else 0.0,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_reconciliation_alert",
            "1 when unattributed spend exceeds RECONCILE_ALERT_USD or the books differ.",
            value=1.0 if unattributed > reconcile.alert_usd() or not run.match else 0.0,
        )


register_collector(ReconciliationCollector())


def _token_ok(request: HttpRequest) -> bool:
    expected = getattr(settings, "METRICS_TOKEN", "") or ""
    if not expected:
        return False
    header = request.headers.get("Authorization", "")
    scheme, _, supplied = header.partition(" ")
    if scheme.lower() != "bearer" or not supplied:
        return False
    return hmac.compare_digest(supplied.strip().encode(), expected.encode())


def metrics_view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    if not (_token_ok(request) or (request.user.is_authenticated and request.user.is_staff)):
        return HttpResponse(
            "Forbidden: /metrics needs a staff login or 'Authorization: Bearer <METRICS_TOKEN>'.\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
