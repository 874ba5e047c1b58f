"""Check a Messages API body before anything is queued or sent.

Everything the API would reject with a 400/404/413 is rejected here first, with a message that
names the field, so bad input never costs a request, is never retried, and never reaches a
queue. That includes each model's own rules (``llm_calls.catalog``): sampling parameters on
Claude 4.7 and later, the thinking modes and effort levels a model accepts, forced tool use,
assistant prefill, US-only inference and fast mode — and a retired model, refused with its
retirement date and replacement.

Where the API's own 400 message is known, the message is the API's, word for word: the emulator
answers the same words, and ``tests/bad_bodies.py`` holds the two in agreement.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

from llm_calls import catalog
from llm_calls.catalog import EFFORT_LEVELS, ModelInfo
from llm_calls.params import MESSAGE_FIELDS

MAX_BODY_BYTES = 32 * 1024 * 1024  # the API answers 413 above this
MAX_BREAKPOINTS = 4
MIN_THINKING_BUDGET = 1024
MAX_METADATA_USER_ID = 256
# Chosen by the transport, never by a caller of the gateway's own doors.
TRANSPORT_FIELDS = frozenset({"stream"})
INFERENCE_GEOS = ("global", "us")
SERVICE_TIERS = ("auto", "standard_only")
SPEEDS = ("standard", "fast")
TOOL_CHOICE_TYPES = ("auto", "any", "tool", "none")
# Content block types passed through as given; the API checks their inner shape.
PASSTHROUGH_BLOCKS = (
    "image",
    "document",
    "search_result",
    "thinking",
    "redacted_thinking",
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "container_upload",
)

# The API's own words, used in more than one place (llm_calls.caching too). Those of the body's
# shape are pydantic's; the API puts the location in front (``messages.0.content: ...``).
FIELD_REQUIRED = "Field required"
NOT_AN_OBJECT = "Input should be a valid dictionary"
NOT_A_LIST = "Input should be a valid list"
EXTRA_INPUT = "Extra inputs are not permitted"
SYSTEM_TYPE = "Input should be a valid string or list of text blocks"
CONTENT_TYPE = "Input should be a valid string or list of blocks"
NO_MESSAGES = "at least one message is required"
EMPTY_CONTENT = (
    "all messages must have non-empty content except for the optional final assistant message"
)
EMPTY_TEXT_BLOCK = "text content blocks must be non-empty"
PREFILL_REFUSED = (
    "This model does not support assistant message prefill. The conversation must end with a "
    "user message."
)


def api_location(field: str) -> str:
    """``field`` as the API's messages locate a problem: ``messages[0].content`` is
    ``messages.0.content``."""
    return re.sub(r"\[(\d+)\]", r".\1", field)


class InvalidRequest(ValueError):
    """A request the API would reject. ``field`` names the offending part of the body, as the
    gateway spells it (``messages[0].content``; the JSON API's error ``field``).

    The message (``str()``) is ``"<where>: <problem>"``, located the API's way: ``where`` is
    ``at`` when the API locates the problem elsewhere than ``field`` (``at=""``: a message the
    API gives without a location), else ``field``, both spelled by ``api_location``.
    """

    def __init__(self, field: str, problem: str, *, at: str | None = None) -> None:
        self.field = field
        self.problem = problem
        where = api_location(field if at is None else at)
        super().__init__(f"{where}: {problem}" if where else problem)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_text(value: Any, field: str, *, blank_ok: bool = False) -> None:
    """A string sent as text. An empty one is refused by the callers, in the API's words for
    each place; one of only whitespace here unless ``blank_ok``."""
    if not isinstance(value, str):
        raise InvalidRequest(field, f"must be a string, got {type(value).__name__}")
    if not blank_ok and value and not value.strip():
        raise InvalidRequest(field, "must contain non-whitespace text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            field, "is not valid UTF-8 text (it contains lone surrogates)"
        ) from None


def cache_control_ttl(value: Any, field: str) -> str:
    """The TTL of a ``cache_control`` object the API accepts (only ``type`` and ``ttl``)."""
    if not isinstance(value, Mapping):
        raise InvalidRequest(field, NOT_AN_OBJECT)
    if value.get("type") != "ephemeral":
        raise InvalidRequest(field, "Input should be 'ephemeral'", at=f"{field}.type")
    extra = sorted(set(value) - {"type", "ttl"})
    if extra:
        raise InvalidRequest(f"{field}.{extra[0]}", EXTRA_INPUT)
    ttl = value.get("ttl", "5m")
    if ttl not in ("5m", "1h"):
        raise InvalidRequest(f"{field}.ttl", "Input should be '5m' or '1h'")
    return str(ttl)


def block_ttl(block: Mapping[str, Any], field: str) -> str | None:
    """The TTL of a block's own ``cache_control`` mark, None when it has none."""
    cc = block.get("cache_control")
    return None if cc is None else cache_control_ttl(cc, f"{field}.cache_control")


def _check_block(block: Any, field: str) -> None:
    if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
        raise InvalidRequest(
            f"{field}.type" if isinstance(block, Mapping) else field,
            "a content block needs a string 'type'",
            at=field,
        )
    kind = block["type"]
    if kind == "text":
        _check_text(block.get("text"), f"{field}.text")
        if not block["text"]:
            raise InvalidRequest(f"{field}.text", EMPTY_TEXT_BLOCK, at=field)
    elif kind == "tool_use":
        if not isinstance(block.get("id"), str) or not block["id"]:
            raise InvalidRequest(f"{field}.id", "a tool_use block needs its string id")
        if not isinstance(block.get("name"), str) or not block["name"]:
            raise InvalidRequest(f"{field}.name", "a tool_use block needs the tool's name")
        if not isinstance(block.get("input"), Mapping):
            raise InvalidRequest(f"{field}.input", "must be an object")
    elif kind == "tool_result":
        if not isinstance(block.get("tool_use_id"), str) or not block["tool_use_id"]:
            raise InvalidRequest(
                f"{field}.tool_use_id", "a tool_result block must name the tool_use it answers"
            )
    elif kind not in PASSTHROUGH_BLOCKS:
        raise InvalidRequest(f"{field}.type", f"unknown content block type {kind!r}")


def _blocks(content: Any) -> list[Mapping[str, Any]]:
    return [b for b in content if isinstance(b, Mapping)] if isinstance(content, list) else []


def _check_tools(tools: Any) -> list[tuple[str, str | None]]:
    """Tool names with their breakpoint TTLs, in order."""
    if not isinstance(tools, list):
        raise InvalidRequest("tools", NOT_A_LIST)
    seen: list[tuple[str, str | None]] = []
    for i, tool in enumerate(tools):
        field = f"tools[{i}]"
        if not isinstance(tool, Mapping):
            raise InvalidRequest(field, NOT_AN_OBJECT)
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise InvalidRequest(field, FIELD_REQUIRED, at=f"{field}.name")
        kind = tool.get("type")
        if kind in (None, "custom") and not isinstance(tool.get("input_schema"), Mapping):
            raise InvalidRequest(f"{field}.input_schema", "Field required (a JSON schema object)")
        if any(tool["name"] == name for name, _ in seen):
            raise InvalidRequest(f"{field}.name", f"tool names must be unique: {tool['name']!r}")
        seen.append((tool["name"], block_ttl(tool, field)))
    return seen


def _check_messages(messages: Any, info: ModelInfo) -> list[str | None]:
    """Validate the turns; returns the TTL (or None) of every message content block in order."""
    if messages is None:
        raise InvalidRequest("messages", FIELD_REQUIRED)
    if not isinstance(messages, list):
        raise InvalidRequest("messages", NOT_A_LIST)
    if not messages:
        raise InvalidRequest("messages", NO_MESSAGES)
    ttls: list[str | None] = []
    for i, message in enumerate(messages):
        field = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise InvalidRequest(field, NOT_AN_OBJECT)
        extra = sorted(set(message) - {"role", "content"})
        if extra:
            raise InvalidRequest(field, EXTRA_INPUT, at=f"{field}.{extra[0]}")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise InvalidRequest(f"{field}.role", "Input should be 'user' or 'assistant'")
        if i == 0 and role != "user":
            raise InvalidRequest(
                f"{field}.role", 'first message must use the "user" role', at="messages"
            )
        if "content" not in message:
            raise InvalidRequest(f"{field}.content", FIELD_REQUIRED)
        content = message["content"]
        if not isinstance(content, str | list):
            raise InvalidRequest(f"{field}.content", CONTENT_TYPE)
        if not content:
            if i == len(messages) - 1 and role == "assistant":
                # The API takes an empty final assistant message; the gateway does not send one.
                raise InvalidRequest(f"{field}.content", "must not be empty")
            raise InvalidRequest(f"{field}.content", EMPTY_CONTENT, at=field)
        if isinstance(content, str):
            _check_text(content, f"{field}.content")
            ttls.append(None)
        else:
            for j, block in enumerate(content):
                _check_block(block, f"{field}.content[{j}]")
                ttls.append(block_ttl(block, f"{field}.content[{j}]"))
    if messages[-1].get("role") == "assistant" and not info.assistant_prefill:
        raise InvalidRequest(f"messages[{len(messages) - 1}]", PREFILL_REFUSED, at="")
    _check_tool_loop(messages)
    return ttls


def _unanswered(i: int, pending: Sequence[str]) -> InvalidRequest:
    """The API's refusal of the tool_use ids of assistant turn ``i - 1`` that turn ``i`` does
    not answer (it names the assistant turn)."""
    return InvalidRequest(
        f"messages[{i}]",
        "`tool_use` ids were found without `tool_result` blocks immediately after: "
        f"{', '.join(pending)}. Each `tool_use` block must have a corresponding `tool_result` "
        "block in the next message.",
        at=f"messages[{i - 1}]",
    )


def _check_tool_loop(messages: Sequence[Mapping[str, Any]]) -> None:
    """A tool_result answers a tool_use of the assistant turn just before it, and every
    tool_use of an assistant turn is answered in the next user turn (the API's own rule)."""
    pending: list[str] = []  # tool_use ids of the previous assistant turn still unanswered
    for i, message in enumerate(messages):
        content = message.get("content")
        blocks = _blocks(content)
        if message.get("role") == "assistant":
            if pending:
                raise _unanswered(i, pending)
            pending = [str(b.get("id")) for b in blocks if b.get("type") == "tool_use"]
            continue
        for j, block in enumerate(content if isinstance(content, list) else []):
            if not isinstance(block, Mapping) or block.get("type") != "tool_result":
                continue
            tool_use_id = str(block.get("tool_use_id"))
            if tool_use_id not in pending:
                raise InvalidRequest(
                    f"messages[{i}].content",
                    f"unexpected `tool_use_id` found in `tool_result` blocks: {tool_use_id}. "
                    "Each `tool_result` block must have a corresponding `tool_use` block in the "
                    "previous message.",
                    at=f"messages[{i}].content[{j}]",
                )
            pending.remove(tool_use_id)
        if pending:
            raise _unanswered(i, pending)


def counted_breakpoints(ttls: Sequence[str | None], top_level: str | None) -> list[str]:
    """The breakpoints the API counts, in order, for blocks whose own marks are ``ttls`` (None:
    unmarked) and a top-level ``cache_control`` TTL; raise what the API would reject.

    At most 4 breakpoints in all, 1-hour ones before 5-minute ones. A top-level
    ``cache_control`` puts its breakpoint on the last cacheable block and takes one of the four
    slots; a marker with the same TTL on that block is the same breakpoint, a different TTL is
    refused."""
    marks = [ttl for ttl in ttls if ttl is not None]
    if top_level is not None:
        last = ttls[-1] if ttls else None
        if last is not None and last != top_level:
            raise InvalidRequest(
                "cache_control",
                f"the top-level cache_control (ttl='{top_level}') applies to the last cacheable "
                f"block, which already has a cache_control with ttl='{last}'",
            )
        if last is None:
            marks.append(top_level)
    if len(marks) > MAX_BREAKPOINTS:
        raise InvalidRequest(
            "cache_control",
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(marks)}.",
            at="",
        )
    for earlier, later in zip(marks, marks[1:], strict=False):
        if earlier == "5m" and later == "1h":
            raise InvalidRequest(
                "cache_control",
                "a ttl='1h' cache breakpoint cannot come after a ttl='5m' one (longer TTLs must "
                "come first, in the order tools, system, messages)",
            )
    return marks


