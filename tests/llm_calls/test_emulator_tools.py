"""Tool use as a client sees it: tool_use blocks whose input follows the schema, tool_choice,
the tool-loop pairing rules, streamed tool input, and web searches counted for billing."""

from __future__ import annotations

from typing import Any

# Tests prove the emulator against the unmodified official SDK, so they import it directly.
import anthropic  # noqa: TID251
import pytest

from llm_calls.emulator.process import EmulatorProcess

from .emulator_support import MODEL, bad_request, sdk, user

WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 10},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1},
            "when": {"type": "string", "format": "date"},
            "detailed": {"type": "boolean", "default": True},
            "stations": {
                "type": "array",
                "minItems": 2,
                "items": {"$ref": "#/$defs/station"},
            },
            "note": {"type": ["null", "number"]},
            "optional": {"type": "string"},
        },
        "required": ["city", "unit", "days", "when", "detailed", "stations", "note"],
        "$defs": {
            "station": {
                "type": "object",
                "properties": {"id": {"type": "string"}, "lat": {"type": "number"}},
                "required": ["id", "lat"],
            }
        },
    },
}
CLOCK = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
TOOLS: Any = [WEATHER, CLOCK]


def _tool_use(message: anthropic.types.Message) -> anthropic.types.ToolUseBlock:
    (block,) = [b for b in message.content if b.type == "tool_use"]
    assert isinstance(block, anthropic.types.ToolUseBlock)
    return block


def test_a_directive_makes_the_model_call_the_first_tool_with_schema_shaped_input(
    emulator: EmulatorProcess,
) -> None:
    message = sdk(emulator).messages.create(
        model=MODEL, max_tokens=500, tools=TOOLS, messages=user("Weather? [[emulator:tool_use]]")
    )
    assert message.stop_reason == "tool_use"
    block = _tool_use(message)
    assert block.id.startswith("toolu_") and block.name == "get_weather"
    assert block.input == {
        "city": "examplexxx",
        "unit": "celsius",
        "days": 1,
        "when": "2026-12-01",
        "detailed": True,
        "stations": [{"id": "example", "lat": 0}, {"id": "example", "lat": 0}],
        "note": 0,
    }
    assert message.usage.output_tokens > 0


def test_auto_without_a_directive_answers_in_text(emulator: EmulatorProcess) -> None:
    message = sdk(emulator).messages.create(
        model=MODEL, max_tokens=500, tools=TOOLS, messages=user("Just chat")
    )
    assert message.stop_reason == "end_turn"
    assert [b.type for b in message.content] == ["text"]


@pytest.mark.parametrize(
    ("tool_choice", "prompt", "expected"),
    [
        ({"type": "auto"}, "[[emulator:tool_use=get_time]]", "get_time"),
        ({"type": "auto"}, "[[emulator:tool_use=no_such_tool]]", None),
        ({"type": "any"}, "anything", "get_weather"),
        ({"type": "any", "disable_parallel_tool_use": True}, "[[emulator:tool_use=get_time]]", "get_time"),
        ({"type": "tool", "name": "get_time"}, "[[emulator:tool_use=get_weather]]", "get_time"),
        ({"type": "none"}, "[[emulator:tool_use]]", None),
    ],
    ids=["auto-named", "auto-unknown-name", "any", "any-named", "tool", "none"],
)  # fmt: skip
def test_tool_choice_decides_which_tool_if_any(
    emulator: EmulatorProcess, tool_choice: Any, prompt: str, expected: str | None
) -> None:
    message = sdk(emulator).messages.create(
        model=MODEL, max_tokens=500, tools=TOOLS, tool_choice=tool_choice, messages=user(prompt)
    )
    called = [b.name for b in message.content if b.type == "tool_use"]
    assert called == ([expected] if expected else [])
    assert message.stop_reason == ("tool_use" if expected else "end_turn")


def test_tool_choice_naming_an_unknown_tool_is_400(emulator: EmulatorProcess) -> None:
    status, error = bad_request(
        emulator,
        model=MODEL,
        max_tokens=50,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "missing"},
        messages=user("x"),
    )
    assert status == 400 and "missing" in error["message"]


def test_a_full_tool_loop_then_a_text_answer(emulator: EmulatorProcess) -> None:
    client = sdk(emulator)
    first = client.messages.create(
        model=MODEL,
        max_tokens=500,
        tools=TOOLS,
        messages=user("Time? [[emulator:tool_use=get_time]]"),
    )
    call = _tool_use(first)
    assert call.input == {}
    history: Any = [
        {"role": "user", "content": "Time? [[emulator:tool_use=get_time]]"},
        first.to_param(),
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "noon"}]},
    ]  # fmt: skip
    second = client.messages.create(model=MODEL, max_tokens=500, tools=TOOLS, messages=history)
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"


