"""Deterministic replies: how many output tokens, and the text that fills them."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

OUTPUT_DIRECTIVE = re.compile(r"\[\[emulator:output_tokens=(\d+)\]\]")
MIN_DEFAULT_OUTPUT = 20
MAX_DEFAULT_OUTPUT = 300

_FILLER = (
    "The quick brown fox jumps over the lazy dog while the emulator pretends to think. "
    "Deterministic words fill a reply of exactly the promised length. "
)


@dataclass(frozen=True)
class Reply:
    text: str
    output_tokens: int
    stop_reason: str


def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        return "\n".join(
            block.get("text", "") for block in content or [] if block.get("type") == "text"
        )
    return ""


def _prompt_hash(body: dict[str, Any], seed: int) -> int:
    prompt = {key: body.get(key) for key in ("model", "system", "tools", "messages")}
    raw = json.dumps([seed, prompt], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(raw.encode()).digest()[:8], "big")


def reply_for(body: dict[str, Any], *, seed: int, chars_per_token: float) -> Reply:
    """The reply to a validated body.

    ``[[emulator:output_tokens=N]]`` in the last user message asks for exactly N tokens;
    otherwise the count is a pseudo-random 20..300 derived from (seed, prompt). Either is capped
    by max_tokens, in which case stop_reason is "max_tokens". The text is
    ``output_tokens * chars_per_token`` characters long.
    """
    max_tokens = int(body.get("max_tokens", 0))
    match = OUTPUT_DIRECTIVE.search(_last_user_text(body))
    prompt_hash = _prompt_hash(body, seed)
    if match:
        wanted = int(match.group(1))
    else:
        span = MAX_DEFAULT_OUTPUT - MIN_DEFAULT_OUTPUT + 1
        wanted = MIN_DEFAULT_OUTPUT + prompt_hash % span
    if wanted > max_tokens:
        tokens, stop_reason = max_tokens, "max_tokens"
    else:
        tokens, stop_reason = wanted, "end_turn"
    length = int(round(tokens * chars_per_token))
    offset = prompt_hash % len(_FILLER)
    repeats = (offset + length) // len(_FILLER) + 1
    text = (_FILLER * repeats)[offset : offset + length]
    return Reply(text=text, output_tokens=tokens, stop_reason=stop_reason)
