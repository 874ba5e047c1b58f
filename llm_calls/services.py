"""Send one message to Claude well: retry under the policy, report every attempt.

This is the transport's front door. It knows nothing of users, quotas or limits: the caller
(queueing) passes hooks to block before each attempt, learn from every response's headers and
record each attempt. Only queueing calls ``send_message`` and its event-loop twin
``asend_prepared`` (a test enforces it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llm_calls import client
from llm_calls.caching import CachePlan, plan_for_call, record_uncached, record_warm_prefixes
from llm_calls.retry import (
    ClaudeCallError,
    RetryOutcome,
    RetryPolicy,
    acall_with_retry,
    call_with_retry,
)
from llm_calls.types import CLASSIC_CACHE_RATES, Attempt, CacheRates, MessageResult, Usage


def send_message(
    *,
    params: Mapping[str, Any],
    stream: bool = False,
    policy: RetryPolicy | None = None,
    on_attempt: Callable[[Attempt], None] | None = None,
    on_response_headers: Callable[[int | None, Mapping[str, str]], None] | None = None,
    before_attempt: Callable[[int], None] | None = None,
    client_request_id: str | None = None,
    cache_planner: bool | None = None,
    cache_rates: CacheRates | None = None,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> MessageResult:
    """Send the Messages body ``params`` (model, max_tokens, messages, system, tools, …).

    ``stream=True`` uses the streaming endpoint and accumulates the stream (long generations
    then never hit an idle-read timeout); the result is the same. Each attempt n sends
    ``x-client-request-id: {client_request_id}-a{n}`` when an id is given, so every attempt can
    be matched to the API's records. Hooks: see ``llm_calls.retry.call_with_retry``.
    ``cache_planner`` defaults to ``CACHE_PLANNER_ENABLED`` (on); ``cache_rates`` are the
    model's cache prices relative to its input price, which the planner weighs when it picks a
    TTL (the classic 1.25 / 2 / 0.1 when not given). ``on_event(name, data)`` (streaming only)
    sees each of the API's stream events as it arrives, in every attempt.

    Raises ``ClaudeCallError`` — with ``attempts=0`` and nothing sent when ``params`` is
    malformed, else after the retry policy gave up. Raises ``ImproperlyConfigured`` when no
    endpoint is configured, before any hook runs.
    """
    plan = prepare_message(params=params, cache_planner=cache_planner, cache_rates=cache_rates)

    def attempt(number: int) -> client.ClientResponse[dict[str, Any]]:
        headers = _attempt_headers(client_request_id, number)
        if stream:
            return client.stream_message(params=plan.body, extra_headers=headers, on_event=on_event)
        return client.create_message(params=plan.body, extra_headers=headers)

    sent_at = time.time()
    outcome = call_with_retry(
        attempt=attempt,
        policy=policy or RetryPolicy.from_settings(),
        on_attempt=on_attempt,
        on_response_headers=on_response_headers,
        before_attempt=before_attempt,
    )
    return SentMessage(plan=plan, outcome=outcome, sent_at=sent_at).result()


@dataclass(frozen=True)
class SentMessage:
    """An answered call of :func:`asend_prepared`, before its bookkeeping: ``result()`` reduces
    it to a ``MessageResult`` and records what the upstream's cache now holds — a Redis round
    trip, so the caller runs it off the event loop."""

    plan: CachePlan
    outcome: RetryOutcome[dict[str, Any]]
    sent_at: float

    def result(self) -> MessageResult:
        return _answered(plan=self.plan, outcome=self.outcome, sent_at=self.sent_at)


async def asend_prepared(
    *,
    plan: CachePlan,
    stream: bool = False,
    policy: RetryPolicy | None = None,
    on_attempt: Callable[[Attempt], None] | None = None,
    on_response_headers: Callable[[int | None, Mapping[str, str]], None] | None = None,
    before_attempt: Callable[[int], Awaitable[None]] | None = None,
    client_request_id: str | None = None,
    on_event: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None,
) -> SentMessage:
    """:func:`send_message` on an event loop, for a body already through
    :func:`prepare_message` (both blocking steps — planning and ``SentMessage.result`` — are
    left to the caller's threads, so the loop never waits on Redis). The attempts, the waits
    between them, ``before_attempt`` and ``on_event`` are awaited
    (``llm_calls.retry.acall_with_retry``); ``on_attempt`` and ``on_response_headers`` run on the
    loop and must not block."""

    async def attempt(number: int) -> client.ClientResponse[dict[str, Any]]:
        headers = _attempt_headers(client_request_id, number)
        if stream:
            return await client.astream_message(
                params=plan.body, extra_headers=headers, on_event=on_event
            )
        return await client.acreate_message(params=plan.body, extra_headers=headers)

    sent_at = time.time()
    outcome = await acall_with_retry(
        attempt=attempt,
        policy=policy or RetryPolicy.from_settings(),
        on_attempt=on_attempt,
        on_response_headers=on_response_headers,
        before_attempt=before_attempt,
    )
    return SentMessage(plan=plan, outcome=outcome, sent_at=sent_at)


def prepare_message(
    *,
    params: Mapping[str, Any],
    cache_planner: bool | None = None,
    cache_rates: CacheRates | None = None,
) -> CachePlan:
    """Check the body and pass it through the cache planner: what :func:`send_message` does
    first, and what a caller of :func:`asend_prepared` does before it. Raises
    ``ClaudeCallError`` (``attempts=0``, nothing sent) for a malformed body."""
    problem = params_problem(params)
    if problem is not None:
        raise ClaudeCallError.not_sent(problem)
    client.get_client()  # fail on missing configuration before admitting anything
    # Every call passes the cache planner: breakpoints on the stable prefix, TTL by observed
    # reuse; it never fails a call. ``cache_planner=False`` (or CACHE_PLANNER_ENABLED off) sends
    # the body as given, for a caller that planned it already or measures without caching.
    plan = plan_for_call(
        params=params, enabled=cache_planner, rates=cache_rates or CLASSIC_CACHE_RATES
    )
    record_uncached(plan)
    return plan


def _attempt_headers(client_request_id: str | None, number: int) -> dict[str, str] | None:
    return {"x-client-request-id": f"{client_request_id}-a{number}"} if client_request_id else None


def _answered(
    *, plan: CachePlan, outcome: RetryOutcome[dict[str, Any]], sent_at: float
) -> MessageResult:
    result = message_result_from_api(
        message=outcome.response.value,
        request_id=outcome.response.request_id,
        attempts=outcome.attempts,
        latency_ms=outcome.latency_ms,
    )
    # What the upstream's cache now holds decides what the next calls are charged (the
    # limiter reserves by it); a Redis failure here is logged, never raised.
    record_warm_prefixes(plan, usage=result.usage, sent_at=sent_at)
    return result


def message_result_from_api(
    *,
    message: Mapping[str, Any],
    request_id: str | None,
    attempts: tuple[Attempt, ...],
    latency_ms: float,
) -> MessageResult:
    """Reduce an API message dict to a ``MessageResult`` (also used for batch results)."""
    raw_content = message.get("content") or []
    content = tuple(dict(block) for block in raw_content if isinstance(block, Mapping))
    text = "".join(str(block.get("text", "")) for block in content if block.get("type") == "text")
    return MessageResult(
        envelope={key: value for key, value in message.items() if key != "content"},
        message_id=str(message.get("id", "")),
        model=str(message.get("model", "")),
        text=text,
        stop_reason=message.get("stop_reason"),
        usage=Usage.from_api(message.get("usage")),
        request_id=request_id,
        attempts=attempts,
        latency_ms=latency_ms,
        content=content,
    )


def count_tokens(*, params: Mapping[str, Any], policy: RetryPolicy | None = None) -> dict[str, Any]:
    """``POST /v1/messages/count_tokens`` under the retry policy: ``{"input_tokens": N}``.

    Free and limited by its own per-minute limit upstream, so the token buckets are not
    involved. Raises ``ClaudeCallError``.
    """
    outcome = call_with_retry(
        attempt=lambda _n: client.count_tokens(params=params),
        policy=policy or RetryPolicy.from_settings(),
    )
    return outcome.response.value


def models_page(*, query: Mapping[str, Any], policy: RetryPolicy | None = None) -> dict[str, Any]:
    """One page of ``GET /v1/models`` under the retry policy. Raises ``ClaudeCallError``."""
    outcome = call_with_retry(
        attempt=lambda _n: client.list_models(query=query),
        policy=policy or RetryPolicy.from_settings(),
    )
    return outcome.response.value


def model_entry(*, model_id: str, policy: RetryPolicy | None = None) -> dict[str, Any]:
    """``GET /v1/models/{model_id}`` under the retry policy. Raises ``ClaudeCallError``."""
    outcome = call_with_retry(
        attempt=lambda _n: client.retrieve_model(model_id=model_id),
        policy=policy or RetryPolicy.from_settings(),
    )
    return outcome.response.value


def params_problem(params: object) -> str | None:
    """What is wrong with a Messages body that makes sending it pointless, or ``None``.

    Only the shape the transport itself needs is checked here; the API validates the rest
    (and its 400 is never retried).
    """
    if not isinstance(params, Mapping):
        return f"params must be a mapping (the Messages API body), got {type(params).__name__}"
    missing = [name for name in ("model", "max_tokens", "messages") if name not in params]
    if missing:
        return "params is missing required field(s): " + ", ".join(missing)
    model = params["model"]
    if not isinstance(model, str) or not model.strip():
        return f"params.model must be a non-empty string, got {model!r}"
    max_tokens = params["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        return f"params.max_tokens must be an integer >= 0, got {max_tokens!r}"
    messages = params["messages"]
    if not isinstance(messages, list | tuple) or not messages:
        return "params.messages must be a non-empty list of {role, content} messages"
    try:
        json.dumps(params)
    except (TypeError, ValueError) as err:
        return f"params is not JSON-serialisable: {err}"
    return None
