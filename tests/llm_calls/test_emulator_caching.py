"""Prompt caching: breakpoints, minimums, lookback, TTLs and the usage split, as documented."""

from __future__ import annotations

import threading
from typing import Any

from llm_calls.emulator.process import EmulatorProcess

from .emulator_support import MODEL, raw_call

CC = {"type": "ephemeral"}
CC_1H = {"type": "ephemeral", "ttl": "1h"}


def _text(text: str, cache_control: dict[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if cache_control is not None:
        block["cache_control"] = cache_control
    return block


def _usage(
    emulator: EmulatorProcess, payload: dict[str, Any], key: str = "sk-ant-test"
) -> dict[str, Any]:
    response = raw_call(emulator, "/v1/messages", payload, key=key)
    assert response.status == 200, response.json
    usage: dict[str, Any] = response.json["usage"]
    return usage


def _request(
    *,
    system: Any = None,
    messages: list[dict[str, Any]] | None = None,
    model: str = MODEL,
    **extra: Any,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": model,
        "max_tokens": 10,
        "messages": messages or [{"role": "user", "content": "What now?"}],  # 9 chars → 3 + 4
        **extra,
    }
    if system is not None:
        payload["system"] = system
    return payload


SYSTEM_2000 = "s" * 8_000  # 2,000 tokens


def test_write_then_read(emulator: EmulatorProcess) -> None:
    payload = _request(system=[_text(SYSTEM_2000, CC)])
    first = _usage(emulator, payload)
    assert first["cache_creation_input_tokens"] == 2_000
    assert first["cache_creation"] == {
        "ephemeral_5m_input_tokens": 2_000,
        "ephemeral_1h_input_tokens": 0,
    }
    assert first["cache_read_input_tokens"] == 0
    assert first["input_tokens"] == 7
    second = _usage(emulator, payload)
    assert second["cache_read_input_tokens"] == 2_000
    assert second["cache_creation_input_tokens"] == 0
    assert second["input_tokens"] == 7


def test_cache_is_scoped_to_key_and_model(emulator: EmulatorProcess) -> None:
    payload = _request(system=[_text(SYSTEM_2000, CC)])
    _usage(emulator, payload)
    assert _usage(emulator, payload, key="other-org")["cache_read_input_tokens"] == 0
    other_model = _request(system=[_text(SYSTEM_2000, CC)], model="claude-sonnet-5")
    assert _usage(emulator, other_model)["cache_read_input_tokens"] == 0


def test_top_level_cache_control_marks_the_last_block(emulator: EmulatorProcess) -> None:
    payload = _request(system=SYSTEM_2000, cache_control=CC)
    assert _usage(emulator, payload)["cache_creation_input_tokens"] == 2_007
    again = _usage(emulator, payload)
    assert again["cache_read_input_tokens"] == 2_007
    assert again["input_tokens"] == 0


def test_below_the_model_minimum_nothing_is_cached(emulator: EmulatorProcess) -> None:
    small = _request(system=[_text("s" * 4_000, CC)])  # 1,000 tokens < 1,024 (Sonnet)
    for _ in range(2):
        usage = _usage(emulator, small)
        assert usage["cache_creation_input_tokens"] == usage["cache_read_input_tokens"] == 0
        assert usage["input_tokens"] == 1_007
    # 2,000 tokens is enough for Sonnet (1,024) but not for Haiku 4.5 (4,096).
    haiku = _request(system=[_text(SYSTEM_2000, CC)], model="claude-haiku-4-5")
    assert _usage(emulator, haiku)["cache_creation_input_tokens"] == 0
    sonnet = _request(system=[_text(SYSTEM_2000, CC)])
    assert _usage(emulator, sonnet)["cache_creation_input_tokens"] == 2_000


def test_longest_match_then_writes_the_rest(emulator: EmulatorProcess) -> None:
    _usage(emulator, _request(system=[_text(SYSTEM_2000, CC)]))
    longer = _request(
        system=[_text(SYSTEM_2000, CC)],
        messages=[{"role": "user", "content": [_text("m" * 2_000, CC), _text("and then?")]}],
    )
    usage = _usage(emulator, longer)
    assert usage["cache_read_input_tokens"] == 2_000
    assert usage["cache_creation_input_tokens"] == 504  # 500 + 4 message overhead
    assert usage["input_tokens"] == 3  # "and then?" 9 chars
    usage = _usage(emulator, longer)
    assert usage["cache_read_input_tokens"] == 2_504
    assert usage["cache_creation_input_tokens"] == 0


def test_usage_splits_creation_by_the_ttl_closing_each_segment(emulator: EmulatorProcess) -> None:
    tool = {
        "name": "lookup",
        "description": "d" * 4_400,  # > 1,024 tokens on its own
        "input_schema": {"type": "object"},
        "cache_control": CC_1H,
    }
    payload = _request(tools=[tool], system=[_text(SYSTEM_2000, CC)])
    tool_tokens = (
        _usage(emulator, _request(tools=[{k: v for k, v in tool.items() if k != "cache_control"}]))[
            "input_tokens"
        ]
        - 7
    )
    emulator.reset()
    usage = _usage(emulator, payload)
    assert usage["cache_creation"] == {
        "ephemeral_1h_input_tokens": tool_tokens,
        "ephemeral_5m_input_tokens": 2_000,
    }
    assert usage["cache_creation_input_tokens"] == tool_tokens + 2_000
    # Five minutes later only the 1h entry (the tools prefix) is still there.
    emulator.advance_clock(301)
    later = _usage(emulator, payload)
    assert later["cache_read_input_tokens"] == tool_tokens
    assert later["cache_creation"] == {
        "ephemeral_1h_input_tokens": 0,
        "ephemeral_5m_input_tokens": 2_000,
    }


def test_a_hit_refreshes_the_ttl(emulator: EmulatorProcess) -> None:
    payload = _request(system=[_text(SYSTEM_2000, CC)])
    _usage(emulator, payload)
    emulator.advance_clock(240)
    assert _usage(emulator, payload)["cache_read_input_tokens"] == 2_000
    emulator.advance_clock(240)  # 480 s after the write, 240 s after the refresh
    assert _usage(emulator, payload)["cache_read_input_tokens"] == 2_000
    emulator.advance_clock(301)
    expired = _usage(emulator, payload)
    assert expired["cache_read_input_tokens"] == 0
    assert expired["cache_creation_input_tokens"] == 2_000


def _many_blocks(prefix: str, count: int) -> list[dict[str, Any]]:
    blocks = [_text(f"{prefix}{i}") for i in range(count)]
    blocks[-1]["cache_control"] = CC
    return blocks


def test_lookback_reaches_20_blocks_back_and_no_further(emulator: EmulatorProcess) -> None:
    _usage(emulator, _request(system=[_text(SYSTEM_2000, CC)]))  # entry at block 0
    # System is block 0; a breakpoint on message block 20 is 20 blocks after it.
    within = _request(
        system=[_text(SYSTEM_2000)], messages=[{"role": "user", "content": _many_blocks("a", 20)}]
    )
    assert _usage(emulator, within)["cache_read_input_tokens"] == 2_000
    beyond = _request(
        system=[_text(SYSTEM_2000)], messages=[{"role": "user", "content": _many_blocks("b", 21)}]
    )
    usage = _usage(emulator, beyond)
    assert usage["cache_read_input_tokens"] == 0
    assert usage["cache_creation_input_tokens"] > 2_000


def test_parallel_identical_requests_both_pay_the_write(emulator: EmulatorProcess) -> None:
    emulator.configure(latency_ms=400)
    payload = _request(system=[_text(SYSTEM_2000, CC)])
    results: list[dict[str, Any]] = []

    def send() -> None:
        results.append(_usage(emulator, payload))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [usage["cache_creation_input_tokens"] for usage in results] == [2_000, 2_000]
    assert _usage(emulator, payload)["cache_read_input_tokens"] == 2_000


def test_max_tokens_zero_prewarms_the_cache(emulator: EmulatorProcess) -> None:
    warm = _request(system=[_text(SYSTEM_2000, CC)])
    warm["max_tokens"] = 0
    assert _usage(emulator, warm)["output_tokens"] == 0
    assert (
        _usage(emulator, _request(system=[_text(SYSTEM_2000, CC)]))["cache_read_input_tokens"]
        == 2_000
    )


# --- top-level cache_control (automatic caching) -------------------------------------------------


def test_automatic_caching_moves_the_breakpoint_forward_as_the_conversation_grows(
    emulator: EmulatorProcess,
) -> None:
    turns: list[dict[str, Any]] = [{"role": "user", "content": "q" * 8_000}]  # 2,000 tokens
    first = _usage(emulator, _request(messages=list(turns), cache_control=CC))
    assert first["cache_creation_input_tokens"] == 2_004
    turns += [
        {"role": "assistant", "content": "a" * 400},  # 100 + 4
        {"role": "user", "content": "next question"},  # 4 + 4
    ]
    second = _usage(emulator, _request(messages=list(turns), cache_control=CC))
    assert second["cache_read_input_tokens"] == 2_004, "the previous turn's prefix is read"
    assert second["cache_creation_input_tokens"] == 104 + 8, "and the new end is written"
    assert second["input_tokens"] == 0
    third = _usage(emulator, _request(messages=list(turns), cache_control=CC))
    assert third["cache_read_input_tokens"] == 2_004 + 112


def test_automatic_caching_skips_an_empty_prefill(emulator: EmulatorProcess) -> None:
    # Haiku 4.5 still accepts prefill; 20,000 chars is 5,000 tokens, above its 4,096 minimum.
    messages = [{"role": "user", "content": "q" * 20_000}, {"role": "assistant", "content": ""}]
    payload = _request(model="claude-haiku-4-5", messages=messages, cache_control=CC)
    usage = _usage(emulator, payload)
    assert usage["cache_creation_input_tokens"] == 5_004
    assert usage["input_tokens"] == 4, "the empty prefill's overhead is after the breakpoint"


def test_a_marker_with_the_same_ttl_on_the_last_block_is_the_same_breakpoint(
    emulator: EmulatorProcess,
) -> None:
    system = [_text("a" * 40, CC), _text("b" * 40, CC), _text("c" * 40, CC)]
    last = {"role": "user", "content": [_text(SYSTEM_2000, CC)]}
    ok = _request(system=system, messages=[last], cache_control=CC)
    assert raw_call(emulator, "/v1/messages", ok).status == 200
    # The same four markers, but the top-level one lands on an unmarked last block: five.
    unmarked_end = {"role": "user", "content": [_text(SYSTEM_2000, CC), _text("tail")]}
    five = _request(system=system, messages=[unmarked_end], cache_control=CC)
    refused = raw_call(emulator, "/v1/messages", five)
    assert refused.status == 400
    assert refused.json["error"]["message"] == (
        "A maximum of 4 blocks with cache_control may be provided. Found 5."
    )


def test_a_marker_with_another_ttl_on_the_last_block_is_refused(emulator: EmulatorProcess) -> None:
    messages = [{"role": "user", "content": [_text(SYSTEM_2000, CC_1H)]}]
    response = raw_call(emulator, "/v1/messages", _request(messages=messages, cache_control=CC))
    assert response.status == 400
    assert "top-level cache_control" in response.json["error"]["message"]


def test_a_1h_top_level_breakpoint_after_a_5m_marker_is_refused(emulator: EmulatorProcess) -> None:
    payload = _request(system=[_text(SYSTEM_2000, CC)], cache_control=CC_1H)
    response = raw_call(emulator, "/v1/messages", payload)
    assert response.status == 400
    assert "ttl='1h'" in response.json["error"]["message"]


def test_the_newer_tokenizer_and_a_512_token_minimum_on_5x_models(
    emulator: EmulatorProcess,
) -> None:
    # 1,600 chars is 520 tokens at 4 / 1.3 chars per token: above Sonnet 5.5's 512 minimum.
    payload = _request(model="claude-sonnet-5-5", system=[_text("s" * 1_600, CC)])
    first = _usage(emulator, payload)
    assert first["cache_creation_input_tokens"] == 520
    assert _usage(emulator, payload)["cache_read_input_tokens"] == 520
