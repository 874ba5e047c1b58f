"""Request-body validation: every problem is a 400 (or 404 for an unknown model) naming the field.

Validation runs before any rate limit, fault or billing: a bad request costs nothing.
"""

from __future__ import annotations

from typing import Any

from .errors import ApiError, invalid
from .model_catalog import ModelInfo, model_lookup

MAX_CACHE_BREAKPOINTS = 4
CACHE_TTLS = ("5m", "1h")

_COMMON_FIELDS = {
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "cache_control",
    "thinking",
    "metadata",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
    "output_config",
}
MESSAGE_FIELDS = _COMMON_FIELDS | {
    "max_tokens",
    "stream",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
}
COUNT_TOKENS_FIELDS = _COMMON_FIELDS


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_cache_control(value: Any, path: str, ttls: list[str]) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise invalid(f"{path}.cache_control: Input should be a valid dictionary")
    if value.get("type") != "ephemeral":
        raise invalid(f"{path}.cache_control.type: Input should be 'ephemeral'")
    extra = set(value) - {"type", "ttl"}
    if extra:
        raise invalid(f"{path}.cache_control.{sorted(extra)[0]}: Extra inputs are not permitted")
    ttl = value.get("ttl", "5m")
    if ttl not in CACHE_TTLS:
        raise invalid(f"{path}.cache_control.ttl: Input should be '5m' or '1h'")
    ttls.append(ttl)


def _check_text_block(block: Any, path: str, ttls: list[str]) -> None:
    if not isinstance(block, dict):
        raise invalid(f"{path}: Input should be a valid dictionary")
    if block.get("type") != "text":
        raise invalid(f"{path}.type: Input should be 'text'")
    if not isinstance(block.get("text"), str):
        raise invalid(f"{path}.text: Field required (a string)")
    if not block["text"]:
        raise invalid(f"{path}: text content blocks must be non-empty")
    _check_cache_control(block.get("cache_control"), path, ttls)


def _check_messages(messages: Any, ttls: list[str]) -> None:
    if not isinstance(messages, list):
        raise invalid("messages: Input should be a valid list")
    if not messages:
        raise invalid("messages: at least one message is required")
    for index, message in enumerate(messages):
        path = f"messages.{index}"
        if not isinstance(message, dict):
            raise invalid(f"{path}: Input should be a valid dictionary")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise invalid(f"{path}.role: Input should be 'user' or 'assistant'")
        if index == 0 and role != "user":
            raise invalid('messages: first message must use the "user" role')
        if "content" not in message:
            raise invalid(f"{path}.content: Field required")
        content = message["content"]
        is_final_assistant = index == len(messages) - 1 and role == "assistant"
        if isinstance(content, str):
            if not content and not is_final_assistant:
                raise invalid(
                    f"{path}: all messages must have non-empty content except for the "
                    "optional final assistant message"
                )
            continue
        if not isinstance(content, list):
            raise invalid(f"{path}.content: Input should be a valid string or list of blocks")
        if not content and not is_final_assistant:
            raise invalid(
                f"{path}: all messages must have non-empty content except for the "
                "optional final assistant message"
            )
        for block_index, block in enumerate(content):
            block_path = f"{path}.content.{block_index}"
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                raise invalid(f"{block_path}: a content block needs a string 'type'")
            if block["type"] == "text":
                _check_text_block(block, block_path, ttls)
            else:
                _check_cache_control(block.get("cache_control"), block_path, ttls)


def _check_system(system: Any, ttls: list[str]) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise invalid("system: Input should be a valid string or list of text blocks")
    for index, block in enumerate(system):
        _check_text_block(block, f"system.{index}", ttls)


def _check_tools(tools: Any, ttls: list[str]) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        raise invalid("tools: Input should be a valid list")
    for index, tool in enumerate(tools):
        path = f"tools.{index}"
        if not isinstance(tool, dict):
            raise invalid(f"{path}: Input should be a valid dictionary")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise invalid(f"{path}.name: Field required")
        if "type" not in tool and not isinstance(tool.get("input_schema"), dict):
            raise invalid(f"{path}.input_schema: Field required (a JSON schema object)")
        _check_cache_control(tool.get("cache_control"), path, ttls)


def _check_breakpoints(ttls: list[str]) -> None:
    if len(ttls) > MAX_CACHE_BREAKPOINTS:
        raise invalid(
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(ttls)}."
        )
    seen_5m = False
    for ttl in ttls:
        if ttl == "5m":
            seen_5m = True
        elif seen_5m:
            raise invalid(
                "cache_control: a ttl='1h' cache breakpoint cannot come after a ttl='5m' one "
                "(longer TTLs must come first, in the order tools, system, messages)"
            )


def validate_request(body: Any, *, count_tokens: bool = False) -> ModelInfo:
    """Check a /v1/messages (or count_tokens) body; returns the model or raises ApiError."""
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    allowed = COUNT_TOKENS_FIELDS if count_tokens else MESSAGE_FIELDS
    extra = sorted(set(body) - allowed)
    if extra:
        raise invalid(f"{extra[0]}: Extra inputs are not permitted")
    model = body.get("model")
    if model is None:
        raise invalid("model: Field required")
    if not isinstance(model, str):
        raise invalid("model: Input should be a valid string")
    if not count_tokens:
        if "max_tokens" not in body:
            raise invalid("max_tokens: Field required")
        if not _is_int(body["max_tokens"]) or body["max_tokens"] < 0:
            raise invalid("max_tokens: Input should be an integer greater than or equal to 0")
    if "messages" not in body:
        raise invalid("messages: Field required")
    ttls: list[str] = []
    _check_tools(body.get("tools"), ttls)
    _check_system(body.get("system"), ttls)
    _check_messages(body["messages"], ttls)
    _check_cache_control(body.get("cache_control"), "body", ttls)
    _check_breakpoints(ttls)
    if "temperature" in body and (
        not _is_number(body["temperature"]) or not 0 <= body["temperature"] <= 1
    ):
        raise invalid("temperature: Input should be a number between 0 and 1")
    if "stop_sequences" in body and (
        not isinstance(body["stop_sequences"], list)
        or not all(isinstance(s, str) for s in body["stop_sequences"])
    ):
        raise invalid("stop_sequences: Input should be a valid list of strings")
    if "metadata" in body:
        metadata = body["metadata"]
        if not isinstance(metadata, dict):
            raise invalid("metadata: Input should be a valid dictionary")
        if set(metadata) - {"user_id"}:
            raise invalid(
                f"metadata.{sorted(set(metadata) - {'user_id'})[0]}: Extra inputs are not permitted"
            )
        if metadata.get("user_id") is not None and not isinstance(metadata["user_id"], str):
            raise invalid("metadata.user_id: Input should be a valid string")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise invalid("stream: Input should be a valid boolean")
    if "tool_choice" in body and not (
        isinstance(body["tool_choice"], dict) and isinstance(body["tool_choice"].get("type"), str)
    ):
        raise invalid("tool_choice: Input should be an object with a 'type'")
    if "service_tier" in body and body["service_tier"] not in ("auto", "standard_only"):
        raise invalid("service_tier: Input should be 'auto' or 'standard_only'")
    info = model_lookup(model)
    if info is None:
        raise ApiError(404, f"model: {model}")
    return info
