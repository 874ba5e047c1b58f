"""Our retry policy for Claude calls, built on the ``backoff`` library.

The SDK's own retries are off (``max_retries=0`` in ``llm_calls.client``), so this is the only
place that decides whether an attempt is repeated and how long to wait first:

* wait before retry *n* (1-based) = FULL jitter, uniform in ``[0, min(cap_s, base_s * 2**(n-1))]``
  (1, 2, 4, 8, 16 s ceilings with the defaults), and the server's ``retry-after`` is a FLOOR:
  ``wait = max(jittered, retry_after)``;
* retried: 408, 409, 429 (except spend-limit 429s), 500, 502, 503, 504, 529 and other 5xx,
  network failures and timeouts, and an ``overloaded_error`` / ``api_error`` event that arrives
  inside a stream after its HTTP 200;
* never retried: 400, 401, 402, 403, 404, 413, any spend-limit 429;
* we stop after ``max_retries`` retries, or earlier when the next wait would end past
  ``total_cap_s`` — measured from the start of the first attempt, not counting time spent
  blocked in the caller's ``before_attempt`` hook (that is queueing, not retrying).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import backoff
from backoff.types import Details

from llm_calls import conf
from llm_calls.client import AttemptFailure, ClientResponse
from llm_calls.types import Attempt

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
NEVER_RETRIED_STATUSES = frozenset({400, 401, 402, 403, 404, 413})
# Error codes meaning "no amount of waiting helps": the organization is over its spend cap.
NEVER_RETRIED_ERROR_CODES = frozenset(
    {
        "enforced_spend_limit_reached",
        "contract_spend_limit_reached",
        "linked_organization_spend_limit_reached",
    }
)
# Error events inside a 200 stream that mean "the server gave up on this one, try again".
RETRYABLE_STREAM_ERROR_TYPES = frozenset({"overloaded_error", "api_error", "timeout_error"})

GAVE_UP_NOT_RETRYABLE = "not_retryable"
GAVE_UP_RETRY_LIMIT = "retry_limit"
GAVE_UP_TOTAL_CAP = "total_cap"
NOT_SENT = "not_sent"

_T = TypeVar("_T")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. ``max_retries`` counts retries, so attempts = ``max_retries + 1``."""

    max_retries: int = 5
    base_s: float = 1.0
    cap_s: float = 16.0
    total_cap_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"RetryPolicy.max_retries must be >= 0, got {self.max_retries}")
        for name in ("base_s", "cap_s", "total_cap_s"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"RetryPolicy.{name} must be >= 0 seconds, got {value!r}")

    @classmethod
    def from_settings(cls) -> RetryPolicy:
        """The policy from LLM_RETRY_* settings (read now, so ``override_settings`` applies)."""
        return cls(
            max_retries=conf.retry_max_retries(),
            base_s=conf.retry_base_s(),
            cap_s=conf.retry_cap_s(),
            total_cap_s=conf.retry_total_cap_s(),
        )

    def ceilings(self) -> Generator[float, None, None]:
        """Un-jittered wait ceilings for retry 1, 2, …: ``min(cap_s, base_s * 2**(n-1))``."""
        values = backoff.expo(base=2, factor=self.base_s, max_value=self.cap_s)
        next(values)  # backoff's generators yield once to be primed
        yield from values

    def wait_s(self, *, ceiling_s: float, retry_after_s: float | None) -> float:
        """One jittered wait: uniform in ``[0, ceiling_s]``, floored at ``retry_after_s``."""
        jittered = backoff.full_jitter(ceiling_s)
        if retry_after_s is not None and retry_after_s > jittered:
            return retry_after_s
        return jittered


def is_retryable(failure: AttemptFailure) -> bool:
    """Whether waiting and trying again can help with this failed attempt."""
    if failure.error_code in NEVER_RETRIED_ERROR_CODES:
        return False
    status = failure.status
    if status is None:
        return True
    if status == 200:
        return failure.error_type is None or failure.error_type in RETRYABLE_STREAM_ERROR_TYPES
    if status in NEVER_RETRIED_STATUSES:
        return False
    if status in RETRYABLE_STATUSES:
        return True
    # Other 5xx are transient server trouble; 501/505 will not change on a retry.
    return status >= 500 and status not in (501, 505)


