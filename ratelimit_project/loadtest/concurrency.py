"""``loadtest concurrency``: how many Claude calls one worker host keeps in flight, at what memory.

The emulator answers every call after 2 s and has no limits; the gateway is configured
without limits. A burst of ``requests`` (600) is submitted with ``submit_request`` while no
worker runs — they all wait in the queue at once — then ONE worker host is started with the
documented command (``python manage.py llm_worker --threads T [--processes P]``) and drains it.

- ``max_in_flight``: the most /v1/messages requests the emulator was handling at the same
  moment (its own gauge, ``GET /_emulator/stats``); ``max_running_rows`` is the same seen from
  the database (rows in ``running``, sampled every 0.2 s).
- ``mean_in_flight``: the same gauge averaged from the first call to the last: what the host
  sustained while draining the burst. With 2 s calls this is bounded by CPU (each request
  costs the host milliseconds of dispatching, bookkeeping and recording), not by threads; the
  ``hold_check`` re-run with 10 s calls shows the same host holding all its threads busy.
- ``worker_rss_mb``: resident memory of the worker host, all its processes together, the
  highest value sampled during the burst.
- ``requests_per_s``: requests finished ÷ (last finish − first dispatch).

``hold_check`` re-runs the first variant with 10 s calls and a burst of 512 (two full waves of
256): with calls that long the CPU per second is low enough for every thread to be busy at once.

Each configuration in ``variants`` (``PxT[:engine]`` = P processes of T calls in flight each,
with the default engine or the one named; default ``1x256,1x256:threads,1x1000``: the event-loop
host, the thread host beside it, and the loop with room for 1,000) gets its own fresh burst
against the same stack, one after the other; the top-level figures are those of the first
variant (the recommended command), the others are under ``variants``.
``--scale`` multiplies the burst; ``--opt requests=N latency_ms=N variants=1x256,1x256:threads
hold_latency_ms=N hold_requests=N`` (``hold_latency_ms=0`` skips the hold check).
"""

from __future__ import annotations

import threading
import time
from argparse import ArgumentParser
from typing import Any

from llm_calls.emulator.process import EmulatorProcess
from queueing import services
from queueing.conf import WORKER_ENGINES
from queueing.dispatcher import llm_queue
from queueing.models import LLMRequest
from ratelimit_project.loadtest.backlog import MODEL, MODEL_CLASS
from ratelimit_project.loadtest.stack import Stack, cpu_s, make_users, quiet_http_logs, rss_mb

# The AOF policy of the embedded Redis (the default deployment), not the test default "always".
REDIS_APPENDFSYNC = "everysec"
UNLIMITED = {"rpm": 0, "itpm": 0, "otpm": 0}
DEFAULTS: dict[str, str] = {
    "requests": "600",
    "latency_ms": "2000",
    "variants": "1x256,1x256:threads,1x1000",
    "hold_latency_ms": "10000",
    "hold_requests": "512",
}
TARGET_IN_FLIGHT = 256
TARGET_RSS_MB = 1024.0
TARGET_CPU_MS_PER_REQUEST = 4.0
SAMPLE_EVERY_S = 0.2


def add_arguments(parser: ArgumentParser) -> None:
    """No flags of its own: --scale and --opt k=v (see module doc)."""


def parse_variants(raw: str) -> list[tuple[int, int, str | None]]:
    """``"1x256,1x256:threads"`` → ``[(1, 256, None), (1, 256, "threads")]`` (processes, calls
    in flight per process, and the engine when one is named: the default's otherwise)."""
    variants = []
    for part in raw.split(","):
        shape, _, engine = part.strip().lower().partition(":")
        try:
            processes, threads = (int(n) for n in shape.split("x"))
        except ValueError:
            raise ValueError(
                f"variants: {part!r} is not PxT[:engine] (processes x calls), e.g. 1x256"
            ) from None
        if processes < 1 or threads < 1:
            raise ValueError(f"variants: {part!r} needs at least 1 process and 1 thread")
        if engine and engine not in WORKER_ENGINES:
            raise ValueError(f"variants: engine {engine!r} is not one of {WORKER_ENGINES}")
        variants.append((processes, threads, engine or None))
    return variants


