"""One corpus of Messages bodies the API refuses with a 400, shared by two suites.

The emulator's tests (tests/llm_calls/test_emulator_validation.py) check that it answers each
with a 400 carrying the API's own message; the gateway's (tests/llm_calls/test_validation.py)
check that the gateway refuses each before any call, naming the field. A case added here is
checked on both sides, so the gateway never sends (and never bills a failed call for) a body
the API would refuse.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from tests.llm_calls.emulator_support import MODEL, body, user

CC = {"type": "ephemeral"}
CC_1H = {"type": "ephemeral", "ttl": "1h"}


class BadBody(NamedTuple):
    name: str
    body: dict[str, Any]
    api_message: str  # a part of the API's 400 message
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
    BadBody("negative max_tokens", body(max_tokens=-1), "max_tokens", "max_tokens"),
    BadBody("float max_tokens", body(max_tokens=2.5), "max_tokens", "max_tokens"),
    BadBody(
        "no messages", {"model": MODEL, "max_tokens": 5}, "messages: Field required", "messages"
    ),
    BadBody("empty messages", body(messages=[]), "at least one message", "messages"),
    BadBody(
        "messages not a list",
        body(messages="hi"),
        "messages: Input should be a valid list",
        "messages",
    ),
    BadBody(
        "bad role",
        body(messages=[{"role": "system", "content": "x"}]),
        "messages.0.role",
        "messages[0].role",
    ),
    BadBody(
        "assistant first",
        body(messages=[{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]),
        'first message must use the "user" role',
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
        "messages.0.content",
        "messages[0].content",
    ),
    BadBody(
        "empty user content",
        body(messages=[{"role": "user", "content": ""}]),
        "non-empty content",
        "messages[0].content",
    ),
    BadBody(
        "block without type",
        body(messages=[{"role": "user", "content": [{"text": "x"}]}]),
        "messages.0.content.0",
        "messages[0].content[0].type",
    ),
    BadBody(
        "empty text block",
        body(messages=[{"role": "user", "content": [text_block("")]}]),
        "text content blocks must be non-empty",
        "messages[0].content[0].text",
    ),
    BadBody("system a number", body(system=5), "system: Input should be", "system"),
    BadBody(
        "system block not text", body(system=[{"type": "image"}]), "system.0.type", "system[0]"
    ),
    BadBody(
        "tools not a list",
        body(tools={"name": "x"}),
        "tools: Input should be a valid list",
        "tools",
    ),
    BadBody("tool without name", body(tools=[{"input_schema": {}}]), "tools.0.name", "tools[0]"),
    BadBody(
        "tool without schema",
        body(tools=[{"name": "t"}]),
        "tools.0.input_schema",
        "tools[0].input_schema",
    ),
    BadBody("temperature too high", body(temperature=1.5), "temperature", "temperature"),
    BadBody("temperature a string", body(temperature="hot"), "temperature", "temperature"),
    BadBody(
        "stop_sequences not strings", body(stop_sequences=[1]), "stop_sequences", "stop_sequences"
    ),
    BadBody("metadata not an object", body(metadata="m"), "metadata: Input should be", "metadata"),
    BadBody("metadata unknown key", body(metadata={"team": "x"}), "metadata.team", "metadata.team"),
    BadBody(
        "stream not a bool", body(stream="yes"), "stream: Input should be a valid boolean", "stream"
    ),
    BadBody(
        "unknown field", body(colour="blue"), "colour: Extra inputs are not permitted", "colour"
    ),
    BadBody(
        "cache_control wrong type",
        body(system=[text_block("s", {"type": "persistent"})]),
        "cache_control.type",
        "system[0].cache_control",
    ),
    BadBody(
        "bad ttl",
        body(system=[text_block("s", {"type": "ephemeral", "ttl": "2h"})]),
        "ttl",
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
        "ttl='1h' cache breakpoint cannot come after a ttl='5m'",
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
        "This model does not support assistant message prefill.",
        "messages[1]",
    ),
    BadBody(
        "forced tool_choice on Opus 5.5",
        body(
            model="claude-opus-5-5",
            tools=[{"name": "t", "input_schema": {"type": "object"}}],
            tool_choice={"type": "tool", "name": "t"},
        ),
        'tool_choice: type "tool" and "any" are not supported for this model.',
        "tool_choice.type",
    ),
    BadBody(
        "inference_geo on Haiku 4.5",
        body(model="claude-haiku-4-5", inference_geo="us"),
        "does not support the `inference_geo` parameter.",
        "inference_geo",
    ),
    BadBody(
        "enabled thinking on Opus 5.5",
        body(
            model="claude-opus-5-5",
            max_tokens=4000,
            thinking={"type": "enabled", "budget_tokens": 2000},
        ),
        '"thinking.type.enabled" is not supported for this model.',
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
        "unexpected `tool_use_id` found in `tool_result` blocks: toolu_1.",
        "messages[0].content",
    ),
]
