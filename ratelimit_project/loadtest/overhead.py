"""``loadtest overhead``: what the gateway adds to one call, when nothing is waiting on limits.

A zero-latency emulator without limits, the gateway configured without limits, one worker host
running (``llm_worker``), and sequential calls from this process. Each round makes the three
calls back to back, so all three see the same machine noise:

- direct: a bare SDK call (``llm_calls.client.naive_client`` with ``max_retries=0``);
- sync: ``queueing.services.call_claude`` (validation, quota, limiter, cache planner, retry
  policy, tracking — no queue);
- queued: ``submit_request`` → ``wait_for_result`` end to end (scheduler, dispatcher, RQ, a
  worker thread, tracking, the done notification).

``sync_added_p50_ms`` = p50(sync) − p50(direct); ``queued_added_p50_ms`` / ``_p99_ms`` =
p50 / p99 of (queued) − p50(direct). ``tracking_p50_ms``: ``usage.services.record_call`` alone
(the audit row and its rollups in one transaction), timed in this process over ``tracking``
calls. ``--scale`` multiplies the number of rounds; ``--opt rounds=N tracking=N threads=N``.
"""

from __future__ import annotations

import time
from argparse import ArgumentParser
from collections import defaultdict
from typing import Any

from django.db import close_old_connections
from django.utils import timezone

from llm_calls.client import naive_client
from llm_calls.types import Usage
from queueing import services
from queueing.models import LLMRequest
from ratelimit_project.loadtest.backlog import MODEL, MODEL_CLASS
from ratelimit_project.loadtest.stack import Stack, make_users, percentile, quiet_http_logs
from usage import services as usage_services
from usage.models import AuditLog

# The AOF policy of the embedded Redis (the default deployment), not the test default "always".
REDIS_APPENDFSYNC = "everysec"
UNLIMITED = {"rpm": 0, "itpm": 0, "otpm": 0}
DEFAULTS = {"rounds": 200, "tracking": 1000, "threads": 8, "warmup": 10}
TARGET_TRACKING_P50_MS = 2.0


def add_arguments(parser: ArgumentParser) -> None:
    """No flags of its own: --scale and --opt k=v (see module doc)."""


def _messages(label: str, number: int) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": f"{label} call {number}: one short question. [[emulator:output_tokens=20]]",
        }
    ]


def _ms_since(began: float) -> float:
    return (time.perf_counter() - began) * 1000


def time_calls(
    *, rounds: int, warmup: int, base_url: str, api_key: str, user: Any
) -> dict[str, list[float]]:
    """Interleaved rounds of direct / sync / queued calls; returns milliseconds per kind."""
    client = naive_client(base_url=base_url, api_key=api_key, max_retries=0)
    samples: dict[str, list[float]] = defaultdict(list)
    try:
        for number in range(warmup + rounds):
            keep = number >= warmup  # the first rounds warm connections, caches and code paths
            began = time.perf_counter()
            client.messages.create(
                model=MODEL,
                max_tokens=64,
                messages=_messages("direct", number),  # type: ignore[arg-type]
            )
            direct_ms = _ms_since(began)

            began = time.perf_counter()
            services.call_claude(
                user=user,
                session_id="overhead-sync",
                model=MODEL,
                messages=_messages("sync", number),
                max_tokens=64,
            )
            sync_ms = _ms_since(began)

            began = time.perf_counter()
            row = services.submit_request(
                user=user,
                session_id="overhead-queued",
                model=MODEL,
                messages=_messages("queued", number),
                max_tokens=64,
            )
            done = services.wait_for_result(request_id=row.pk, timeout_s=30)
            queued_ms = _ms_since(began)
            returned_at = timezone.now()
            if done.status != LLMRequest.Status.SUCCEEDED:
                raise RuntimeError(
                    f"queued request {row.pk} ended {done.status}: {done.error_message}"
                )
            if keep:
                samples["direct"].append(direct_ms)
                samples["sync"].append(sync_ms)
                samples["queued"].append(queued_ms)
                created, dispatched = done.created_at, done.dispatched_at
                started, finished = done.started_at, done.finished_at
                if dispatched and started and finished:
                    for stage, later, earlier in (
                        ("queued_stage_submit_to_dispatch", dispatched, created),
                        ("queued_stage_dispatch_to_start", started, dispatched),
                        ("queued_stage_start_to_finish", finished, started),
                        ("queued_stage_finish_to_caller", returned_at, finished),
                    ):
                        samples[stage].append((later - earlier).total_seconds() * 1000)
    finally:
        client.close()
        close_old_connections()
    return samples


