"""``POST /v1/messages`` (plain and streamed) and ``POST /v1/messages/count_tokens``.

Order of work for a message: auth and version → body parse and validation (free: never rate
limited, never billed) → the next fault decision (script first, then seeded random; a faulted
request consumes no rate limit) → context-window check, cache plan and rate-limit admission →
latency sleep → cache writes become readable (the response has started) → reply → bill.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from aiohttp import web

from llm_calls.emulator.buckets import INPUT_TOKENS, OUTPUT_TOKENS, REQUESTS, BucketSet
from llm_calls.emulator.errors import DEFAULT_MESSAGE_BY_STATUS, ApiError
from llm_calls.emulator.faults import FaultAction
from llm_calls.emulator.generation import Reply, reply_for
from llm_calls.emulator.http_layer import authenticate, json_response, ratelimit_headers, read_json
from llm_calls.emulator.model_catalog import ModelInfo
from llm_calls.emulator.responses import message_for, usage_for
from llm_calls.emulator.rules import check_context_window
from llm_calls.emulator.state import COUNT_TOKENS_CLASS, STATE_KEY, EmulatorState
from llm_calls.emulator.streaming import message_events, sse
from llm_calls.emulator.tokens import count_tokens, effective_chars_per_token, prompt_blocks
from llm_calls.emulator.validation import validate_request

# A mid-stream fault lets this many content deltas through before the error event.
MIDSTREAM_DELTAS = 2


def _fault_error(action: FaultAction, state: EmulatorState) -> ApiError:
    status = action.status or 529
    if status == 429 and action.spend_limit:
        return ApiError(
            429,
            "You have reached your specified workspace API usage limits. You will regain access "
            "when the limit resets.",
            details={"error_code": "enforced_spend_limit_reached"},
        )
    if status == 429:
        return ApiError(
            429,
            "This request would exceed the rate limit for your organization of "
            f"{state.config.rpm:,} requests per minute.",
            headers={
                "retry-after": str(action.retry_after if action.retry_after is not None else 1)
            },
        )
    return ApiError(status, DEFAULT_MESSAGE_BY_STATUS.get(status, "Error"))


def _abort_connection(request: web.Request) -> None:
    """Drop the TCP connection without a response (RST), like a reset in the network."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    transport.abort()


