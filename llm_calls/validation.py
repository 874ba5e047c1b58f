"""Check a Messages API body before anything is queued or sent.

Everything the API would reject with a 400/404/413 is rejected here first, with a message that
names the field, so bad input never costs a request, is never retried, and never reaches a queue.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from llm_calls.catalog import known_models

MAX_BODY_BYTES = 32 * 1024 * 1024  # the API answers 413 above this
MAX_BREAKPOINTS = 4
ALLOWED_TOP_LEVEL = {
    "model",
    "max_tokens",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "top_k",
    "stop_sequences",
    "metadata",
    "cache_control",
    "service_tier",
    "stream",
}


class InvalidRequest(ValueError):
    """A request the API would reject. ``field`` names the offending part of the body."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


def _check_text(value: Any, field: str, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise InvalidRequest(field, f"must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InvalidRequest(field, "must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            field, "is not valid UTF-8 text (it contains lone surrogates)"
        ) from None


def _check_cache_control(block: Mapping[str, Any], field: str) -> str | None:
    cc = block.get("cache_control")
    if cc is None:
        return None
    if not isinstance(cc, Mapping) or cc.get("type") != "ephemeral":
        raise InvalidRequest(
            f"{field}.cache_control", 'must be {"type": "ephemeral", "ttl"?: "5m" | "1h"}'
        )
    ttl = cc.get("ttl", "5m")
    if ttl not in ("5m", "1h"):
        raise InvalidRequest(f"{field}.cache_control.ttl", f'must be "5m" or "1h", got {ttl!r}')
    return str(ttl)


def _check_block(block: Any, field: str) -> str | None:
    if not isinstance(block, Mapping):
        raise InvalidRequest(field, f"must be an object, got {type(block).__name__}")
    kind = block.get("type")
    if kind == "text":
        _check_text(block.get("text"), f"{field}.text")
    elif kind in ("tool_use", "tool_result", "image", "document", "thinking", "redacted_thinking"):
        pass  # passed through as given; the API checks their inner shape
    else:
        raise InvalidRequest(f"{field}.type", f"unknown content block type {kind!r}")
    return _check_cache_control(block, field)


def check_message_params(params: Mapping[str, Any]) -> None:
    """Raise InvalidRequest unless ``params`` is a Messages body the API would accept."""
    if not isinstance(params, Mapping):
        raise InvalidRequest("body", "must be a JSON object")
    unknown = set(params) - ALLOWED_TOP_LEVEL
    if unknown:
        raise InvalidRequest(sorted(unknown)[0], "is not a Messages API field")

    model = params.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model", "is required and must be a model id string")
    models = known_models()
    if model not in models:
        raise InvalidRequest(
            "model", f"unknown model {model!r}; known: {', '.join(sorted(models))}"
        )

    max_tokens = params.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise InvalidRequest("max_tokens", "is required and must be an integer")
    if max_tokens < 0:
        # 0 is legal: it answers nothing and only writes the prompt cache (a pre-warm).
        raise InvalidRequest("max_tokens", f"must be 0 or more, got {max_tokens}")
    cap = models[model].max_output_tokens
    if max_tokens > cap:
        raise InvalidRequest("max_tokens", f"{max_tokens} exceeds {model}'s maximum of {cap}")

    ttls: list[str] = []

    tools = params.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("tools", "must be a list")
        for i, tool in enumerate(tools):
            if (
                not isinstance(tool, Mapping)
                or not isinstance(tool.get("name"), str)
                or not tool["name"]
            ):
                raise InvalidRequest(f"tools[{i}]", "must be an object with a non-empty name")
            ttl = _check_cache_control(tool, f"tools[{i}]")
            if ttl:
                ttls.append(ttl)

    system = params.get("system")
    if system is not None:
        if isinstance(system, str):
            _check_text(system, "system", allow_empty=True)
        elif isinstance(system, list):
            for i, block in enumerate(system):
                if not isinstance(block, Mapping) or block.get("type") != "text":
                    raise InvalidRequest(f"system[{i}]", "system blocks must be text blocks")
                ttl = _check_block(block, f"system[{i}]")
                if ttl:
                    ttls.append(ttl)
        else:
            raise InvalidRequest("system", "must be a string or a list of text blocks")

    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages", "is required and must be a non-empty list")
    for i, message in enumerate(messages):
        field = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise InvalidRequest(field, "must be an object with role and content")
        if set(message) - {"role", "content"}:
            raise InvalidRequest(
                field, f"unexpected key {sorted(set(message) - {'role', 'content'})[0]!r}"
            )
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise InvalidRequest(f"{field}.role", f'must be "user" or "assistant", got {role!r}')
        if i == 0 and role != "user":
            raise InvalidRequest(f"{field}.role", "the first message must be from the user")
        content = message.get("content")
        if isinstance(content, str):
            _check_text(content, f"{field}.content")
        elif isinstance(content, list):
            if not content:
                raise InvalidRequest(f"{field}.content", "must not be an empty list")
            for j, block in enumerate(content):
                ttl = _check_block(block, f"{field}.content[{j}]")
                if ttl:
                    ttls.append(ttl)
        else:
            raise InvalidRequest(f"{field}.content", "must be a string or a list of content blocks")

    top_cc = params.get("cache_control")
    if top_cc is not None:
        ttl = _check_cache_control({"cache_control": top_cc}, "body")
        if ttl:
            ttls.append(ttl)

    if len(ttls) > MAX_BREAKPOINTS:
        raise InvalidRequest(
            "cache_control",
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {len(ttls)}.",
        )
    for earlier, later in zip(ttls, ttls[1:], strict=False):
        if earlier == "5m" and later == "1h":
            raise InvalidRequest(
                "cache_control", 'a "1h" cache breakpoint may not come after a "5m" one'
            )

    temperature = params.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 1
    ):
        raise InvalidRequest("temperature", "must be a number between 0 and 1")
    stops = params.get("stop_sequences")
    if stops is not None and (
        not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops)
    ):
        raise InvalidRequest("stop_sequences", "must be a list of non-empty strings")
    metadata = params.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidRequest("metadata", "must be an object")

    try:
        # allow_nan=False: NaN/Infinity are not JSON, the API would refuse the body.
        encoded = json.dumps(params, ensure_ascii=False, allow_nan=False)
    except RecursionError:
        raise InvalidRequest("body", "is nested too deeply") from None
    except (TypeError, ValueError) as exc:  # a set, an object, NaN, a circular reference…
        raise InvalidRequest("body", f"is not JSON-serialisable ({exc})") from None
    size = len(encoded.encode("utf-8"))
    if size > MAX_BODY_BYTES:
        raise InvalidRequest(
            "body", f"is {size:,} bytes; the API accepts at most {MAX_BODY_BYTES:,}"
        )
