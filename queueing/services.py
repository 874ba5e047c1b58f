"""Both doors into the gateway, and what a worker does with one request.

- ``submit_request`` (queued): validate, persist the row (the source of truth), reserve quota,
  put the request in the fair scheduler, return at once. A dispatcher releases it when the rate
  limiter can admit it; an RQ job then runs ``execute_request``.
- ``call_claude`` (synchronous): the same validation, quota and limiter, without the queue.

Every path that reaches Anthropic goes through ``execute_request`` → ``llm_calls.services
.send_message`` with the limiter's hooks and ends in ``usage.services.record_call``: that is how
"no call bypasses the limiter, the retry policy and tracking" stays true.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Unpack

import redis
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError, OperationalError, transaction
from django.db import connection as db_connection
from django.db.models import F
from django.utils import timezone
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.queue import Queue

from llm_calls import caching, catalog, response_cache
from llm_calls.params import ROW_COLUMNS, MessageParams, given
from llm_calls.retry import ClaudeCallError
from llm_calls.services import send_message
from llm_calls.tokens import estimate_input_tokens
from llm_calls.types import Attempt, MessageResult, Usage
from llm_calls.validation import InvalidRequest, check_message_params
from organizations.models import Membership
from queueing import conf, cpu_gate, eta, journal, leases, notifications, quotas, relay
from queueing.limiter import Reservation, get_limiter, input_reservation, itpm_charge
from queueing.models import ApiToken, LLMRequest, Quota
from queueing.scheduler import get_scheduler, user_key_for
from ratelimit_project.logs import request_context
from ratelimit_project.redis import get_redis
from usage import pricing
from usage import services as usage_services
from usage.models import AuditLog

log = logging.getLogger(__name__)

# Used with fullmatch: a "$" anchor would let "id\n" through.
SESSION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# Printable ASCII without spaces at either end, as long as the column (Stripe's rule, and what
# the IETF Idempotency-Key draft's examples use: UUIDs and random tokens).
IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,253}[\x21-\x7e])?")
Status = LLMRequest.Status


class QuotaExceeded(Exception):
    """Admission refused by a quota. The request row exists with status ``rejected``."""

    def __init__(self, request: LLMRequest, message: str) -> None:
        self.request = request
        super().__init__(message)


class IdempotencyKeyReused(Exception):
    """An Idempotency-Key that already names a request submitted with a different body."""

    def __init__(self, request: LLMRequest) -> None:
        self.request = request
        super().__init__(
            f"this Idempotency-Key already names request {request.pk}, submitted with a "
            "different body; send a new key for a new request"
        )


class RequestFailed(Exception):
    """A synchronous call ended without an answer; ``request.error_message`` says why."""

    def __init__(self, request: LLMRequest) -> None:
        self.request = request
        super().__init__(request.error_message or f"request {request.pk} {request.status}")


class CannotCancel(Exception):
    pass


@dataclass(frozen=True)
class Submission:
    """A validated request, ready to persist."""

    body: dict[str, Any]
    estimated_input_tokens: int
    worst_case_tokens: int
    worst_case_usd: Decimal
    cache_prefixes: tuple[caching.CachePrefix, ...] = ()


def check_submission(
    *,
    user: AbstractBaseUser | AnonymousUser | None,
    session_id: Any,
    priority: Any,
    params: Mapping[str, Any],
    use_batch: bool = False,
) -> Submission:
    """Validate everything a caller sends; raise InvalidRequest naming the first problem.

    ``params`` is the Messages body (``llm_calls.params.MessageParams``); ``None`` values count
    as not given. The model's own rules apply (``llm_calls.validation``), and a body going
    into a Message Batch (``use_batch``) must also be one the Batches API accepts.
    """
    if (
        user is None
        or not getattr(user, "is_authenticated", False)
        or not getattr(user, "is_active", False)
    ):
        raise InvalidRequest("user", "an active, authenticated user is required")
    if not isinstance(session_id, str) or not SESSION_ID_RE.fullmatch(session_id):
        raise InvalidRequest(
            "session_id",
            "must be 1-128 characters of letters, digits, '.', '_', ':' or '-', starting with a letter or digit",
        )
    classes = conf.priority_class_names()
    if not isinstance(priority, str) or priority not in classes:
        raise InvalidRequest(
            "priority", f"unknown priority {priority!r}; choose one of: {', '.join(classes)}"
        )
    body = given(params)
    if "stream" in body:
        raise InvalidRequest("stream", "is chosen by the gateway; leave it out")
    check_message_params(body, for_batch=use_batch)
    estimated = estimate_input_tokens(body)
    max_tokens = int(body["max_tokens"])
    return Submission(
        body=body,
        estimated_input_tokens=estimated,
        cache_prefixes=caching.cacheable_prefixes(body),
        worst_case_tokens=estimated + max_tokens,
        worst_case_usd=_worst_case_usd(
            body=body, prompt_tokens=estimated, max_tokens=max_tokens, batch=use_batch
        ),
    )


def _worst_case_usd(
    *, body: Mapping[str, Any], prompt_tokens: int, max_tokens: int, batch: bool
) -> Decimal:
    """The most this call can cost (quota reservations); 0 when no price is on file yet."""
    price = usage_services.price_for(
        model=str(body["model"]),
        on=timezone.now().date(),
        speed=str(body.get("speed") or "standard"),
    )
    if price is None:
        return Decimal(0)
    return pricing.worst_case_cost_usd(
        price=price,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        inference_geo=str(body.get("inference_geo") or ""),
        batch=batch,
    )


def _organization_id(user: Any) -> int | None:
    membership = Membership.objects.filter(user_id=user.pk).only("organization_id").first()
    return membership.organization_id if membership else None


def fair_share_weight(*, user_id: int, organization_id: int | None) -> float:
    """The user's own quota weight, else their organization's, else 1."""
    quota = Quota.objects.filter(user_id=user_id).only("weight").first()
    if quota is None and organization_id is not None:
        quota = Quota.objects.filter(organization_id=organization_id).only("weight").first()
    return float(quota.weight) if quota else 1.0


def _persist(
    *,
    user: Any,
    session_id: str,
    priority: str,
    submission: Submission,
    use_response_cache: bool,
    response_cache_shared: bool,
    use_batch: bool,
    idempotency_key: str | None = None,
    idempotency_fingerprint: str = "",
    api_token: ApiToken | None = None,
    live_events: bool = False,
) -> LLMRequest:
    body = submission.body
    return LLMRequest.objects.create(
        user=user,
        organization_id=_organization_id(user),
        session_id=session_id,
        model=body["model"],
        priority=priority,
        params={k: v for k, v in body.items() if k not in ROW_COLUMNS},
        max_tokens=body["max_tokens"],
        status=Status.QUEUED,
        estimated_input_tokens=submission.estimated_input_tokens,
        cache_prefixes=caching.prefixes_to_json(submission.cache_prefixes),
        reserved_tokens=submission.worst_case_tokens,
        reserved_usd=submission.worst_case_usd,
        use_response_cache=use_response_cache,
        response_cache_shared=response_cache_shared,
        use_batch=use_batch,
        idempotency_key=idempotency_key or "",
        idempotency_fingerprint=idempotency_fingerprint,
        api_token=api_token,
        live_events=live_events,
    )


def _fingerprint(
    *, session_id: str, priority: str, flags: tuple[bool, bool, bool], body: Mapping[str, Any]
) -> str:
    """What makes two submissions the same one (the body is validated, so it is JSON)."""
    canonical = json.dumps(
        {"session_id": session_id, "priority": priority, "flags": flags, "body": body},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replayed(*, user: Any, key: str, fingerprint: str) -> LLMRequest | None:
    """The request an Idempotency-Key already names, if any (marked ``replayed``)."""
    existing = LLMRequest.objects.filter(user=user, idempotency_key=key).first()
    if existing is None:
        return None
    if existing.idempotency_fingerprint != fingerprint:
        raise IdempotencyKeyReused(existing)
    existing.replayed = True
    return existing


def _admit_quota(*, request: LLMRequest, submission: Submission) -> None:
    check = quotas.admit(
        user_id=request.user_id,
        org_id=request.organization_id,
        key_id=request.api_token_id,
        request_id=request.pk,
        tokens=submission.worst_case_tokens,
        usd=submission.worst_case_usd,
        priority=request.priority,
    )
    if not check.admitted:
        LLMRequest.objects.filter(pk=request.pk).update(
            status=Status.REJECTED,
            error_type="quota_exceeded",
            error_message=check.message,
            finished_at=timezone.now(),
        )
        request.refresh_from_db()
        raise QuotaExceeded(request, check.message)


def _schedule(request: LLMRequest, *, arrival: bool = False) -> None:
    """Put the row in the fair scheduler; ``arrival``: a new request (counted in ETA rates)."""
    scheduler = get_scheduler()
    fifo = conf.scheduler_mode() == "fifo"  # the benchmark baseline: everyone is one user
    user_key = user_key_for(user_id=request.user_id)
    weight = (
        1.0
        if fifo
        else fair_share_weight(user_id=request.user_id, organization_id=request.organization_id)
    )
    scheduler.enqueue(
        request_id=request.pk,
        user_key=user_key,
        priority=request.priority,
        cost=request.estimated_input_tokens + request.max_tokens,
        weight=weight,
        enqueued_at=request.created_at.timestamp(),
    )
    if arrival:
        eta.record_arrival(
            priority=request.priority,
            model_class=catalog.model_class(request.model),
            user_key=user_key,
            weight=weight,
            input_tokens=request.estimated_input_tokens,
            max_tokens=request.max_tokens,
        )
    notifications.wake_dispatchers()


def _accept(
    *,
    user: Any,
    session_id: Any,
    priority: Any,
    use_response_cache: bool,
    response_cache_shared: bool,
    use_batch: bool,
    params: Mapping[str, Any],
    idempotency_key: str | None = None,
    api_token: ApiToken | None = None,
    live_events: bool = False,
) -> tuple[LLMRequest, Submission]:
    """Both entry points start here: validate everything, then save the row (status queued).

    With an ``idempotency_key`` that already names a request, that request comes back marked
    ``replayed`` and nothing is written.
    """
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str) or not IDEMPOTENCY_KEY_RE.fullmatch(idempotency_key)
    ):
        raise InvalidRequest(
            "Idempotency-Key",
            "must be 1 to 255 printable ASCII characters, not starting or ending with a space",
        )
    submission = check_submission(
        user=user, session_id=session_id, priority=priority, params=params, use_batch=use_batch
    )
    fingerprint = ""
    if idempotency_key is not None:
        fingerprint = _fingerprint(
            session_id=session_id,
            priority=priority,
            flags=(use_response_cache, response_cache_shared, use_batch),
            body=submission.body,
        )
        existing = _replayed(user=user, key=idempotency_key, fingerprint=fingerprint)
        if existing is not None:
            return existing, submission
    try:
        # A savepoint: a concurrent twin that won the unique constraint must not break a
        # caller's surrounding transaction.
        with transaction.atomic():
            request = _persist(
                user=user,
                session_id=session_id,
                priority=priority,
                submission=submission,
                use_response_cache=use_response_cache,
                response_cache_shared=response_cache_shared,
                use_batch=use_batch,
                idempotency_key=idempotency_key,
                idempotency_fingerprint=fingerprint,
                api_token=api_token,
                live_events=live_events,
            )
    except IntegrityError:
        if idempotency_key is None:
            raise
        twin = _replayed(user=user, key=idempotency_key, fingerprint=fingerprint)
        if twin is None:
            raise
        return twin, submission
    return request, submission


def submit_request(
    *,
    user: Any,
    session_id: str,
    priority: str = "query",
    use_response_cache: bool = False,
    response_cache_shared: bool = False,
    batch: bool = False,
    idempotency_key: str | None = None,
    api_token: ApiToken | None = None,
    live_events: bool = False,
    **params: Unpack[MessageParams],
) -> LLMRequest:
    """Queue one Messages call and return its row at once (status ``queued``).

    The Messages body comes as keyword arguments (``model``, ``max_tokens``, ``messages``,
    ``system``, ``tools``, ``tool_choice``, ``thinking``, ``output_config``, … — every field of
    ``llm_calls.params.MessageParams``). Raises InvalidRequest (nothing written) or
    QuotaExceeded (row kept as ``rejected``, so what a user submitted is never lost). Wait for
    the answer with ``wait_for_result``.

    ``idempotency_key``: a caller that may retry (after a timeout or a dropped connection)
    sends the same key each time and gets the one request it names, marked ``replayed``, in
    whatever state it is now (QuotaExceeded again if it was rejected); the same key with a
    different submission raises IdempotencyKeyReused.

    ``api_token``: the gateway key the caller presented, kept on the row. ``live_events``:
    the call is streamed and its events relayed as they arrive (``queueing.relay``), for a
    caller that streams the answer on.
    """
    request, submission = _accept(
        user=user,
        session_id=session_id,
        priority=priority,
        use_response_cache=use_response_cache,
        response_cache_shared=response_cache_shared,
        use_batch=batch or priority in conf.batch_priority_classes(),
        params=params,
        idempotency_key=idempotency_key,
        api_token=api_token,
        live_events=live_events,
    )
    if request.replayed:
        if request.status == Status.REJECTED:
            raise QuotaExceeded(request, request.error_message)
        return request
    try:
        _admit_quota(request=request, submission=submission)
    except redis.RedisError:
        # The row is saved, so nothing is lost: the reaper admits and schedules it once Redis
        # answers again (recover_orphans). The caller gets its queued request, not an error.
        log.warning(
            "Redis unavailable while queueing request %s; the reaper will pick it up", request.pk
        )
        return request
    if request.use_batch:
        # The batch route (queueing.batching) collects these rows itself, at half price.
        notifications.wake_dispatchers()
        return request
    try:
        _schedule(request, arrival=True)
        estimate = eta.estimate_wait(request=request)
    except redis.RedisError:
        log.warning(
            "Redis unavailable while scheduling request %s; the reaper will pick it up", request.pk
        )
        return request
    # None: a dispatcher took it before we could ask, so it did not wait.
    told, model = (0.0, 0.0) if estimate is None else (estimate.eta_s, estimate.model_s)
    LLMRequest.objects.filter(pk=request.pk).update(predicted_wait_s=told, model_wait_s=model)
    request.predicted_wait_s, request.model_wait_s = told, model
    request.queue_position = None if estimate is None else estimate.position
    return request


def call_claude(
    *,
    user: Any,
    session_id: str,
    priority: str = "interactive",
    use_response_cache: bool = False,
    response_cache_shared: bool = False,
    timeout_s: float | None = None,
    **params: Unpack[MessageParams],
) -> LLMRequest:
    """Answer inline: quota and limiter apply, the queue does not. Returns the succeeded row.

    Raises InvalidRequest, QuotaExceeded, or RequestFailed (the call failed after retries, or
    the limiter could not admit it within ``timeout_s``).
    """
    request, submission = _accept(
        user=user,
        session_id=session_id,
        priority=priority,
        use_response_cache=use_response_cache,
        response_cache_shared=response_cache_shared,
        use_batch=False,
        params=params,
    )
    _admit_quota(request=request, submission=submission)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    reservation = reserve_blocking(request=request, deadline=deadline)
    if reservation is None:
        _finish_failed(
            request=request,
            dispatch=0,
            error_type="limiter_timeout",
            message=f"the rate limiter could not admit this call within {timeout_s} s",
            attempts=(),
            last_status=None,
            request_id=None,
            reservation=None,
        )
        request.refresh_from_db()
        raise RequestFailed(request)
    dispatch = mark_dispatched(request_id=request.pk)
    if dispatch is None:  # cancelled in between
        get_limiter().release(reservation=reservation)
        request.refresh_from_db()
        raise RequestFailed(request)
    execute_request(request_id=request.pk, reservation=reservation, dispatch=dispatch)
    request.refresh_from_db()
    if request.status != Status.SUCCEEDED:
        raise RequestFailed(request)
    return request


def reserve_blocking(*, request: LLMRequest, deadline: float | None) -> Reservation | None:
    """Wait until the limiter admits this request's estimate; None if the deadline passes first."""
    while True:
        reservation, wait = try_reserve(request=request)
        if reservation is not None:
            return reservation
        if deadline is not None and time.monotonic() + wait > deadline:
            return None
        time.sleep(wait)


