"""A finished Message as the SSE events the API streams, in the API's order.

``message_start`` (usage with output_tokens ≤ 1) → ``ping`` → per content block
``content_block_start`` / ``content_block_delta``… / ``content_block_stop`` → ``message_delta``
(stop reason and the final usage) → ``message_stop``. Blocks stream as the API streams them:

- ``text``: starts empty, then ``text_delta`` chunks;
- ``thinking``: starts with empty ``thinking`` and ``signature``, then ``thinking_delta`` chunks
  (none when the display is omitted) and one ``signature_delta`` just before its stop;
- ``tool_use`` / ``server_tool_use``: starts with ``input: {}``, then ``input_json_delta``
  chunks of the input's JSON (the first one empty, as the API sends it);
- ``web_search_tool_result``: arrives whole in its ``content_block_start``.

The SDK's accumulator turns these back into the same Message. Each event carries the output
tokens produced once it has been sent, so a stream cut short (a mid-stream fault, a client
that hangs up) is charged what it really produced.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from .generation import Reply

STREAM_DELTA_CHARS = 48


@dataclass(frozen=True)
class Event:
    name: str
    data: dict[str, Any]
    produced: int  # output tokens produced once this event is sent


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _chunks(text: str) -> list[str]:
    return [text[i : i + STREAM_DELTA_CHARS] for i in range(0, len(text), STREAM_DELTA_CHARS)]


def _delta(index: int, delta: dict[str, Any], produced: int) -> Event:
    return Event(
        "content_block_delta",
        {"type": "content_block_delta", "index": index, "delta": delta},
        produced,
    )


def _block_events(
    index: int, block: dict[str, Any], tokens: int, before: int, ratio: float
) -> list[Event]:
    kind = block["type"]
    events: list[Event] = []

    def start(content_block: dict[str, Any]) -> None:
        events.append(
            Event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": content_block},
                before,
            )
        )

    if kind == "text":
        start({"type": "text", "text": ""})
        sent = 0
        for chunk in _chunks(block["text"]):
            sent += len(chunk)
            produced = before + min(tokens, math.ceil(sent / ratio))
            events.append(_delta(index, {"type": "text_delta", "text": chunk}, produced))
    elif kind == "thinking":
        start({"type": "thinking", "thinking": "", "signature": ""})
        shown = block["thinking"]
        sent = 0
        for chunk in _chunks(shown):
            sent += len(chunk)
            # The visible thinking stands for all the thinking tokens, spread evenly over it.
            produced = before + tokens * sent // len(shown)
            events.append(_delta(index, {"type": "thinking_delta", "thinking": chunk}, produced))
        events.append(
            _delta(
                index,
                {"type": "signature_delta", "signature": block["signature"]},
                before + tokens,
            )
        )
    elif kind in ("tool_use", "server_tool_use"):
        start({**block, "input": {}})
        payload = json.dumps(block["input"], separators=(",", ":"))
        for chunk in ["", *_chunks(payload)]:
            events.append(
                _delta(index, {"type": "input_json_delta", "partial_json": chunk}, before)
            )
    else:
        start(block)
    events.append(
        Event(
            "content_block_stop",
            {"type": "content_block_stop", "index": index},
            before + tokens,
        )
    )
    return events


def message_events(message: dict[str, Any], reply: Reply, ratio: float) -> list[Event]:
    """Every event of ``message`` (built from ``reply``) at the effective ``ratio``."""
    usage = message["usage"]
    start_usage = {
        **usage,
        "output_tokens": min(1, reply.output_tokens),
        "output_tokens_details": {"thinking_tokens": 0},
        "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
    }
    events = [
        Event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    **message,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
            0,
        ),
        Event("ping", {"type": "ping"}, 0),
    ]
    produced = 0
    for index, (block, tokens) in enumerate(zip(reply.content, reply.block_tokens, strict=True)):
        events += _block_events(index, block, tokens, produced, ratio)
        produced += tokens
    delta_usage = {
        key: usage[key]
        for key in (
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens_details",
            "server_tool_use",
        )
    }
    events.append(
        Event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": message["stop_reason"],
                    "stop_sequence": message["stop_sequence"],
                },
                "usage": delta_usage,
            },
            produced,
        )
    )
    events.append(Event("message_stop", {"type": "message_stop"}, produced))
    return events
