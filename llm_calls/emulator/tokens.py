"""Deterministic token counting: the one formula both the emulator and the gateway's estimator use.

Every count runs at an *effective* characters-per-token: the configured ``chars_per_token`` (4
by default) divided by the model's ``token_factor`` (1.3 on Claude 4.7 and later, whose newer
tokenizer counts the same text as about 30% more tokens; 1.0 before). That division is
``effective_chars_per_token`` — computed exactly once, as a float, so the gateway's estimator
can reproduce it bit for bit. Then, at that ratio:
- each text — the system string, each system/message text block's ``text``, a string message
  content — counts ``ceil(len(text) / chars_per_token)``;
- each tool counts ``ceil(len(json.dumps(tool_without_cache_control, sort_keys=True,
  separators=(",", ":"))) / chars_per_token)``;
- any other message block (tool_use, tool_result, image, ...) is counted like a tool, from its
  JSON without ``cache_control`` (the contract says nothing about them; this keeps them non-free);
- each message adds 4 tokens of overhead, attributed to the message's first block so the prompt
  cache sees it inside the prefix that block closes.

Input is assumed already validated (see ``validation.py``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

MESSAGE_OVERHEAD_TOKENS = 4
# Blocks the API cannot mark with cache_control itself: a top-level ``cache_control`` skips them
# when it looks for "the last cacheable block".
_UNMARKABLE_BLOCKS = ("thinking", "redacted_thinking")


def effective_chars_per_token(chars_per_token: float, token_factor: float = 1.0) -> float:
    """Characters per token on a model's tokenizer: ``chars_per_token / token_factor``."""
    return chars_per_token / token_factor


@dataclass(frozen=True)
class PromptBlock:
    """One cacheable unit of the prompt, in cache order tools → system → messages."""

    tokens: int
    # The block's own ``cache_control`` dict, or None when it is not a breakpoint.
    cache_control: dict[str, Any] | None
    # Stable identity of the block's content (without cache_control) and its position kind.
    digest: bytes
    # Whether a top-level cache_control may land here (not an empty prefill, not thinking).
    cacheable: bool = True


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _text_tokens(text: str, chars_per_token: float) -> int:
    return math.ceil(len(text) / chars_per_token)


def _without_cache_control(block: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "cache_control"}


def _json_tokens(value: dict[str, Any], chars_per_token: float) -> int:
    # Exactly json.dumps' defaults plus these two options (so non-ASCII is \u-escaped): the
    # gateway's estimator reproduces this call, and any difference would shift every count.
    compact = json.dumps(_without_cache_control(value), sort_keys=True, separators=(",", ":"))
    return math.ceil(len(compact) / chars_per_token)


def _message_block_tokens(block: dict[str, Any], chars_per_token: float) -> int:
    if block.get("type") == "text":
        return _text_tokens(block.get("text", ""), chars_per_token)
    return _json_tokens(block, chars_per_token)


def _digest(kind: str, content: Any) -> bytes:
    return hashlib.sha256(_canonical([kind, content]).encode()).digest()


def prompt_blocks(
    body: dict[str, Any], chars_per_token: float, token_factor: float = 1.0
) -> list[PromptBlock]:
    """The prompt as blocks in cache order, each with its token count and breakpoint marker."""
    chars_per_token = effective_chars_per_token(chars_per_token, token_factor)
    blocks: list[PromptBlock] = []
    for tool in body.get("tools") or []:
        blocks.append(
            PromptBlock(
                tokens=_json_tokens(tool, chars_per_token),
                cache_control=tool.get("cache_control"),
                digest=_digest("tool", _without_cache_control(tool)),
            )
        )
    system = body.get("system")
    if isinstance(system, str):
        if system:
            blocks.append(
                PromptBlock(
                    tokens=_text_tokens(system, chars_per_token),
                    cache_control=None,
                    digest=_digest("system", {"type": "text", "text": system}),
                )
            )
    elif isinstance(system, list):
        for block in system:
            blocks.append(
                PromptBlock(
                    tokens=_text_tokens(block.get("text", ""), chars_per_token),
                    cache_control=block.get("cache_control"),
                    digest=_digest("system", _without_cache_control(block)),
                )
            )
    for message in body.get("messages") or []:
        role = message.get("role")
        content = message.get("content")
        if isinstance(content, str) or not content:
            # An empty prefill still costs its message overhead.
            content = [{"type": "text", "text": content or ""}]
        for index, block in enumerate(content or []):
            overhead = MESSAGE_OVERHEAD_TOKENS if index == 0 else 0
            empty_text = block.get("type") == "text" and not block.get("text")
            blocks.append(
                PromptBlock(
                    tokens=_message_block_tokens(block, chars_per_token) + overhead,
                    cache_control=block.get("cache_control"),
                    digest=_digest(f"{role}:{index == 0}", _without_cache_control(block)),
                    cacheable=not empty_text and block.get("type") not in _UNMARKABLE_BLOCKS,
                )
            )
    return blocks


def count_tokens(body: dict[str, Any], chars_per_token: float, token_factor: float = 1.0) -> int:
    """Input tokens of a Messages request body (tools + system + messages), ignoring caching."""
    return sum(block.tokens for block in prompt_blocks(body, chars_per_token, token_factor))


def text_tokens(text: str, chars_per_token: float, token_factor: float = 1.0) -> int:
    return _text_tokens(text, effective_chars_per_token(chars_per_token, token_factor))


def json_tokens(value: dict[str, Any], chars_per_token: float, token_factor: float = 1.0) -> int:
    """Tokens of a JSON value (a tool_use block's name and input, say) at the model's ratio."""
    return _json_tokens(value, effective_chars_per_token(chars_per_token, token_factor))
