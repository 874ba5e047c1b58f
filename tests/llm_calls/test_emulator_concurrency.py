"""The emulator holds hundreds of concurrent connections while simulating latency."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from llm_calls.emulator.process import EmulatorProcess

from .emulator_support import VERSION, body


async def _burst(url: str, count: int) -> list[int]:
    connector = aiohttp.TCPConnector(limit=0)
    headers = {"x-api-key": "k", "anthropic-version": VERSION}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> int:
            async with session.post(url, json=body(), headers=headers) as response:
                await response.read()
                return response.status

        return await asyncio.gather(*(one() for _ in range(count)))


def test_300_concurrent_requests_finish_in_about_one_latency_period(
    emulator: EmulatorProcess,
) -> None:
    emulator.configure(latency_ms=500)
    started = time.monotonic()
    statuses = asyncio.run(_burst(emulator.url("/v1/messages"), 300))
    elapsed = time.monotonic() - started
    assert statuses == [200] * 300
    # Served one after another this would take 150 s; concurrently it is one 0.5 s sleep plus
    # connection and JSON overhead on a small shared machine.
    assert elapsed < 3.0, f"took {elapsed:.2f}s"
    assert emulator.ledger()["totals"]["requests"] == 300