def try_reserve(*, request: LLMRequest) -> tuple[Reservation | None, float]:
    """One try at the limiter for this request's estimate: the reservation, or None and how
    long to wait before the next try (bounded to [10 ms, 1 s] so a change is noticed soon)."""
    limiter = get_limiter()
    model_class = catalog.model_class(request.model)
    estimate = input_reservation(
        model=request.model,
        estimated_input_tokens=request.estimated_input_tokens,
        prefixes=caching.prefixes_from_json(request.cache_prefixes),
        warm=caching.WarmPrefixes(),
        factor=limiter.estimate_factor(model_class),
    )
    admission = limiter.try_reserve(
        model_class=model_class, input_tokens=estimate, output_tokens=request.max_tokens
    )
    if admission.admitted and admission.reservation is not None:
        return admission.reservation, 0.0
    return None, max(0.01, min(admission.wait_s, 1.0))


def mark_dispatched(*, request_id: int) -> int | None:
    """Queued → dispatched; returns the new dispatch number, None if it is no longer queued."""
    return mark_dispatched_many(request_ids=[request_id]).get(request_id)


def mark_dispatched_many(*, request_ids: Sequence[int]) -> dict[int, int]:
    """Queued → dispatched for each of ``request_ids`` still queued, in one transaction.

    Returns ``{request id: its new dispatch number}``; ids missing from it were no longer
    queued (cancelled, or taken by another dispatcher). One conditional UPDATE per row, so each
    row is won by exactly one caller whatever the database's isolation level.
    """
    if not request_ids:
        return {}
    now = timezone.now()
    with transaction.atomic():
        won = [
            pk
            for pk in request_ids
            if LLMRequest.objects.filter(pk=pk, status=Status.QUEUED).update(
                status=Status.DISPATCHED,
                dispatch_count=F("dispatch_count") + 1,
                dispatched_at=now,
            )
        ]
        if not won:
            return {}
        return dict(LLMRequest.objects.filter(pk__in=won).values_list("pk", "dispatch_count"))


