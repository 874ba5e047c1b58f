"""Request-body validation: every problem is a 400 (or 404 for an unknown model) naming the field.

Validation runs before any rate limit, fault or billing: a bad request costs nothing. Three
passes, in the order the API appears to apply them: the body's shape (this module), then the
model (unknown and retired ids are a 404 ``model: <id>``), then that model's own rules
(``rules.py``: sampling, thinking, effort, forced tool use, prefill, data residency, fast mode).
"""

from __future__ import annotations

from typing import Any

from . import rules
from .errors import ApiError, invalid
from .model_catalog import EFFORT_LEVELS, THINKING_TYPES, ModelInfo, callable_model

MAX_CACHE_BREAKPOINTS = 4
CACHE_TTLS = ("5m", "1h")
TOOL_CHOICE_TYPES = ("auto", "any", "tool", "none")
INFERENCE_GEOS = ("global", "us")
SERVICE_TIERS = ("auto", "standard_only")
SPEEDS = ("standard", "fast")
THINKING_DISPLAYS = ("summarized", "omitted")

_COMMON_FIELDS = {
    "model",
    "messages",
    "system",
    "tools",
    "tool_choice",
    "cache_control",
    "thinking",
    "output_config",
    "speed",
    "metadata",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
    "diagnostics",
}
MESSAGE_FIELDS = _COMMON_FIELDS | {
    "max_tokens",
    "stream",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "inference_geo",
}
COUNT_TOKENS_FIELDS = _COMMON_FIELDS

