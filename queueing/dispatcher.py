"""The dispatcher: moves requests from the fair scheduler to RQ when the rate limiter admits them.

Order of one step: for each head in turn, peek the scheduler → reserve its estimate in the
limiter → pop it only if it is still the head (another dispatcher may have won); then, for all
the heads taken, mark the rows dispatched (one transaction) → take their leases → enqueue one
``jobs.run_request`` each (one pipeline). Each of the Redis steps is atomic on its own; a head
that loses a race undoes the earlier ones (its reservation is released), so any number of
dispatchers can run, one per worker process. A host that dies between the transaction and the
enqueue leaves ``dispatched`` rows without a job, which the reaper queues again.

Backpressure: it stops releasing work while the RQ queue already holds ``dispatch_backlog``
jobs, so priority and fairness are decided here, at the last moment, not by RQ's FIFO. In a
worker host with the event-loop engine the dispatcher hands what it takes straight to that
engine (``queueing.engine``), never more than it has room to start: each host pulls as much
work as it can hold, and no RQ job stands between the scheduler and the call.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass

import django_rq
import redis
from django.db import close_old_connections
from rq import Queue

from llm_calls import caching, catalog
from queueing import conf, eta, leases, notifications, services
from queueing.engine import CallEngine, Handoff
from queueing.limiter import Reservation, get_limiter, input_reservation
from queueing.models import LLMRequest
from queueing.scheduler import get_scheduler
from ratelimit_project.redis import get_redis

log = logging.getLogger(__name__)

LLM_QUEUE = "llm"
# Heads one step hands to the host's own engine at most: its calls start while the next step
# reads the next heads, rather than all after one long step.
LOCAL_STEP_MAX = 64


def llm_queue() -> Queue:
    return django_rq.get_queue(LLM_QUEUE, connection=get_redis())


@dataclass(frozen=True)
class Step:
    dispatched: tuple[int, ...]  # request ids handed to RQ in this step, in dispatch order
    idle_for_s: float  # how long the caller may sleep before trying again


@dataclass(frozen=True)
class _Admitted:
    request_id: int
    reservation: Reservation
    priority: str
    model_wait_s: float | None  # the queue model's figure at submit (before calibration)
    enqueued_at: float  # epoch seconds (the scheduler's)


def _admit_heads(*, limit: int) -> tuple[list[_Admitted], float]:
    """Take up to ``limit`` heads off the scheduler, in its order, each admitted by the limiter.

    Stops at the first head the limiter refuses (it stays the head: order is never bent to fit
    a smaller request in). Returns what was taken and, when it stopped early, how long to wait.
    """
    scheduler = get_scheduler()
    limiter = get_limiter()
    factors: dict[str, float] = {}
    warm = caching.WarmPrefixes()  # one lookup per prefix per step: most share a system prompt
    admitted: list[_Admitted] = []
    taken: set[int] = set()
    while len(admitted) < limit:
        item = scheduler.peek()
        if item is None:
            return admitted, 0.5
        if item.request_id in taken:
            # Scheduled again while this step held it: the reaper saw a queued row the
            # scheduler no longer had (popped here, not yet marked dispatched). Once is enough.
            scheduler.pop(request_id=item.request_id)
            continue
        row = (
            LLMRequest.objects.filter(pk=item.request_id)
            .values_list(
                "model",
                "estimated_input_tokens",
                "max_tokens",
                "status",
                "cache_prefixes",
                "priority",
                "model_wait_s",
            )
            .first()
        )
        if row is None or row[3] != LLMRequest.Status.QUEUED:
            scheduler.pop(request_id=item.request_id)  # cancelled or finished elsewhere: drop it
            continue
        model, estimated, max_tokens, _status, prefixes, priority, model_wait = row
        model_class = catalog.model_class(model)
        if model_class not in factors:
            factors[model_class] = limiter.estimate_factor(model_class)
        admission = limiter.try_reserve(
            model_class=model_class,
            input_tokens=input_reservation(
                model=model,
                estimated_input_tokens=estimated,
                prefixes=caching.prefixes_from_json(prefixes),
                warm=warm,
                factor=factors[model_class],
            ),
            output_tokens=max_tokens,
        )
        if not admission.admitted or admission.reservation is None:
            return admitted, max(0.005, min(admission.wait_s, 0.5))
        if not scheduler.pop(request_id=item.request_id):
            limiter.release(reservation=admission.reservation)  # another dispatcher won it
            continue
        taken.add(item.request_id)
        admitted.append(
            _Admitted(
                item.request_id, admission.reservation, priority, model_wait, item.enqueued_at
            )
        )
    return admitted, 0.0


def dispatch_once(*, engine: CallEngine | None = None) -> Step:
    """One step: release as many heads as there is room for and the limiter admits.

    With ``engine`` (the host's own call engine) the room is what the engine can start and the
    heads are handed to it; otherwise they become RQ jobs, as many as the RQ backlog has room
    for. Per request it costs three Redis scripts (peek, reserve, pop) and one row read;
    marking the rows dispatched, taking their leases and handing them over are one transaction
    and one or two round trips for the whole step.
    """
    queue = llm_queue()
    if engine is not None:
        room = min(engine.room(), LOCAL_STEP_MAX)
    else:
        room = conf.dispatch_backlog() - queue.count
    if room <= 0:
        return Step((), 0.02)
    admitted, idle_for_s = _admit_heads(limit=room)
    if not admitted:
        return Step((), idle_for_s)
    dispatches = services.mark_dispatched_many(request_ids=[a.request_id for a in admitted])
    limiter = get_limiter()
    for lost in (a for a in admitted if a.request_id not in dispatches):
        limiter.release(reservation=lost.reservation)  # cancelled in between
    taken = [a for a in admitted if a.request_id in dispatches]
    if not taken:
        return Step((), 0.0)
    leases.take_for_dispatch_many([a.request_id for a in taken])
    now = time.time()
    # How far the queue model's waits landed: the ETA's correction and range are learned from it.
    eta.record_dispatch_waits(
        waits=[
            eta.DispatchWait(
                priority=a.priority, model_s=a.model_wait_s, actual_s=now - a.enqueued_at
            )
            for a in taken
        ]
    )
    if engine is not None:
        engine.offer(
            [Handoff(a.request_id, a.reservation, dispatches[a.request_id]) for a in taken]
        )
        return Step(tuple(a.request_id for a in taken), idle_for_s)
    queue.enqueue_many(
        [
            Queue.prepare_data(
                "queueing.jobs.run_request",
                args=(
                    a.request_id,
                    dataclasses.asdict(a.reservation),
                    dispatches[a.request_id],
                ),
                job_id=services.dispatch_job_id(
                    request_id=a.request_id, dispatch=dispatches[a.request_id]
                ),
                result_ttl=600,
                failure_ttl=86400,
            )
            for a in taken
        ]
    )
    return Step(tuple(a.request_id for a in taken), idle_for_s)


def run_dispatcher(stop: threading.Event, *, engine: CallEngine | None = None) -> None:
    """Dispatch until ``stop`` is set (to ``engine`` when given); survives Redis and database
    hiccups."""
    while not stop.is_set():
        try:
            step = dispatch_once(engine=engine)
        except (redis.ConnectionError, redis.TimeoutError):
            # Redis is out: the worker host logs the outage once (queueing.workers), not a
            # traceback every half second.
            log.debug("dispatch step: Redis unreachable; retrying", exc_info=True)
            close_old_connections()
            stop.wait(1.0)
            continue
        except Exception:
            log.exception("dispatch step failed; retrying shortly")
            close_old_connections()
            stop.wait(0.5)
            continue
        if step.idle_for_s > 0:
            notifications.wait_for_work(step.idle_for_s)
