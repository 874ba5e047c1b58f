"""Each model's own request rules (2026-12-01): what the API refuses on one model and accepts on
another, with its 400 messages; retired models answer 404 everywhere."""

from __future__ import annotations

from typing import Any

import pytest

from llm_calls.emulator.process import EmulatorProcess

from .emulator_support import MODEL, NEW_MODEL, bad_request, raw_call, sdk, sdk_params, user

THINKING_HINT = (
    'Use "thinking.type.adaptive" and "output_config.effort" to control thinking behavior.'
)
PREFILL = (
    "This model does not support assistant message prefill. The conversation must end with a "
    "user message."
)
WEATHER_TOOL = {"name": "get_weather", "input_schema": {"type": "object"}}

REFUSED: list[tuple[str, dict[str, Any], str]] = [
    (
        "temperature on Opus 5.5",
        {"temperature": 0.2},
        "`temperature` is deprecated for this model.",
    ),
    ("top_p on Opus 4.7", {"model": "claude-opus-4-7", "top_p": 0.9}, "`top_p` is deprecated"),
    ("top_k on Haiku 5.5", {"model": "claude-haiku-5-5", "top_k": 5}, "`top_k` is deprecated"),
    (
        "thinking disabled on Opus 5.5",
        {"thinking": {"type": "disabled"}},
        f'"thinking.type.disabled" is not supported for this model. {THINKING_HINT}',
    ),
    (
        "thinking enabled on Sonnet 5",
        {"model": "claude-sonnet-5", "thinking": {"type": "enabled", "budget_tokens": 2048}},
        f'"thinking.type.enabled" is not supported for this model. {THINKING_HINT}',
    ),
    (
        "thinking enabled on Opus 4.8",
        {"model": "claude-opus-4-8", "thinking": {"type": "enabled", "budget_tokens": 2048}},
        '"thinking.type.enabled" is not supported for this model.',
    ),
    (
        "enabled thinking on Sonnet 5.5",
        {"model": "claude-sonnet-5-5", "thinking": {"type": "enabled", "budget_tokens": 2048}},
        '"thinking.type.enabled" is not supported for this model.',
    ),
    (
        "between_tools on Opus 4.6",
        {"model": "claude-opus-4-6", "thinking": {"type": "between_tools"}},
        '"thinking.type.between_tools" is not supported for this model.',
    ),
    (
        "thinking off at max effort on Opus 5",
        {
            "model": "claude-opus-5",
            "thinking": {"type": "disabled"},
            "output_config": {"effort": "max"},
        },
        '"thinking.type.disabled" is only supported with output_config.effort "high" or lower',
    ),
    (
        "forced tool use with enabled thinking",
        {
            "model": "claude-haiku-4-5",
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "any"},
        },
        "Thinking may not be enabled when tool_choice forces tool use.",
    ),
    (
        "adaptive thinking on Haiku 4.5",
        {"model": "claude-haiku-4-5", "thinking": {"type": "adaptive"}},
        '"thinking.type.adaptive" is not supported for this model.',
    ),
    (
        "budget below 1024",
        {"model": MODEL, "thinking": {"type": "enabled", "budget_tokens": 500}},
        "thinking.enabled.budget_tokens",
    ),
    (
        "budget not below max_tokens",
        {"model": MODEL, "thinking": {"type": "enabled", "budget_tokens": 4000}},
        "less than max_tokens (4000)",
    ),
    (
        "effort on Haiku 4.5",
        {"model": "claude-haiku-4-5", "output_config": {"effort": "low"}},
        "This model does not support the effort parameter.",
    ),
    (
        "xhigh effort on Opus 4.5",
        {"model": "claude-opus-4-5", "output_config": {"effort": "xhigh"}},
        "output_config.effort: 'xhigh' is not supported for this model",
    ),
    ("unknown effort", {"output_config": {"effort": "extreme"}}, "output_config.effort"),
    (
        "format without a schema",
        {"output_config": {"format": {"type": "json_schema"}}},
        "output_config.format.schema",
    ),
    (
        "forced tool on Opus 5.5",
        {"tools": [WEATHER_TOOL], "tool_choice": {"type": "tool", "name": "get_weather"}},
        'tool_choice: type "tool" and "any" are not supported for this model.',
    ),
    (
        "any tool on Sonnet 5.5",
        {"model": "claude-sonnet-5-5", "tools": [WEATHER_TOOL], "tool_choice": {"type": "any"}},
        'tool_choice: type "tool" and "any" are not supported for this model.',
    ),
    *[
        (
            f"prefill on {model}",
            {
                "model": model,
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "content": "The answer is"},
                ],
            },
            PREFILL,
        )
        for model in ("claude-haiku-5-5", "claude-opus-5-5", "claude-sonnet-4-6")
    ],
    (
        "US inference on Haiku 4.5",
        {"model": "claude-haiku-4-5", "inference_geo": "us"},
        "'claude-haiku-4-5' does not support the `inference_geo` parameter.",
    ),
    ("unknown region", {"inference_geo": "eu"}, "inference_geo"),
    (
        "fast mode on Sonnet 5.5",
        {"model": "claude-sonnet-5-5", "speed": "fast"},
        "'claude-sonnet-5-5' does not support the `speed` parameter.",
    ),
    ("unknown speed", {"speed": "warp"}, "speed"),
    ("unknown service tier", {"service_tier": "priority"}, "service_tier"),
    (
        "max_tokens above the model's output cap",
        {"model": "claude-haiku-4-5", "max_tokens": 64_001},
        "max_tokens: 64001 > 64000, which is the maximum allowed number of output tokens for "
        "claude-haiku-4-5",
    ),
    (
        "metadata user_id not a string",
        {"metadata": {"user_id": 7}},
        "metadata.user_id: Input should be a valid string",
    ),
    (
        "custom-typed tool without a schema",
        {"tools": [{"name": "t", "type": "custom"}]},
        "tools.0.input_schema",
    ),
    (
        "cache_control with an extra key",
        {"cache_control": {"type": "ephemeral", "scope": "global"}},
        "cache_control.scope: Extra inputs are not permitted",
    ),
]