def _check_sampling(params: Mapping[str, Any], info: ModelInfo) -> None:
    for name, low, high in (("temperature", 0, 1), ("top_p", 0, 1)):
        value = params.get(name)
        if value is not None and (not _is_number(value) or not low <= value <= high):
            raise InvalidRequest(name, f"Input should be a number between {low} and {high}")
    top_k = params.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise InvalidRequest("top_k", "Input should be an integer greater than or equal to 0")
    if info.sampling_params:
        return
    # Claude 4.7 and later choose their own sampling: only the defaults are accepted.
    changed = [
        name
        for name in ("temperature", "top_p", "top_k")
        if params.get(name) is not None and not (name == "temperature" and params[name] == 1)
    ]
    if changed:
        raise InvalidRequest(changed[0], f"`{changed[0]}` is deprecated for this model.", at="")


def _check_thinking(value: Any, info: ModelInfo, max_tokens: int) -> str:
    """The thinking type the request uses (the model's default when not given)."""
    if value is None:
        return info.default_thinking
    if not isinstance(value, Mapping) or not isinstance(value.get("type"), str):
        raise InvalidRequest("thinking", 'must be an object like {"type": "adaptive"}')
    kind = value["type"]
    if kind not in catalog.THINKING_TYPES:
        raise InvalidRequest(
            "thinking.type", f"must be one of {', '.join(catalog.THINKING_TYPES)}, got {kind!r}"
        )
    if kind not in info.thinking_types:
        hint = (
            ' Use "thinking.type.adaptive" and "output_config.effort" to control thinking behavior.'
            if "adaptive" in info.thinking_types
            else f" {info.model_id} accepts: {', '.join(info.thinking_types)}."
        )
        raise InvalidRequest(
            "thinking.type", f'"thinking.type.{kind}" is not supported for this model.{hint}', at=""
        )
    allowed = {"type", "display"} | ({"budget_tokens"} if kind == "enabled" else set())
    extra = sorted(set(value) - allowed)
    if extra:
        raise InvalidRequest(f"thinking.{extra[0]}", "Extra inputs are not permitted")
    display = value.get("display")
    if display is not None and display not in ("summarized", "omitted"):
        raise InvalidRequest("thinking.display", 'must be "summarized" or "omitted"')
    if kind == "enabled":
        budget = value.get("budget_tokens")
        if not _is_int(budget) or budget < MIN_THINKING_BUDGET:
            raise InvalidRequest(
                "thinking.budget_tokens", f"must be a whole number >= {MIN_THINKING_BUDGET}"
            )
        if budget >= max_tokens:
            raise InvalidRequest(
                "thinking.budget_tokens", f"must be less than max_tokens ({max_tokens})"
            )
    return str(kind)