async def handle_messages(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    state.in_flight += 1
    state.messages_total += 1
    state.max_in_flight = max(state.max_in_flight, state.in_flight)
    try:
        return await _handle_messages(request)
    finally:
        state.in_flight -= 1


async def _handle_messages(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    fingerprint = authenticate(request)
    body = await read_json(request)
    if isinstance(body, dict) and body.get("stream") is True:
        request["stream"] = True
    model = validate_request(body)
    request["model_class"] = model.model_class
    config = state.config
    stream = bool(body.get("stream"))
    action = state.faults.next_action(
        rate_529=config.fault_rate_529,
        rate_500=config.fault_rate_500,
        rate_reset=config.fault_rate_reset,
        rate_slow=config.fault_rate_slow,
        slow_ms=config.slow_ms,
        rate_midstream=config.fault_rate_midstream,
        stream=stream,
    )
    if action.midstream and not stream:
        action = FaultAction(status=529)
    if action.reset:
        request["error_type"] = "connection_reset"
        request["status_override"] = 0
        _abort_connection(request)
        return web.Response(status=500)
    if action.status is not None:
        raise _fault_error(action, state)

    now = state.now()
    blocks = prompt_blocks(body, config.chars_per_token, model.token_factor)
    check_context_window(model, sum(block.tokens for block in blocks))
    plan = state.cache.plan(
        key_fingerprint=fingerprint,
        model=model,
        blocks=blocks,
        top_level_cache_control=body.get("cache_control"),
        now=now,
    )
    input_need = plan.input_tokens + plan.cache_creation_input_tokens
    if model.cache_reads_count_for_itpm:
        input_need += plan.cache_read_input_tokens
    reserved = body["max_tokens"] if config.otpm_mode == "reserve" else 0
    buckets = state.bucket_set(fingerprint, model.model_class, now)
    rejection = buckets.admit({REQUESTS: 1, INPUT_TOKENS: input_need, OUTPUT_TOKENS: reserved}, now)
    if rejection is not None:
        raise ApiError(
            429, rejection.message, headers={"retry-after": str(rejection.retry_after_s)}
        )

    delay_ms = config.latency_ms + action.slow_ms
    if delay_ms > 0:
        await asyncio.sleep(delay_ms / 1000)
    # The response starts now: only from here are this request's cache writes readable.
    state.cache.commit(plan, state.now())
    reply = reply_for(body, model=model, seed=config.seed, chars_per_token=config.chars_per_token)
    message = message_for(
        model_id=body["model"],
        reply=reply,
        usage=usage_for(plan, reply, body, service_tier="standard"),
    )
    if stream:
        return await _stream_reply(
            request,
            state,
            fingerprint=fingerprint,
            model=model,
            message=message,
            reply=reply,
            ratio=effective_chars_per_token(config.chars_per_token, model.token_factor),
            buckets=buckets,
            reserved=reserved,
            midstream=action.midstream,
            event_pause_s=config.stream_event_ms / 1000,
        )

    response = json_response(message)
    response.headers["request-id"] = request["request_id"]
    response.headers.update(ratelimit_headers(state, fingerprint, model.model_class, state.now()))
    try:
        await response.prepare(request)
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        state.settle_output(buckets, reserved=reserved, produced=0)
        raise
    state.settle_output(buckets, reserved=reserved, produced=reply.output_tokens)
    state.bill(
        fingerprint=fingerprint,
        request_id=request["request_id"],
        message=message,
        request=request,
    )
    return response


async def _stream_reply(
    request: web.Request,
    state: EmulatorState,
    *,
    fingerprint: str,
    model: ModelInfo,
    message: dict[str, Any],
    reply: Reply,
    ratio: float,
    buckets: BucketSet,
    reserved: int,
    midstream: bool,
    event_pause_s: float = 0.0,
) -> web.StreamResponse:
    response = web.StreamResponse(status=200)
    response.content_type = "text/event-stream"
    response.headers["cache-control"] = "no-cache"
    response.headers["request-id"] = request["request_id"]
    response.headers.update(ratelimit_headers(state, fingerprint, model.model_class, state.now()))
    produced = 0
    deltas_sent = 0
    try:
        await response.prepare(request)
        for event in message_events(message, reply, ratio):
            if midstream and (deltas_sent >= MIDSTREAM_DELTAS or event.name == "message_delta"):
                request["error_type"] = "overloaded_error"
                await response.write(
                    sse(
                        "error",
                        {
                            "type": "error",
                            "error": {"type": "overloaded_error", "message": "Overloaded"},
                            "request_id": request["request_id"],
                        },
                    )
                )
                await response.write_eof()
                state.settle_output(buckets, reserved=reserved, produced=produced)
                return response
            if event_pause_s and event.name == "content_block_delta":
                await asyncio.sleep(event_pause_s)
            await response.write(sse(event.name, event.data))
            produced = event.produced
            deltas_sent += event.name == "content_block_delta"
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        state.settle_output(buckets, reserved=reserved, produced=produced)
        raise
    state.settle_output(buckets, reserved=reserved, produced=reply.output_tokens)
    state.bill(
        fingerprint=fingerprint,
        request_id=request["request_id"],
        message=message,
        request=request,
    )
    return response


async def handle_count_tokens(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    fingerprint = authenticate(request)
    body = await read_json(request)
    request["model_class"] = COUNT_TOKENS_CLASS
    model = validate_request(body, count_tokens=True)
    request["token_class"] = model.model_class
    now = state.now()
    rejection = state.bucket_set(fingerprint, COUNT_TOKENS_CLASS, now).admit({REQUESTS: 1}, now)
    if rejection is not None:
        raise ApiError(
            429, rejection.message, headers={"retry-after": str(rejection.retry_after_s)}
        )
    tokens = count_tokens(body, state.config.chars_per_token, model.token_factor)
    return json_response({"input_tokens": tokens})