def submit_burst(*, count: int, users: list[Any], tag: str) -> tuple[list[int], float]:
    """Queue ``count`` requests; returns their ids and how many were submitted per second."""
    began = time.perf_counter()
    ids = []
    for number in range(count):
        row = services.submit_request(
            user=users[number % len(users)],
            session_id=f"{tag}-{number % 50}",
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": f"{tag} burst request {number}. [[emulator:output_tokens=50]]",
                }
            ],
            max_tokens=100,
        )
        ids.append(row.pk)
    return ids, count / (time.perf_counter() - began)


class Sampler(threading.Thread):
    """Every 0.2 s: the emulator's in-flight gauge, running rows and the worker host's RSS."""

    def __init__(self, *, emulator: EmulatorProcess, pids: list[int], ids: list[int]) -> None:
        super().__init__(name="concurrency-sampler", daemon=True)
        self.emulator = emulator
        self.pids = pids
        self.ids = ids
        self.stop = threading.Event()
        self.max_rss_mb = 0.0
        self.max_running = 0
        self.max_in_flight_sampled = 0
        self.in_flight_samples: list[int] = []
        self.rq_queue_lengths: list[int] = []

    def run(self) -> None:
        from django.db import close_old_connections

        try:
            while not self.stop.wait(SAMPLE_EVERY_S):
                self.max_rss_mb = max(self.max_rss_mb, rss_mb(self.pids))
                in_flight = int(self.emulator.stats()["in_flight"])
                self.max_in_flight_sampled = max(self.max_in_flight_sampled, in_flight)
                self.in_flight_samples.append(in_flight)
                running = LLMRequest.objects.filter(
                    pk__in=self.ids, status=LLMRequest.Status.RUNNING
                ).count()
                self.max_running = max(self.max_running, running)
                # Jobs released by the dispatcher that no thread has taken yet: near 0 means
                # threads wait for the dispatcher; near the backlog cap, the dispatcher waits.
                self.rq_queue_lengths.append(llm_queue().count)
        finally:
            close_old_connections()


def _mean_while_busy(samples: list[int]) -> float:
    """Mean in-flight gauge from the first call to the last (the host's boot and the idle tail
    after the burst drained are left out): what the host sustained, where the peak is
    ``max_in_flight``."""
    busy = [i for i, value in enumerate(samples) if value > 0]
    if not busy:
        return 0.0
    window = samples[busy[0] : busy[-1] + 1]
    return round(sum(window) / len(window), 1)


def run_variant(
    stack: Stack,
    *,
    processes: int,
    threads: int,
    engine: str | None,
    count: int,
    users: list[Any],
    timeout_s: float,
    latency_ms: float,
) -> dict[str, Any]:
    tag = f"p{processes}t{threads}l{latency_ms:g}{engine or ''}"
    ids, submit_rate = submit_burst(count=count, users=users, tag=tag)
    stack.emulator.reset()  # zero the in-flight maximum; nothing is in flight yet
    stack.emulator.configure(latency_ms=latency_ms)
    started = time.monotonic()
    host = stack.start_worker(threads=threads, processes=processes, engine=engine)
    sampler = Sampler(emulator=stack.emulator, pids=[host.pid], ids=ids)
    sampler.start()
    deadline = started + timeout_s
    terminal = LLMRequest.TERMINAL
    while LLMRequest.objects.filter(pk__in=ids).exclude(status__in=terminal).exists():
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    sampler.stop.set()
    sampler.join()
    stats = stack.emulator.stats()
    idle_rss = rss_mb([host.pid])
    worker_cpu = cpu_s([host.pid])
    stack.stop_workers()
    rows = list(
        LLMRequest.objects.filter(pk__in=ids).values("status", "dispatched_at", "finished_at")
    )
    done = [r for r in rows if r["status"] == LLMRequest.Status.SUCCEEDED]
    first = min((r["dispatched_at"] for r in done if r["dispatched_at"]), default=None)
    last = max((r["finished_at"] for r in done if r["finished_at"]), default=None)
    span = (last - first).total_seconds() if first and last else 0.0
    return {
        "command": f"llm_worker --threads {threads}"
        + (f" --processes {processes}" if processes > 1 else "")
        + (f" --engine {engine}" if engine else ""),
        "emulator_latency_ms": latency_ms,
        "processes": processes,
        "threads_per_process": threads,
        "requests": count,
        "succeeded": len(done),
        "not_succeeded": count - len(done),
        "max_in_flight": int(stats["max_in_flight"]),
        "max_in_flight_sampled": sampler.max_in_flight_sampled,
        "max_running_rows": sampler.max_running,
        "mean_in_flight": _mean_while_busy(sampler.in_flight_samples),
        "mean_rq_queue_length": round(
            sum(sampler.rq_queue_lengths) / max(1, len(sampler.rq_queue_lengths)), 1
        ),
        "worker_rss_mb": round(sampler.max_rss_mb, 1),
        "worker_rss_mb_after_burst": round(idle_rss, 1),
        "requests_per_s": round(len(done) / span, 1) if span else 0.0,
        "dispatch_to_done_s": round(span, 2),
        "start_to_done_s": round(elapsed, 2),
        "submit_per_s": round(submit_rate, 1),
        # Includes the host's start-up (Django setup, imports: ~2 s of CPU).
        "worker_cpu_s": round(worker_cpu, 2),
        "worker_cpu_ms_per_request": round(worker_cpu / count * 1000, 1),
        "billed": int(stats["messages_total"]),
    }


