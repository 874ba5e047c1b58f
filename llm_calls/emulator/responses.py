"""The Message object and its ``usage``, shaped exactly like the SDK's ``Message`` and ``Usage``.

``usage`` carries every billing-relevant fact of the response, and the ledger bills from it:
the four token counts and the TTL split of cache writes, thinking tokens (already inside
``output_tokens``), server-tool requests, the service tier, where inference ran
(``inference_geo``: ``"global"`` unless ``"us"`` was asked) and, when the request chose a
``speed``, that speed.
"""

from __future__ import annotations

from typing import Any

from .errors import new_id
from .generation import Reply
from .prompt_cache import CachePlan


def usage_for(
    plan: CachePlan, reply: Reply, body: dict[str, Any], *, service_tier: str
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": plan.input_tokens,
        "output_tokens": reply.output_tokens,
        "cache_creation_input_tokens": plan.cache_creation_input_tokens,
        "cache_read_input_tokens": plan.cache_read_input_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": plan.cache_creation_5m,
            "ephemeral_1h_input_tokens": plan.cache_creation_1h,
        },
        "output_tokens_details": {"thinking_tokens": reply.thinking_tokens},
        "server_tool_use": {
            "web_search_requests": reply.web_search_requests,
            "web_fetch_requests": 0,
        },
        "service_tier": service_tier,
        "inference_geo": "us" if body.get("inference_geo") == "us" else "global",
    }
    if body.get("speed") is not None:
        usage["speed"] = body["speed"]
    return usage


def message_for(*, model_id: str, reply: Reply, usage: dict[str, Any]) -> dict[str, Any]:
    """``model_id`` is the id the request named (a dated alias is echoed as sent)."""
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model_id,
        "content": reply.content,
        "stop_reason": reply.stop_reason,
        "stop_sequence": reply.stop_sequence,
        "usage": usage,
    }