# One prompt block as validation sees it: its own cache_control TTL (None: unmarked) and
# whether a top-level cache_control may land on it (see tokens.PromptBlock.cacheable).
_Mark = tuple[str | None, bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cache_ttl(value: Any, path: str) -> str | None:
    """The TTL of a ``cache_control`` object (only ``type`` and ``ttl`` are allowed) of the
    block at ``path`` ("": the body's top-level one)."""
    if value is None:
        return None
    at = f"{path}.cache_control" if path else "cache_control"
    if not isinstance(value, dict):
        raise invalid(f"{at}: Input should be a valid dictionary")
    if value.get("type") != "ephemeral":
        raise invalid(f"{at}.type: Input should be 'ephemeral'")
    extra = set(value) - {"type", "ttl"}
    if extra:
        raise invalid(f"{at}.{sorted(extra)[0]}: Extra inputs are not permitted")
    ttl = value.get("ttl", "5m")
    if ttl not in CACHE_TTLS:
        raise invalid(f"{at}.ttl: Input should be '5m' or '1h'")
    return str(ttl)


def _check_text_block(block: Any, path: str) -> str | None:
    if not isinstance(block, dict):
        raise invalid(f"{path}: Input should be a valid dictionary")
    if block.get("type") != "text":
        raise invalid(f"{path}.type: Input should be 'text'")
    if not isinstance(block.get("text"), str):
        raise invalid(f"{path}.text: Field required (a string)")
    if not block["text"]:
        raise invalid(f"{path}: text content blocks must be non-empty")
    return _cache_ttl(block.get("cache_control"), path)


def _check_block(block: Any, path: str) -> str | None:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise invalid(f"{path}: a content block needs a string 'type'")
    kind = block["type"]
    if kind == "text":
        return _check_text_block(block, path)
    if kind == "tool_use":
        for name in ("id", "name"):
            if not isinstance(block.get(name), str) or not block[name]:
                raise invalid(f"{path}.{name}: Field required")
        if not isinstance(block.get("input"), dict):
            raise invalid(f"{path}.input: Input should be a valid dictionary")
    elif kind == "tool_result" and (
        not isinstance(block.get("tool_use_id"), str) or not block["tool_use_id"]
    ):
        raise invalid(f"{path}.tool_use_id: Field required")
    return _cache_ttl(block.get("cache_control"), path)


def _check_messages(messages: Any) -> list[_Mark]:
    if not isinstance(messages, list):
        raise invalid("messages: Input should be a valid list")
    if not messages:
        raise invalid("messages: at least one message is required")
    marks: list[_Mark] = []
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
            marks.append((None, bool(content)))
            continue
        if not isinstance(content, list):
            raise invalid(f"{path}.content: Input should be a valid string or list of blocks")
        if not content:
            if not is_final_assistant:
                raise invalid(
                    f"{path}: all messages must have non-empty content except for the "
                    "optional final assistant message"
                )
            marks.append((None, False))  # counted as an empty prefill block
        for block_index, block in enumerate(content):
            ttl = _check_block(block, f"{path}.content.{block_index}")
            marks.append((ttl, block["type"] not in ("thinking", "redacted_thinking")))
    _check_tool_loop(messages)
    return marks


def _tool_blocks(message: dict[str, Any], kind: str) -> list[tuple[int, dict[str, Any]]]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [(i, block) for i, block in enumerate(content) if block.get("type") == kind]


def _check_tool_loop(messages: list[dict[str, Any]]) -> None:
    """The API's pairing rule, with its own messages: each ``tool_result`` answers a
    ``tool_use`` of the assistant message just before it, and each ``tool_use`` is answered in
    the very next (user) message. A final assistant message's tool_use has no next message and
    is left alone."""
    for index, message in enumerate(messages):
        if message["role"] == "user":
            previous = messages[index - 1] if index else None
            asked = (
                {block["id"] for _, block in _tool_blocks(previous, "tool_use")}
                if previous is not None and previous["role"] == "assistant"
                else set()
            )
            for block_index, block in _tool_blocks(message, "tool_result"):
                if block["tool_use_id"] not in asked:
                    raise invalid(
                        f"messages.{index}.content.{block_index}: unexpected `tool_use_id` "
                        f"found in `tool_result` blocks: {block['tool_use_id']}. Each "
                        "`tool_result` block must have a corresponding `tool_use` block in "
                        "the previous message."
                    )
            continue
        asked_ids = [block["id"] for _, block in _tool_blocks(message, "tool_use")]
        if not asked_ids or index == len(messages) - 1:
            continue
        following = messages[index + 1]
        answered = (
            {block["tool_use_id"] for _, block in _tool_blocks(following, "tool_result")}
            if following["role"] == "user"
            else set()
        )
        missing = [tool_id for tool_id in asked_ids if tool_id not in answered]
        if missing:
            raise invalid(
                f"messages.{index}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )


def _check_system(system: Any) -> list[_Mark]:
    if system is None:
        return []
    if isinstance(system, str):
        return [(None, True)] if system else []
    if not isinstance(system, list):
        raise invalid("system: Input should be a valid string or list of text blocks")
    return [(_check_text_block(block, f"system.{i}"), True) for i, block in enumerate(system)]


def is_custom_tool(tool: dict[str, Any]) -> bool:
    """A tool the caller defines with a JSON schema (not an Anthropic-defined or server tool)."""
    return tool.get("type") in (None, "custom")


def _check_tools(tools: Any) -> list[_Mark]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise invalid("tools: Input should be a valid list")
    marks: list[_Mark] = []
    names: set[str] = set()
    for index, tool in enumerate(tools):
        path = f"tools.{index}"
        if not isinstance(tool, dict):
            raise invalid(f"{path}: Input should be a valid dictionary")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise invalid(f"{path}.name: Field required")
        if is_custom_tool(tool) and not isinstance(tool.get("input_schema"), dict):
            raise invalid(f"{path}.input_schema: Field required (a JSON schema object)")
        if tool["name"] in names:
            raise invalid("tools: Tool names must be unique.")
        names.add(tool["name"])
        marks.append((_cache_ttl(tool.get("cache_control"), path), True))
    return marks


def _check_breakpoints(marks: list[_Mark], top_level: str | None) -> None:
    """At most 4 breakpoints, 1h ones before 5m ones; the top-level one takes a slot.

    A top-level ``cache_control`` lands on the last cacheable block: a block-level marker
    there with the same TTL is the same breakpoint (one slot); a different TTL is refused.
    """
    ttls = [ttl for ttl, _ in marks if ttl is not None]
    landing = [ttl for ttl, cacheable in marks if cacheable]
    if top_level is not None and landing:
        if landing[-1] is None:
            ttls.append(top_level)
        elif landing[-1] != top_level:
            raise invalid(
                f"cache_control: the top-level cache_control (ttl='{top_level}') applies to "
                "the last cacheable block, which already has a cache_control with "
                f"ttl='{landing[-1]}'"
            )
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


def _check_thinking(thinking: Any) -> None:
    if not isinstance(thinking, dict) or not isinstance(thinking.get("type"), str):
        raise invalid("thinking: Input should be an object with a 'type'")
    kind = thinking["type"]
    if kind not in THINKING_TYPES:
        raise invalid(f"thinking.type: Input should be one of {', '.join(THINKING_TYPES)}")
    allowed = {"type"} | (set() if kind in ("disabled", "between_tools") else {"display"})
    if kind == "enabled":
        allowed.add("budget_tokens")
    extra = sorted(set(thinking) - allowed)
    if extra:
        raise invalid(f"thinking.{kind}.{extra[0]}: Extra inputs are not permitted")
    display = thinking.get("display")
    if display is not None and display not in THINKING_DISPLAYS:
        raise invalid("thinking.display: Input should be 'summarized' or 'omitted'")
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or isinstance(budget, bool):
            raise invalid("thinking.enabled.budget_tokens: Field required (an integer)")
        if budget < 1024:
            raise invalid(
                "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
            )


def _check_output_config(config: Any) -> None:
    if not isinstance(config, dict):
        raise invalid("output_config: Input should be a valid dictionary")
    extra = sorted(set(config) - {"effort", "format"})
    if extra:
        raise invalid(f"output_config.{extra[0]}: Extra inputs are not permitted")
    effort = config.get("effort")
    if effort is not None and effort not in EFFORT_LEVELS:
        raise invalid(
            "output_config.effort: Input should be "
            + ", ".join(f"'{level}'" for level in EFFORT_LEVELS)
        )
    fmt = config.get("format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
            raise invalid("output_config.format.type: Input should be 'json_schema'")
        if not isinstance(fmt.get("schema"), dict):
            raise invalid("output_config.format.schema: Field required (a JSON schema object)")
        extra = sorted(set(fmt) - {"type", "schema"})
        if extra:
            raise invalid(f"output_config.format.{extra[0]}: Extra inputs are not permitted")


def _check_tool_choice(choice: Any, tools: list[dict[str, Any]]) -> None:
    if not isinstance(choice, dict) or choice.get("type") not in TOOL_CHOICE_TYPES:
        raise invalid(
            "tool_choice.type: Input should be " + ", ".join(f"'{t}'" for t in TOOL_CHOICE_TYPES)
        )
    kind = choice["type"]
    allowed = {"type"} | ({"disable_parallel_tool_use"} if kind != "none" else set())
    if kind == "tool":
        allowed.add("name")
    extra = sorted(set(choice) - allowed)
    if extra:
        raise invalid(f"tool_choice.{kind}.{extra[0]}: Extra inputs are not permitted")
    if "disable_parallel_tool_use" in choice and not isinstance(
        choice["disable_parallel_tool_use"], bool
    ):
        raise invalid("tool_choice.disable_parallel_tool_use: Input should be a valid boolean")
    if kind in ("any", "tool") and not tools:
        raise invalid("tool_choice: Tool choice may only be specified while providing tools.")
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise invalid("tool_choice.tool.name: Field required")
        if name not in {tool["name"] for tool in tools}:
            raise invalid(f"tool_choice.name: Tool '{name}' not found in tools.")


def _check_metadata(metadata: Any) -> None:
    if not isinstance(metadata, dict):
        raise invalid("metadata: Input should be a valid dictionary")
    extra = sorted(set(metadata) - {"user_id"})
    if extra:
        raise invalid(f"metadata.{extra[0]}: Extra inputs are not permitted")
    if metadata.get("user_id") is not None and not isinstance(metadata["user_id"], str):
        raise invalid("metadata.user_id: Input should be a valid string")


def _check_enum(body: dict[str, Any], name: str, values: tuple[str, ...]) -> None:
    if body.get(name) is not None and body[name] not in values:
        raise invalid(f"{name}: Input should be " + " or ".join(f"'{v}'" for v in values))


def _check_sampling(body: dict[str, Any]) -> None:
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and (not _is_number(value) or not 0 <= value <= 1):
            raise invalid(f"{name}: Input should be a number between 0 and 1")
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise invalid("top_k: Input should be an integer greater than or equal to 0")


def validate_request(body: Any, *, count_tokens: bool = False, in_batch: bool = False) -> ModelInfo:
    """Check a /v1/messages (or count_tokens, or batch item) body; returns the model or raises
    ApiError: 400 naming the field, 404 ``model: <id>`` for an unknown or retired model."""
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
    tools = body.get("tools") or []
    marks = _check_tools(body.get("tools"))
    marks += _check_system(body.get("system"))
    marks += _check_messages(body["messages"])
    _check_breakpoints(marks, _cache_ttl(body.get("cache_control"), ""))
    _check_sampling(body)
    if "stop_sequences" in body and (
        not isinstance(body["stop_sequences"], list)
        or not all(isinstance(s, str) and s for s in body["stop_sequences"])
    ):
        raise invalid("stop_sequences: Input should be a valid list of non-empty strings")
    if "metadata" in body:
        _check_metadata(body["metadata"])
    if "stream" in body and not isinstance(body["stream"], bool):
        raise invalid("stream: Input should be a valid boolean")
    if body.get("tool_choice") is not None:
        _check_tool_choice(body["tool_choice"], tools)
    if body.get("thinking") is not None:
        _check_thinking(body["thinking"])
    if body.get("output_config") is not None:
        _check_output_config(body["output_config"])
    _check_enum(body, "service_tier", SERVICE_TIERS)
    _check_enum(body, "inference_geo", INFERENCE_GEOS)
    _check_enum(body, "speed", SPEEDS)
    if body.get("diagnostics") is not None and not isinstance(body["diagnostics"], dict):
        raise invalid("diagnostics: Input should be a valid dictionary")

    info = callable_model(model)
    if info is None:
        raise ApiError(404, f"model: {model}")
    rules.check_model_rules(body, info, count_tokens=count_tokens)
    if in_batch:
        rules.check_batch_item(body)
    return info