def cancel_request(*, request: LLMRequest, by_user: Any) -> LLMRequest:
    """Cancel a queued request of the caller's own (staff may cancel anyone's)."""
    if request.user_id != by_user.pk and not by_user.is_staff:
        raise LLMRequest.DoesNotExist  # never reveal that someone else's request exists
    # All or nothing: the row changes only if Redis also let go of the request and its quota.
    # Redis unreachable → the transaction rolls back and redis.RedisError reaches the caller,
    # with the request still queued and its quota still held. (Removed from the scheduler but
    # not released: the row stays queued, and the reaper schedules it again.) On PostgreSQL
    # the row lock also makes a dispatcher's claim wait for this decision.
    with transaction.atomic():
        updated = LLMRequest.objects.filter(pk=request.pk, status=Status.QUEUED).update(
            status=Status.CANCELLED,
            finished_at=timezone.now(),
            error_type="cancelled",
            error_message="cancelled by user",
        )
        if updated:
            get_scheduler().remove(request_id=request.pk)
            quotas.release(
                user_id=request.user_id,
                org_id=request.organization_id,
                key_id=request.api_token_id,
                request_id=request.pk,
            )
    request.refresh_from_db()
    if not updated:
        raise CannotCancel(
            f"request {request.pk} is {request.status} and can no longer be cancelled"
        )
    notifications.notify_done(request.pk)
    return request