class ClaudeCallError(Exception):
    """A Claude call that did not succeed: the only exception ``send_message`` raises for API
    trouble.

    ``attempts`` is how many HTTP attempts were made (0 when bad input was refused before
    sending). ``retryable`` is True when the last failure was of a retryable kind and we gave
    up because of the retry limit or the total time cap; False when it could never succeed by
    retrying. ``attempt_log`` holds every attempt in order. The message never contains the key.
    """

    def __init__(
        self,
        message: str,
        *,
        attempts: int,
        last_status: int | None,
        last_error_type: str | None,
        request_id: str | None,
        retryable: bool,
        attempt_log: tuple[Attempt, ...] = (),
        error_code: str | None = None,
        gave_up_because: str = GAVE_UP_NOT_RETRYABLE,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts
        self.last_status = last_status
        self.last_error_type = last_error_type
        self.request_id = request_id
        self.retryable = retryable
        self.attempt_log = attempt_log
        self.error_code = error_code
        self.gave_up_because = gave_up_because

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments need this to survive pickling (RQ stores failed jobs' errors).
        return (_rebuild_claude_call_error, (self.message, dict(self.__dict__)))

    @classmethod
    def not_sent(cls, problem: str) -> ClaudeCallError:
        """Bad input refused before any HTTP attempt."""
        return cls(
            f"Claude call not sent: {problem} (not retried)",
            attempts=0,
            last_status=None,
            last_error_type="invalid_request_error",
            request_id=None,
            retryable=False,
            gave_up_because=NOT_SENT,
        )


def _rebuild_claude_call_error(message: str, state: dict[str, Any]) -> ClaudeCallError:
    error = ClaudeCallError.__new__(ClaudeCallError)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


@dataclass(frozen=True)
class RetryOutcome(Generic[_T]):
    """The successful response plus every attempt it took.

    ``latency_ms`` runs from the start of the first attempt to the end of the successful one,
    including backoff waits and any admission waits between attempts.
    """

    response: ClientResponse[_T]
    attempts: tuple[Attempt, ...]
    latency_ms: float


@dataclass
class _LoopState:
    """Mutable bookkeeping shared by the attempt function and backoff's handlers (one call)."""

    policy: RetryPolicy
    attempts: list[Attempt] = field(default_factory=list)
    started: float | None = None
    blocked_s: float = 0.0
    last_failure: AttemptFailure | None = None
    last_duration_ms: float = 0.0
    refused_wait_s: float | None = None
    gave_up_because: str = GAVE_UP_RETRY_LIMIT

    def elapsed_s(self) -> float:
        if self.started is None:
            return 0.0
        return time.monotonic() - self.started - self.blocked_s


class _RetryLoop(Generic[_T]):
    """One call's retry loop, shared by the blocking and the asyncio entry points: they differ
    only in how an attempt and the ``before_attempt`` hook are waited for (see their docs)."""

    def __init__(
        self,
        *,
        policy: RetryPolicy,
        on_attempt: Callable[[Attempt], None] | None,
        on_response_headers: Callable[[int | None, Mapping[str, str]], None] | None,
    ) -> None:
        self.state = _LoopState(policy=policy)
        self.on_attempt = on_attempt
        self.on_response_headers = on_response_headers

    def number(self) -> int:
        return len(self.state.attempts) + 1

    def blocked_since(self, blocked_from: float) -> float:
        """Count the time a ``before_attempt`` hook blocked as queueing, not retrying; returns
        when the attempt itself begins."""
        state = self.state
        began = time.monotonic()
        if state.started is None:
            state.started = began
        else:
            state.blocked_s += began - blocked_from
        return began

    def failed(self, failure: AttemptFailure, *, began: float) -> None:
        self.state.last_failure = failure
        self.state.last_duration_ms = (time.monotonic() - began) * 1000.0
        if self.on_response_headers is not None and failure.got_response:
            self.on_response_headers(failure.status, failure.headers)

    def succeeded(self, response: ClientResponse[_T], *, number: int, began: float) -> None:
        duration_ms = (time.monotonic() - began) * 1000.0
        if self.on_response_headers is not None:
            self.on_response_headers(response.status, response.headers)
        self._record(
            Attempt(
                number=number,
                status=response.status,
                error_type=None,
                request_id=response.request_id,
                duration_ms=duration_ms,
                billed=response.billed,
            )
        )

    def _record(self, entry: Attempt) -> None:
        self.state.attempts.append(entry)
        if self.on_attempt is not None:
            self.on_attempt(entry)

    def _record_failure(self, wait_s: float) -> None:
        failure = self.state.last_failure
        assert failure is not None
        self._record(
            Attempt(
                number=self.number(),
                status=failure.status,
                error_type=failure.error_type,
                request_id=failure.request_id,
                duration_ms=self.state.last_duration_ms,
                wait_s=wait_s,
                retry_after_s=failure.retry_after_s,
                billed=False,
                error_code=failure.error_code,
            )
        )

    def _on_backoff(self, details: Details) -> None:
        wait_s = float(details.get("wait", 0.0))
        self._record_failure(wait_s)
        failure = self.state.last_failure
        logger.warning(
            "Claude attempt %d failed: %s; retrying in %.2f s",
            len(self.state.attempts),
            failure.describe() if failure else "?",
            wait_s,
        )

    def _on_giveup(self, details: Details) -> None:
        state = self.state
        failure = state.last_failure
        assert failure is not None
        if not is_retryable(failure):
            state.gave_up_because = GAVE_UP_NOT_RETRYABLE
        elif state.refused_wait_s is not None:
            state.gave_up_because = GAVE_UP_TOTAL_CAP
        else:
            state.gave_up_because = GAVE_UP_RETRY_LIMIT
        self._record_failure(0.0)

    def _waits(self, **_: Any) -> Generator[float, Any, None]:
        """backoff sends each failure in and sleeps for what we yield; returning gives up."""
        policy, state = self.state.policy, self.state
        ceilings = policy.ceilings()
        failure = yield  # type: ignore[misc]  # backoff primes the generator with None
        while True:
            wait_s = policy.wait_s(
                ceiling_s=next(ceilings),
                retry_after_s=failure.retry_after_s if failure is not None else None,
            )
            if state.elapsed_s() + wait_s > policy.total_cap_s:
                state.refused_wait_s = wait_s
                return
            failure = yield wait_s

    def retrying(self, one_attempt: Callable[[], Any]) -> Callable[[], Any]:
        """``one_attempt`` under the policy; backoff sleeps with asyncio when it is a coroutine."""
        return backoff.on_exception(
            self._waits,
            AttemptFailure,
            max_tries=self.state.policy.max_retries + 1,
            max_time=None,
            jitter=None,  # _waits applies full jitter itself, before the retry-after floor
            giveup=lambda exc: not (isinstance(exc, AttemptFailure) and is_retryable(exc)),
            on_backoff=self._on_backoff,
            on_giveup=self._on_giveup,
            raise_on_giveup=True,
            logger=None,  # backoff's default log lines would print the exception; ours are vetted
        )(one_attempt)

    def outcome(self, response: ClientResponse[_T]) -> RetryOutcome[_T]:
        assert self.state.started is not None
        latency_ms = (time.monotonic() - self.state.started) * 1000.0
        return RetryOutcome(
            response=response, attempts=tuple(self.state.attempts), latency_ms=latency_ms
        )

    def gave_up(self, failure: AttemptFailure) -> ClaudeCallError:
        return _give_up_error(state=self.state, failure=failure)


def call_with_retry(
    *,
    attempt: Callable[[int], ClientResponse[_T]],
    policy: RetryPolicy,
    on_attempt: Callable[[Attempt], None] | None = None,
    on_response_headers: Callable[[int | None, Mapping[str, str]], None] | None = None,
    before_attempt: Callable[[int], None] | None = None,
) -> RetryOutcome[_T]:
    """Run ``attempt(n)`` for n = 1, 2, … under ``policy`` until it succeeds or we give up.

    ``attempt`` makes one HTTP attempt and returns a ``ClientResponse`` or raises
    ``AttemptFailure``. Around each attempt: ``before_attempt(n)`` first (it may block — the
    queueing layer waits there for its rate limiter — or raise to abort); then
    ``on_response_headers(status, headers)`` if the server answered at all; then
    ``on_attempt(Attempt)``, for a failure only once its wait is known (just before sleeping).
    Raises ``ClaudeCallError``; exceptions raised by the hooks propagate unchanged.
    """
    loop: _RetryLoop[_T] = _RetryLoop(
        policy=policy, on_attempt=on_attempt, on_response_headers=on_response_headers
    )

    def one_attempt() -> ClientResponse[_T]:
        number = loop.number()
        blocked_from = time.monotonic()
        if before_attempt is not None:
            before_attempt(number)
        began = loop.blocked_since(blocked_from)
        try:
            response = attempt(number)
        except AttemptFailure as failure:
            loop.failed(failure, began=began)
            raise
        loop.succeeded(response, number=number, began=began)
        return response

    try:
        response = loop.retrying(one_attempt)()
    except AttemptFailure as failure:
        raise loop.gave_up(failure) from failure
    return loop.outcome(response)


async def acall_with_retry(
    *,
    attempt: Callable[[int], Awaitable[ClientResponse[_T]]],
    policy: RetryPolicy,
    on_attempt: Callable[[Attempt], None] | None = None,
    on_response_headers: Callable[[int | None, Mapping[str, str]], None] | None = None,
    before_attempt: Callable[[int], Awaitable[None]] | None = None,
) -> RetryOutcome[_T]:
    """``call_with_retry`` for an event loop: ``attempt(n)`` and ``before_attempt(n)`` are
    awaited, and the waits between attempts are ``asyncio.sleep``s, so one loop holds many
    calls at once. The hooks that stay plain functions must not block: they run on the loop."""
    loop: _RetryLoop[_T] = _RetryLoop(
        policy=policy, on_attempt=on_attempt, on_response_headers=on_response_headers
    )

    async def one_attempt() -> ClientResponse[_T]:
        number = loop.number()
        blocked_from = time.monotonic()
        if before_attempt is not None:
            await before_attempt(number)
        began = loop.blocked_since(blocked_from)
        try:
            response = await attempt(number)
        except AttemptFailure as failure:
            loop.failed(failure, began=began)
            raise
        loop.succeeded(response, number=number, began=began)
        return response

    try:
        response = await loop.retrying(one_attempt)()
    except AttemptFailure as failure:
        raise loop.gave_up(failure) from failure
    return loop.outcome(response)


def _give_up_error(*, state: _LoopState, failure: AttemptFailure) -> ClaudeCallError:
    count = len(state.attempts)
    noun = "attempt" if count == 1 else "attempts"
    head = f"Claude call failed after {count} {noun}: {failure.describe()}"
    if state.gave_up_because == GAVE_UP_NOT_RETRYABLE:
        message = f"{head} (not retried)"
    elif state.gave_up_because == GAVE_UP_TOTAL_CAP:
        message = (
            f"{head}; gave up because the next wait ({state.refused_wait_s or 0.0:.1f} s) would "
            f"pass the {state.policy.total_cap_s:g} s total retry time cap"
        )
    else:
        message = f"{head}; gave up after the retry limit ({state.policy.max_retries} retries)"
    logger.warning("%s", message)
    return ClaudeCallError(
        message,
        attempts=count,
        last_status=failure.status,
        last_error_type=failure.error_type,
        request_id=failure.request_id,
        retryable=state.gave_up_because != GAVE_UP_NOT_RETRYABLE,
        attempt_log=tuple(state.attempts),
        error_code=failure.error_code,
        gave_up_because=state.gave_up_because,
    )
