"""Message Batches end to end through the official SDK."""

from __future__ import annotations

import time
from typing import Any

# Tests prove the emulator against the unmodified official SDK, so they import it directly.
import anthropic  # noqa: TID251
import pytest

from llm_calls.emulator.process import EmulatorProcess

from .emulator_support import MODEL, raw_call, sdk, user


def _params(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 40, "messages": user(text), **extra}


def _wait_until_ended(client: anthropic.Anthropic, batch_id: str) -> Any:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not end")


def test_batch_runs_bills_at_batch_tier_and_reports_errored_requests(
    emulator: EmulatorProcess,
) -> None:
    emulator.configure(batch_latency_ms=200)
    client = sdk(emulator)
    batch = client.messages.batches.create(
        requests=[
            {"custom_id": "ok-1", "params": _params("one [[emulator:output_tokens=7]]")},  # type: ignore[typeddict-item]
            {"custom_id": "ok-2", "params": _params("two [[emulator:output_tokens=9]]")},  # type: ignore[typeddict-item]
            {"custom_id": "bad", "params": {"model": MODEL, "max_tokens": 5, "messages": []}},  # type: ignore[typeddict-item]
        ]
    )
    assert batch.id.startswith("msgbatch_")
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 3
    assert batch.results_url is None
    assert (batch.expires_at - batch.created_at).total_seconds() == 24 * 3600

    ended = _wait_until_ended(client, batch.id)
    assert ended.request_counts.succeeded == 2 and ended.request_counts.errored == 1
    assert ended.results_url is not None and ended.results_url.startswith(emulator.base_url)
    assert ended.ended_at is not None

    results = {item.custom_id: item.result for item in client.messages.batches.results(batch.id)}
    assert results["ok-1"].type == "succeeded"
    assert results["ok-1"].message.usage.output_tokens == 7  # type: ignore[union-attr]
    assert results["ok-1"].message.usage.service_tier == "batch"  # type: ignore[union-attr]
    assert results["bad"].type == "errored"
    assert results["bad"].error.error.type == "invalid_request_error"  # type: ignore[union-attr]

    ledger = emulator.ledger()
    assert ledger["totals"]["requests"] == 2
    assert ledger["totals"]["output_tokens"] == 16
    (account,) = ledger["keys"].values()
    assert {row["service_tier"] for row in account["requests"]} == {"batch"}
    assert {row["batch_id"] for row in account["requests"]} == {batch.id}


def test_cancel_ends_the_batch_with_canceled_requests(emulator: EmulatorProcess) -> None:
    emulator.configure(batch_latency_ms=60_000)
    client = sdk(emulator)
    batch = client.messages.batches.create(
        requests=[{"custom_id": f"r{i}", "params": _params("x")} for i in range(3)]  # type: ignore[typeddict-item]
    )
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    ended = _wait_until_ended(client, batch.id)
    assert ended.request_counts.canceled == 3
    assert {item.result.type for item in client.messages.batches.results(batch.id)} == {"canceled"}
    assert emulator.ledger()["totals"]["requests"] == 0


def test_list_pages_newest_first_with_the_sdk_paginator(emulator: EmulatorProcess) -> None:
    emulator.configure(batch_latency_ms=60_000)
    client = sdk(emulator)
    created = [
        client.messages.batches.create(requests=[{"custom_id": "a", "params": _params("x")}]).id  # type: ignore[typeddict-item]
        for _ in range(5)
    ]
    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == created[::-1][:2]
    assert page.has_more is True
    assert [b.id for b in client.messages.batches.list(limit=2)] == created[::-1], "auto-paging"
    raw = raw_call(
        emulator, f"/v1/messages/batches?limit=2&before_id={created[1]}", method="GET"
    ).json
    assert [b["id"] for b in raw["data"]] == [created[3], created[2]]
    assert raw["first_id"] == created[3] and raw["last_id"] == created[2]
    other_key = sdk(emulator, key="another-org")
    assert list(other_key.messages.batches.list()) == [], "batches belong to the key that made them"


def test_delete_needs_an_ended_batch(emulator: EmulatorProcess) -> None:
    emulator.configure(batch_latency_ms=100)
    client = sdk(emulator)
    batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": _params("x")}])  # type: ignore[typeddict-item]
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.delete(batch.id)
    _wait_until_ended(client, batch.id)
    deleted = client.messages.batches.delete(batch.id)
    assert deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"requests": []}, "non-empty list"),
        ({"requests": [{"custom_id": "has space", "params": {}}]}, "custom_id"),
        (
            {"requests": [{"custom_id": "a", "params": {}}, {"custom_id": "a", "params": {}}]},
            "duplicate custom_id",
        ),
    ],
    ids=["empty", "bad-custom-id", "duplicate"],
)
def test_bad_batch_envelope_is_400(
    emulator: EmulatorProcess, payload: dict[str, Any], expected: str
) -> None:
    response = raw_call(emulator, "/v1/messages/batches", payload)
    assert response.status == 400
    assert expected in response.json["error"]["message"]


def test_batch_items_follow_the_same_rules_and_refuse_what_only_batches_refuse(
    emulator: EmulatorProcess,
) -> None:
    emulator.configure(batch_latency_ms=100)
    client = sdk(emulator)
    items: Any = [
        {"custom_id": "ok", "params": _params("fine [[emulator:output_tokens=4]]")},
        {"custom_id": "stream", "params": _params("x", stream=True)},
        {"custom_id": "fast", "params": _params("x", model="claude-opus-5-5", speed="fast")},
        {"custom_id": "prewarm", "params": _params("x", max_tokens=0)},
        {"custom_id": "retired", "params": _params("x", model="claude-sonnet-4-5")},
        {"custom_id": "sampling", "params": _params("x", model="claude-opus-5-5", temperature=0)},
        {
            "custom_id": "thinks",
            "params": _params(
                "[[emulator:thinking_tokens=20]] [[emulator:output_tokens=3]]",
                model="claude-opus-5-5",
            ),
        },
    ]
    batch = client.messages.batches.create(requests=items)
    ended = _wait_until_ended(client, batch.id)
    assert ended.request_counts.succeeded == 2 and ended.request_counts.errored == 5
    results = {item.custom_id: item.result for item in client.messages.batches.results(batch.id)}

    def error_of(custom_id: str) -> tuple[str, str]:
        result: Any = results[custom_id]
        assert result.type == "errored"
        return result.error.error.type, result.error.error.message

    assert error_of("stream")[0] == "invalid_request_error" and "stream" in error_of("stream")[1]
    assert "speed" in error_of("fast")[1]
    assert "max_tokens" in error_of("prewarm")[1]
    assert error_of("retired") == ("not_found_error", "model: claude-sonnet-4-5")
    assert error_of("sampling")[1] == "`temperature` is deprecated for this model."
    thinks: Any = results["thinks"]
    assert thinks.type == "succeeded"
    assert [b.type for b in thinks.message.content] == ["thinking", "text"]
    assert thinks.message.usage.output_tokens == 23
    assert thinks.message.usage.service_tier == "batch"
    ledger = emulator.ledger()
    assert ledger["totals"]["requests"] == 2
    assert ledger["totals"]["thinking_tokens"] == 20
