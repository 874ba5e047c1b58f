"""``loadtest emulator``: how fast the Anthropic emulator answers, and how many it holds at once.

Three phases against one emulator subprocess with no limits:
1. throughput — ``concurrency`` aiohttp clients send non-streaming messages back to back for
   ``duration`` seconds at zero latency (requests/s and client-side p50/p99);
2. streaming — the same for a third of the time with ``stream: true``;
3. hold — 300 requests at once with 500 ms simulated latency: all must complete in about one
   latency period, which shows the server never blocks while "thinking".
Finally the emulator's ledger must have billed exactly the requests that succeeded.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from argparse import ArgumentParser
from typing import Any

import aiohttp

from llm_calls.emulator.process import EmulatorProcess
from ratelimit_project.loadtest.backlog import MODEL

DEFAULT_DURATION_S = 10.0
DEFAULT_CONCURRENCY = 64
HOLD_REQUESTS = 300
HOLD_LATENCY_MS = 500
HEADERS = {"x-api-key": "loadtest-key", "anthropic-version": "2023-06-01"}


def add_arguments(parser: ArgumentParser) -> None:
    """No extra flags: use --duration, --scale (more hold requests) and --opt concurrency=N."""


def _body(number: int, *, stream: bool) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 200,
        "stream": stream,
        "messages": [
            {"role": "user", "content": f"request {number} [[emulator:output_tokens=100]]"}
        ],
    }


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _closed_loop(
    url: str, *, concurrency: int, duration_s: float, stream: bool
) -> dict[str, Any]:
    """``concurrency`` workers, each sending its next request as soon as the last one ends."""
    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + duration_s
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(worker_id: int) -> None:
            nonlocal failures
            number = 0
            while time.monotonic() < deadline:
                number += 1
                started = time.perf_counter()
                async with session.post(
                    url, json=_body(worker_id * 1_000_000 + number, stream=stream), headers=HEADERS
                ) as response:
                    await response.read()
                    if response.status == 200:
                        latencies.append((time.perf_counter() - started) * 1000)
                    else:
                        failures += 1

        started = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.monotonic() - started
    return {
        "requests": len(latencies),
        "failures": failures,
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies), 2) if latencies else 0.0,
        "p99_ms": round(_percentile(latencies, 0.99), 2),
    }


async def _hold(url: str, count: int) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(number: int) -> int:
            async with session.post(
                url, json=_body(number, stream=False), headers=HEADERS
            ) as response:
                await response.read()
                return response.status

        started = time.monotonic()
        statuses = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
        elapsed = time.monotonic() - started
    return {"completed": sum(status == 200 for status in statuses), "elapsed_s": round(elapsed, 3)}


def run(options: dict[str, Any]) -> dict[str, Any]:
    duration_s = float(options.get("duration") or DEFAULT_DURATION_S)
    extra = options.get("extra") or {}
    concurrency = int(extra.get("concurrency", DEFAULT_CONCURRENCY))
    hold_requests = int(HOLD_REQUESTS * float(options.get("scale") or 1.0))
    with EmulatorProcess(
        rpm=0,
        itpm=0,
        otpm=0,
        latency_ms=0,
        seed=1,
        chars_per_token=float(options.get("chars_per_token") or 4.0),
    ) as emulator:
        url = emulator.url("/v1/messages")
        plain = asyncio.run(
            _closed_loop(url, concurrency=concurrency, duration_s=duration_s, stream=False)
        )
        streamed = asyncio.run(
            _closed_loop(url, concurrency=concurrency, duration_s=duration_s / 3, stream=True)
        )
        emulator.configure(latency_ms=HOLD_LATENCY_MS)
        held = asyncio.run(_hold(url, hold_requests))
        billed = emulator.ledger()["totals"]["requests"]
    succeeded = plain["requests"] + streamed["requests"] + held["completed"]
    return {
        "scenario": "emulator",
        "concurrency": concurrency,
        "duration_s": duration_s,
        "requests_per_s": plain["requests_per_s"],
        "p50_ms": plain["p50_ms"],
        "p99_ms": plain["p99_ms"],
        "requests": plain["requests"],
        "failures": plain["failures"] + streamed["failures"],
        "stream_requests_per_s": streamed["requests_per_s"],
        "stream_p50_ms": streamed["p50_ms"],
        "stream_p99_ms": streamed["p99_ms"],
        "hold_requests": hold_requests,
        "hold_latency_ms": HOLD_LATENCY_MS,
        "held_concurrent_with_latency": held["completed"],
        "hold_elapsed_s": held["elapsed_s"],
        "ledger_billed": billed,
        "ledger_matches": billed == succeeded,
    }
