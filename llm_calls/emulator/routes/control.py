"""Control endpoints for tests, benchmarks and the demo (no auth; the server binds loopback)."""

from __future__ import annotations

from aiohttp import web

from llm_calls.emulator.errors import invalid
from llm_calls.emulator.http_layer import json_response, read_json
from llm_calls.emulator.ledger import api_key_id, key_fingerprint
from llm_calls.emulator.state import STATE_KEY


async def handle_health(request: web.Request) -> web.StreamResponse:
    return json_response({"ok": True})


async def handle_ledger(request: web.Request) -> web.StreamResponse:
    return json_response(request.app[STATE_KEY].ledger.as_dict())


async def handle_log(request: web.Request) -> web.StreamResponse:
    return json_response(request.app[STATE_KEY].log.entries)


async def handle_stats(request: web.Request) -> web.StreamResponse:
    """In-flight gauge: ``in_flight`` /v1/messages requests now, ``max_in_flight`` since reset."""
    state = request.app[STATE_KEY]
    return json_response(
        {
            "in_flight": state.in_flight,
            "max_in_flight": state.max_in_flight,
            "messages_total": state.messages_total,
        }
    )


async def handle_reset(request: web.Request) -> web.StreamResponse:
    request.app[STATE_KEY].reset()
    return json_response({"ok": True})


async def handle_config_get(request: web.Request) -> web.StreamResponse:
    return json_response(request.app[STATE_KEY].config.to_dict())


async def handle_config_set(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    state.apply_config(state.config.updated(await read_json(request)))
    return json_response(state.config.to_dict())


async def handle_clock(request: web.Request) -> web.StreamResponse:
    """Move the emulator's clock forward by ``advance_s`` seconds (never backwards)."""
    state = request.app[STATE_KEY]
    payload = await read_json(request)
    advance = payload.get("advance_s") if isinstance(payload, dict) else None
    if isinstance(advance, bool) or not isinstance(advance, int | float) or advance < 0:
        raise invalid("advance_s: a non-negative number of seconds is required")
    state.clock_offset_s += float(advance)
    return json_response({"now": state.now(), "offset_s": state.clock_offset_s})


async def handle_api_key_id(request: web.Request) -> web.StreamResponse:
    """The Admin API's ``api_key_id`` (and the ledger's fingerprint) of ``{"api_key": K}``, so a
    test can find a key's rows in the usage and cost reports. The key is hashed, never kept."""
    payload = await read_json(request)
    key = payload.get("api_key") if isinstance(payload, dict) else None
    if not isinstance(key, str) or not key:
        raise invalid("api_key: a non-empty string is required")
    fingerprint = key_fingerprint(key)
    return json_response({"api_key_id": api_key_id(fingerprint), "key_fingerprint": fingerprint})
