"""The gateway's own body checks agree with the API on the edges."""

from __future__ import annotations

import pytest

from llm_calls.validation import InvalidRequest, check_message_params


def body(**overrides):
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        **overrides,
    }


def test_max_tokens_zero_is_accepted_because_it_pre_warms_the_prompt_cache() -> None:
    check_message_params(body(max_tokens=0))


@pytest.mark.parametrize("value", [-1, 64_001])
def test_max_tokens_outside_the_models_range_names_the_field(value: int) -> None:
    with pytest.raises(InvalidRequest) as error:
        check_message_params(body(max_tokens=value))
    assert error.value.field == "max_tokens"