def _check_output_config(value: Any, info: ModelInfo) -> None:
    if not isinstance(value, Mapping):
        raise InvalidRequest("output_config", "must be an object")
    extra = sorted(set(value) - {"effort", "format"})
    if extra:
        raise InvalidRequest(f"output_config.{extra[0]}", "Extra inputs are not permitted")
    effort = value.get("effort")
    if effort is not None:
        if effort not in EFFORT_LEVELS:
            raise InvalidRequest(
                "output_config.effort", f"must be one of {', '.join(EFFORT_LEVELS)}, got {effort!r}"
            )
        if effort not in info.effort_levels:
            accepted = ", ".join(info.effort_levels) or "none (it has no effort setting)"
            raise InvalidRequest(
                "output_config.effort",
                f"effort {effort!r} is not supported for {info.model_id}; it accepts {accepted}",
            )
    fmt = value.get("format")
    if fmt is not None and (
        not isinstance(fmt, Mapping)
        or fmt.get("type") != "json_schema"
        or not isinstance(fmt.get("schema"), Mapping)
    ):
        raise InvalidRequest(
            "output_config.format", 'must be {"type": "json_schema", "schema": {...}}'
        )


def _check_tool_choice(value: Any, tool_names: list[str], info: ModelInfo) -> None:
    if not isinstance(value, Mapping) or value.get("type") not in TOOL_CHOICE_TYPES:
        raise InvalidRequest(
            "tool_choice", f"must be an object whose type is one of {', '.join(TOOL_CHOICE_TYPES)}"
        )
    kind = value["type"]
    allowed = {"type", "disable_parallel_tool_use"} | ({"name"} if kind == "tool" else set())
    extra = sorted(set(value) - allowed)
    if extra:
        raise InvalidRequest(f"tool_choice.{extra[0]}", "Extra inputs are not permitted")
    if "disable_parallel_tool_use" in value and not isinstance(
        value["disable_parallel_tool_use"], bool
    ):
        raise InvalidRequest("tool_choice.disable_parallel_tool_use", "must be true or false")
    if kind in ("any", "tool"):
        if not info.forced_tool_choice:
            raise InvalidRequest(
                "tool_choice.type",
                'type "tool" and "any" are not supported for this model.',
                at="tool_choice",
            )
        if not tool_names:
            raise InvalidRequest("tool_choice", f'tool_choice "{kind}" needs tools')
    if kind == "tool" and value.get("name") not in tool_names:
        raise InvalidRequest(
            "tool_choice.name", f"names no tool of this request: {value.get('name')!r}"
        )