def test_a_tool_use_without_its_result_is_the_apis_400(emulator: EmulatorProcess) -> None:
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_01A", "name": "get_time", "input": {}},
            {"type": "tool_use", "id": "toolu_01B", "name": "get_time", "input": {}},
        ]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A"}]},
    ]  # fmt: skip
    status, error = bad_request(
        emulator, model=MODEL, max_tokens=50, tools=TOOLS, messages=messages
    )
    assert status == 400
    assert error["message"] == (
        "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: "
        "toolu_01B. Each `tool_use` block must have a corresponding `tool_result` block in the "
        "next message."
    )


def test_a_tool_result_answering_nothing_is_the_apis_400(emulator: EmulatorProcess) -> None:
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "no tools here"},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01Z"}]},
    ]
    status, error = bad_request(
        emulator, model=MODEL, max_tokens=50, tools=TOOLS, messages=messages
    )
    assert status == 400
    assert error["message"] == (
        "messages.2.content.0: unexpected `tool_use_id` found in `tool_result` blocks: "
        "toolu_01Z. Each `tool_result` block must have a corresponding `tool_use` block in the "
        "previous message."
    )


def test_streamed_tool_use_accumulates_into_the_same_message(emulator: EmulatorProcess) -> None:
    client = sdk(emulator)
    params: Any = {
        "model": MODEL,
        "max_tokens": 500,
        "tools": TOOLS,
        "tool_choice": {"type": "any"},
        "messages": user("Weather?"),
    }
    plain = client.messages.create(**params)
    kinds: list[str] = []
    with client.messages.stream(**params) as stream:
        for event in stream:
            if event.type in ("content_block_start", "content_block_delta"):
                detail = (
                    event.content_block.type
                    if event.type == "content_block_start"
                    else event.delta.type
                )
                kinds.append(f"{event.type}:{detail}")
        final = stream.get_final_message()
    assert kinds[0] == "content_block_start:tool_use"
    assert set(kinds[1:]) == {"content_block_delta:input_json_delta"}
    assert _tool_use(final).input == _tool_use(plain).input
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == plain.usage.output_tokens


def test_a_tool_call_that_does_not_fit_stops_at_max_tokens(emulator: EmulatorProcess) -> None:
    message = sdk(emulator).messages.create(
        model=MODEL, max_tokens=3, tools=TOOLS, tool_choice={"type": "any"}, messages=user("x")
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3


WEB_SEARCH: Any = {"type": "web_search_20260318", "name": "web_search", "max_uses": 3}


@pytest.mark.parametrize(("asked", "performed"), [(2, 2), (5, 3)], ids=["two", "capped"])
def test_web_searches_are_counted_in_usage_and_the_ledger(
    emulator: EmulatorProcess, asked: int, performed: int
) -> None:
    message = sdk(emulator).messages.create(
        model=MODEL,
        max_tokens=500,
        tools=[WEB_SEARCH],
        messages=user(f"Look it up [[emulator:web_search={asked}]]"),
    )
    assert message.usage.server_tool_use is not None
    assert message.usage.server_tool_use.web_search_requests == performed
    kinds = [b.type for b in message.content]
    assert kinds == ["server_tool_use", "web_search_tool_result"] * performed + ["text"]
    ledger = emulator.ledger()
    assert ledger["totals"]["web_search_requests"] == performed
    (account,) = ledger["keys"].values()
    assert account["requests"][0]["web_search_requests"] == performed


def test_no_web_search_tool_means_no_searches(emulator: EmulatorProcess) -> None:
    message = sdk(emulator).messages.create(
        model=MODEL, max_tokens=50, messages=user("[[emulator:web_search=2]]")
    )
    assert message.usage.server_tool_use is not None
    assert message.usage.server_tool_use.web_search_requests == 0


def test_streamed_web_searches_accumulate_like_the_plain_reply(emulator: EmulatorProcess) -> None:
    client = sdk(emulator)
    params: Any = {
        "model": MODEL,
        "max_tokens": 500,
        "tools": [WEB_SEARCH],
        "messages": user("[[emulator:web_search=1]] [[emulator:output_tokens=9]]"),
    }
    plain = client.messages.create(**params)
    with client.messages.stream(**params) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == [b.type for b in plain.content]
    assert final.usage.server_tool_use == plain.usage.server_tool_use
    assert final.usage.output_tokens == plain.usage.output_tokens
