"""Local input-token estimate, so the limiter can reserve before a call without spending one.

``count_tokens`` on the API is a request of its own (it has its own RPM limit), so the gateway
estimates locally with the same rule the emulator counts by: ceil(chars / chars_per_token) per
text, tools by their compact JSON, 4 tokens of overhead per message. Against the real API this
is an estimate; the limiter corrects it from actual usage (see ``queueing.limiter``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from llm_calls import catalog

DEFAULT_CHARS_PER_TOKEN = 4.0
MESSAGE_OVERHEAD_TOKENS = 4


def text_tokens(text: str, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN) -> int:
    return math.ceil(len(text) / chars_per_token) if text else 0


def _without_cache_control(block: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "cache_control"}


def block_tokens(block: Any, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN) -> int:
    if isinstance(block, str):
        return text_tokens(block, chars_per_token)
    if isinstance(block, Mapping):
        if block.get("type") == "text":
            return text_tokens(str(block.get("text", "")), chars_per_token)
        compact = json.dumps(_without_cache_control(block), sort_keys=True, separators=(",", ":"))
        return text_tokens(compact, chars_per_token)
    return 0


def chars_per_token_for(
    model: str | None, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN
) -> float:
    """Characters per token on ``model``'s tokenizer (unknown models count like the old one)."""
    return chars_per_token / catalog.token_factor(model) if model else chars_per_token


def estimate_input_tokens(
    params: Mapping[str, Any], chars_per_token: float = DEFAULT_CHARS_PER_TOKEN
) -> int:
    """Estimated total input tokens (uncached + cache write + cache read) of a Messages body,
    on the tokenizer of its model."""
    model = params.get("model")
    chars_per_token = chars_per_token_for(
        model if isinstance(model, str) else None, chars_per_token
    )
    total = 0
    for tool in params.get("tools") or []:
        compact = json.dumps(_without_cache_control(tool), sort_keys=True, separators=(",", ":"))
        total += text_tokens(compact, chars_per_token)
    system = params.get("system")
    if isinstance(system, str):
        total += text_tokens(system, chars_per_token)
    elif isinstance(system, list):
        total += sum(block_tokens(b, chars_per_token) for b in system)
    for message in params.get("messages") or []:
        total += MESSAGE_OVERHEAD_TOKENS
        content = message.get("content")
        if isinstance(content, str):
            total += text_tokens(content, chars_per_token)
        elif isinstance(content, list):
            total += sum(block_tokens(b, chars_per_token) for b in content)
    return total
