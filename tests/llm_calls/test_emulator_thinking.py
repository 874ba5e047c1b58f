"""Extended thinking: the thinking block, its tokens inside output_tokens, and its stream."""

from __future__ import annotations

from typing import Any

# Tests prove the emulator against the unmodified official SDK, so they import it directly.
import anthropic  # noqa: TID251
import pytest

from llm_calls.emulator.process import EmulatorProcess

from .emulator_support import MODEL, NEW_MODEL, sdk, user

SUMMARIZED: Any = {"type": "adaptive", "display": "summarized"}


def _thinking(message: anthropic.types.Message) -> anthropic.types.ThinkingBlock:
    block = message.content[0]
    assert isinstance(block, anthropic.types.ThinkingBlock)
    return block


def test_thinking_comes_first_and_its_tokens_are_output_tokens(emulator: EmulatorProcess) -> None:
    message = sdk(emulator).messages.create(
        model=NEW_MODEL,
        max_tokens=1000,
        thinking=SUMMARIZED,
        messages=user("[[emulator:thinking_tokens=40]] [[emulator:output_tokens=12]]"),
    )
    assert [b.type for b in message.content] == ["thinking", "text"]
    block = _thinking(message)
    assert block.thinking and block.signature
    assert message.usage.output_tokens == 40 + 12
    assert message.usage.output_tokens_details is not None
    assert message.usage.output_tokens_details.thinking_tokens == 40
    ledger = emulator.ledger()
    assert ledger["totals"]["thinking_tokens"] == 40
    assert ledger["totals"]["output_tokens"] == 52


def test_adaptive_thinking_is_the_default_on_5x_with_the_text_omitted(
    emulator: EmulatorProcess,
) -> None:
    message = sdk(emulator).messages.create(
        model=NEW_MODEL, max_tokens=2000, messages=user("Think about it")
    )
    block = _thinking(message)
    assert block.thinking == "" and block.signature
    details = message.usage.output_tokens_details
    assert details is not None and details.thinking_tokens > 0


def test_adaptive_thinking_answers_a_fixed_length_reply_without_thinking(
    emulator: EmulatorProcess,
) -> None:
    message = sdk(emulator).messages.create(
        model=NEW_MODEL, max_tokens=100, messages=user("Classify [[emulator:output_tokens=20]]")
    )
    assert [b.type for b in message.content] == ["text"]
    assert message.usage.output_tokens == 20
    forced = sdk(emulator).messages.create(
        model=NEW_MODEL,
        max_tokens=100,
        thinking=SUMMARIZED,
        messages=user("[[emulator:output_tokens=20]] [[emulator:thinking_tokens=7]]"),
    )
    assert forced.usage.output_tokens == 27


def test_models_without_default_thinking_report_zero_thinking_tokens(
    emulator: EmulatorProcess,
) -> None:
    message = sdk(emulator).messages.create(model=MODEL, max_tokens=100, messages=user("hi"))
    assert [b.type for b in message.content] == ["text"]
    assert message.usage.output_tokens_details is not None
    assert message.usage.output_tokens_details.thinking_tokens == 0


def test_enabled_thinking_is_capped_by_its_budget(emulator: EmulatorProcess) -> None:
    message = sdk(emulator).messages.create(
        model=MODEL,
        max_tokens=3000,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=user("[[emulator:thinking_tokens=5000]] [[emulator:output_tokens=5]]"),
    )
    details = message.usage.output_tokens_details
    assert details is not None and details.thinking_tokens == 1024
    assert message.usage.output_tokens == 1029


def test_thinking_spends_max_tokens_first(emulator: EmulatorProcess) -> None:
    message = sdk(emulator).messages.create(
        model=NEW_MODEL, max_tokens=30, messages=user("[[emulator:thinking_tokens=50]]")
    )
    assert message.stop_reason == "max_tokens"
    assert [b.type for b in message.content] == ["thinking"]
    assert message.usage.output_tokens == 30


def test_effort_scales_the_derived_thinking(emulator: EmulatorProcess) -> None:
    client = sdk(emulator)

    def thinking_at(effort: Any) -> int:
        message = client.messages.create(
            model=NEW_MODEL,
            max_tokens=5000,
            output_config={"effort": effort},
            messages=user("Plan the migration"),
        )
        assert message.usage.output_tokens_details is not None
        return message.usage.output_tokens_details.thinking_tokens

    low, high, most = thinking_at("low"), thinking_at("high"), thinking_at("max")
    assert 0 < low < high < most
    assert thinking_at("high") == high, "deterministic"


@pytest.mark.parametrize("display", ["summarized", "omitted"])
def test_streamed_thinking_matches_the_plain_reply(emulator: EmulatorProcess, display: Any) -> None:
    client = sdk(emulator)
    params: Any = {
        "model": NEW_MODEL,
        "max_tokens": 1000,
        "thinking": {"type": "adaptive", "display": display},
        "messages": user("[[emulator:thinking_tokens=120]] [[emulator:output_tokens=20]]"),
    }
    plain = client.messages.create(**params)
    deltas: list[str] = []
    with client.messages.stream(**params) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.index == 0:
                deltas.append(event.delta.type)
        final = stream.get_final_message()
    assert deltas[-1] == "signature_delta" and deltas.count("signature_delta") == 1
    assert ("thinking_delta" in deltas) == (display == "summarized")
    assert _thinking(final).thinking == _thinking(plain).thinking
    assert _thinking(final).signature == _thinking(plain).signature
    assert final.usage.output_tokens_details == plain.usage.output_tokens_details
    assert final.usage.output_tokens == plain.usage.output_tokens == 140


def test_a_thinking_block_can_be_sent_back(emulator: EmulatorProcess) -> None:
    client = sdk(emulator)
    first = client.messages.create(model=NEW_MODEL, max_tokens=2000, messages=user("one"))
    history: Any = [
        {"role": "user", "content": "one"},
        first.to_param(),
        {"role": "user", "content": "two"},
    ]
    second = client.messages.create(model=NEW_MODEL, max_tokens=2000, messages=history)
    assert second.content[0].type == "thinking"
