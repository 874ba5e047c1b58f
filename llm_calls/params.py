"""The Messages request body: one type for every door into the gateway.

``submit_request``, ``call_claude``, the JSON API and the batch route all take a
``MessageParams`` (as keyword arguments or a JSON object) and hand it on unchanged, so a new
Messages field is added here, in ``llm_calls.validation`` (its rules) and nowhere else.
The fields are those the Messages API accepts on 2026-12-01 (``stream`` is not one of them
here: the transport chooses it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Required, TypedDict


class MessageParams(TypedDict, total=False):
    """A ``POST /v1/messages`` body, as the API documents it."""

    model: Required[str]
    max_tokens: Required[int]
    messages: Required[Sequence[Mapping[str, Any]]]
    system: str | Sequence[Mapping[str, Any]]
    tools: Sequence[Mapping[str, Any]]
    tool_choice: Mapping[str, Any]
    temperature: float
    top_p: float
    top_k: int
    stop_sequences: Sequence[str]
    metadata: Mapping[str, Any]
    thinking: Mapping[str, Any]
    output_config: Mapping[str, Any]
    cache_control: Mapping[str, Any]
    inference_geo: str
    service_tier: str
    speed: str


REQUIRED_FIELDS: tuple[str, ...] = ("model", "max_tokens", "messages")
MESSAGE_FIELDS: frozenset[str] = MessageParams.__required_keys__ | MessageParams.__optional_keys__
# Stored beside the row, not in its params column (see queueing.models.LLMRequest).
ROW_COLUMNS: tuple[str, ...] = ("model", "max_tokens")


def given(values: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``values`` that were given (``None`` means "not given", as in keyword
    arguments left at their default). Unknown keys are kept, for validation to name."""
    return {name: value for name, value in values.items() if value is not None}
