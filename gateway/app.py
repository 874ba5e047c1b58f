"""The Anthropic-compatible endpoint: the Messages API's own paths, served by the gateway.

An app written for Anthropic's API changes its base URL and key and nothing else; every call
then goes the gateway's one path (``gateway.services``). This module is the asyncio layer that
holds the connections — a waiting request costs a future, not a thread — and writes the API's
bodies, headers and server-sent events:

- ``POST /v1/messages``: queued and answered when the call is done; with ``stream: true``, as
  the API's event stream, with ``ping`` events while the request waits.
- ``POST /v1/messages/count_tokens``, ``GET /v1/models``, ``GET /v1/models/{id}``: passed to the
  API under the retry policy.

A caller that disconnects while its request is queued cancels it (its quota comes back); once
the call is sent it runs to the end and is recorded, so every billed token is in ``audit_log``.
Blocking work (the database, Redis scripts) runs in Starlette's thread pool.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway import batches as gateway_batches
from gateway import services, sse
from gateway.models import MessageBatch
from gateway.services import Accepted, GatewayError
from gateway.waiting import RECHECK_S, relays, watcher
from llm_calls import services as llm_services
from llm_calls.retry import ClaudeCallError
from llm_calls.types import API_ERROR_STATUS
from llm_calls.validation import MAX_BODY_BYTES
from queueing.models import ApiToken, LLMRequest
from queueing.relay import relayed_count
from ratelimit_project.logs import request_context

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# While a streaming request waits in the queue, a ping this often keeps proxies and clients
# from timing the connection out.
PING_EVERY_S = 5.0
# Row checks (PING_EVERY_S apart) a finished call's remaining relayed events may take.
_LATE_EVENTS_CHECKS = 3
# Cancelling an abandoned request: attempts, and the first pause between them (doubling).
_ABANDON_ATTEMPTS = 5
_ABANDON_BACKOFF_S = 0.5


def error_response(exc: GatewayError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


async def _blocking(fn: Callable[..., _T], **kwargs: Any) -> _T:
    return await run_in_threadpool(fn, **kwargs)


async def _read_json(request: Request) -> dict[str, Any]:
    received = bytearray()
    try:
        async for chunk in request.stream():
            received += chunk
            if len(received) > MAX_BODY_BYTES:
                raise GatewayError(
                    "request_too_large",
                    f"Request exceeds the maximum allowed number of bytes ({MAX_BODY_BYTES:,})",
                )
    except ClientDisconnect:
        raise GatewayError("invalid_request_error", "the request body was cut off") from None
    try:
        data = json.loads(bytes(received).decode("utf-8"))
    except UnicodeDecodeError:
        raise GatewayError("invalid_request_error", "the request body is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise GatewayError(
            "invalid_request_error", f"the request body is not valid JSON ({exc.msg})"
        ) from None
    except (RecursionError, ValueError):
        raise GatewayError("invalid_request_error", "the request body cannot be read") from None
    if not isinstance(data, dict):
        raise GatewayError("invalid_request_error", "the request body must be a JSON object")
    return data


async def _authenticated(request: Request) -> ApiToken:
    return await _blocking(services.authenticate, headers=request.headers)


def _queue_headers(accepted: Accepted) -> dict[str, str]:
    headers = {"x-gateway-request-id": str(accepted.request.pk)}
    if accepted.position is not None:
        headers["x-gateway-queue-position"] = str(accepted.position)
    if accepted.estimated_wait_s is not None:
        headers["x-gateway-estimated-wait-s"] = f"{accepted.estimated_wait_s:.1f}"
    return headers


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _wait_terminal(request_id: int, *, gone: asyncio.Future[Any] | None) -> LLMRequest | None:
    """The finished row, or None if the caller disconnected first (``gone`` completed)."""
    while True:
        done = watcher.watch(request_id)
        try:
            row = await _blocking(services.reload, request_id=request_id)
            if row.is_terminal:
                return row
            waits: set[asyncio.Future[Any]] = {done} if gone is None else {done, gone}
            await asyncio.wait(waits, timeout=RECHECK_S, return_when=asyncio.FIRST_COMPLETED)
            if gone is not None and gone.done():
                return None
        finally:
            watcher.forget(request_id, done)


def _abandon_in_background(request_id: int) -> None:
    """Cancel a request whose caller left. Not awaited: the task that noticed may itself be
    cancelled, and the cancellation must happen all the same."""
    asyncio.get_running_loop().run_in_executor(None, _abandon, request_id)


def _abandon(request_id: int) -> None:
    with request_context(request_id=request_id):
        _abandon_now(request_id)


def _abandon_now(request_id: int) -> None:
    # Retried: a request left queued for a caller who has gone would still run and be billed.
    for attempt in range(_ABANDON_ATTEMPTS):
        try:
            if services.abandon(request_id=request_id):
                log.info(
                    "request %s cancelled: its caller disconnected while it was queued",
                    request_id,
                )
            return
        except Exception:  # the database or Redis busy or away: try again shortly
            if attempt == _ABANDON_ATTEMPTS - 1:
                log.exception(
                    "could not cancel request %s after its caller disconnected", request_id
                )
                return
            time.sleep(_ABANDON_BACKOFF_S * 2**attempt)


async def messages(request: Request) -> Response:
    try:
        token = await _authenticated(request)
        body = await _read_json(request)
        stream = body.pop("stream", False)
        if not isinstance(stream, bool):
            raise GatewayError("invalid_request_error", "stream: Input should be a valid boolean")
        accepted = await _blocking(
            services.submit, token=token, body=body, headers=request.headers, live_events=stream
        )
    except GatewayError as exc:
        return error_response(exc)
    headers = _queue_headers(accepted)
    if stream:
        return StreamingResponse(
            _event_stream(accepted.request.pk),
            media_type="text/event-stream",
            headers={**headers, "cache-control": "no-cache"},
        )
    gone = asyncio.ensure_future(_until_disconnected(request))
    try:
        row = await _wait_terminal(accepted.request.pk, gone=gone)
    finally:
        gone.cancel()
    if row is None:
        _abandon_in_background(accepted.request.pk)
        return Response(status_code=499)
    headers.update(_finished_headers(row))
    if row.status != LLMRequest.Status.SUCCEEDED:
        return error_response(services.failure(row), headers)
    return JSONResponse(services.message_body(row), headers=headers)


def _finished_headers(row: LLMRequest) -> dict[str, str]:
    headers = {}
    upstream_id = (row.result or {}).get("request_id")
    if upstream_id:
        headers["request-id"] = str(upstream_id)
    if row.dispatched_at is not None:
        waited_ms = (row.dispatched_at - row.created_at).total_seconds() * 1000
        headers["x-gateway-queue-wait-ms"] = f"{max(0.0, waited_ms):.0f}"
    return headers


async def _event_stream(request_id: int) -> AsyncIterator[bytes]:
    """The caller's stream: pings while the request waits, then the API's events as the
    worker relays them (``queueing.relay``). A request that ended without relaying any —
    answered from the response cache, cancelled, refused — is told from its row."""
    events = relays.subscribe(request_id)
    finished = False
    late = 0
    try:
        yield sse.ping()  # the status line and headers go out now, not when the call is done
        while True:
            done = watcher.watch(request_id)
            try:
                got = asyncio.ensure_future(events.get())
                waits: set[asyncio.Future[Any]] = {got, done}
                await asyncio.wait(waits, timeout=PING_EVERY_S, return_when=FIRST_COMPLETED)
            finally:
                watcher.forget(request_id, done)
            if got.done():
                name, data = got.result()
                yield sse.event(name, data)
                if name in ("message_stop", "error"):
                    finished = True
                    return
                continue
            got.cancel()
            row = await _blocking(services.reload, request_id=request_id)
            if not row.is_terminal:
                yield sse.ping()
                continue
            if await _blocking(relayed_count, request_id=request_id):
                # The worker relays every event before it records the row, so the rest are
                # on their way — unless Redis lost them: after a while, say so.
                late += 1
                if late < _LATE_EVENTS_CHECKS:
                    continue
                finished = True
                cut = GatewayError(
                    "api_error",
                    f"the stream was cut off; the whole answer is request {request_id}'s result",
                )
                yield sse.error(cut.body())
                return
            finished = True
            if row.status == LLMRequest.Status.SUCCEEDED:
                for chunk in sse.message_events(services.message_body(row)):
                    yield chunk
            else:
                yield sse.error(services.failure(row).body())
            return
    finally:
        relays.unsubscribe(request_id)
        if not finished:
            # Closed early: the client went away (or the server is stopping) while it waited.
            _abandon_in_background(request_id)


async def count_tokens(request: Request) -> Response:
    try:
        token = await _authenticated(request)
        body = await _read_json(request)
        services.check_model(token=token, model=body.get("model"))
        counted = await _blocking(llm_services.count_tokens, params=body)
    except GatewayError as exc:
        return error_response(exc)
    except ClaudeCallError as exc:
        return error_response(_upstream_error(exc))
    return JSONResponse(counted)


async def models_list(request: Request) -> Response:
    try:
        token = await _authenticated(request)
        page = await _blocking(llm_services.models_page, query=request.query_params.multi_items())
    except GatewayError as exc:
        return error_response(exc)
    except ClaudeCallError as exc:
        return error_response(_upstream_error(exc))
    allowed = token.allowed_models or []
    if allowed:
        page["data"] = [entry for entry in page.get("data", []) if entry.get("id") in allowed]
        ids = [entry.get("id") for entry in page["data"]]
        page["first_id"], page["last_id"] = (ids[0], ids[-1]) if ids else (None, None)
    return JSONResponse(page)


async def models_retrieve(request: Request) -> Response:
    model_id = request.path_params["model_id"]
    try:
        token = await _authenticated(request)
        services.check_model(token=token, model=model_id)
        entry = await _blocking(llm_services.model_entry, model_id=model_id)
    except GatewayError as exc:
        return error_response(exc)
    except ClaudeCallError as exc:
        return error_response(_upstream_error(exc))
    return JSONResponse(entry)


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def batches_collection(request: Request) -> Response:
    try:
        token = await _authenticated(request)
        if request.method == "GET":
            page = await _blocking(
                gateway_batches.page,
                token=token,
                query=request.query_params,
                base_url=_base_url(request),
            )
            return JSONResponse(page)
        body = await _read_json(request)
        batch = await _blocking(
            gateway_batches.create, token=token, body=body, headers=request.headers
        )
        described = await _blocking(gateway_batches.body, batch=batch, base_url=_base_url(request))
    except GatewayError as exc:
        return error_response(exc)
    return JSONResponse(described)


async def _own_batch(request: Request) -> tuple[ApiToken, MessageBatch]:
    token = await _authenticated(request)
    batch = await _blocking(
        gateway_batches.find, token=token, public_id=request.path_params["batch_id"]
    )
    return token, batch


async def batch_detail(request: Request) -> Response:
    try:
        _, batch = await _own_batch(request)
        if request.method == "DELETE":
            await _blocking(gateway_batches.delete, batch=batch)
            return JSONResponse({"id": batch.public_id, "type": "message_batch_deleted"})
        described = await _blocking(gateway_batches.body, batch=batch, base_url=_base_url(request))
    except GatewayError as exc:
        return error_response(exc)
    return JSONResponse(described)


async def batch_cancel(request: Request) -> Response:
    try:
        token, batch = await _own_batch(request)
        batch = await _blocking(gateway_batches.cancel, token=token, batch=batch)
        described = await _blocking(gateway_batches.body, batch=batch, base_url=_base_url(request))
    except GatewayError as exc:
        return error_response(exc)
    return JSONResponse(described)


async def batch_results(request: Request) -> Response:
    try:
        _, batch = await _own_batch(request)
        if not await _blocking(gateway_batches.ended, batch=batch):
            raise GatewayError(
                "invalid_request_error",
                f"message batch {batch.public_id} is still being processed; its results are "
                "ready once it has ended",
            )
    except GatewayError as exc:
        return error_response(exc)

    async def lines() -> AsyncIterator[bytes]:
        cursor: int | None = 0
        while cursor is not None:
            page, cursor = await _blocking(
                gateway_batches.results_page, batch=batch, after_pk=cursor
            )
            yield b"".join(json.dumps(line).encode() + b"\n" for line in page)

    return StreamingResponse(lines(), media_type="application/binary")


def _upstream_error(exc: ClaudeCallError) -> GatewayError:
    kind = exc.last_error_type or "api_error"
    if kind == "authentication_error":
        return GatewayError("api_error", "the gateway's upstream API key was refused")
    if kind not in API_ERROR_STATUS:
        kind = "api_error"
    return GatewayError(kind, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 405:
        refused = GatewayError(
            "invalid_request_error",
            f"{request.method} is not allowed on {request.url.path}",
            status=405,
        )
    elif status == 404:
        refused = GatewayError("not_found_error", f"no endpoint at {request.url.path}")
    else:
        refused = GatewayError("api_error", "the gateway could not answer", status=status)
    return error_response(refused)


app = Starlette(
    routes=[
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        Route("/v1/messages/batches", batches_collection, methods=["GET", "POST"]),
        Route("/v1/messages/batches/{batch_id}", batch_detail, methods=["GET", "DELETE"]),
        Route("/v1/messages/batches/{batch_id}/cancel", batch_cancel, methods=["POST"]),
        Route("/v1/messages/batches/{batch_id}/results", batch_results, methods=["GET"]),
        Route("/v1/models", models_list, methods=["GET"]),
        Route("/v1/models/{model_id:path}", models_retrieve, methods=["GET"]),
    ],
    exception_handlers={HTTPException: _http_error},
)
