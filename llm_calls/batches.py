"""The Message Batches route: submit many Messages bodies at once, billed at 50%.

Transport only, like the rest of llm_calls: it knows ``custom_id`` strings and Messages
bodies, not users or rows (``queueing.batching`` maps those). Each HTTP call goes through
``llm_calls.client`` (one attempt) under the retry policy of ``llm_calls.retry``:

* ``retrieve_batch``, ``cancel_batch`` and reading results are idempotent and retried like any
  call (429, 5xx, network errors);
* ``create_batch`` is retried only when the server *answered* with a retryable error (nothing
  was created). A network failure is ambiguous — the batch may exist — so it is not retried
  here: ``BatchSubmitError.uncertain`` tells the caller, who decides (see queueing.batching).

Results are returned as ``BatchResult``: a succeeded one carries a ``MessageResult`` whose usage
is on the ``batch`` service tier (the API bills every batch result at batch prices; we do not
trust an absent ``service_tier`` to mean it).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llm_calls import client
from llm_calls.client import AttemptFailure, ClientResponse
from llm_calls.retry import ClaudeCallError, RetryPolicy, call_with_retry
from llm_calls.services import message_result_from_api
from llm_calls.types import Attempt, MessageResult
from llm_calls.validation import InvalidRequest

CUSTOM_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_BATCH_REQUESTS = 100_000  # the API's limit per batch
OUTCOMES = ("succeeded", "errored", "canceled", "expired")
# Errors inside a batch result that may go away on a second try (the rest are the request's fault).
RETRYABLE_RESULT_ERRORS = frozenset(
    {"api_error", "overloaded_error", "timeout_error", "rate_limit_error"}
)


@dataclass(frozen=True)
class BatchRequest:
    custom_id: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class BatchStatus:
    """A batch as the API reports it. ``counts`` has processing/succeeded/errored/canceled/expired."""

    batch_id: str
    processing_status: str  # in_progress | canceling | ended
    counts: Mapping[str, int]
    created_at: str | None
    ended_at: str | None
    expires_at: str | None

    @property
    def ended(self) -> bool:
        return self.processing_status == "ended"

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> BatchStatus:
        counts = data.get("request_counts") or {}
        return cls(
            batch_id=str(data["id"]),
            processing_status=str(data.get("processing_status", "")),
            counts={k: int(v or 0) for k, v in counts.items()},
            created_at=data.get("created_at"),
            ended_at=data.get("ended_at"),
            expires_at=data.get("expires_at"),
        )


@dataclass(frozen=True)
class BatchResult:
    """One request's outcome. ``outcome`` is succeeded | errored | canceled | expired."""

    custom_id: str
    outcome: str
    message: MessageResult | None = None
    error_type: str | None = None
    error_message: str | None = None

    @property
    def retryable(self) -> bool:
        """An errored result that a new batch may well get through (server-side trouble)."""
        return self.outcome == "errored" and self.error_type in RETRYABLE_RESULT_ERRORS


class BatchSubmitError(Exception):
    """``create_batch`` failed. ``uncertain``: the connection failed after sending, so the API
    may have created the batch anyway; otherwise the API answered and created nothing."""

    def __init__(
        self, message: str, *, uncertain: bool, cause: ClaudeCallError | None = None
    ) -> None:
        super().__init__(message)
        self.uncertain = uncertain
        self.cause = cause


class _SentButNoAnswer(Exception):
    """Raised out of the retry loop so it does not retry an ambiguous batch creation."""

    def __init__(self, failure: AttemptFailure) -> None:
        super().__init__(failure.describe())
        self.failure = failure


def check_batch_requests(requests: Sequence[BatchRequest]) -> None:
    """Raise InvalidRequest for what the API would refuse in the envelope (nothing sent)."""
    if not requests:
        raise InvalidRequest("requests", "a batch needs at least one request")
    if len(requests) > MAX_BATCH_REQUESTS:
        raise InvalidRequest("requests", f"at most {MAX_BATCH_REQUESTS:,} requests per batch")
    seen: set[str] = set()
    for i, request in enumerate(requests):
        if not CUSTOM_ID_RE.match(request.custom_id):
            raise InvalidRequest(f"requests[{i}].custom_id", "must match ^[a-zA-Z0-9_-]{1,64}$")
        if request.custom_id in seen:
            raise InvalidRequest(f"requests[{i}].custom_id", f"duplicate {request.custom_id!r}")
        seen.add(request.custom_id)
        if request.params.get("stream"):
            raise InvalidRequest(f"requests[{i}].params.stream", "batches cannot stream")


