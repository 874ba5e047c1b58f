"""The gateway refuses, before any call, what the API would refuse for the model named.

Each case is what a developer would send and what they would be told: the field named, the
reason in words (the API's own, for a body the API refuses), nothing sent. The rules come from
the model catalog (llm_calls.catalog).
"""

from __future__ import annotations

from typing import Any

import pytest

from llm_calls import catalog
from llm_calls.validation import InvalidRequest, check_message_params
from tests.bad_bodies import BAD_BODIES, BadBody


def body(model: str = "claude-sonnet-5-5", **overrides: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        **overrides,
    }


def refused(params: dict[str, Any], **kwargs: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as error:
        check_message_params(params, **kwargs)
    return error.value


WEATHER = {
    "name": "weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.mark.parametrize("case", BAD_BODIES, ids=[case.name for case in BAD_BODIES])
def test_every_body_the_api_refuses_is_refused_first_with_the_apis_message(case: BadBody) -> None:
    # The same corpus proves the emulator answers each of these with the API's 400.
    with pytest.raises(InvalidRequest) as refused:
        check_message_params(case.body)
    assert refused.value.field == case.field, str(refused.value)
    assert case.api_message in str(refused.value)


def test_max_tokens_zero_is_accepted_because_it_pre_warms_the_prompt_cache() -> None:
    check_message_params(body(max_tokens=0))


@pytest.mark.parametrize(
    ("model", "value"),
    [("claude-sonnet-5-5", -1), ("claude-sonnet-5-5", 128_001), ("claude-haiku-4-5", 64_001)],
)
def test_max_tokens_outside_the_models_range_names_the_field(model: str, value: int) -> None:
    assert refused(body(model, max_tokens=value)).field == "max_tokens"


@pytest.mark.parametrize(
    "model", ["claude-fable-5-2", "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"]
)
def test_every_current_model_is_accepted(model: str) -> None:
    assert check_message_params(body(model)).model_id == model


def test_a_retired_model_is_refused_with_its_retirement_date_and_replacement() -> None:
    error = refused(body("claude-sonnet-4-5"))
    assert error.field == "model"
    assert "retired on 2026-11-30" in error.problem
    assert "claude-sonnet-5-5" in error.problem


def test_a_dated_alias_of_a_retired_model_is_refused_too() -> None:
    assert "retired" in refused(body("claude-sonnet-4-5-20250929")).problem


def test_a_deprecated_model_still_works() -> None:
    info = check_message_params(body("claude-opus-4-5"))
    assert info.deprecated and info.retires_on is not None


def test_an_unknown_model_names_the_current_ones() -> None:
    error = refused(body("claude-nonexistent-9"))
    assert "unknown model" in error.problem and "claude-sonnet-5-5" in error.problem


@pytest.mark.parametrize("field", ["temperature", "top_p", "top_k"])
def test_sampling_parameters_are_refused_on_claude_4_7_and_later(field: str) -> None:
    value = 5 if field == "top_k" else 0.5
    assert refused(body("claude-sonnet-5-5", **{field: value})).field == field
    assert refused(body("claude-opus-4-7", **{field: value})).field == field
    check_message_params(body("claude-sonnet-4-6", **{field: value}))  # older models accept it


def test_the_default_temperature_is_accepted_everywhere() -> None:
    check_message_params(body("claude-haiku-5-5", temperature=1))


@pytest.mark.parametrize(
    ("model", "kind", "ok"),
    [
        ("claude-opus-5-5", "adaptive", True),
        ("claude-opus-5-5", "disabled", False),
        ("claude-fable-5-2", "disabled", False),
        ("claude-sonnet-5-5", "between_tools", True),
        ("claude-sonnet-5-5", "disabled", False),
        ("claude-sonnet-5", "disabled", True),
        ("claude-haiku-4-5", "adaptive", False),
        ("claude-sonnet-4-6", "enabled", True),
        ("claude-opus-4-8", "enabled", False),
    ],
)
def test_thinking_modes_follow_each_models_rules(model: str, kind: str, ok: bool) -> None:
    thinking: dict[str, Any] = {"type": kind}
    if kind == "enabled":
        thinking["budget_tokens"] = 2_000
    params = body(model, max_tokens=4_000, thinking=thinking)
    if ok:
        check_message_params(params)
    else:
        error = refused(params)
        assert error.field == "thinking.type"
        assert f'"thinking.type.{kind}" is not supported for this model' in error.problem


def test_a_thinking_budget_must_fit_under_max_tokens() -> None:
    params = body(
        "claude-sonnet-4-6", max_tokens=1_500, thinking={"type": "enabled", "budget_tokens": 2_000}
    )
    assert refused(params).field == "thinking.budget_tokens"


def test_opus_5_turns_thinking_off_only_at_effort_high_or_lower() -> None:
    off = {"type": "disabled"}
    check_message_params(body("claude-opus-5", thinking=off, output_config={"effort": "high"}))
    error = refused(body("claude-opus-5", thinking=off, output_config={"effort": "max"}))
    assert error.field == "thinking.type" and "'high'" in error.problem


def test_effort_levels_follow_each_model() -> None:
    check_message_params(body("claude-opus-5-5", output_config={"effort": "xhigh"}))
    assert refused(body("claude-haiku-4-5", output_config={"effort": "low"})).field == (
        "output_config.effort"
    )
    assert "xhigh" in refused(body("claude-sonnet-4-6", output_config={"effort": "xhigh"})).problem
    assert refused(body(output_config={"effort": "extreme"})).field == "output_config.effort"


@pytest.mark.parametrize("model", ["claude-fable-5-1", "claude-opus-5-5", "claude-sonnet-5-5"])
def test_forced_tool_use_is_refused_where_the_api_refuses_it(model: str) -> None:
    for choice in ({"type": "any"}, {"type": "tool", "name": "weather"}):
        error = refused(body(model, tools=[WEATHER], tool_choice=choice))
        assert error.field == "tool_choice.type"
        assert 'type "tool" and "any" are not supported for this model.' in str(error)
    check_message_params(body(model, tools=[WEATHER], tool_choice={"type": "auto"}))


def test_forced_tool_use_works_on_models_that_allow_it() -> None:
    check_message_params(
        body("claude-haiku-5-5", tools=[WEATHER], tool_choice={"type": "tool", "name": "weather"})
    )


def test_tool_choice_must_name_a_tool_of_the_request() -> None:
    error = refused(
        body("claude-haiku-5-5", tools=[WEATHER], tool_choice={"type": "tool", "name": "map"})
    )
    assert error.field == "tool_choice.name"


def test_forced_tool_use_and_extended_thinking_do_not_mix() -> None:
    params = body(
        "claude-sonnet-4-6",
        max_tokens=4_000,
        tools=[WEATHER],
        tool_choice={"type": "any"},
        thinking={"type": "enabled", "budget_tokens": 2_000},
    )
    assert refused(params).field == "tool_choice.type"


def test_assistant_prefill_is_refused_on_claude_4_6_and_later() -> None:
    prefill = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"}]
    error = refused(body("claude-haiku-5-5", messages=prefill))
    assert "does not support assistant message prefill" in error.problem
    assert refused(body("claude-sonnet-4-6", messages=prefill)).field == "messages[1]"
    check_message_params(body("claude-haiku-4-5", messages=prefill))


def test_inference_geo_needs_claude_4_6_or_later() -> None:
    check_message_params(body("claude-opus-4-6", inference_geo="us"))
    error = refused(body("claude-haiku-4-5", inference_geo="us"))
    assert error.field == "inference_geo"
    assert str(error) == "'claude-haiku-4-5' does not support the `inference_geo` parameter."
    assert refused(body(inference_geo="eu")).field == "inference_geo"


def test_fast_mode_only_where_it_exists_and_never_in_a_batch() -> None:
    check_message_params(body("claude-opus-5-5", speed="fast"))
    assert refused(body("claude-sonnet-5-5", speed="fast")).field == "speed"
    assert refused(body("claude-opus-5-5", speed="fast"), for_batch=True).field == "speed"


def test_a_batch_refuses_a_cache_pre_warm() -> None:
    assert refused(body(max_tokens=0), for_batch=True).field == "max_tokens"


def test_service_tier_values() -> None:
    check_message_params(body(service_tier="standard_only"))
    assert refused(body(service_tier="priority")).field == "service_tier"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"metadata": {"user_id": "u1", "team": "x"}}, "metadata.team"),
        ({"metadata": {"user_id": 42}}, "metadata.user_id"),
        ({"tools": [{"name": "weather"}]}, "tools[0].input_schema"),
        ({"cache_control": {"type": "ephemeral", "scope": "org"}}, "cache_control.scope"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].name"),
    ],
)
def test_bodies_the_api_refuses_are_refused_here(overrides: dict[str, Any], field: str) -> None:
    assert refused(body(**overrides)).field == field


