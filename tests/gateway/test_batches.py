"""Message Batches through the gateway's endpoint, with the official Python SDK.

The items become requests on the gateway's own batch route (half price, like Anthropic's
batches), so the SDK's whole batch workflow — create, retrieve, list, results, cancel, delete —
works unchanged and every item is billed and tracked like any call.
"""

from __future__ import annotations

import time
from typing import Any

import anthropic
import httpx
import pytest

from gateway.models import MessageBatch
from queueing.auth import api_token_create
from queueing.models import LLMRequest, Quota
from tests.gateway.conftest import MODEL, Served
from tests.usage.factories import make_user
from usage.models import AuditLog


def item(custom_id: str, text: str = "Classify this ticket.", **params: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "params": {
            "model": MODEL,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": text}],
            **params,
        },
    }


@pytest.fixture
def quick_batches(settings: Any) -> None:
    settings.BATCH_MAX_WAIT_S = 0
    settings.BATCH_POLL_INTERVAL_S = 0


def wait_ended(client: anthropic.Anthropic, batch_id: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended" or time.monotonic() > deadline:
            return batch
        time.sleep(0.2)


def test_a_batch_runs_on_the_batch_route_at_half_price_and_its_results_come_back(
    served: Served, quick_batches: None
) -> None:
    served.emulator.configure(batch_latency_ms=50)
    client = served.sdk()
    created = client.messages.batches.create(
        requests=[item("ticket-1"), item("ticket-2", "Summarise this ticket.")]  # type: ignore[list-item]
    )
    assert created.id.startswith("msgbatch_") and created.type == "message_batch"
    assert created.processing_status == "in_progress"
    assert created.request_counts.processing == 2

    ended = wait_ended(client, created.id)
    assert ended.processing_status == "ended", ended
    assert ended.request_counts.succeeded == 2 and ended.results_url

    results = {line.custom_id: line.result for line in client.messages.batches.results(created.id)}
    assert set(results) == {"ticket-1", "ticket-2"}
    rows = {
        row.gateway_batch_item.custom_id: row
        for row in LLMRequest.objects.filter(user=served.user).select_related("gateway_batch_item")
    }
    for custom_id, result in results.items():
        assert result.type == "succeeded"
        row = rows[custom_id]
        assert row.use_batch and row.api_token_id == served.token.pk
        assert row.result is not None and result.message.id == row.result["message_id"]
        assert result.message.usage.service_tier == "batch"
        billed = AuditLog.objects.get(llm_request=row)
        assert billed.service_tier == AuditLog.ServiceTier.BATCH and billed.cost_usd > 0


def test_listing_is_newest_first_and_pages_like_the_api(served: Served) -> None:
    client = served.sdk()
    made = [client.messages.batches.create(requests=[item(f"c{n}")]).id for n in range(3)]  # type: ignore[list-item]

    page = client.messages.batches.list(limit=2)
    assert [batch.id for batch in page.data] == [made[2], made[1]] and page.has_more
    assert [batch.id for batch in client.messages.batches.list()] == made[::-1]
    older = client.messages.batches.list(limit=2, after_id=made[1])
    assert [batch.id for batch in older.data] == [made[0]] and not older.has_more
    newer = client.messages.batches.list(limit=1, before_id=made[0])
    assert [batch.id for batch in newer.data] == [made[1]] and newer.has_more


def test_cancel_ends_a_waiting_batch_its_items_canceled_and_then_it_can_be_deleted(
    held: Served,
) -> None:
    client = held.sdk()
    batch = client.messages.batches.create(requests=[item("a"), item("b")])  # type: ignore[list-item]
    with pytest.raises(anthropic.BadRequestError, match="still being processed"):
        client.messages.batches.delete(batch.id)

    canceled = client.messages.batches.cancel(batch.id)
    assert canceled.processing_status == "ended"
    assert canceled.request_counts.canceled == 2 and canceled.cancel_initiated_at is not None
    assert [line.result.type for line in client.messages.batches.results(batch.id)] == [
        "canceled",
        "canceled",
    ]
    assert set(LLMRequest.objects.values_list("status", flat=True)) == {"cancelled"}

    assert client.messages.batches.delete(batch.id).type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)
    assert LLMRequest.objects.count() == 2  # the requests stay: they are the record


def test_results_before_the_end_are_refused_clearly(held: Served) -> None:
    client = held.sdk()
    batch = client.messages.batches.create(requests=[item("a")])  # type: ignore[list-item]
    reply = httpx.get(
        f"{held.url}/v1/messages/batches/{batch.id}/results", headers={"x-api-key": held.key}
    )
    assert reply.status_code == 400
    assert "still being processed" in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    ("requests", "named"),
    [
        ([], "requests"),
        ([item("same"), item("same")], "requests.1.custom_id: duplicate"),
        ([item("ok"), item("bad id!")], "requests.1.custom_id"),
        ([item("ok"), item("big", max_tokens=10**9)], "requests.1.params.max_tokens"),
        ([item("ok"), {"custom_id": "x"}], "requests.1"),
        ([item("s", stream=True)], "requests.0.params.stream"),
    ],
)
def test_a_bad_item_refuses_the_whole_batch_naming_it_and_nothing_is_made(
    held: Served, requests: list[Any], named: str
) -> None:
    reply = httpx.post(
        f"{held.url}/v1/messages/batches",
        headers={"x-api-key": held.key},
        json={"requests": requests},
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert named in reply.json()["error"]["message"]
    assert not MessageBatch.objects.exists() and not LLMRequest.objects.exists()


def test_someone_elses_batch_is_not_found(held: Served) -> None:
    batch = held.sdk().messages.batches.create(requests=[item("mine")])  # type: ignore[list-item]
    _, other_key = api_token_create(user=make_user("mallory"), name="mallory")
    other = held.sdk(api_key=other_key)
    with pytest.raises(anthropic.NotFoundError):
        other.messages.batches.retrieve(batch.id)
    with pytest.raises(anthropic.NotFoundError):
        other.messages.batches.cancel(batch.id)
    assert other.messages.batches.list().data == []
    assert LLMRequest.objects.get().status == "queued"


def test_items_a_quota_refuses_are_errored_results_that_say_why(held: Served) -> None:
    Quota.objects.create(user=held.user, tokens_per_day=10)
    client = held.sdk()
    batch = client.messages.batches.create(requests=[item("a"), item("b")])  # type: ignore[list-item]

    assert batch.processing_status == "ended" and batch.request_counts.errored == 2
    for line in client.messages.batches.results(batch.id):
        assert line.result.type == "errored"
        assert line.result.error.error.type == "invalid_request_error"
        assert "quota" in line.result.error.error.message.lower()
    assert set(LLMRequest.objects.values_list("status", flat=True)) == {"rejected"}
    assert held.emulator.log() == []


def test_a_retried_create_with_the_same_idempotency_key_makes_no_second_batch(
    held: Served,
) -> None:
    client = held.sdk()
    headers = {"Idempotency-Key": "nightly-2026-12-04"}
    first = client.messages.batches.create(requests=[item("a")], extra_headers=headers)  # type: ignore[list-item]
    again = client.messages.batches.create(requests=[item("a")], extra_headers=headers)  # type: ignore[list-item]
    assert again.id == first.id
    assert MessageBatch.objects.count() == 1 and LLMRequest.objects.count() == 1
    with pytest.raises(anthropic.BadRequestError, match="Idempotency-Key"):
        client.messages.batches.create(requests=[item("b")], extra_headers=headers)  # type: ignore[list-item]
    assert LLMRequest.objects.count() == 1