def create_batch(
    *, requests: Sequence[BatchRequest], policy: RetryPolicy | None = None
) -> BatchStatus:
    """Submit one batch. Raises InvalidRequest (nothing sent) or BatchSubmitError."""
    check_batch_requests(requests)
    payload = [{"custom_id": r.custom_id, "params": dict(r.params)} for r in requests]

    def attempt(_number: int) -> ClientResponse[dict[str, Any]]:
        try:
            return client.create_batch(requests=payload)
        except AttemptFailure as failure:
            if failure.status is None:
                raise _SentButNoAnswer(failure) from failure
            raise

    try:
        outcome = call_with_retry(attempt=attempt, policy=policy or RetryPolicy.from_settings())
    except _SentButNoAnswer as error:
        raise BatchSubmitError(
            f"creating the batch failed without an answer ({error.failure.describe()}); "
            "it may have been created",
            uncertain=True,
        ) from error
    except ClaudeCallError as error:
        raise BatchSubmitError(
            f"creating the batch failed: {error}", uncertain=False, cause=error
        ) from error
    return BatchStatus.from_api(outcome.response.value)


def retrieve_batch(*, batch_id: str, policy: RetryPolicy | None = None) -> BatchStatus:
    """The batch's current status. Raises ClaudeCallError after the retry policy gives up."""
    outcome = call_with_retry(
        attempt=lambda _n: client.retrieve_batch(batch_id=batch_id),
        policy=policy or RetryPolicy.from_settings(),
    )
    return BatchStatus.from_api(outcome.response.value)


def cancel_batch(*, batch_id: str, policy: RetryPolicy | None = None) -> BatchStatus:
    """Ask the API to cancel; results of requests not yet processed become ``canceled``."""
    outcome = call_with_retry(
        attempt=lambda _n: client.cancel_batch(batch_id=batch_id),
        policy=policy or RetryPolicy.from_settings(),
    )
    return BatchStatus.from_api(outcome.response.value)


def batch_results(
    *, batch_id: str, processing_ms: float = 0.0, policy: RetryPolicy | None = None
) -> list[BatchResult]:
    """Every result of an ended batch (in the API's order, which is arbitrary).

    A read that fails midway is retried from the start, skipping results already read.
    ``processing_ms`` becomes each message's latency (how long the batch took). Raises
    ClaudeCallError when the retry policy gives up.
    """
    policy = policy or RetryPolicy.from_settings()
    collected: dict[str, BatchResult] = {}

    def attempt(_number: int) -> ClientResponse[None]:
        started = time.monotonic()
        for line in client.iter_batch_results(batch_id=batch_id):
            custom_id = str(line.get("custom_id", ""))
            if custom_id and custom_id not in collected:
                collected[custom_id] = _result_from_api(
                    line, processing_ms=processing_ms, read_ms=(time.monotonic() - started) * 1000
                )
        return ClientResponse(value=None, status=200, headers={}, request_id=None)

    call_with_retry(attempt=attempt, policy=policy)
    return list(collected.values())


def _result_from_api(
    line: Mapping[str, Any], *, processing_ms: float, read_ms: float
) -> BatchResult:
    custom_id = str(line.get("custom_id", ""))
    result = line.get("result") or {}
    outcome = str(result.get("type", ""))
    if outcome == "succeeded":
        message = result.get("message") or {}
        attempt = Attempt(
            number=1, status=200, error_type=None, request_id=None, duration_ms=read_ms, billed=True
        )
        parsed = message_result_from_api(
            message=message, request_id=None, attempts=(attempt,), latency_ms=processing_ms
        )
        usage = dataclasses.replace(parsed.usage, service_tier="batch")
        return BatchResult(custom_id, outcome, message=dataclasses.replace(parsed, usage=usage))
    if outcome == "errored":
        # The API nests an error response: {"type": "error", "error": {"type", "message"}}.
        error = result.get("error")
        inner: Mapping[str, Any] = error if isinstance(error, Mapping) else {}
        if isinstance(inner.get("error"), Mapping):
            inner = inner["error"]
        return BatchResult(
            custom_id,
            outcome,
            error_type=str(inner.get("type") or "api_error"),
            error_message=str(inner.get("message") or "the request errored inside the batch"),
        )
    if outcome in ("canceled", "expired"):
        return BatchResult(custom_id, outcome)
    raise AttemptFailure(
        status=200,
        error_type="invalid_response",
        message=f"batch result for {custom_id!r} has an unknown type {outcome!r}",
    )