def _check_metadata(value: Any) -> None:
    if not isinstance(value, Mapping):
        raise InvalidRequest("metadata", NOT_AN_OBJECT)
    extra = sorted(set(value) - {"user_id"})
    if extra:
        raise InvalidRequest(f"metadata.{extra[0]}", EXTRA_INPUT)
    user_id = value.get("user_id")
    if user_id is not None:
        if not isinstance(user_id, str):
            raise InvalidRequest("metadata.user_id", "Input should be a valid string")
        if len(user_id) > MAX_METADATA_USER_ID:
            raise InvalidRequest(
                "metadata.user_id", f"must be at most {MAX_METADATA_USER_ID} characters"
            )


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InvalidRequest(name, "Input should be " + " or ".join(f"'{c}'" for c in choices))


def _not_for_model(name: str, info: ModelInfo) -> InvalidRequest:
    """A parameter ``info``'s model does not take (US-only inference: Claude 4.6 and later;
    fast mode: where the catalog says so)."""
    return InvalidRequest(
        name, f"'{info.model_id}' does not support the `{name}` parameter.", at=""
    )


def model_for(model: Any) -> ModelInfo:
    """The catalog entry of a model a request may name, or InvalidRequest saying why not."""
    if model is None:
        raise InvalidRequest("model", FIELD_REQUIRED)
    if not isinstance(model, str):
        raise InvalidRequest("model", "Input should be a valid string")
    info = catalog.model_info(model)
    if info is None:
        current = sorted(n for n, i in catalog.callable_models().items() if i.status == "active")
        raise InvalidRequest(
            "model", f"unknown model {model!r}; current models: {', '.join(current)}"
        )
    if info.retired:
        raise InvalidRequest("model", f"{model} is no longer available: {info.lifecycle_note()}")
    return info