def time_tracking(*, calls: int, user: Any) -> list[float]:
    """``record_call`` alone: one audit row and its four rollups per call, as a worker writes
    them after a response (sessions of 10 calls, so some calls create a session row)."""
    usage = Usage(input_tokens=1200, output_tokens=300, cache_read_input_tokens=4000)
    organization = getattr(getattr(user, "membership", None), "organization_id", None)
    samples: list[float] = []
    for number in range(calls):
        began = time.perf_counter()
        usage_services.record_call(
            user=user,
            organization=organization,
            session_id=f"tracking-{number // 10}",
            model=MODEL,
            priority="query",
            outcome=AuditLog.Outcome.SUCCESS,
            attempts=1,
            final_status=200,
            error_type="",
            usage=usage,
            latency_ms=850,
            queue_wait_ms=120,
            request_id=f"req_tracking_{number}",
            client_request_id=f"tracking-{number}",
        )
        samples.append(_ms_since(began))
    return samples


def _summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(samples, 0.5), 3),
        "p90_ms": round(percentile(samples, 0.9), 3),
        "p99_ms": round(percentile(samples, 0.99), 3),
        "n": len(samples),
    }


def run(options: dict[str, Any]) -> dict[str, Any]:
    extra = options.get("extra") or {}
    unknown = set(extra) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown --opt {sorted(unknown)}; known: {', '.join(sorted(DEFAULTS))}")
    cfg = {key: int(extra.get(key, default)) for key, default in DEFAULTS.items()}
    scale = float(options.get("scale") or 1.0)
    rounds = max(10, int(cfg["rounds"] * scale))
    tracking_calls = max(10, int(cfg["tracking"] * scale))
    with (
        quiet_http_logs(),
        Stack(
            emulator={
                **UNLIMITED,
                "latency_ms": 0,
                "seed": 1,
                "chars_per_token": float(options.get("chars_per_token") or 4.0),
            },
            rate_limits={MODEL_CLASS: UNLIMITED},
            redis_appendfsync=REDIS_APPENDFSYNC,
            debug=False,  # production settings: DEBUG off
        ) as stack,
    ):
        (user,) = make_users(count=1, prefix="overhead")
        stack.start_worker(threads=cfg["threads"])
        stack.wait_for_workers(threads=cfg["threads"])
        calls = time_calls(
            rounds=rounds,
            warmup=cfg["warmup"],
            base_url=stack.emulator.base_url,
            api_key="sk-ant-bench-direct",
            user=user,
        )
        stack.stop_workers()
        tracking = time_tracking(calls=tracking_calls, user=user)
        rate_limited = sum(1 for e in stack.emulator.log() if e["status"] == 429)

    direct_p50 = percentile(calls["direct"], 0.5)
    tracking_p50 = percentile(tracking, 0.5)
    return {
        "scenario": "overhead",
        "model": MODEL,
        "rounds": rounds,
        "worker_threads": cfg["threads"],
        "direct_p50_ms": round(direct_p50, 3),
        "sync_added_p50_ms": round(percentile(calls["sync"], 0.5) - direct_p50, 3),
        "queued_added_p50_ms": round(percentile(calls["queued"], 0.5) - direct_p50, 3),
        "queued_added_p99_ms": round(percentile(calls["queued"], 0.99) - direct_p50, 3),
        "tracking_p50_ms": round(tracking_p50, 3),
        "tracking_p99_ms": round(percentile(tracking, 0.99), 3),
        "calls": {kind: _summary(values) for kind, values in calls.items()},
        "tracking": _summary(tracking),
        "rate_limit_errors": rate_limited,
        "database": "sqlite (WAL)" if "sqlite" in _db_engine() else _db_engine(),
        "targets": {"tracking_p50_ms_max": TARGET_TRACKING_P50_MS},
        "targets_met": {"tracking": tracking_p50 < TARGET_TRACKING_P50_MS},
    }


def _db_engine() -> str:
    from django.db import connection

    return str(connection.vendor)
