"""Per-model request rules: what a body that is well-formed may still not ask of its model.

Each rule reads one field of ``model_catalog.ModelInfo`` and answers 400
``invalid_request_error`` with the API's own wording where it is known (the fact-check notes and
public error reports quote it); otherwise the message names the field and the model's limit.
The body's shape has already been checked (``validation.py``).
"""

from __future__ import annotations

from typing import Any

from .errors import invalid
from .model_catalog import EFFORT_LEVELS, ModelInfo

PREFILL_REFUSED = (
    "This model does not support assistant message prefill. The conversation must end with a "
    "user message."
)
FORCED_TOOL_CHOICE_REFUSED = 'tool_choice: type "tool" and "any" are not supported for this model.'
EFFORT_REFUSED = "This model does not support the effort parameter."
THINKING_WITH_FORCED_TOOL = "Thinking may not be enabled when tool_choice forces tool use."


def _check_sampling(body: dict[str, Any], model: ModelInfo) -> None:
    """Claude 4.7 and later choose their own sampling: temperature 1 (the default) is the only
    value accepted, and any top_p or top_k is refused."""
    if model.sampling_params:
        return
    for name in ("temperature", "top_p", "top_k"):
        value = body.get(name)
        if value is None or (name == "temperature" and value == 1):
            continue
        raise invalid(f"`{name}` is deprecated for this model.")


def _check_thinking(body: dict[str, Any], model: ModelInfo, *, count_tokens: bool) -> None:
    thinking = body.get("thinking")
    if thinking is None:
        return
    kind = thinking["type"]
    if kind not in model.thinking_types:
        hint = (
            ' Use "thinking.type.adaptive" and "output_config.effort" to control thinking behavior.'
            if "adaptive" in model.thinking_types
            else ""
        )
        raise invalid(f'"thinking.type.{kind}" is not supported for this model.{hint}')
    if kind == "enabled" and not count_tokens and thinking["budget_tokens"] >= body["max_tokens"]:
        raise invalid(
            "thinking.enabled.budget_tokens: Input should be less than max_tokens "
            f"({body['max_tokens']})"
        )


def _check_effort(body: dict[str, Any], model: ModelInfo) -> None:
    asked = (body.get("output_config") or {}).get("effort")
    limit = model.thinking_off_max_effort
    effort = asked or model.default_effort
    if (
        limit is not None
        and effort is not None
        and (body.get("thinking") or {}).get("type") == "disabled"
        and EFFORT_LEVELS.index(effort) > EFFORT_LEVELS.index(limit)
    ):
        # Opus 5 turns thinking off only at moderate effort.
        raise invalid(
            f'"thinking.type.disabled" is only supported with output_config.effort "{limit}" '
            f'or lower on this model, not "{effort}".'
        )
    effort = asked
    if effort is None:
        return
    if not model.effort_levels:
        raise invalid(EFFORT_REFUSED)
    if effort not in model.effort_levels:
        raise invalid(
            f"output_config.effort: '{effort}' is not supported for this model "
            f"(supported: {', '.join(model.effort_levels)})"
        )


def check_model_rules(body: dict[str, Any], model: ModelInfo, *, count_tokens: bool) -> None:
    """Raise the API's 400 for the first rule of ``model`` that ``body`` breaks.

    count_tokens applies the same rules except those about generation (max_tokens, sampling,
    prefill, data residency are not count_tokens fields, or do not apply to counting)."""
    if not count_tokens:
        if body["max_tokens"] > model.max_output_tokens:
            raise invalid(
                f"max_tokens: {body['max_tokens']} > {model.max_output_tokens}, which is the "
                f"maximum allowed number of output tokens for {model.model_id}"
            )
        _check_sampling(body, model)
    _check_thinking(body, model, count_tokens=count_tokens)
    _check_effort(body, model)
    tool_choice = body.get("tool_choice") or {}
    if tool_choice.get("type") in ("any", "tool"):
        if not model.forced_tool_choice:
            raise invalid(FORCED_TOOL_CHOICE_REFUSED)
        if (body.get("thinking") or {}).get("type") == "enabled":
            raise invalid(THINKING_WITH_FORCED_TOOL)
    if (
        not count_tokens
        and not model.assistant_prefill
        and body["messages"][-1]["role"] == ("assistant")
    ):
        raise invalid(PREFILL_REFUSED)
    if body.get("inference_geo") is not None and not model.inference_geo:
        raise invalid(f"'{model.model_id}' does not support the `inference_geo` parameter.")
    if body.get("speed") == "fast" and not model.fast_mode:
        raise invalid(f"'{model.model_id}' does not support the `speed` parameter.")


def check_context_window(model: ModelInfo, input_tokens: int) -> None:
    """A prompt longer than the model's context window is refused before any generation."""
    if input_tokens > model.context_window:
        raise invalid(f"prompt is too long: {input_tokens} tokens > {model.context_window} maximum")


def check_batch_item(params: dict[str, Any]) -> None:
    """What a Message Batch refuses that /v1/messages accepts (an errored result, not a 400)."""
    if params.get("stream"):
        raise invalid("stream: streaming is not supported in batch requests")
    if params.get("speed") == "fast":
        raise invalid("speed: fast mode is not supported in batch requests")
    if params.get("max_tokens") == 0:
        raise invalid("max_tokens: 0 (a prompt-cache pre-warm) is not supported in batch requests")
