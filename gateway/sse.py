"""A finished message as the Messages API's stream of server-sent events.

The gateway answers ``stream: true`` with the event sequence Anthropic sends —
``message_start``, per content block ``content_block_start`` / ``…_delta`` /
``content_block_stop``, ``message_delta``, ``message_stop`` — so the official SDKs' stream
helpers (``messages.stream``, ``.text_stream``, ``get_final_message``) accumulate exactly the
message the API returned. ``ping`` events keep the connection alive while the request waits
in the queue; an ``error`` event reports a failure after the stream began.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

# Text is sent in pieces of this many characters, as the API streams it in small deltas.
TEXT_CHUNK = 64


def event(name: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def ping() -> bytes:
    return event("ping", {"type": "ping"})


def error(body: Mapping[str, Any]) -> bytes:
    return event("error", body)


def _chunks(text: str) -> Iterator[str]:
    for start in range(0, len(text), TEXT_CHUNK):
        yield text[start : start + TEXT_CHUNK]


def _block_events(index: int, block: Mapping[str, Any]) -> Iterator[bytes]:
    kind = block.get("type")

    def start(shell: Mapping[str, Any]) -> bytes:
        return event(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": dict(shell)},
        )

    def delta(payload: Mapping[str, Any]) -> bytes:
        return event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": payload}
        )

    if kind == "text":
        yield start({"type": "text", "text": ""})
        for piece in _chunks(str(block.get("text", ""))):
            yield delta({"type": "text_delta", "text": piece})
        for citation in block.get("citations") or ():
            yield delta({"type": "citations_delta", "citation": citation})
    elif kind == "thinking":
        yield start({"type": "thinking", "thinking": "", "signature": ""})
        for piece in _chunks(str(block.get("thinking", ""))):
            yield delta({"type": "thinking_delta", "thinking": piece})
        if block.get("signature"):
            yield delta({"type": "signature_delta", "signature": block["signature"]})
    elif kind in ("tool_use", "server_tool_use"):
        yield start({**block, "input": {}})
        arguments = json.dumps(block.get("input", {}), separators=(",", ":"))
        if arguments != "{}":
            yield delta({"type": "input_json_delta", "partial_json": arguments})
    else:
        # redacted_thinking, tool results and anything newer arrive whole in their start event.
        yield start(block)
    yield event("content_block_stop", {"type": "content_block_stop", "index": index})


def message_events(message: Mapping[str, Any]) -> Iterator[bytes]:
    """The events of ``message`` (a Messages API response body), in the API's order."""
    usage = dict(message.get("usage") or {})
    opening = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        # The API reports the input side at the start and the output count at the end.
        "usage": {**usage, "output_tokens": min(1, int(usage.get("output_tokens") or 0))},
    }
    yield event("message_start", {"type": "message_start", "message": opening})
    for index, block in enumerate(message.get("content") or ()):
        yield from _block_events(index, block)
    yield event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": message.get("stop_reason"),
                "stop_sequence": message.get("stop_sequence"),
            },
            "usage": usage,
        },
    )
    yield event("message_stop", {"type": "message_stop"})