def run(options: dict[str, Any]) -> dict[str, Any]:
    extra = options.get("extra") or {}
    unknown = set(extra) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown --opt {sorted(unknown)}; known: {', '.join(sorted(DEFAULTS))}")
    cfg = {key: extra.get(key, default) for key, default in DEFAULTS.items()}
    count = max(1, int(int(cfg["requests"]) * float(options.get("scale") or 1.0)))
    latency_ms = float(cfg["latency_ms"])
    variants = parse_variants(cfg["variants"])
    hold_latency_ms = float(cfg["hold_latency_ms"])
    # Enough for the whole burst at the target concurrency, with room for a slow machine.
    timeout_s = 60.0 + count / TARGET_IN_FLIGHT * latency_ms / 1000 * 4
    results = []
    with (
        quiet_http_logs(),
        Stack(
            emulator={
                **UNLIMITED,
                "latency_ms": latency_ms,
                "seed": 1,
                "chars_per_token": float(options.get("chars_per_token") or 4.0),
            },
            rate_limits={MODEL_CLASS: UNLIMITED},
            redis_appendfsync=REDIS_APPENDFSYNC,
            debug=False,  # production settings: DEBUG off
        ) as stack,
    ):
        users = make_users(count=8, prefix="concurrency")
        for processes, threads, engine in variants:
            results.append(
                run_variant(
                    stack,
                    processes=processes,
                    threads=threads,
                    engine=engine,
                    count=count,
                    users=users,
                    timeout_s=timeout_s,
                    latency_ms=latency_ms,
                )
            )
        hold = None
        if hold_latency_ms > 0:
            processes, threads, engine = variants[0]
            hold_count = int(cfg["hold_requests"])
            hold = run_variant(
                stack,
                processes=processes,
                threads=threads,
                engine=engine,
                count=hold_count,
                users=users,
                timeout_s=60.0 + hold_count / TARGET_IN_FLIGHT * hold_latency_ms / 1000 * 4,
                latency_ms=hold_latency_ms,
            )
    chosen = results[0]
    return {
        "scenario": "concurrency",
        "model": MODEL,
        "emulator_latency_ms": latency_ms,
        "requests": count,
        "command": chosen["command"],
        "max_in_flight": chosen["max_in_flight"],
        "mean_in_flight": chosen["mean_in_flight"],
        "worker_rss_mb": chosen["worker_rss_mb"],
        "requests_per_s": chosen["requests_per_s"],
        "variants": results,
        # The same host and burst with slow calls: how many it can HOLD at once when the CPU
        # needed per second (finishing and starting calls) is lower than at 2 s latency.
        "hold_check": hold,
        "cpu_ms_per_request": chosen["worker_cpu_ms_per_request"],
        "targets": {
            "mean_in_flight_min": TARGET_IN_FLIGHT,
            "worker_rss_mb_max": TARGET_RSS_MB,
            "cpu_ms_per_request_max": TARGET_CPU_MS_PER_REQUEST,
        },
        "targets_met": {
            "sustained_in_flight": chosen["mean_in_flight"] >= TARGET_IN_FLIGHT,
            "rss": chosen["worker_rss_mb"] < TARGET_RSS_MB,
            "cpu_per_request": chosen["worker_cpu_ms_per_request"] <= TARGET_CPU_MS_PER_REQUEST,
            "all_succeeded": chosen["not_succeeded"] == 0,
        },
    }