def test_a_tool_result_must_answer_a_tool_use_of_the_previous_turn() -> None:
    turns: list[dict[str, Any]] = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "sunny"}],
        },
    ]
    assert "toolu_2" in refused(body(tools=[WEATHER], messages=turns)).problem
    turns[2]["content"] = "never mind"
    error = refused(body(tools=[WEATHER], messages=turns))
    assert error.field == "messages[2]"
    assert str(error).startswith("messages.1: `tool_use` ids were found without `tool_result`")
    turns[2]["content"] = [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]
    check_message_params(body(tools=[WEATHER], messages=turns))


def test_top_level_cache_control_takes_one_of_the_four_breakpoint_slots() -> None:
    mark = {"type": "ephemeral"}
    system = [{"type": "text", "text": f"part {i}", "cache_control": mark} for i in range(4)]
    error = refused(body(system=system, cache_control=mark))
    assert "Found 5" in error.problem
    check_message_params(body(system=system[:3], cache_control=mark))


def test_top_level_cache_control_on_an_already_marked_last_block() -> None:
    content = [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]
    messages = [{"role": "user", "content": content}]
    # Same TTL: the same breakpoint, one slot. A different TTL cannot be honoured.
    check_message_params(body(messages=messages, cache_control={"type": "ephemeral"}))
    error = refused(body(messages=messages, cache_control={"type": "ephemeral", "ttl": "1h"}))
    assert error.field == "cache_control"


def test_every_callable_model_in_the_catalog_accepts_a_plain_request() -> None:
    for model in catalog.callable_models():
        check_message_params(body(model))