def check_message_params(params: Mapping[str, Any], *, for_batch: bool = False) -> ModelInfo:
    """Raise InvalidRequest unless ``params`` is a Messages body the API would accept for its
    model; returns that model's catalog entry. ``for_batch``: the body goes into a Message
    Batch, which refuses ``stream``, ``speed`` and ``max_tokens: 0``."""
    if not isinstance(params, Mapping):
        raise InvalidRequest("body", "must be a JSON object")
    unknown = sorted(set(params) - MESSAGE_FIELDS - TRANSPORT_FIELDS)
    if unknown:
        raise InvalidRequest(unknown[0], EXTRA_INPUT)
    info = model_for(params.get("model"))

    max_tokens = params.get("max_tokens")
    if max_tokens is None:
        raise InvalidRequest("max_tokens", FIELD_REQUIRED)
    # 0 is legal: it answers nothing and only writes the prompt cache (a pre-warm).
    if not _is_int(max_tokens) or max_tokens < 0:
        raise InvalidRequest("max_tokens", "Input should be an integer greater than or equal to 0")
    if max_tokens > info.max_output_tokens:
        raise InvalidRequest(
            "max_tokens",
            f"{max_tokens} > {info.max_output_tokens}, which is the maximum allowed number of "
            f"output tokens for {info.model_id}",
        )

    ttls: list[str | None] = []
    tool_names: list[str] = []
    if params.get("tools") is not None:
        for name, ttl in _check_tools(params["tools"]):
            tool_names.append(name)
            ttls.append(ttl)
    system = params.get("system")
    if system is not None:
        if isinstance(system, str):
            _check_text(system, "system", blank_ok=True)
            if system:
                ttls.append(None)
        elif isinstance(system, list):
            for i, block in enumerate(system):
                if not isinstance(block, Mapping):
                    raise InvalidRequest(f"system[{i}]", NOT_AN_OBJECT)
                if block.get("type") != "text":
                    raise InvalidRequest(
                        f"system[{i}]", "Input should be 'text'", at=f"system[{i}].type"
                    )
                _check_block(block, f"system[{i}]")
                ttls.append(block_ttl(block, f"system[{i}]"))
        else:
            raise InvalidRequest("system", SYSTEM_TYPE)
    ttls += _check_messages(params.get("messages"), info)
    top_cc = params.get("cache_control")
    counted_breakpoints(
        ttls, None if top_cc is None else cache_control_ttl(top_cc, "cache_control")
    )

    _check_sampling(params, info)
    thinking = _check_thinking(params.get("thinking"), info, max_tokens)
    output_config = params.get("output_config")
    if output_config is not None:
        _check_output_config(output_config, info)
    effort = (output_config or {}).get("effort") or info.default_effort
    limit = info.thinking_off_max_effort
    if (
        thinking == "disabled"
        and limit
        and effort
        and (EFFORT_LEVELS.index(effort) > EFFORT_LEVELS.index(limit))
    ):
        raise InvalidRequest(
            "thinking.type",
            f"{info.model_id} turns thinking off only at effort {limit!r} or lower, not {effort!r}",
        )
    tool_choice = params.get("tool_choice")
    if tool_choice is not None:
        _check_tool_choice(tool_choice, tool_names, info)
        if thinking == "enabled" and tool_choice.get("type") in ("any", "tool"):
            raise InvalidRequest(
                "tool_choice.type",
                "Thinking may not be enabled when tool_choice forces tool use.",
                at="",
            )
    stops = params.get("stop_sequences")
    if stops is not None and (
        not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops)
    ):
        raise InvalidRequest("stop_sequences", "Input should be a valid list of non-empty strings")
    if params.get("metadata") is not None:
        _check_metadata(params["metadata"])
    geo = params.get("inference_geo")
    if geo is not None:
        _check_choice("inference_geo", geo, INFERENCE_GEOS)
        if not info.inference_geo:
            raise _not_for_model("inference_geo", info)
    if params.get("service_tier") is not None:
        _check_choice("service_tier", params["service_tier"], SERVICE_TIERS)
    speed = params.get("speed")
    if speed is not None:
        _check_choice("speed", speed, SPEEDS)
        if speed == "fast" and not info.fast_mode:
            raise _not_for_model("speed", info)
    stream = params.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("stream", "Input should be a valid boolean")
    if for_batch:
        if stream:
            raise InvalidRequest("stream", "streaming is not supported inside a Message Batch")
        if speed == "fast":
            raise InvalidRequest("speed", "fast mode is not available inside a Message Batch")
        if max_tokens == 0:
            raise InvalidRequest("max_tokens", "0 (a cache pre-warm) is not accepted in a batch")

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
    return info
