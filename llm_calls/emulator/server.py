"""The emulator's HTTP server (aiohttp): Messages, count_tokens, Batches and control endpoints.

Everything runs on one asyncio event loop. State changes (bucket admission, cache planning,
billing) happen between awaits, so each is atomic with respect to other requests without
locks; simulated latency is ``asyncio.sleep``, so hundreds of requests wait concurrently.

Order of work for ``POST /v1/messages``: auth and version → body parse and validation (free:
never rate limited, never billed) → the next fault decision (script first, then seeded random;
a faulted request consumes no rate limit) → cache plan and rate-limit admission → latency
sleep → cache writes become readable (the response has started) → reply → bill.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from .batches import BatchStore, rfc3339, validate_batch_body
from .buckets import INPUT_TOKENS, OUTPUT_TOKENS, REQUESTS, BucketSet
from .config import EmulatorConfig
from .errors import DEFAULT_MESSAGE_BY_STATUS, ApiError, error_body, invalid, new_id
from .faults import FaultAction, FaultInjector
from .generation import Reply, reply_for
from .ledger import Ledger, RequestLog, key_fingerprint
from .model_catalog import ModelInfo
from .prompt_cache import CachePlan, PromptCache
from .tokens import count_tokens, prompt_blocks, text_tokens
from .validation import validate_request

MAX_BODY_BYTES = 32 * 1024 * 1024
ACCEPTED_VERSIONS = ("2023-06-01", "2026-10-21")
COUNT_TOKENS_CLASS = "count_tokens"
DEFAULT_HEADER_CLASS = "sonnet"
STREAM_DELTA_CHARS = 48

STATE_KEY: web.AppKey[EmulatorState] = web.AppKey("emulator_state")


class EmulatorState:
    """All mutable emulator state; ``reset`` restores the startup configuration."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.startup_config = config.copy()
        self.config = config.copy()
        self.buckets: dict[tuple[str, str], BucketSet] = {}
        self.cache = PromptCache()
        self.ledger = Ledger()
        self.log = RequestLog()
        self.batches = BatchStore()
        self.faults = FaultInjector(seed=config.seed, script=config.script)
        # Added to the wall clock by POST /_emulator/clock so tests can age cache entries and
        # refill buckets without sleeping for minutes.
        self.clock_offset_s = 0.0
        # /v1/messages requests being handled right now (any outcome), and the most seen at once
        # since the last reset: what GET /_emulator/stats reports to the concurrency benchmark.
        self.in_flight = 0
        self.max_in_flight = 0
        self.messages_total = 0

    def now(self) -> float:
        return time.time() + self.clock_offset_s

    def reset(self) -> None:
        self.clock_offset_s = 0.0
        self.max_in_flight = self.in_flight
        self.messages_total = 0
        self.apply_config(self.startup_config.copy())
        self.cache.clear()
        self.ledger.clear()
        self.log.clear()
        self.batches.clear()

    def apply_config(self, config: EmulatorConfig) -> None:
        """New limits start with full buckets; a new seed or script restarts the fault stream."""
        self.config = config
        self.buckets.clear()
        self.faults = FaultInjector(seed=config.seed, script=config.script)

    def bucket_set(self, fingerprint: str, model_class: str, now: float) -> BucketSet:
        found = self.buckets.get((fingerprint, model_class))
        if found is None:
            if model_class == COUNT_TOKENS_CLASS:
                limits = {REQUESTS: self.config.rpm}
            else:
                limits = {
                    REQUESTS: self.config.rpm,
                    INPUT_TOKENS: self.config.itpm,
                    OUTPUT_TOKENS: self.config.otpm,
                }
            found = BucketSet(limits=limits, now=now)
            self.buckets[(fingerprint, model_class)] = found
        return found


# ---------------------------------------------------------------------------------------------
# Rate-limit headers


def _reset_time(now: float, seconds: float) -> str:
    moment = datetime.fromtimestamp(math.ceil(now + seconds), UTC)
    return moment.isoformat().replace("+00:00", "Z")


