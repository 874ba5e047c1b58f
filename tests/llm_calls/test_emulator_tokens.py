"""The token formula the emulator bills by (and the gateway estimates with)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_calls.emulator.tokens import count_tokens, prompt_blocks


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
