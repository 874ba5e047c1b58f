"""The token formula the emulator bills by (and the gateway estimates with), per tokenizer."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from llm_calls.emulator.process import EmulatorProcess
from llm_calls.emulator.tokens import count_tokens, effective_chars_per_token, prompt_blocks

from .emulator_support import sdk, user


def test_each_text_counts_ceil_chars_over_ratio_plus_4_per_message() -> None:
    request = {
        "system": "abcde",  # 5 → 2
        "messages": [
            {"role": "user", "content": "hello"},  # 5 → 2, + 4
            {"role": "assistant", "content": [{"type": "text", "text": "12345678"}]},  # 2, + 4
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "a"},  # 1, + 4 (first block)
                    {"type": "text", "text": "bcd", "cache_control": {"type": "ephemeral"}},  # 1
                ],
            },
        ],
    }
    assert count_tokens(request, 4) == 2 + (2 + 4) + (2 + 4) + (1 + 4 + 1)


def test_tools_count_their_compact_sorted_json_without_cache_control() -> None:
    tool = {"name": "t", "input_schema": {"type": "object"}, "description": "d"}
    compact = json.dumps(tool, sort_keys=True, separators=(",", ":"))
    marked = {**tool, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    request = {"tools": [marked], "messages": [{"role": "user", "content": "x"}]}
    assert count_tokens(request, 4) == -(-len(compact) // 4) + 1 + 4


@pytest.mark.parametrize(("ratio", "expected"), [(4, 25 + 4), (3, 34 + 4), (2.5, 40 + 4)])
def test_the_ratio_is_a_parameter(ratio: float, expected: int) -> None:
    assert count_tokens({"messages": [{"role": "user", "content": "z" * 100}]}, ratio) == expected


def test_message_overhead_belongs_to_the_first_block_for_caching() -> None:
    blocks = prompt_blocks(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "abcd"}] * 2}]}, 4
    )
    assert [block.tokens for block in blocks] == [5, 1]


def test_tool_json_uses_json_dumps_defaults_so_non_ascii_is_escaped() -> None:
    tool = {"name": "t", "description": "é" * 10, "input_schema": {}}
    escaped = json.dumps(tool, sort_keys=True, separators=(",", ":"))
    assert "\\u00e9" in escaped
    request = {"tools": [tool], "messages": [{"role": "user", "content": "x"}]}
    assert count_tokens(request, 1) == len(escaped) + 1 + 4


def test_an_empty_final_assistant_message_still_costs_its_overhead() -> None:
    empties: list[Any] = ["", []]
    for empty in empties:
        messages = [{"role": "user", "content": "abcd"}, {"role": "assistant", "content": empty}]
        assert count_tokens({"messages": messages}, 4) == (1 + 4) + 4


def test_the_newer_tokenizer_divides_chars_per_token_by_its_factor() -> None:
    assert effective_chars_per_token(4.0, 1.3) == 4.0 / 1.3
    request = {"system": "s" * 100, "messages": [{"role": "user", "content": "z" * 100}]}
    # 100 / (4 / 1.3) = 32.5 → 33 per text, + 4 message overhead.
    assert count_tokens(request, 4.0, 1.3) == 33 + 33 + 4
    assert count_tokens(request, 4.0) == 25 + 25 + 4


def test_tool_json_is_counted_at_the_effective_ratio_too() -> None:
    tool = {"name": "t", "input_schema": {"type": "object"}}
    compact = json.dumps(tool, sort_keys=True, separators=(",", ":"))
    request = {"tools": [tool], "messages": [{"role": "user", "content": "x"}]}
    assert count_tokens(request, 4.0, 1.3) == math.ceil(len(compact) / (4.0 / 1.3)) + 1 + 4


@pytest.mark.parametrize(
    ("model", "per_text"),
    [("claude-sonnet-4-6", 25), ("claude-haiku-4-5", 25), ("claude-opus-4-7", 33),
     ("claude-opus-5-5", 33), ("claude-haiku-5-5", 33)],
)  # fmt: skip
def test_count_tokens_and_billing_use_each_models_tokenizer(
    emulator: EmulatorProcess, model: str, per_text: int
) -> None:
    client = sdk(emulator)
    params: Any = {"model": model, "messages": user("z" * 100)}
    assert client.messages.count_tokens(**params).input_tokens == per_text + 4
    billed = client.messages.create(max_tokens=2000, **params).usage.input_tokens
    assert billed == per_text + 4


def test_reply_text_has_the_promised_tokens_on_the_newer_tokenizer(
    emulator: EmulatorProcess,
) -> None:
    message = sdk(emulator).messages.create(
        model="claude-opus-5-5",
        max_tokens=500,
        messages=user("[[emulator:thinking_tokens=0]] [[emulator:output_tokens=12]]"),
    )
    (block,) = message.content
    assert block.type == "text"
    assert message.usage.output_tokens == 12
    assert math.ceil(len(block.text) / (4 / 1.3)) == 12