def ratelimit_headers(
    state: EmulatorState, fingerprint: str | None, model_class: str | None, now: float
) -> dict[str, str]:
    """``anthropic-ratelimit-*`` for the caller's buckets (full ones if never used).

    Unlimited dimensions (limit 0) have no bucket and so no headers. For count_tokens the
    requests-* headers describe its own RPM bucket and the token headers the messages buckets.
    """
    headers: dict[str, str] = {}
    message_class = model_class if model_class not in (None, COUNT_TOKENS_CLASS) else None
    token_set = state.bucket_set(fingerprint or "", message_class or DEFAULT_HEADER_CLASS, now)
    request_set = (
        state.bucket_set(fingerprint or "", COUNT_TOKENS_CLASS, now)
        if model_class == COUNT_TOKENS_CLASS
        else token_set
    )
    token_set.refill(now)
    request_set.refill(now)
    token_views: list[tuple[int, int, str]] = []
    for dimension, owner in (
        (REQUESTS, request_set),
        (INPUT_TOKENS, token_set),
        (OUTPUT_TOKENS, token_set),
    ):
        bucket = owner.buckets.get(dimension)
        if bucket is None:
            continue
        level = max(0, math.floor(bucket.level))
        remaining = level if dimension == REQUESTS else level // 1000 * 1000
        reset = _reset_time(now, bucket.seconds_until_full())
        prefix = f"anthropic-ratelimit-{dimension}"
        headers[f"{prefix}-limit"] = str(int(bucket.capacity))
        headers[f"{prefix}-remaining"] = str(remaining)
        headers[f"{prefix}-reset"] = reset
        if dimension != REQUESTS:
            token_views.append((remaining, int(bucket.capacity), reset))
    if token_views:
        remaining, limit, reset = min(token_views)
        headers["anthropic-ratelimit-tokens-limit"] = str(limit)
        headers["anthropic-ratelimit-tokens-remaining"] = str(remaining)
        headers["anthropic-ratelimit-tokens-reset"] = reset
    return headers


# ---------------------------------------------------------------------------------------------
# Request plumbing


def _json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(payload, separators=(",", ":")).encode(),
        content_type="application/json",
    )


def _error_response(request: web.Request, error: ApiError) -> web.Response:
    request["error_type"] = error.error_type
    response = _json_response(
        error_body(
            error_type=error.error_type,
            message=error.message,
            request_id=request["request_id"],
            details=error.details,
        ),
        status=error.status,
    )
    response.headers.update(error.headers)
    response.headers["x-should-retry"] = (
        "true" if error.status in (408, 409, 429) or error.status >= 500 else "false"
    )
    if error.details and error.details.get("error_code") == "enforced_spend_limit_reached":
        response.headers["x-should-retry"] = "false"
    return response


def _api_key(request: web.Request) -> str:
    key = request.headers.get("x-api-key")
    if not key:
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            key = authorization[7:].strip()
    if not key:
        raise ApiError(401, "x-api-key or Authorization: Bearer header is required")
    if key.startswith("sk-bad"):
        raise ApiError(401, "invalid x-api-key")
    return key


def _authenticate(request: web.Request) -> str:
    """Checks auth and version; returns the key fingerprint (the raw key goes no further)."""
    fingerprint = key_fingerprint(_api_key(request))
    request["fingerprint"] = fingerprint
    version = request.headers.get("anthropic-version")
    if not version:
        raise invalid("anthropic-version: header is required")
    if version not in ACCEPTED_VERSIONS:
        raise invalid(
            f"anthropic-version: {version!r} is not a valid version "
            f"(accepted: {', '.join(ACCEPTED_VERSIONS)})"
        )
    return fingerprint


async def _read_json(request: web.Request) -> Any:
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise ApiError(413, f"Request exceeds the maximum allowed size of {MAX_BODY_BYTES} bytes")
    raw = await request.read()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, f"Request exceeds the maximum allowed size of {MAX_BODY_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid(f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise invalid(f"request body is not valid JSON: {exc.msg} at position {exc.pos}") from None


