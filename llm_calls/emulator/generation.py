"""Deterministic replies: the content blocks, how many output tokens each costs, and why it stopped.

A reply is built in the order the real API emits blocks, each spending from ``max_tokens``:

1. a ``thinking`` block when thinking is on (``thinking.py``);
2. web searches when asked for (``tools.py``);
3. then either one ``tool_use`` block (``tools.py``; ``stop_reason: "tool_use"``) or text.

The text's length in tokens is ``[[emulator:output_tokens=N]]`` from the last user message, or a
pseudo-random 20..300 derived from (seed, prompt); it is ``N * effective chars_per_token``
characters of filler. A stop sequence that occurs in that text ends it just before the
sequence (``stop_reason: "stop_sequence"``, tokens counted on the cut text); running out of
``max_tokens`` ends it there (``"max_tokens"``). A tool call that no longer fits in what is left
is not made: the reply spends the rest on text and stops at ``max_tokens``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import new_id
from .model_catalog import ModelInfo
from .thinking import OUTPUT_DIRECTIVE, signature, thinking_plan, thinking_tokens
from .tokens import effective_chars_per_token, json_tokens
from .tools import chosen_tool, tool_input, web_search_blocks, web_search_count

MIN_DEFAULT_OUTPUT = 20
MAX_DEFAULT_OUTPUT = 300

_FILLER = (
    "The quick brown fox jumps over the lazy dog while the emulator pretends to think. "
    "Deterministic words fill a reply of exactly the promised length. "
)
_THINKING_FILLER = (
    "Let me work through the request step by step, weighing each option before answering. "
    "Checking the constraints once more keeps the reasoning honest. "
)


@dataclass
class Reply:
    content: list[dict[str, Any]] = field(default_factory=list)
    # Output tokens of each content block, in order (a tool result block costs none).
    block_tokens: list[int] = field(default_factory=list)
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    thinking_tokens: int = 0
    web_search_requests: int = 0

    @property
    def output_tokens(self) -> int:
        return sum(self.block_tokens)

    def add(self, block: dict[str, Any], tokens: int) -> None:
        self.content.append(block)
        self.block_tokens.append(tokens)


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user message: where the ``[[emulator:…]]`` directives are read."""
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


def prompt_hash(body: dict[str, Any], seed: int) -> int:
    prompt = {key: body.get(key) for key in ("model", "system", "tools", "messages")}
    raw = json.dumps([seed, prompt], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(raw.encode()).digest()[:8], "big")


def filler_text(tokens: int, effective_cpt: float, offset: int, source: str = _FILLER) -> str:
    """``tokens`` worth of filler: floor(tokens × effective chars), so ceil(len / ratio) is
    exactly ``tokens`` again whenever the ratio is above 1."""
    length = math.floor(tokens * effective_cpt + 1e-9)
    offset %= len(source)
    repeats = (offset + length) // len(source) + 1
    return (source * repeats)[offset : offset + length]


def _cut_at_stop_sequence(text: str, stop_sequences: list[str]) -> tuple[str, str] | None:
    found = [(text.find(s), s) for s in stop_sequences if s and s in text]
    if not found:
        return None
    position, sequence = min(found)
    return text[:position], sequence


def reply_for(
    body: dict[str, Any], *, model: ModelInfo, seed: int, chars_per_token: float
) -> Reply:
    """The reply to a validated body (see the module docstring)."""
    ratio = effective_chars_per_token(chars_per_token, model.token_factor)
    budget = int(body.get("max_tokens", 0))
    reply = Reply()
    if budget == 0:
        reply.stop_reason = "max_tokens"
        return reply
    prompt_text = last_user_text(body)
    hashed = prompt_hash(body, seed)

    plan = thinking_plan(body, model)
    thinking = min(thinking_tokens(plan, prompt_text=prompt_text, prompt_hash=hashed), budget)
    if thinking > 0:
        shown = (
            filler_text(thinking, ratio, hashed, _THINKING_FILLER)
            if plan.display == "summarized"
            else ""
        )
        reply.add(
            {
                "type": "thinking",
                "thinking": shown,
                "signature": signature(model.model_id, shown, thinking, hashed),
            },
            thinking,
        )
        reply.thinking_tokens = thinking
        budget -= thinking
        if budget == 0:
            reply.stop_reason = "max_tokens"
            return reply

    for number in range(1, web_search_count(body, prompt_text) + 1):
        use, result = web_search_blocks(number, new_id("srvtoolu"))
        cost = json_tokens({"name": use["name"], "input": use["input"]}, ratio)
        if cost > budget:
            break
        reply.add(use, cost)
        reply.add(result, 0)
        reply.web_search_requests += 1
        budget -= cost

    tool = chosen_tool(body, prompt_text)
    if tool is not None:
        block = {
            "type": "tool_use",
            "id": new_id("toolu"),
            "name": tool["name"],
            "input": tool_input(tool),
        }
        cost = json_tokens({"name": block["name"], "input": block["input"]}, ratio)
        if cost <= budget:
            reply.add(block, cost)
            reply.stop_reason = "tool_use"
        else:
            # The call would be cut off mid-input: the API stops at max_tokens.
            reply.add({"type": "text", "text": filler_text(budget, ratio, hashed)}, budget)
            reply.stop_reason = "max_tokens"
        return reply

    match = OUTPUT_DIRECTIVE.search(prompt_text)
    if match:
        wanted = int(match.group(1))
    else:
        span = MAX_DEFAULT_OUTPUT - MIN_DEFAULT_OUTPUT + 1
        wanted = MIN_DEFAULT_OUTPUT + hashed % span
    text = filler_text(wanted, ratio, hashed)
    tokens = wanted
    cut = _cut_at_stop_sequence(text, body.get("stop_sequences") or [])
    if cut is not None and math.ceil(len(cut[0]) / ratio) <= budget:
        text, reply.stop_sequence = cut
        tokens = math.ceil(len(text) / ratio)
        reply.stop_reason = "stop_sequence"
    elif wanted > budget:
        tokens = budget
        text = filler_text(budget, ratio, hashed)
        reply.stop_reason = "max_tokens"
    if text:
        reply.add({"type": "text", "text": text}, tokens)
    return reply
