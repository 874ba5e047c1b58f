"""Message Batches: create, list, get, cancel, delete and results.

A batch is processed in one go ``batch_latency_ms`` after creation (or ends early when
cancelled). Each item is validated as a ``/v1/messages`` body — the same model rules, plus
what only a batch refuses (``stream``, fast ``speed``, ``max_tokens: 0``) — and a bad item is an
``errored`` result carrying the error body the API would have answered (a retired or unknown
model: the 404 ``model: <id>``), never a failed batch. Only succeeded items are billed, at the
batch tier.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from llm_calls.emulator.batches import validate_batch_body
from llm_calls.emulator.errors import ApiError, error_body, invalid, new_id
from llm_calls.emulator.generation import reply_for
from llm_calls.emulator.http_layer import authenticate, json_response, read_json
from llm_calls.emulator.responses import message_for, usage_for
from llm_calls.emulator.rules import check_context_window
from llm_calls.emulator.state import STATE_KEY, TASKS_KEY, EmulatorState
from llm_calls.emulator.tokens import prompt_blocks
from llm_calls.emulator.validation import validate_request


def _base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def _process_batch_item(
    state: EmulatorState, fingerprint: str, batch_id: str, item: dict[str, Any]
) -> dict[str, Any]:
    params = item["params"]
    request_id = new_id("req")
    config = state.config
    try:
        model = validate_request(params, in_batch=True)
        blocks = prompt_blocks(params, config.chars_per_token, model.token_factor)
        check_context_window(model, sum(block.tokens for block in blocks))
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
    plan = state.cache.plan(
        key_fingerprint=fingerprint,
        model=model,
        blocks=blocks,
        top_level_cache_control=params.get("cache_control"),
        now=now,
    )
    state.cache.commit(plan, now)
    reply = reply_for(params, model=model, seed=config.seed, chars_per_token=config.chars_per_token)
    message = message_for(
        model_id=params["model"],
        reply=reply,
        usage=usage_for(plan, reply, params, service_tier="batch"),
    )
    state.bill(fingerprint=fingerprint, request_id=request_id, message=message, batch_id=batch_id)
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
    fingerprint = authenticate(request)
    requests = validate_batch_body(await read_json(request))
    batch = state.batches.create(fingerprint=fingerprint, requests=requests, now=state.now())
    task = asyncio.get_running_loop().create_task(_run_batch(state, batch.id, fingerprint))
    request.app[TASKS_KEY].add(task)
    task.add_done_callback(request.app[TASKS_KEY].discard)
    return json_response(batch.as_api(_base_url(request)))


async def handle_batch_get(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    fingerprint = authenticate(request)
    batch = state.batches.get(fingerprint=fingerprint, batch_id=request.match_info["batch_id"])
    return json_response(batch.as_api(_base_url(request)))


async def handle_batch_list(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    fingerprint = authenticate(request)
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
    return json_response(
        {
            "data": [batch.as_api(base_url) for batch in page],
            "has_more": has_more,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        }
    )


async def handle_batch_cancel(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    fingerprint = authenticate(request)
    batch = state.batches.get(fingerprint=fingerprint, batch_id=request.match_info["batch_id"])
    if batch.processing_status == "in_progress":
        batch.processing_status = "canceling"
        batch.cancel_initiated_at = state.now()
        batch.wake.set()
    return json_response(batch.as_api(_base_url(request)))


async def handle_batch_delete(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    fingerprint = authenticate(request)
    batch_id = request.match_info["batch_id"]
    state.batches.delete(fingerprint=fingerprint, batch_id=batch_id)
    return json_response({"id": batch_id, "type": "message_batch_deleted"})


async def handle_batch_results(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    fingerprint = authenticate(request)
    batch = state.batches.get(fingerprint=fingerprint, batch_id=request.match_info["batch_id"])
    if batch.processing_status != "ended":
        raise invalid(
            f"message batch {batch.id} is still {batch.processing_status}; results are not ready"
        )
    lines = "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in batch.results)
    return web.Response(body=lines.encode(), content_type="application/x-jsonl")