@pytest.mark.parametrize(
    ("params", "expected"), [(p, e) for _, p, e in REFUSED], ids=[n for n, _, _ in REFUSED]
)
# The SDK itself warns about deprecated models (Opus 4.5) before sending.
@pytest.mark.filterwarnings("ignore:The model 'claude-opus-4-5' is deprecated:DeprecationWarning")
def test_a_rule_the_model_enforces_is_a_400_naming_it(
    emulator: EmulatorProcess, params: dict[str, Any], expected: str
) -> None:
    request = {"model": NEW_MODEL, "max_tokens": 4000, "messages": user("hello"), **params}
    status, error = bad_request(emulator, **request)
    assert status == 400
    assert error["type"] == "invalid_request_error"
    assert expected in error["message"]
    assert emulator.ledger()["totals"]["requests"] == 0


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("default temperature on Opus 5.5", {"temperature": 1}),
    ("sampling on Sonnet 4.6", {"model": MODEL, "temperature": 0.1, "top_p": 0.5, "top_k": 3}),
    ("adaptive with effort on Opus 5.5", {"thinking": {"type": "adaptive"}, "output_config": {"effort": "max"}}),
    ("enabled thinking on Opus 4.6", {"model": "claude-opus-4-6", "thinking": {"type": "enabled", "budget_tokens": 1024}}),
    ("thinking disabled on Sonnet 5", {"model": "claude-sonnet-5", "thinking": {"type": "disabled"}}),
    ("between_tools on Sonnet 5.5", {"model": "claude-sonnet-5-5", "thinking": {"type": "between_tools"}}),
    ("thinking off at high effort on Opus 5", {"model": "claude-opus-5", "thinking": {"type": "disabled"}, "output_config": {"effort": "high"}}),
    ("enabled thinking on Haiku 4.5", {"model": "claude-haiku-4-5", "thinking": {"type": "enabled", "budget_tokens": 2000}}),
    ("forced tool on Opus 5", {"model": "claude-opus-5", "tools": [WEATHER_TOOL], "tool_choice": {"type": "any"}}),
    ("prefill on Haiku 4.5", {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "So"}]}),
    ("a Mythos model", {"model": "claude-mythos-5-2"}),
    ("US inference on Opus 4.6", {"model": "claude-opus-4-6", "inference_geo": "us"}),
    ("fast mode on Opus 5.5", {"speed": "fast"}),
    ("standard speed on Sonnet 5.5", {"model": "claude-sonnet-5-5", "speed": "standard"}),
    ("structured output", {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}),
    ("standard_only tier", {"service_tier": "standard_only"}),
    ("max_tokens at the model's cap", {"max_tokens": 128_000}),
]  # fmt: skip


@pytest.mark.parametrize("params", [p for _, p in ACCEPTED], ids=[n for n, _ in ACCEPTED])
# The SDK itself warns that manual thinking on Opus 4.6 is deprecated (it is still accepted).
@pytest.mark.filterwarnings("ignore:Using Claude with claude-opus-4-6:UserWarning")
def test_what_the_model_allows_is_answered(
    emulator: EmulatorProcess, params: dict[str, Any]
) -> None:
    request = {"model": NEW_MODEL, "max_tokens": 4000, "messages": user("hello"), **params}
    message = sdk(emulator).messages.create(**sdk_params(request))
    assert message.type == "message"


@pytest.mark.parametrize(
    "model", ["claude-sonnet-4-5", "claude-opus-4-1", "claude-3-5-haiku", "claude-nonexistent-9"]
)
def test_retired_and_unknown_models_are_404_on_messages_and_count_tokens(
    emulator: EmulatorProcess, model: str
) -> None:
    for endpoint in ("create", "count_tokens"):
        params: dict[str, Any] = {"model": model, "messages": user("x")}
        if endpoint == "create":
            params["max_tokens"] = 10
        status, error = bad_request(emulator, endpoint=endpoint, **params)
        assert (status, error) == (404, {"type": "not_found_error", "message": f"model: {model}"})


def test_count_tokens_applies_the_model_rules_too(emulator: EmulatorProcess) -> None:
    status, error = bad_request(
        emulator,
        endpoint="count_tokens",
        model=NEW_MODEL,
        messages=user("x"),
        tools=[WEATHER_TOOL],
        tool_choice={"type": "any"},
    )
    assert status == 400 and "not supported for this model" in error["message"]


def test_a_prompt_longer_than_the_context_window_is_refused(emulator: EmulatorProcess) -> None:
    # Haiku 4.5: 200K tokens of context; 4 chars per token.
    status, error = bad_request(
        emulator, model="claude-haiku-4-5", max_tokens=10, messages=user("x" * 800_004)
    )
    assert status == 400
    assert error["message"] == "prompt is too long: 200005 tokens > 200000 maximum"


def test_the_user_profile_and_workspace_headers_are_accepted_and_recorded(
    emulator: EmulatorProcess,
) -> None:
    response = raw_call(
        emulator,
        "/v1/messages",
        {"model": MODEL, "max_tokens": 10, "messages": user("x")},
        headers={
            "anthropic-user-profile-id": "uprof_123",
            "anthropic-workspace-id": "wrkspc_011",
        },
    )
    assert response.status == 200
    (account,) = emulator.ledger()["keys"].values()
    assert account["requests"][0]["user_profile_id"] == "uprof_123"