def _http_exception_error(request: web.Request, exc: web.HTTPException) -> ApiError:
    """aiohttp's own errors (no route, wrong method, body too large) in the API's error shape."""
    if exc.status == 404:
        return ApiError(404, f"no such endpoint: {request.method} {request.path}")
    if exc.status == 405:
        return ApiError(
            405,
            f"{request.method} is not allowed on {request.path}",
            error_type="invalid_request_error",
        )
    if exc.status == 413:
        return ApiError(413, f"Request exceeds the maximum allowed size of {MAX_BODY_BYTES} bytes")
    return ApiError(exc.status, exc.reason or "HTTP error")


@web.middleware
async def api_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Request id on every response, error bodies, rate-limit headers and the /v1 log."""
    state = request.app[STATE_KEY]
    request["request_id"] = new_id("req")
    request["error_type"] = None
    is_api = request.path.startswith("/v1/")
    try:
        response = await handler(request)
    except ApiError as error:
        response = _error_response(request, error)
    except web.HTTPException as exc:
        response = _error_response(request, _http_exception_error(request, exc))
    if not response.prepared:
        response.headers["request-id"] = request["request_id"]
        if is_api:
            response.headers.update(
                ratelimit_headers(
                    state, request.get("fingerprint"), request.get("model_class"), state.now()
                )
            )
    if is_api:
        state.log.add(
            time=state.now(),
            method=request.method,
            path=request.path,
            status=request.get("status_override", response.status),
            error_type=request["error_type"],
            request_id=request["request_id"],
            fingerprint=request.get("fingerprint"),
            client_request_id=request.headers.get("x-client-request-id"),
            stream=bool(request.get("stream")),
        )
    return response


# ---------------------------------------------------------------------------------------------
# Messages


def _usage(plan: CachePlan, output_tokens: int, service_tier: str) -> dict[str, Any]:
    return {
        "input_tokens": plan.input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": plan.cache_creation_input_tokens,
        "cache_read_input_tokens": plan.cache_read_input_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": plan.cache_creation_5m,
            "ephemeral_1h_input_tokens": plan.cache_creation_1h,
        },
        "service_tier": service_tier,
    }


def _message(*, message_id: str, model: str, reply: Reply, usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": reply.text}] if reply.text else [],
        "stop_reason": reply.stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }


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


def _bill(
    state: EmulatorState,
    *,
    request: web.Request | None,
    fingerprint: str,
    request_id: str,
    message: dict[str, Any],
    batch_id: str | None = None,
) -> None:
    state.ledger.bill(
        fingerprint=fingerprint,
        request_id=request_id,
        message_id=message["id"],
        model=message["model"],
        time=state.now(),
        usage=message["usage"],
        batch_id=batch_id,
        client_request_id=request.headers.get("x-client-request-id") if request else None,
    )


def _settle_output(
    state: EmulatorState, buckets: BucketSet, *, reserved: int, produced: int
) -> None:
    """OTPM after the reply: refund the unused reservation, or charge what was produced."""
    if state.config.otpm_mode == "reserve":
        buckets.adjust(OUTPUT_TOKENS, produced - reserved, state.now())
    else:
        buckets.adjust(OUTPUT_TOKENS, produced, state.now())


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


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
    fingerprint = _authenticate(request)
    body = await _read_json(request)
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
    blocks = prompt_blocks(body, config.chars_per_token)
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
    reply = reply_for(body, seed=config.seed, chars_per_token=config.chars_per_token)
    message = _message(
        message_id=new_id("msg"),
        model=model.model_id,
        reply=reply,
        usage=_usage(plan, reply.output_tokens, "standard"),
    )
    if stream:
        return await _stream_reply(
            request, state, fingerprint, model, message, reply, buckets, reserved, action.midstream
        )

    response = _json_response(message)
    response.headers["request-id"] = request["request_id"]
    response.headers.update(ratelimit_headers(state, fingerprint, model.model_class, state.now()))
    try:
        await response.prepare(request)
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        _settle_output(state, buckets, reserved=reserved, produced=0)
        raise
    _settle_output(state, buckets, reserved=reserved, produced=reply.output_tokens)
    _bill(
        state,
        request=request,
        fingerprint=fingerprint,
        request_id=request["request_id"],
        message=message,
    )
    return response


async def _stream_reply(
    request: web.Request,
    state: EmulatorState,
    fingerprint: str,
    model: ModelInfo,
    message: dict[str, Any],
    reply: Reply,
    buckets: BucketSet,
    reserved: int,
    midstream: bool,
) -> web.StreamResponse:
    response = web.StreamResponse(status=200)
    response.content_type = "text/event-stream"
    response.headers["cache-control"] = "no-cache"
    response.headers["request-id"] = request["request_id"]
    response.headers.update(ratelimit_headers(state, fingerprint, model.model_class, state.now()))
    usage = message["usage"]
    start_usage = {**usage, "output_tokens": min(1, reply.output_tokens)}
    chunks = [
        reply.text[i : i + STREAM_DELTA_CHARS]
        for i in range(0, len(reply.text), STREAM_DELTA_CHARS)
    ]
    sent_chars = 0
    try:
        await response.prepare(request)
        await response.write(
            _sse(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        **message,
                        "content": [],
                        "stop_reason": None,
                        "usage": start_usage,
                    },
                },
            )
        )
        await response.write(_sse("ping", {"type": "ping"}))
        if chunks:
            await response.write(
                _sse(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            for number, chunk in enumerate(chunks):
                if midstream and number >= 2:
                    break
                await response.write(
                    _sse(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": 0,
                            "delta": {"type": "text_delta", "text": chunk},
                        },
                    )
                )
                sent_chars += len(chunk)
        if midstream:
            request["error_type"] = "overloaded_error"
            await response.write(
                _sse(
                    "error",
                    {
                        "type": "error",
                        "error": {"type": "overloaded_error", "message": "Overloaded"},
                        "request_id": request["request_id"],
                    },
                )
            )
            await response.write_eof()
            produced = text_tokens(reply.text[:sent_chars], state.config.chars_per_token)
            _settle_output(state, buckets, reserved=reserved, produced=produced)
            return response
        if chunks:
            await response.write(
                _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
            )
        delta_usage = {
            key: usage[key]
            for key in (
                "input_tokens",
                "output_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
            )
        }
        await response.write(
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
                    "usage": delta_usage,
                },
            )
        )
        await response.write(_sse("message_stop", {"type": "message_stop"}))
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        produced = text_tokens(reply.text[:sent_chars], state.config.chars_per_token)
        _settle_output(state, buckets, reserved=reserved, produced=produced)
        raise
    _settle_output(state, buckets, reserved=reserved, produced=reply.output_tokens)
    _bill(
        state,
        request=request,
        fingerprint=fingerprint,
        request_id=request["request_id"],
        message=message,
    )
    return response


async def handle_count_tokens(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    fingerprint = _authenticate(request)
    body = await _read_json(request)
    validate_request(body, count_tokens=True)
    request["model_class"] = COUNT_TOKENS_CLASS
    now = state.now()
    rejection = state.bucket_set(fingerprint, COUNT_TOKENS_CLASS, now).admit({REQUESTS: 1}, now)
    if rejection is not None:
        raise ApiError(
            429, rejection.message, headers={"retry-after": str(rejection.retry_after_s)}
        )
    return _json_response({"input_tokens": count_tokens(body, state.config.chars_per_token)})


# ---------------------------------------------------------------------------------------------
# Batches


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _process_batch_item(
    state: EmulatorState, fingerprint: str, batch_id: str, item: dict[str, Any]
) -> dict[str, Any]:
    params = item["params"]
    request_id = new_id("req")
    try:
        if params.get("stream"):
            raise invalid("stream: streaming is not supported in batch requests")
        model = validate_request(params)
    except ApiError as error:
        return {
            "custom_id": item["custom_id"],
            "result": {
                "type": "errored",
                "error": error_body(
                    error_type=error.error_type, message=error.message, request_id=request_id
                ),
            },
        }
    now = state.now()
    config = state.config
    plan = state.cache.plan(
        key_fingerprint=fingerprint,
        model=model,
        blocks=prompt_blocks(params, config.chars_per_token),
        top_level_cache_control=params.get("cache_control"),
        now=now,
    )
    state.cache.commit(plan, now)
    reply = reply_for(params, seed=config.seed, chars_per_token=config.chars_per_token)
    message = _message(
        message_id=new_id("msg"),
        model=model.model_id,
        reply=reply,
        usage=_usage(plan, reply.output_tokens, "batch"),
    )
    _bill(
        state,
        request=None,
        fingerprint=fingerprint,
        request_id=request_id,
        message=message,
        batch_id=batch_id,
    )
    return {"custom_id": item["custom_id"], "result": {"type": "succeeded", "message": message}}


async def _run_batch(state: EmulatorState, batch_id: str, fingerprint: str) -> None:
    batch = state.batches.get(fingerprint=fingerprint, batch_id=batch_id)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(batch.wake.wait(), timeout=state.config.batch_latency_ms / 1000)
    if not state.batches.is_live(batch):
        return
    if batch.processing_status == "canceling":
        batch.results = [
            {"custom_id": item["custom_id"], "result": {"type": "canceled"}}
            for item in batch.requests
        ]
    else:
        batch.results = [
            _process_batch_item(state, fingerprint, batch.id, item) for item in batch.requests
        ]
    batch.processing_status = "ended"
    batch.ended_at = state.now()


async def handle_batch_create(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    fingerprint = _authenticate(request)
    requests = validate_batch_body(await _read_json(request))
    batch = state.batches.create(fingerprint=fingerprint, requests=requests, now=state.now())
    task = asyncio.get_running_loop().create_task(_run_batch(state, batch.id, fingerprint))
    request.app[TASKS_KEY].add(task)
    task.add_done_callback(request.app[TASKS_KEY].discard)
    return _json_response(batch.as_api(_base_url(request)))


async def handle_batch_get(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    fingerprint = _authenticate(request)
    batch = state.batches.get(fingerprint=fingerprint, batch_id=request.match_info["batch_id"])
    return _json_response(batch.as_api(_base_url(request)))


async def handle_batch_list(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    fingerprint = _authenticate(request)
    query = request.query
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        raise invalid("limit: Input should be a valid integer") from None
    if not 1 <= limit <= 1000:
        raise invalid("limit: Input should be between 1 and 1000")
    if query.get("before_id") and query.get("after_id"):
        raise invalid("before_id and after_id cannot both be given")
    page, has_more = state.batches.page(
        fingerprint=fingerprint,
        before_id=query.get("before_id") or None,
        after_id=query.get("after_id") or None,
        limit=limit,
    )
    base_url = _base_url(request)
    return _json_response(
        {
            "data": [batch.as_api(base_url) for batch in page],
            "has_more": has_more,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        }
    )


async def handle_batch_cancel(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    fingerprint = _authenticate(request)
    batch = state.batches.get(fingerprint=fingerprint, batch_id=request.match_info["batch_id"])
    if batch.processing_status == "in_progress":
        batch.processing_status = "canceling"
        batch.cancel_initiated_at = state.now()
        batch.wake.set()
    return _json_response(batch.as_api(_base_url(request)))


async def handle_batch_delete(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    fingerprint = _authenticate(request)
    batch_id = request.match_info["batch_id"]
    state.batches.delete(fingerprint=fingerprint, batch_id=batch_id)
    return _json_response({"id": batch_id, "type": "message_batch_deleted"})


async def handle_batch_results(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    fingerprint = _authenticate(request)
    batch = state.batches.get(fingerprint=fingerprint, batch_id=request.match_info["batch_id"])
    if batch.processing_status != "ended":
        raise invalid(
            f"message batch {batch.id} is still {batch.processing_status}; results are not ready"
        )
    lines = "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in batch.results)
    return web.Response(body=lines.encode(), content_type="application/x-jsonl")


# ---------------------------------------------------------------------------------------------
# Control endpoints (no auth; loopback only)


async def handle_health(request: web.Request) -> web.StreamResponse:
    return _json_response({"ok": True})


async def handle_ledger(request: web.Request) -> web.StreamResponse:
    return _json_response(request.app[STATE_KEY].ledger.as_dict())


async def handle_log(request: web.Request) -> web.StreamResponse:
    return _json_response(request.app[STATE_KEY].log.entries)


async def handle_stats(request: web.Request) -> web.StreamResponse:
    """In-flight gauge: ``in_flight`` /v1/messages requests now, ``max_in_flight`` since reset."""
    state = request.app[STATE_KEY]
    return _json_response(
        {
            "in_flight": state.in_flight,
            "max_in_flight": state.max_in_flight,
            "messages_total": state.messages_total,
        }
    )


async def handle_reset(request: web.Request) -> web.StreamResponse:
    request.app[STATE_KEY].reset()
    return _json_response({"ok": True})


async def handle_config_get(request: web.Request) -> web.StreamResponse:
    return _json_response(request.app[STATE_KEY].config.to_dict())


async def handle_config_set(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    state.apply_config(state.config.updated(await _read_json(request)))
    return _json_response(state.config.to_dict())


async def handle_clock(request: web.Request) -> web.StreamResponse:
    """Move the emulator's clock forward by ``advance_s`` seconds (never backwards)."""
    state = request.app[STATE_KEY]
    payload = await _read_json(request)
    advance = payload.get("advance_s") if isinstance(payload, dict) else None
    if isinstance(advance, bool) or not isinstance(advance, int | float) or advance < 0:
        raise invalid("advance_s: a non-negative number of seconds is required")
    state.clock_offset_s += float(advance)
    return _json_response({"now": state.now(), "offset_s": state.clock_offset_s})


