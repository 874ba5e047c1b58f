"""The Anthropic-compatible endpoint, driven by the official Python SDK over HTTP.

An app changes its base URL and key and nothing else: every test here is code written for
Anthropic's API, and each checks what the app sees and what the gateway recorded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import MessageParam, TextBlock, ToolParam

from gateway import services as gateway_services
from queueing.auth import api_token_create
from queueing.models import ApiToken, LLMRequest, Quota
from queueing.scheduler import get_scheduler
from tests.gateway.conftest import MODEL, THINKING_MODEL, Served
from usage.models import AuditLog

HELLO: list[MessageParam] = [{"role": "user", "content": "Say hello to the gateway."}]


def wait_for(predicate, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def text_of(message: anthropic.types.Message) -> str:
    return "".join(block.text for block in message.content if isinstance(block, TextBlock))


def result_of(row: LLMRequest) -> dict[str, Any]:
    assert row.result is not None, row.status
    return row.result


def only_request(served: Served) -> LLMRequest:
    """The one request made, once recorded: a relayed stream ends at the caller a moment
    before its worker has written the row."""
    rows = list(LLMRequest.objects.filter(user=served.user))
    assert len(rows) == 1, rows
    assert wait_for(lambda: LLMRequest.objects.get(pk=rows[0].pk).is_terminal)
    return LLMRequest.objects.get(pk=rows[0].pk)


def test_an_sdk_call_is_answered_through_the_queue_and_billed_once(served: Served) -> None:
    raw = served.sdk().messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=HELLO)
    message = raw.parse()

    assert message.type == "message" and message.role == "assistant"
    assert text_of(message)
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    row = only_request(served)
    assert row.status == LLMRequest.Status.SUCCEEDED
    assert row.api_token_id == served.token.pk
    assert raw.headers["x-gateway-request-id"] == str(row.pk)
    # The app sees exactly what Anthropic answered, and the gateway billed that call once.
    upstream = served.emulator.log()
    assert [entry["path"] for entry in upstream] == ["/v1/messages"]
    assert message.id == result_of(row)["message_id"]
    assert raw.headers["request-id"] == result_of(row)["request_id"]
    billed = AuditLog.objects.get(llm_request=row)
    assert billed.output_tokens == message.usage.output_tokens
    assert billed.cost_usd > 0


def test_a_stream_gives_the_sdk_the_same_message_the_api_returned(served: Served) -> None:
    with served.sdk().messages.stream(
        model=THINKING_MODEL, max_tokens=300, messages=HELLO
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()

    row = only_request(served)
    stored = gateway_services.message_body(row)
    stored_text = "".join(b["text"] for b in stored["content"] if b["type"] == "text")
    assert "".join(pieces) == stored_text == text_of(final)
    # Every block — thinking with its signature included — arrives as the API wrote it.
    assert [b.model_dump(exclude_none=True) for b in final.content] == stored["content"]
    assert final.id == stored["id"]
    assert final.stop_reason == stored["stop_reason"]
    assert final.usage.output_tokens == stored["usage"]["output_tokens"]
    assert final.usage.input_tokens == stored["usage"]["input_tokens"]


def test_a_streamed_tool_call_arrives_whole(served: Served) -> None:
    tool: ToolParam = {
        "name": "get_weather",
        "description": "The weather in a city.",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
    with served.sdk().messages.stream(
        model=MODEL,  # forced tool use: models that think by default refuse it
        max_tokens=200,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[tool],
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        final = stream.get_final_message()

    stored = gateway_services.message_body(only_request(served))
    used = [block for block in final.content if block.type == "tool_use"]
    assert used and used[0].name == "get_weather"
    assert [b.model_dump(exclude_none=True) for b in final.content] == stored["content"]
    assert final.stop_reason == "tool_use"


def test_the_async_sdk_works_the_same(served: Served) -> None:
    async def ask() -> anthropic.types.Message:
        async with served.async_sdk() as client:
            return await client.messages.create(model=MODEL, max_tokens=32, messages=HELLO)

    message = asyncio.run(ask())
    assert text_of(message) == result_of(only_request(served))["text"]


def test_count_tokens_and_models_answer_as_the_api_does(served: Served) -> None:
    client = served.sdk()
    counted = client.messages.count_tokens(model=MODEL, messages=HELLO)
    direct = anthropic.Anthropic(api_key="sk-ant-direct", base_url=served.emulator.base_url)
    assert (
        counted.input_tokens
        == direct.messages.count_tokens(model=MODEL, messages=HELLO).input_tokens
    )

    listed = [model.id for model in client.models.list()]
    assert listed == [model.id for model in direct.models.list()]
    assert MODEL in listed
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("claude-nonexistent-9")
    assert not LLMRequest.objects.exists()  # none of these is a billed call


def test_a_key_limited_to_some_models_sees_and_uses_only_those(served: Served) -> None:
    _, key = api_token_create(user=served.user, name="haiku only", allowed_models=[MODEL])
    client = served.sdk(api_key=key)

    assert [model.id for model in client.models.list()] == [MODEL]
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        client.messages.create(model=THINKING_MODEL, max_tokens=32, messages=HELLO)
    assert refused.value.status_code == 403
    assert THINKING_MODEL in refused.value.message and MODEL in refused.value.message
    assert not LLMRequest.objects.exists()
    assert client.messages.create(model=MODEL, max_tokens=32, messages=HELLO).content


@pytest.mark.parametrize("problem", ["made-up", "revoked", "expired", "inactive", "missing"])
def test_a_key_that_is_not_good_is_refused_as_the_api_refuses_it(
    served: Served, problem: str
) -> None:
    key = served.key
    if problem == "made-up":
        key = "gwt_not-a-real-key"
    elif problem == "revoked":
        ApiToken.objects.filter(pk=served.token.pk).update(revoked=True)
    elif problem == "expired":
        past = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        ApiToken.objects.filter(pk=served.token.pk).update(expires_at=past)
    elif problem == "inactive":
        served.user.is_active = False
        served.user.save()

    if problem == "missing":
        reply = httpx.post(f"{served.url}/v1/messages", json={"model": MODEL})
        assert reply.status_code == 401
        assert reply.json()["error"]["type"] == "authentication_error"
        assert "x-api-key" in reply.json()["error"]["message"]
    else:
        with pytest.raises(anthropic.AuthenticationError) as refused:
            served.sdk(api_key=key).messages.create(model=MODEL, max_tokens=8, messages=HELLO)
        assert refused.value.status_code == 401
        expected = {"made-up": "invalid x-api-key", "inactive": "deactivated"}.get(problem, problem)
        assert expected in refused.value.message
    assert not LLMRequest.objects.exists()
    assert served.emulator.log() == []


def test_bearer_authorization_works_like_x_api_key(served: Served) -> None:
    reply = httpx.post(
        f"{served.url}/v1/messages",
        headers={"authorization": f"Bearer {served.key}", "anthropic-version": "2023-06-01"},
        json={"model": MODEL, "max_tokens": 400, "messages": HELLO},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    assert any(block["type"] == "text" for block in reply.json()["content"])


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"max_tokens": 0.5}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"metadata": {"user_id": 7}}, "metadata.user_id"),
        ({"temperature": 3}, "temperature"),
        ({"stream": "yes"}, "stream"),
        ({"no_such_field": 1}, "no_such_field"),
    ],
)
def test_a_bad_body_is_a_400_naming_the_field_and_nothing_is_sent(
    served: Served, body: dict, named: str
) -> None:
    sent = {"model": MODEL, "max_tokens": 16, "messages": HELLO, **body}
    reply = httpx.post(
        f"{served.url}/v1/messages", headers={"x-api-key": served.key}, json=sent, timeout=30
    )
    assert reply.status_code == 400, reply.text
    error = reply.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert named in error["error"]["message"]
    assert not LLMRequest.objects.exists()
    assert served.emulator.log() == []


def test_not_json_is_refused_clearly(served: Served) -> None:
    reply = httpx.post(
        f"{served.url}/v1/messages",
        headers={"x-api-key": served.key, "content-type": "application/json"},
        content=b'{"model": ',
    )
    assert reply.status_code == 400
    assert "not valid JSON" in reply.json()["error"]["message"]


def test_an_exhausted_quota_is_a_400_the_sdk_does_not_retry(served: Served) -> None:
    Quota.objects.create(user=served.user, tokens_per_day=10)
    client = served.sdk().with_options(max_retries=2)
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)
    assert "quota" in refused.value.message.lower()
    # One refusal, kept as a rejected row (what a user submitted is never lost), none sent.
    assert list(LLMRequest.objects.values_list("status", flat=True)) == ["rejected"]
    assert served.emulator.log() == []


def test_the_caller_picks_priority_and_session_by_header_or_metadata(served: Served) -> None:
    client = served.sdk()
    client.messages.create(
        model=MODEL,
        max_tokens=16,
        messages=HELLO,
        extra_headers={"x-gateway-priority": "query", "x-gateway-session": "nightly-report"},
    )
    client.messages.create(
        model=MODEL, max_tokens=16, messages=HELLO, metadata={"user_id": "customer-42"}
    )
    rows = list(LLMRequest.objects.order_by("pk").values_list("priority", "session_id"))
    assert rows == [("query", "nightly-report"), ("interactive", "customer-42")]


def test_an_unknown_path_is_the_api_error_shape(served: Served) -> None:
    reply = httpx.get(f"{served.url}/v1/nothing-here", headers={"x-api-key": served.key})
    assert reply.status_code == 404
    assert reply.json()["error"]["type"] == "not_found_error"


def test_a_caller_that_leaves_while_queued_cancels_its_request(held: Served) -> None:
    Quota.objects.create(user=held.user, usd_per_day=Decimal("1"))
    client = held.sdk(timeout=1.0)
    with pytest.raises(anthropic.APITimeoutError):
        client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    assert wait_for(
        lambda: LLMRequest.objects.filter(status=LLMRequest.Status.CANCELLED).count() == 1
    )
    row = LLMRequest.objects.get()
    assert get_scheduler().position(request_id=row.pk) is None
    assert held.emulator.log() == []


def test_a_stream_whose_reader_leaves_while_queued_cancels_its_request(held: Served) -> None:
    with httpx.stream(
        "POST",
        f"{held.url}/v1/messages",
        headers={"x-api-key": held.key},
        json={"model": MODEL, "max_tokens": 16, "messages": HELLO, "stream": True},
        timeout=30,
    ) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        assert int(reply.headers["x-gateway-queue-position"]) >= 1
        first = next(reply.iter_lines())
        assert first == "event: ping"
    assert wait_for(
        lambda: LLMRequest.objects.filter(status=LLMRequest.Status.CANCELLED).count() == 1
    )


def test_a_stream_is_relayed_as_the_api_sends_it_not_when_the_call_is_done(
    served: Served,
) -> None:
    served.emulator.configure(stream_event_ms=40)  # the API takes its time over the answer
    began = time.monotonic()
    arrivals: list[float] = []
    with served.sdk().messages.stream(model=MODEL, max_tokens=400, messages=HELLO) as stream:
        for _ in stream.text_stream:
            arrivals.append(time.monotonic() - began)
        final = stream.get_final_message()

    assert len(arrivals) >= 5, arrivals
    # The first words reach the app while the rest of the answer is still being written.
    assert arrivals[0] < arrivals[-1] - 0.15, arrivals
    stored = gateway_services.message_body(only_request(served))
    assert [b.model_dump(exclude_none=True) for b in final.content] == stored["content"]
    assert final.usage.output_tokens == stored["usage"]["output_tokens"]


def test_a_stream_that_fails_before_its_first_event_is_retried_unseen(served: Served) -> None:
    served.emulator.configure(script=[{"status": 529}, {"slow_ms": 0}])
    with served.sdk().messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream:
        text = "".join(stream.text_stream)

    row = only_request(served)
    assert row.status == LLMRequest.Status.SUCCEEDED and row.attempts == 2
    assert text == result_of(row)["text"]


def test_a_stream_cut_after_it_began_ends_with_the_api_error_event_and_is_not_retried(
    served: Served,
) -> None:
    served.emulator.configure(script=[{"midstream": True}, {"slow_ms": 0}])
    client = served.sdk()
    with (
        pytest.raises(anthropic.APIStatusError) as cut,
        client.messages.stream(model=MODEL, max_tokens=400, messages=HELLO) as stream,
    ):
        for _ in stream.text_stream:
            pass
    assert "interrupted" in str(cut.value)

    row = only_request(served)
    assert row.status == LLMRequest.Status.FAILED and row.attempts == 1
    # One upstream call, recorded once: what the app saw part of is not sent a second time.
    assert [entry["path"] for entry in served.emulator.log()] == ["/v1/messages"]
    assert AuditLog.objects.filter(llm_request=row).count() == 1


def test_a_retry_with_the_same_idempotency_key_gets_the_same_request(served: Served) -> None:
    client = served.sdk()
    headers = {"Idempotency-Key": "order-7-summary"}
    first = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=32, messages=HELLO, extra_headers=headers
    )
    again = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=32, messages=HELLO, extra_headers=headers
    )
    assert first.parse().id == again.parse().id
    assert first.headers["x-gateway-request-id"] == again.headers["x-gateway-request-id"]
    assert LLMRequest.objects.count() == 1
    assert [entry["path"] for entry in served.emulator.log()] == ["/v1/messages"]
    # The same key for a different body is refused, naming the header.
    with pytest.raises(anthropic.BadRequestError, match="Idempotency-Key"):
        client.messages.create(model=MODEL, max_tokens=33, messages=HELLO, extra_headers=headers)