def wait_for_result(*, request_id: int, timeout_s: float) -> LLMRequest:
    """Block until the request is terminal; raises TimeoutError with its last status otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        request = LLMRequest.objects.get(pk=request_id)
        if request.is_terminal:
            return request
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"request {request_id} is still {request.status} after {timeout_s} s"
            )
        notifications.wait_done(request_id, timeout_s=min(remaining, 1.0))


# --- execution on a worker -------------------------------------------------------------------


def _client_request_id(request_id: int, dispatch: int) -> str:
    return f"llmreq-{request_id}-d{dispatch}"


def dispatch_job_id(*, request_id: int, dispatch: int) -> str:
    """The RQ job id of one dispatch (the reaper looks the job up by it)."""
    return _client_request_id(request_id, dispatch)


def execute_request(*, request_id: int, reservation: Reservation | None, dispatch: int) -> None:
    """Make the call for one dispatched request and record its outcome exactly once.

    Idempotent per (request, dispatch): a stale or redelivered job finds the row already past
    this dispatch and does nothing. Retries inside the call each pass the limiter again.

    The running lease is taken as soon as the job is known to be the request's current
    dispatch — before the first database write, which may wait on a busy database — so a
    worker that dies anywhere from here on is noticed within one lease TTL, not the longer
    dispatch lease. The worker host's call engine (``queueing.engine``) runs the same three
    phases — ``begin_call``, the call, ``Call.finish`` — with the call on an event loop.
    """
    call = begin_call(request_id=request_id, reservation=reservation, dispatch=dispatch)
    if call is None:
        return
    try:
        with request_context(request_id=request_id):
            try:
                with cpu_gate.waiting():
                    result = send_message(
                        params=call.body,
                        cache_rates=call.cache_rates,
                        before_attempt=call.before_attempt,
                        on_attempt=call.on_attempt,
                        on_response_headers=call.on_headers,
                        client_request_id=call.client_request_id,
                        stream=call.live is not None,
                        on_event=None if call.live is None else call.live.publish,
                    )
                    # Billed: journal it at once, before anything that may wait — a CPU slot, the
                    # database — so a worker killed from here on loses nothing (queueing.journal).
                    call.journal(result)
            except (ClaudeCallError, relay.StreamInterrupted) as error:
                call.finish_failed(error)
            else:
                call.finish(result)
    finally:
        leases.let_go(request_id)


def begin_call(*, request_id: int, reservation: Reservation | None, dispatch: int) -> Call | None:
    """Take one dispatched request up to the point where its call is sent: hold its lease, mark
    it running, answer it from the response cache if it may be. None when there is nothing to
    send (a stale dispatch, a cancelled request, a response-cache hit); otherwise the ``Call``,
    holding the lease, which whoever sends it gives up with ``leases.let_go`` after ``finish``."""
    request = LLMRequest.objects.filter(
        pk=request_id, status=Status.DISPATCHED, dispatch_count=dispatch
    ).first()
    limiter = get_limiter()
    if request is None:
        if reservation is not None:
            limiter.release(reservation=reservation)
        return None
    leases.hold(request_id)
    try:
        with request_context(request_id=request_id):
            call = _start(request=request, reservation=reservation, dispatch=dispatch)
    except BaseException:
        leases.let_go(request_id)
        raise
    if call is None:
        leases.let_go(request_id)
    return call


def _start(*, request: LLMRequest, reservation: Reservation | None, dispatch: int) -> Call | None:
    limiter = get_limiter()
    started_at = timezone.now()
    started = LLMRequest.objects.filter(
        pk=request.pk, status=Status.DISPATCHED, dispatch_count=dispatch
    ).update(status=Status.RUNNING, started_at=started_at)
    if not started:
        if reservation is not None:
            limiter.release(reservation=reservation)
        return None
    request.status, request.started_at = Status.RUNNING, started_at
    call = Call(request=request, dispatch=dispatch, reservation=reservation)
    if request.use_response_cache:
        hit = response_cache.lookup(params=call.body, scope=call.scope)
        if hit is not None:
            if reservation is not None:
                limiter.release(reservation=reservation)
            _finish_from_response_cache(request=request, dispatch=dispatch, result=hit)
            return None
    # A thread holds a server connection only while it uses the database: 256 calls in flight
    # must not mean 256 idle PostgreSQL connections (the default limit is 100). A SQLite
    # connection is a file handle: keeping it spares a reconnect (and schema load) per call.
    if db_connection.vendor != "sqlite" and not db_connection.in_atomic_block:
        db_connection.close()
    return call


class Call:
    """One running request between ``begin_call`` and its recorded outcome: the body to send,
    the limiter's hooks for the retry loop, and the ways it ends. Its hooks and its ``finish``
    methods block on Redis or the database; the call engine runs them in worker threads."""

    def __init__(
        self, *, request: LLMRequest, dispatch: int, reservation: Reservation | None
    ) -> None:
        self.request = request
        self.dispatch = dispatch
        self.reservation = reservation
        self.attempts: list[Attempt] = []
        self.live = relay.EventRelay(request.pk) if request.live_events else None
        self.body = request.message_params()
        self.scope = response_cache.scope_for(
            user_id=request.user_id,
            organization_id=request.organization_id,
            shared=request.response_cache_shared,
        )
        self.cache_rates = usage_services.cache_rates(
            model=request.model, on=(request.started_at or timezone.now()).date()
        )
        self.client_request_id = _client_request_id(request.pk, dispatch)
        self.model_class = catalog.model_class(request.model)

    def needs_reservation(self, number: int) -> bool:
        """Whether ``before_attempt(number)`` will wait on the limiter (every retry does)."""
        return not (number == 1 and self.reservation is not None)

    def before_attempt(self, number: int) -> None:
        if self.needs_reservation(number):
            self.give_back()
            self.reservation = reserve_blocking(request=self.request, deadline=None)

    def give_back(self) -> None:
        """Before a retry: the previous attempt was not billed, so its tokens go back to the
        limiter (the request it used stays counted)."""
        if self.reservation is not None:
            get_limiter().reconcile(reservation=self.reservation, input_tokens=0, output_tokens=0)
            self.reservation = None

    def try_reserve(self) -> float:
        """One try for a retry's reservation (the engine waits between tries on its loop):
        0 once reserved, else the seconds to wait before trying again."""
        self.reservation, wait = try_reserve(request=self.request)
        return 0.0 if self.reservation is not None else wait

    def on_attempt(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)
        if self.live is not None and self.live.started and attempt.error_type is not None:
            # Its caller may have part of the answer already: not retried (queueing.relay).
            raise relay.StreamInterrupted(attempt.error_type)

    def on_headers(self, status: int | None, headers: Mapping[str, str]) -> None:
        # Advisory, and it runs after a 200 was billed: a Redis hiccup here must not throw the
        # billed answer away (the request would run, and be billed, again).
        try:
            get_limiter().observe_headers(
                model_class=self.model_class, status=status, headers=headers
            )
        except redis.RedisError as error:
            log.warning("could not learn from response headers (%s); carrying on", error)

    def journal(self, result: MessageResult) -> None:
        journal.remember(request_id=self.request.pk, dispatch=self.dispatch, result=result)

    def finish(self, result: MessageResult) -> None:
        """Record the billed answer (journaled first: ``journal``)."""
        with request_context(request_id=self.request.pk):
            _finish_succeeded(
                request=self.request,
                dispatch=self.dispatch,
                result=result,
                reservation=self.reservation,
            )
            if self.request.use_response_cache:
                response_cache.store(params=self.body, scope=self.scope, result=result)

    def finish_failed(self, error: ClaudeCallError | relay.StreamInterrupted) -> None:
        """Record a call that ended without an answer: retries exhausted or not allowed, or a
        stream cut after its caller had received part of it."""
        if isinstance(error, ClaudeCallError):
            error_type, message = error.last_error_type or "error", str(error)
            attempts, last_status = tuple(error.attempt_log), error.last_status
            upstream_id = error.request_id
        else:
            last = self.attempts[-1]
            error_type = last.error_type or "error"
            message = (
                f"the stream was interrupted after it began ({last.error_type}); not retried, "
                "since the caller had already received part of it"
            )
            attempts, last_status, upstream_id = tuple(self.attempts), last.status, last.request_id
        with request_context(request_id=self.request.pk):
            if self.live is not None:
                self.live.fail(
                    error_type=(error_type if error_type != "error" else "api_error"),
                    message=message,
                )
            _finish_failed(
                request=self.request,
                dispatch=self.dispatch,
                error_type=error_type,
                message=message,
                attempts=attempts,
                last_status=last_status,
                request_id=upstream_id,
                reservation=self.reservation,
            )


def _queue_wait_ms(request: LLMRequest) -> float:
    if request.dispatched_at is None:
        return 0.0
    return max(0.0, (request.dispatched_at - request.created_at).total_seconds() * 1000)


def _write_with_retry(write: Any, what: str) -> Any:
    """Run a DB write, riding out a briefly locked database: a billed response must be recorded."""
    delay = 0.05
    deadline = time.monotonic() + conf.record_retry_seconds()
    while True:
        try:
            return write()
        except OperationalError as error:
            if time.monotonic() > deadline:
                raise
            log.warning("database busy while recording %s (%s); retrying", what, error)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _finish_succeeded(
    *, request: LLMRequest, dispatch: int, result: MessageResult, reservation: Reservation | None
) -> None:
    usage = result.usage

    def write() -> AuditLog:
        with transaction.atomic():
            row = usage_services.record_call(
                user=request.user_id,
                organization=request.organization_id,
                session_id=request.session_id,
                llm_request=request,
                model=request.model,
                priority=request.priority,
                outcome=AuditLog.Outcome.SUCCESS,
                attempts=result.attempt_count,
                final_status=200,
                error_type="",
                usage=usage,
                latency_ms=result.latency_ms,
                queue_wait_ms=_queue_wait_ms(request),
                request_id=result.request_id or "",
                client_request_id=_client_request_id(request.pk, dispatch),
            )
            LLMRequest.objects.filter(pk=request.pk).update(
                status=Status.SUCCEEDED,
                finished_at=timezone.now(),
                attempts=result.attempt_count,
                result=_result_json(result, row.cost_usd),
            )
            return row

    row = _write_with_retry(write, f"request {request.pk}")
    notifications.notify_done(request.pk)  # the answer is committed: waiters may go on
    try:
        _settle_succeeded(
            request=request, dispatch=dispatch, usage=usage, row=row, reservation=reservation
        )
    except redis.RedisError:
        # The answer and its audit row are safe; the limiter and quota catch up from the next
        # responses and from audit_log (quota counters are rebuilt from it when lost).
        log.exception("Redis unavailable while settling request %s", request.pk)


def _settle_succeeded(
    *,
    request: LLMRequest,
    dispatch: int,
    usage: Usage,
    row: AuditLog,
    reservation: Reservation | None,
) -> None:
    journal.forget(request_id=request.pk, dispatch=dispatch)
    charged = itpm_charge(usage, model=request.model)
    limiter = get_limiter()
    model_class = catalog.model_class(request.model)
    if reservation is not None:
        limiter.reconcile(
            reservation=reservation,
            input_tokens=charged,
            output_tokens=usage.output_tokens,
        )
    # Learn the API's count of the whole prompt ÷ our estimate (the tokenizer's difference);
    # what the cache serves is known per prefix (llm_calls.caching.WarmPrefixes), not learned.
    limiter.record_estimate(
        model_class=model_class,
        estimated=request.estimated_input_tokens,
        actual=usage.total_input_tokens,
    )
    eta.record_output_ratio(max_tokens=request.max_tokens, output_tokens=usage.output_tokens)
    quotas.settle(
        user_id=request.user_id,
        org_id=request.organization_id,
        key_id=request.api_token_id,
        request_id=request.pk,
        tokens=usage.total_input_tokens + usage.output_tokens,
        usd=row.cost_usd,
    )


def _result_json(result: MessageResult, cost_usd: Decimal) -> dict[str, Any]:
    usage = result.usage
    return {
        "text": result.text,
        "content": list(result.content),
        "stop_reason": result.stop_reason,
        "message_id": result.message_id,
        "request_id": result.request_id,
        "from_response_cache": result.from_response_cache,
        "usage": {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens,
            "cache_read_input_tokens": usage.cache_read_input_tokens,
            "service_tier": usage.service_tier,
        },
        "cost_usd": str(cost_usd),
        "message": dict(result.envelope),
    }


def _finish_from_response_cache(
    *, request: LLMRequest, dispatch: int, result: MessageResult
) -> None:
    """Answered from our response cache: no API call, zero tokens and cost, recorded as a hit."""

    def write() -> None:
        with transaction.atomic():
            usage_services.record_response_cache_hit(
                user=request.user_id,
                organization=request.organization_id,
                session_id=request.session_id,
                model=request.model,
                priority=request.priority,
                latency_ms=0,
                queue_wait_ms=_queue_wait_ms(request),
                client_request_id=_client_request_id(request.pk, dispatch),
                llm_request=request.pk,
            )
            LLMRequest.objects.filter(pk=request.pk).update(
                status=Status.SUCCEEDED,
                finished_at=timezone.now(),
                attempts=0,
                result=_result_json(result, Decimal(0)),
            )

    _write_with_retry(write, f"cached answer for request {request.pk}")
    quotas.settle(
        user_id=request.user_id,
        org_id=request.organization_id,
        key_id=request.api_token_id,
        request_id=request.pk,
        tokens=0,
        usd=Decimal(0),
    )
    notifications.notify_done(request.pk)


def _finish_failed(
    *,
    request: LLMRequest,
    dispatch: int,
    error_type: str,
    message: str,
    attempts: tuple[Attempt, ...],
    last_status: int | None,
    request_id: str | None,
    reservation: Reservation | None,
) -> None:
    def write() -> None:
        with transaction.atomic():
            usage_services.record_call(
                user=request.user_id,
                organization=request.organization_id,
                session_id=request.session_id,
                llm_request=request,
                model=request.model,
                priority=request.priority,
                outcome=AuditLog.Outcome.FAILED,
                attempts=len(attempts),
                final_status=last_status,
                error_type=error_type,
                usage=None,
                latency_ms=sum(a.duration_ms + a.wait_s * 1000 for a in attempts),
                queue_wait_ms=_queue_wait_ms(request),
                request_id=request_id or "",
                client_request_id=_client_request_id(request.pk, dispatch),
            )
            LLMRequest.objects.filter(pk=request.pk).exclude(status__in=LLMRequest.TERMINAL).update(
                status=Status.FAILED,
                finished_at=timezone.now(),
                attempts=len(attempts),
                error_type=error_type,
                error_message=message,
            )

    _write_with_retry(write, f"failed request {request.pk}")
    if reservation is not None:
        get_limiter().reconcile(reservation=reservation, input_tokens=0, output_tokens=0)
    quotas.release(
        user_id=request.user_id,
        org_id=request.organization_id,
        key_id=request.api_token_id,
        request_id=request.pk,
    )
    notifications.notify_done(request.pk)


# --- recovery ----------------------------------------------------------------------------------


def _dispatch_job_pending(*, request_id: int, dispatch: int, cutoff: dt.datetime) -> bool:
    """Whether the RQ job of this dispatch may still run: waiting in its queue, or taken by a
    thread after ``cutoff``.

    A thread takes the running lease milliseconds after it takes the job, so a job that left
    its queue (RQ moves it to an intermediate list, then marks it started) and whose row is
    still ``dispatched`` past ``cutoff`` lost its thread: the host died in between, or a Redis
    restart lost the reply of the move. Queueing the request again is safe even if that thread
    were only slow: its status-and-dispatch-number conditional updates stop it from calling.
    A request its host's dispatcher handed to its own call engine has no job at all
    (``queueing.engine.CallEngine.offer``): the engine starts it within milliseconds, so one
    still dispatched past ``cutoff`` lost its host, and the same conditional updates make a
    late start harmless.
    """
    client = get_redis()
    try:
        job = Job.fetch(
            dispatch_job_id(request_id=request_id, dispatch=dispatch), connection=client
        )
    except NoSuchJobError:
        return False
    status = job.get_status(refresh=False)
    if status == JobStatus.QUEUED:
        queue_key = Queue(job.origin, connection=client).key
        return job.id.encode() in client.lrange(queue_key, 0, -1)
    if status == JobStatus.STARTED:
        started = job.started_at
        if started is not None and started.tzinfo is None:
            started = started.replace(tzinfo=dt.UTC)
        return started is None or started >= cutoff
    return status not in (
        JobStatus.FINISHED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
        JobStatus.CANCELED,
    )


def _finish_from_journal(*, pk: int, status: str, dispatch: int) -> bool:
    """Finish a request whose worker died after the API billed its response, from the journal
    (no second API call). False when no response of this dispatch was journaled."""
    entry = journal.pending(request_id=pk)
    if entry is None or entry.dispatch != dispatch:
        return False
    request = LLMRequest.objects.get(pk=pk)
    if request.status != status or request.dispatch_count != dispatch:
        return False  # it moved on meanwhile: leave it to whoever moved it
    log.warning(
        "request %s (dispatch %s) recorded its billed response from the journal: its worker "
        "died before recording it",
        pk,
        dispatch,
    )
    _finish_succeeded(request=request, dispatch=dispatch, result=entry.result, reservation=None)
    return True


def recover_orphans(*, grace_s: float | None = None) -> int:
    """Put back in the queue every request a dead worker or a Redis restart left behind.

    - ``dispatched`` / ``running`` rows whose lease expired (their worker died mid-call), and
      ``dispatched`` rows whose RQ job is gone or over (the dispatcher died, or Redis failed,
      between marking the row and enqueueing its job) or was taken by a thread that died
      before it took the running lease. A request whose billed response is in
      the journal (``queueing.journal``) is finished from it instead: the API is not called
      and billed a second time;
    - ``queued`` rows the scheduler does not hold (Redis lost its state, or the process that
      submitted them died between the row and the enqueue).
    Nothing younger than ``grace_s`` (default ``GATEWAY_ORPHAN_GRACE_S``) is touched. Returns
    how many were re-queued or finished. Safe to run from every worker at once.
    """
    now = timezone.now()
    cutoff = now - dt.timedelta(seconds=conf.orphan_grace_s() if grace_s is None else grace_s)
    scheduler = get_scheduler()
    count = 0
    journal.adopt_orphaned_files()  # billed responses dead processes journaled while Redis was away
    stuck = LLMRequest.objects.filter(
        status__in=(Status.DISPATCHED, Status.RUNNING), use_batch=False, dispatched_at__lt=cutoff
    ).values_list("pk", "status", "dispatch_count")
    if leases.may_have_lost_leases():
        stuck = stuck.none()  # looked at again once live calls have renewed their leases
    for pk, status, dispatch in stuck:
        if leases.is_held(pk) and (
            status == Status.RUNNING
            or _dispatch_job_pending(request_id=pk, dispatch=dispatch, cutoff=cutoff)
        ):
            continue
        if _finish_from_journal(pk=pk, status=status, dispatch=dispatch):
            count += 1
            continue
        if LLMRequest.objects.filter(pk=pk, status=status).update(status=Status.QUEUED):
            log.warning("request %s was %s on a worker that is gone; queueing it again", pk, status)
            _schedule(LLMRequest.objects.get(pk=pk))
            count += 1
    queued = list(
        LLMRequest.objects.filter(
            status=Status.QUEUED, use_batch=False, created_at__lt=cutoff
        ).values_list("pk", flat=True)
    )
    held = scheduler.contains_many(request_ids=queued)  # one round trip, however long the queue
    missing = [pk for pk in queued if pk not in held]
    # Chunks keep the IN list under SQLite's bound-parameter limit after Redis lost everything.
    for request in (
        row
        for start in range(0, len(missing), 500)
        for row in LLMRequest.objects.filter(
            pk__in=missing[start : start + 500], status=Status.QUEUED
        ).only(
            "pk",
            "user_id",
            "priority",
            "estimated_input_tokens",
            "max_tokens",
            "organization_id",
            "api_token_id",
            "created_at",
            "reserved_tokens",
            "reserved_usd",
        )
    ):
        # Admission is idempotent per request: this only admits a row whose submitter never got
        # that far (Redis was down), and rejects it clearly if its quota is now spent.
        check = quotas.admit(
            user_id=request.user_id,
            org_id=request.organization_id,
            key_id=request.api_token_id,
            request_id=request.pk,
            tokens=request.reserved_tokens,
            usd=request.reserved_usd,
            priority=request.priority,
        )
        if not check.admitted:
            LLMRequest.objects.filter(pk=request.pk, status=Status.QUEUED).update(
                status=Status.REJECTED,
                error_type="quota_exceeded",
                error_message=check.message,
                finished_at=timezone.now(),
            )
            notifications.notify_done(request.pk)
        else:
            _schedule(request)
        count += 1
    _settle_stranded_reservations(cutoff=cutoff)
    return count


def _settle_stranded_reservations(*, cutoff: dt.datetime) -> int:
    """Settle the quota of requests that finished while Redis was unreachable.

    A call that ends during an outage is recorded in the database, but its quota reservation
    stays held in Redis (Redis keeps it when it comes back with its data), so the holder looks
    closer to its limit than it is until the period ends. The reservation key names the request:
    a finished request's reservation is settled with what ``audit_log`` billed, or given back.
    Settling is once per request, so a settlement that did happen is never counted twice.
    """
    client = get_redis()
    reserved = [int(key.rsplit(b":", 1)[1]) for key in client.scan_iter("gw:q:res:*", count=1000)]
    count = 0
    for start in range(0, len(reserved), 500):
        finished = LLMRequest.objects.filter(
            pk__in=reserved[start : start + 500],
            status__in=LLMRequest.TERMINAL,
            finished_at__lt=cutoff,
        ).values_list("pk", "user_id", "organization_id", "api_token_id", "status")
        for pk, user_id, org_id, key_id, status in finished:
            if status != Status.SUCCEEDED:
                quotas.release(user_id=user_id, org_id=org_id, key_id=key_id, request_id=pk)
                count += 1
                continue
            # One success row per request (recording is idempotent per dispatch); settled as
            # _settle_succeeded settles it: all input tokens plus output, at the row's cost.
            billed = AuditLog.objects.filter(
                llm_request_id=pk, outcome=AuditLog.Outcome.SUCCESS
            ).first()
            quotas.settle(
                user_id=user_id,
                org_id=org_id,
                key_id=key_id,
                request_id=pk,
                tokens=billed.total_input_tokens + billed.output_tokens if billed else 0,
                usd=billed.cost_usd if billed else Decimal(0),
            )
            log.warning("settled the quota of request %s, finished while Redis was away", pk)
            count += 1
    return count