TASKS_KEY: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("emulator_batch_tasks")


def build_app(config: EmulatorConfig) -> web.Application:
    app = web.Application(
        middlewares=[api_middleware], client_max_size=MAX_BODY_BYTES + 1024 * 1024
    )
    app[STATE_KEY] = EmulatorState(config)
    app[TASKS_KEY] = set()
    app.router.add_post("/v1/messages", handle_messages)
    app.router.add_post("/v1/messages/count_tokens", handle_count_tokens)
    app.router.add_post("/v1/messages/batches", handle_batch_create)
    app.router.add_get("/v1/messages/batches", handle_batch_list)
    app.router.add_get("/v1/messages/batches/{batch_id}", handle_batch_get)
    app.router.add_delete("/v1/messages/batches/{batch_id}", handle_batch_delete)
    app.router.add_post("/v1/messages/batches/{batch_id}/cancel", handle_batch_cancel)
    app.router.add_get("/v1/messages/batches/{batch_id}/results", handle_batch_results)
    app.router.add_get("/_emulator/health", handle_health)
    app.router.add_get("/_emulator/ledger", handle_ledger)
    app.router.add_get("/_emulator/log", handle_log)
    app.router.add_get("/_emulator/stats", handle_stats)
    app.router.add_post("/_emulator/reset", handle_reset)
    app.router.add_get("/_emulator/config", handle_config_get)
    app.router.add_post("/_emulator/config", handle_config_set)
    app.router.add_post("/_emulator/clock", handle_clock)
    return app


async def serve(
    config: EmulatorConfig, *, host: str, port: int, announce: Callable[[str], None]
) -> None:
    """Run until cancelled; ``announce`` gets the real base URL once the socket is bound."""
    app = build_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048, reuse_address=True)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound_port = sockets[0].getsockname()[1] if sockets else port
    announce(f"http://{host}:{bound_port}")
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run_forever(
    config: EmulatorConfig, *, host: str, port: int, announce: Callable[[str], None]
) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config, host=host, port=port, announce=announce))


__all__ = ["EmulatorState", "build_app", "rfc3339", "run_forever", "serve"]
