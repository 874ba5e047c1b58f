"""The batch route: queued batch-route requests → one Message Batch → results onto their rows.

Rows with ``use_batch=True`` (the ``bulk`` class, or callers who ask) never enter the fair
scheduler or the rate limiter: Anthropic runs batches under their own limits, at 50% of the
price. A worker host runs ``run_batch_cycle`` every few seconds:

1. ``collect_and_submit`` claims up to ``max_batch`` queued batch-route rows — one conditional
   UPDATE (``status=queued`` → ``dispatched``, ``batch_id=claim:<uuid>``) so two collectors can
   never take the same row — and, once the oldest has waited ``max_wait_s`` or the batch is
   full, submits them as ONE batch with ``custom_id = llmreq-<pk>-d<dispatch>``. The rows then
   carry the batch id and status ``running``.
2. ``poll_batches`` asks the API about each batch in flight (at most every
   ``BATCH_POLL_INTERVAL_S`` per batch) and, once it has ended, delivers each result to its row:
   succeeded → recorded like any call (``usage.service_tier == "batch"`` is priced at 50%) and
   the quota settled; errored for a server-side reason → back to the queue once, for a new batch
   (a new dispatch number, so a new custom id); errored otherwise, canceled or expired → failed
   with the reason and the quota released. Delivery is idempotent: a row only takes the result
   whose custom id carries its current dispatch number, and audit rows are unique per custom id.

Recovery: a collector that died holding a claim leaves rows ``dispatched`` with a ``claim:``
batch id; ``recover_stale_claims`` puts them back in the queue once no collector can still be
submitting them.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from llm_calls import conf as llm_conf
from llm_calls.batches import (
    MAX_BATCH_REQUESTS,
    BatchRequest,
    BatchResult,
    BatchStatus,
    BatchSubmitError,
    batch_results,
    create_batch,
    retrieve_batch,
)
from llm_calls.caching import plan_cache, planner_enabled
from llm_calls.retry import ClaudeCallError, RetryPolicy
from llm_calls.types import Attempt
from llm_calls.validation import InvalidRequest
from queueing import services
from queueing.models import LLMRequest
from ratelimit_project.redis import get_redis
from usage import services as usage_services

log = logging.getLogger(__name__)

Status = LLMRequest.Status
CLAIM_PREFIX = "claim:"
CUSTOM_ID_RE = re.compile(r"^llmreq-(\d+)-d(\d+)$")
# A request is sent at most this many times through batches (the first try + one retry of a
# result that errored on the server's side).
MAX_BATCH_DISPATCHES = 2
MAX_BATCHES_PER_CYCLE = 10
# Answers to a batch submission that no retry can change (malformed envelope, too large); other
# refusals (401/403 configuration, 429, 5xx) leave the requests queued for the next cycle.
REFUSED_FOR_GOOD = frozenset({400, 413})
POLL_LOCK_TIMEOUT_S = 300


def batch_max_size() -> int:
    """``BATCH_MAX_REQUESTS`` (default 100): requests per submitted batch."""
    return int(getattr(settings, "BATCH_MAX_REQUESTS", 100))


def batch_max_wait_s() -> float:
    """``BATCH_MAX_WAIT_S`` (default 10): how long the oldest request waits for a fuller batch."""
    return float(getattr(settings, "BATCH_MAX_WAIT_S", 10.0))


def batch_poll_interval_s() -> float:
    """``BATCH_POLL_INTERVAL_S`` (default 10): least time between two status checks of a batch."""
    return float(getattr(settings, "BATCH_POLL_INTERVAL_S", 10.0))


def custom_id_for(*, request_id: int, dispatch: int) -> str:
    """The same id the normal path sends as ``x-client-request-id`` and audits by."""
    return f"llmreq-{request_id}-d{dispatch}"


def parse_custom_id(custom_id: str) -> tuple[int, int] | None:
    match = CUSTOM_ID_RE.match(custom_id)
    return (int(match.group(1)), int(match.group(2))) if match else None


# --- submitting -----------------------------------------------------------------------------


def _claim(*, max_batch: int, max_wait_s: float) -> str | None:
    """Claim the oldest queued batch-route rows; the claim token, or None when not yet worth it."""
    head = list(
        LLMRequest.objects.filter(status=Status.QUEUED, use_batch=True)
        .order_by("created_at", "pk")
        .values_list("pk", "created_at")[:max_batch]
    )
    if not head:
        return None
    oldest_wait_s = (timezone.now() - head[0][1]).total_seconds()
    if len(head) < max_batch and oldest_wait_s < max_wait_s:
        return None
    token = f"{CLAIM_PREFIX}{uuid.uuid4().hex}"
    # One UPDATE: rows another collector (or a cancel) took meanwhile no longer match.
    claimed = LLMRequest.objects.filter(
        pk__in=[pk for pk, _created in head], status=Status.QUEUED, use_batch=True
    ).update(
        status=Status.DISPATCHED,
        batch_id=token,
        dispatch_count=F("dispatch_count") + 1,
        dispatched_at=timezone.now(),
    )
    return token if claimed else None


def _body(row: LLMRequest) -> dict[str, object]:
    # Batch items of one batch share system prompts and tools like any calls do: mark them.
    return plan_cache(
        params=row.message_params(),
        enabled=planner_enabled(),
        rates=usage_services.cache_rates(model=row.model, on=timezone.now().date()),
    ).body


def _unclaim(token: str) -> int:
    """Put claimed rows back in the queue (their dispatch number stays used)."""
    return LLMRequest.objects.filter(batch_id=token, status=Status.DISPATCHED).update(
        status=Status.QUEUED, batch_id=""
    )


def collect_and_submit(
    *,
    max_batch: int | None = None,
    max_wait_s: float | None = None,
    policy: RetryPolicy | None = None,
) -> str | None:
    """Submit the queued batch-route requests as one batch; its id, or None if nothing was sent.

    Nothing is sent while fewer than ``max_batch`` rows wait and the oldest has waited less
    than ``max_wait_s``. If the API refuses or cannot be reached, the rows go back to the queue
    for the next cycle (when the connection failed after sending, the API may have created the
    batch anyway: that is logged as an error naming the custom ids).
    """
    size = max_batch if max_batch is not None else batch_max_size()
    wait = max_wait_s if max_wait_s is not None else batch_max_wait_s()
    if not 1 <= size <= MAX_BATCH_REQUESTS:
        raise ValueError(f"max_batch must be between 1 and {MAX_BATCH_REQUESTS:,}, got {size}")
    token = _claim(max_batch=size, max_wait_s=wait)
    if token is None:
        return None
    rows = list(LLMRequest.objects.filter(batch_id=token, status=Status.DISPATCHED).order_by("pk"))
    if not rows:
        return None
    requests: list[BatchRequest] = []
    for row in rows:
        custom_id = custom_id_for(request_id=row.pk, dispatch=row.dispatch_count)
        try:
            requests.append(BatchRequest(custom_id=custom_id, params=_body(row)))
        except InvalidRequest as error:  # a row written around submit_request's checks
            _fail_rows(
                [row],
                dispatch=row.dispatch_count,
                error_type="invalid_request_error",
                message=f"cannot be sent in a batch: {error}",
            )
    if not requests:
        return None
    try:
        status = create_batch(requests=requests, policy=policy)
    except BatchSubmitError as error:
        if error.cause is not None and error.cause.last_status in REFUSED_FOR_GOOD:
            # The batch itself is malformed or too large: sending it again cannot help.
            claimed = LLMRequest.objects.filter(batch_id=token, status=Status.DISPATCHED)
            _fail_rows(
                claimed,
                dispatch=None,
                error_type=error.cause.last_error_type or "invalid_request_error",
                message=f"the Message Batches API refused the batch: {error.cause}",
            )
            return None
        returned = _unclaim(token)
        if error.uncertain:
            ids = ", ".join(r.custom_id for r in requests)
            log.error(
                "%s; %s requests re-queued. If the API did create it, it holds: %s",
                error,
                returned,
                ids,
            )
        else:
            log.warning("batch not submitted (%s); %s requests re-queued", error, returned)
        return None
    with transaction.atomic():
        LLMRequest.objects.filter(batch_id=token, status=Status.DISPATCHED).update(
            batch_id=status.batch_id, status=Status.RUNNING, started_at=timezone.now()
        )
    log.info("submitted batch %s with %s requests", status.batch_id, len(requests))
    return status.batch_id


# --- results --------------------------------------------------------------------------------


def _processing_ms(status: BatchStatus, fallback_start: dt.datetime | None) -> float:
    def parse(value: str | None) -> dt.datetime | None:
        if not value:
            return None
        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None

    start = parse(status.created_at) or fallback_start
    end = parse(status.ended_at) or timezone.now()
    if start is None:
        return 0.0
    return max(0.0, (end - start).total_seconds() * 1000.0)


def _fail_rows(
    rows: Iterable[LLMRequest], *, dispatch: int | None, error_type: str, message: str
) -> int:
    count = 0
    for row in rows:
        services._finish_failed(
            request=row,
            dispatch=dispatch if dispatch is not None else row.dispatch_count,
            error_type=error_type,
            message=message,
            attempts=(),
            last_status=None,
            request_id=None,
            reservation=None,
        )
        count += 1
    return count


def _deliver_one(row: LLMRequest, dispatch: int, result: BatchResult, batch_id: str) -> None:
    if result.outcome == "succeeded" and result.message is not None:
        services._finish_succeeded(
            request=row, dispatch=dispatch, result=result.message, reservation=None
        )
        return
    if result.retryable and dispatch < MAX_BATCH_DISPATCHES:
        requeued = LLMRequest.objects.filter(
            pk=row.pk, status=Status.RUNNING, batch_id=batch_id, dispatch_count=dispatch
        ).update(status=Status.QUEUED, batch_id="")
        if requeued:
            log.warning(
                "request %s errored in batch %s (%s: %s); queued for a new batch",
                row.pk,
                batch_id,
                result.error_type,
                result.error_message,
            )
        return
    if result.outcome == "errored":
        error_type = result.error_type or "api_error"
        message = f"the Message Batch returned an error for this request: {error_type}: {result.error_message}"
        if result.retryable:
            message += f" (already retried in a new batch; gave up after {dispatch} batches)"
        attempt = Attempt(
            number=1, status=None, error_type=error_type, request_id=None, duration_ms=0.0
        )
        services._finish_failed(
            request=row,
            dispatch=dispatch,
            error_type=error_type,
            message=message,
            attempts=(attempt,),
            last_status=None,
            request_id=None,
            reservation=None,
        )
    elif result.outcome == "canceled":
        _fail_rows(
            [row],
            dispatch=dispatch,
            error_type="batch_canceled",
            message=f"Message Batch {batch_id} was canceled before this request was processed; nothing was billed",
        )
    else:
        _fail_rows(
            [row],
            dispatch=dispatch,
            error_type="batch_expired",
            message=f"Message Batch {batch_id} expired (24 h) before this request was processed; nothing was billed",
        )


def _deliver(batch_id: str, status: BatchStatus, results: list[BatchResult]) -> int:
    rows = {
        row.pk: row for row in LLMRequest.objects.filter(batch_id=batch_id, status=Status.RUNNING)
    }
    handled = 0
    for result in results:
        parsed = parse_custom_id(result.custom_id)
        if parsed is None:
            log.warning(
                "batch %s returned a result for unknown custom_id %r", batch_id, result.custom_id
            )
            continue
        pk, dispatch = parsed
        row = rows.get(pk)
        if row is None or row.dispatch_count != dispatch:
            continue  # delivered earlier, or a result for an older dispatch of this row
        del rows[pk]
        _deliver_one(row, dispatch, result, batch_id)
        handled += 1
    handled += _fail_rows(
        rows.values(),
        dispatch=None,
        error_type="batch_result_missing",
        message=f"Message Batch {batch_id} ended without a result for this request",
    )
    return handled


def poll_batches(*, policy: RetryPolicy | None = None) -> int:
    """Check every batch in flight; deliver the results of those that ended.

    Returns how many rows changed state (finished, or back in the queue for a retry). Safe to
    run from every worker host at once: a Redis lock per batch lets one poller deliver it.
    """
    batch_ids = list(
        LLMRequest.objects.filter(status=Status.RUNNING, use_batch=True)
        .exclude(batch_id="")
        .exclude(batch_id__startswith=CLAIM_PREFIX)
        .values_list("batch_id", flat=True)
        .distinct()
    )
    redis_client = get_redis()
    interval_ms = int(batch_poll_interval_s() * 1000)
    handled = 0
    for batch_id in batch_ids:
        if interval_ms > 0 and not redis_client.set(
            f"gw:batch:polled:{batch_id}", 1, nx=True, px=interval_ms
        ):
            continue
        lock = redis_client.lock(
            f"gw:batch:lock:{batch_id}", timeout=POLL_LOCK_TIMEOUT_S, blocking=False
        )
        if not lock.acquire(blocking=False):
            continue
        try:
            handled += _poll_one(batch_id, policy)
        finally:
            lock.release()
    return handled


def _poll_one(batch_id: str, policy: RetryPolicy | None) -> int:
    try:
        status = retrieve_batch(batch_id=batch_id, policy=policy)
        if not status.ended:
            return 0
        first = LLMRequest.objects.filter(batch_id=batch_id).order_by("dispatched_at").first()
        results = batch_results(
            batch_id=batch_id,
            processing_ms=_processing_ms(status, first.dispatched_at if first else None),
            policy=policy,
        )
    except ClaudeCallError as error:
        if error.last_status == 404:
            rows = LLMRequest.objects.filter(batch_id=batch_id, status=Status.RUNNING)
            return _fail_rows(
                rows,
                dispatch=None,
                error_type="batch_not_found",
                message=f"the API no longer knows Message Batch {batch_id}: {error}",
            )
        log.warning(
            "batch %s: could not read its status or results (%s); will try again", batch_id, error
        )
        return 0
    return _deliver(batch_id, status, results)


# --- recovery and the worker loop -----------------------------------------------------------


def recover_stale_claims(*, grace_s: float | None = None) -> int:
    """Re-queue rows a collector claimed but never submitted (it died in between).

    The default grace outlasts a create call's worst case (timeout plus the retry time cap), so
    a live collector's claim is never taken back under it.
    """
    if grace_s is None:
        grace_s = llm_conf.timeout_s() + llm_conf.retry_total_cap_s() + 60.0
    cutoff = timezone.now() - dt.timedelta(seconds=grace_s)
    return LLMRequest.objects.filter(
        status=Status.DISPATCHED, batch_id__startswith=CLAIM_PREFIX, dispatched_at__lt=cutoff
    ).update(status=Status.QUEUED, batch_id="")


@dataclass(frozen=True)
class BatchCycle:
    submitted: tuple[str, ...]
    handled: int
    recovered: int


def run_batch_cycle(
    *,
    max_batch: int | None = None,
    max_wait_s: float | None = None,
    policy: RetryPolicy | None = None,
) -> BatchCycle:
    """One round of the batch route for a worker host's loop: recover, submit, poll."""
    recovered = recover_stale_claims()
    submitted: list[str] = []
    while len(submitted) < MAX_BATCHES_PER_CYCLE:
        batch_id = collect_and_submit(max_batch=max_batch, max_wait_s=max_wait_s, policy=policy)
        if batch_id is None:
            break
        submitted.append(batch_id)
    handled = poll_batches(policy=policy)
    return BatchCycle(submitted=tuple(submitted), handled=handled, recovered=recovered)
