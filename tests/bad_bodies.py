"""One corpus of Messages bodies the API refuses with a 400, shared by two suites.

The emulator's tests (tests/llm_calls/test_emulator_validation.py) check that it answers each
with a 400 carrying the API's own message; the gateway's (tests/llm_calls/test_validation.py)
check that the gateway refuses each before any call, naming the field, with that same message.
A case added here is checked on both sides, so the gateway never sends (and never bills a failed
call for) a body the API would refuse, and says why in the API's words.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from tests.llm_calls.emulator_support import MODEL, body, user

CC = {"type": "ephemeral"}
CC_1H = {"type": "ephemeral", "ttl": "1h"}
TOOL = {"name": "t", "input_schema": {"type": "object"}}
MAX_TOKENS_MESSAGE = "max_tokens: Input should be an integer greater than or equal to 0"
TEMPERATURE_MESSAGE = "temperature: Input should be a number between 0 and 1"


class BadBody(NamedTuple):
    name: str
    body: dict[str, Any]
    api_message: str  # the API's 400 message, which the gateway's must contain
    field: str  # what the gateway's InvalidRequest names


def text_block(text: str, cache_control: dict[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if cache_control:
        block["cache_control"] = cache_control
    return block


BAD_BODIES: list[BadBody] = [
    BadBody("no model", {"max_tokens": 5, "messages": user("x")}, "model: Field required", "model"),
    BadBody("model not a string", body(model=7), "model: Input should be a valid string", "model"),
    BadBody(
        "no max_tokens",
        {"model": MODEL, "messages": user("x")},
        "max_tokens: Field required",
        "max_tokens",
    ),
    BadBody("negative max_tokens", body(max_tokens=-1), MAX_TOKENS_MESSAGE, "max_tokens"),
    BadBody("float max_tokens", body(max_tokens=2.5), MAX_TOKENS_MESSAGE, "max_tokens"),
    BadBody(
        "max_tokens above the model's maximum",
        body(model="claude-haiku-4-5", max_tokens=64_001),
        "max_tokens: 64001 > 64000, which is the maximum allowed number of output tokens for "
        "claude-haiku-4-5",
        "max_tokens",
    ),
    BadBody(
        "no messages", {"model": MODEL, "max_tokens": 5}, "messages: Field required", "messages"
    ),
    BadBody(
        "empty messages",
        body(messages=[]),
        "messages: at least one message is required",
        "messages",
    ),
    BadBody(
        "messages not a list",
        body(messages="hi"),
        "messages: Input should be a valid list",
        "messages",
    ),
    BadBody(
        "message not an object",
        body(messages=["hi"]),
        "messages.0: Input should be a valid dictionary",
        "messages[0]",
    ),
    BadBody(
        "bad role",
        body(messages=[{"role": "system", "content": "x"}]),
        "messages.0.role: Input should be 'user' or 'assistant'",
        "messages[0].role",
    ),
    BadBody(
        "assistant first",
        body(messages=[{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]),
        'messages: first message must use the "user" role',
        "messages[0].role",
    ),
    BadBody(
        "content missing",
        body(messages=[{"role": "user"}]),
        "messages.0.content: Field required",
        "messages[0].content",
    ),
    BadBody(
        "content a number",
        body(messages=[{"role": "user", "content": 3}]),
        "messages.0.content: Input should be a valid string or list of blocks",
        "messages[0].content",
    ),
    BadBody(
        "empty user content",
        body(messages=[{"role": "user", "content": ""}]),
        "messages.0: all messages must have non-empty content except for the optional final "
        "assistant message",
        "messages[0].content",
    ),
    BadBody(
        "block without type",
        body(messages=[{"role": "user", "content": [{"text": "x"}]}]),
        "messages.0.content.0: a content block needs a string 'type'",
        "messages[0].content[0].type",
    ),
    BadBody(
        "empty text block",
        body(messages=[{"role": "user", "content": [text_block("")]}]),
        "messages.0.content.0: text content blocks must be non-empty",
        "messages[0].content[0].text",
    ),
    BadBody(
        "system a number",
        body(system=5),
        "system: Input should be a valid string or list of text blocks",
        "system",
    ),
    BadBody(
        "system block not an object",
        body(system=["rules"]),
        "system.0: Input should be a valid dictionary",
        "system[0]",
    ),
    BadBody(
        "system block not text",
        body(system=[{"type": "image"}]),
        "system.0.type: Input should be 'text'",
        "system[0]",
    ),
    BadBody(
        "tools not a list",
        body(tools={"name": "x"}),
        "tools: Input should be a valid list",
        "tools",
    ),
    BadBody(
        "tool not an object",
        body(tools=["t"]),
        "tools.0: Input should be a valid dictionary",
        "tools[0]",
    ),
    BadBody(
        "tool without name",
        body(tools=[{"input_schema": {}}]),
        "tools.0.name: Field required",
        "tools[0]",
    ),
    BadBody(
        "tool without schema",
        body(tools=[{"name": "t"}]),
        "tools.0.input_schema: Field required (a JSON schema object)",
        "tools[0].input_schema",
    ),
    BadBody("temperature too high", body(temperature=1.5), TEMPERATURE_MESSAGE, "temperature"),
    BadBody("temperature a string", body(temperature="hot"), TEMPERATURE_MESSAGE, "temperature"),
    BadBody(
        "top_k negative",
        body(top_k=-1),
        "top_k: Input should be an integer greater than or equal to 0",
        "top_k",
    ),
    BadBody(
        "stop_sequences not strings",
        body(stop_sequences=[1]),
        "stop_sequences: Input should be a valid list of non-empty strings",
        "stop_sequences",
    ),
    BadBody(
        "metadata not an object",
        body(metadata="m"),
        "metadata: Input should be a valid dictionary",
        "metadata",
    ),
    BadBody(
        "metadata unknown key",
        body(metadata={"team": "x"}),
        "metadata.team: Extra inputs are not permitted",
        "metadata.team",
    ),
    BadBody(
        "stream not a bool", body(stream="yes"), "stream: Input should be a valid boolean", "stream"
    ),
    BadBody(
        "unknown field", body(colour="blue"), "colour: Extra inputs are not permitted", "colour"
    ),
    BadBody(
        "unknown service_tier",
        body(service_tier="priority"),
        "service_tier: Input should be 'auto' or 'standard_only'",
        "service_tier",
    ),
    BadBody(
        "unknown inference_geo",
        body(inference_geo="eu"),
        "inference_geo: Input should be 'global' or 'us'",
        "inference_geo",
    ),
    BadBody(
        "unknown speed", body(speed="warp"), "speed: Input should be 'standard' or 'fast'", "speed"
    ),
    BadBody(
        "cache_control not an object",
        body(system=[{"type": "text", "text": "s", "cache_control": "5m"}]),
        "system.0.cache_control: Input should be a valid dictionary",
        "system[0].cache_control",
    ),
    BadBody(
        "cache_control wrong type",
        body(system=[text_block("s", {"type": "persistent"})]),
        "system.0.cache_control.type: Input should be 'ephemeral'",
        "system[0].cache_control",
    ),
    BadBody(
        "top-level cache_control wrong type",
        body(cache_control={"type": "persistent"}),
        "cache_control.type: Input should be 'ephemeral'",
        "cache_control",
    ),
    BadBody(
        "bad ttl",
        body(system=[text_block("s", {"type": "ephemeral", "ttl": "2h"})]),
        "system.0.cache_control.ttl: Input should be '5m' or '1h'",
        "system[0].cache_control.ttl",
    ),
    BadBody(
        "five breakpoints",
        body(
            system=[text_block("a", CC), text_block("b", CC), text_block("c", CC)],
            messages=[{"role": "user", "content": [text_block("d", CC), text_block("e", CC)]}],
        ),
        "A maximum of 4 blocks with cache_control may be provided. Found 5.",
        "cache_control",
    ),
    BadBody(
        "five breakpoints counting the top-level one",
        body(
            system=[
                text_block("a", CC),
                text_block("b", CC),
                text_block("c", CC),
                text_block("d", CC),
            ],
            cache_control=CC,
        ),
        "A maximum of 4 blocks with cache_control may be provided. Found 5.",
        "cache_control",
    ),
    BadBody(
        "1h after 5m",
        body(system=[text_block("a", CC), text_block("b", CC_1H)]),
        "cache_control: a ttl='1h' cache breakpoint cannot come after a ttl='5m' one (longer "
        "TTLs must come first, in the order tools, system, messages)",
        "cache_control",
    ),
    BadBody(
        "top-level cache_control on a block marked with another ttl",
        body(messages=[{"role": "user", "content": [text_block("q", CC_1H)]}], cache_control=CC),
        "cache_control: the top-level cache_control (ttl='5m') applies to the last cacheable "
        "block, which already has a cache_control with ttl='1h'",
        "cache_control",
    ),
    # What issue 11 found the gateway accepting, and each model's own rules.
    BadBody(
        "metadata.user_id not a string",
        body(metadata={"user_id": 42}),
        "metadata.user_id: Input should be a valid string",
        "metadata.user_id",
    ),
    BadBody(
        "cache_control with an extra key",
        body(system=[text_block("s", {"type": "ephemeral", "scope": "x"})]),
        "system.0.cache_control.scope: Extra inputs are not permitted",
        "system[0].cache_control.scope",
    ),
    BadBody(
        "top-level cache_control with an extra key",
        body(cache_control={"type": "ephemeral", "x": 1}),
        "cache_control.x: Extra inputs are not permitted",
        "cache_control.x",
    ),
    BadBody(
        "temperature on Sonnet 5.5",
        body(model="claude-sonnet-5-5", temperature=0.5),
        "`temperature` is deprecated for this model.",
        "temperature",
    ),
    BadBody(
        "assistant prefill on Sonnet 5.5",
        body(
            model="claude-sonnet-5-5",
            messages=[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure"}],
        ),
        "This model does not support assistant message prefill. The conversation must end with a "
        "user message.",
        "messages[1]",
    ),
    BadBody(
        "forced tool_choice on Opus 5.5",
        body(
            model="claude-opus-5-5",
            tools=[TOOL],
            tool_choice={"type": "tool", "name": "t"},
        ),
        'tool_choice: type "tool" and "any" are not supported for this model.',
        "tool_choice.type",
    ),
    BadBody(
        "forced tool_choice with enabled thinking on Sonnet 4.6",
        body(
            max_tokens=4000,
            tools=[TOOL],
            tool_choice={"type": "any"},
            thinking={"type": "enabled", "budget_tokens": 2000},
        ),
        "Thinking may not be enabled when tool_choice forces tool use.",
        "tool_choice.type",
    ),
    BadBody(
        "inference_geo on Haiku 4.5",
        body(model="claude-haiku-4-5", inference_geo="us"),
        "'claude-haiku-4-5' does not support the `inference_geo` parameter.",
        "inference_geo",
    ),
    BadBody(
        "fast mode on Sonnet 5.5",
        body(model="claude-sonnet-5-5", speed="fast"),
        "'claude-sonnet-5-5' does not support the `speed` parameter.",
        "speed",
    ),
    BadBody(
        "enabled thinking on Opus 5.5",
        body(
            model="claude-opus-5-5",
            max_tokens=4000,
            thinking={"type": "enabled", "budget_tokens": 2000},
        ),
        '"thinking.type.enabled" is not supported for this model. Use "thinking.type.adaptive" '
        'and "output_config.effort" to control thinking behavior.',
        "thinking.type",
    ),
    BadBody(
        "tool_result answering no tool_use",
        body(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "x"}],
                }
            ]
        ),
        "messages.0.content.0: unexpected `tool_use_id` found in `tool_result` blocks: toolu_1. "
        "Each `tool_result` block must have a corresponding `tool_use` block in the previous "
        "message.",
        "messages[0].content",
    ),
    BadBody(
        "tool_use left unanswered",
        body(
            tools=[TOOL],
            messages=[
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "toolu_1", "name": "t", "input": {}}],
                },
                {"role": "user", "content": "never mind"},
            ],
        ),
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: "
        "toolu_1. Each `tool_use` block must have a corresponding `tool_result` block in the next "
        "message.",
        "messages[2]",
    ),
]
