"""What the benchmarks rely on: the emulator's in-flight gauge and the benchmark-only naive client."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from llm_calls.client import naive_client
from llm_calls.emulator.process import EmulatorProcess

from .emulator_support import MODEL, VERSION, body


async def _concurrent(url: str, count: int) -> list[int]:
    headers = {"x-api-key": "k", "anthropic-version": VERSION}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> int:
            async with session.post(url, json=body(), headers=headers) as response:
                await response.read()
                return response.status

        return await asyncio.gather(*(one() for _ in range(count)))


def test_stats_report_how_many_calls_were_in_flight_at_once(emulator: EmulatorProcess) -> None:
    assert emulator.stats() == {"in_flight": 0, "max_in_flight": 0, "messages_total": 0}
    emulator.configure(latency_ms=400)

    statuses = asyncio.run(_concurrent(emulator.url("/v1/messages"), 40))

    assert statuses == [200] * 40
    assert emulator.stats() == {"in_flight": 0, "max_in_flight": 40, "messages_total": 40}
    emulator.reset()
    assert emulator.stats() == {"in_flight": 0, "max_in_flight": 0, "messages_total": 0}


def test_naive_client_retries_like_the_plain_sdk(emulator: EmulatorProcess) -> None:
    emulator.configure(script=[{"status": 529}])
    client = naive_client(base_url=emulator.base_url, api_key="sk-ant-naive")

    message = client.messages.create(
        model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    )

    assert message.content
    statuses = [entry["status"] for entry in emulator.log()]
    assert statuses == [529, 200]  # the SDK's own default retry, nothing of ours


def test_naive_client_without_retries_surfaces_the_first_error(emulator: EmulatorProcess) -> None:
    emulator.configure(script=[{"status": 529}])
    client = naive_client(base_url=emulator.base_url, api_key="sk-ant-naive", max_retries=0)

    with pytest.raises(Exception) as failure:
        client.messages.create(
            model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "hi"}]
        )

    assert getattr(failure.value, "status_code", None) == 529
    assert len(emulator.log()) == 1


def test_naive_client_refuses_a_negative_retry_count() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        naive_client(base_url="http://127.0.0.1:9", api_key="k", max_retries=-1)
