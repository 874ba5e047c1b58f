"""The dispatcher: moves requests from the fair scheduler to RQ when the rate limiter admits them.

Order of one step: peek the scheduler's head → reserve its estimate in the limiter → pop it
only if it is still the head (another dispatcher may have won) → mark the row dispatched → take
its lease → enqueue ``jobs.run_request``. Each of the Redis steps is atomic on its own; a step that
loses a race undoes the earlier ones (the reservation is released), so any number of
dispatchers can run, one per worker process.

Backpressure: it stops releasing work while the RQ queue already holds ``dispatch_backlog``
jobs, so priority and fairness are decided here, at the last moment, not by RQ's FIFO.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from dataclasses import dataclass

import django_rq
from django.db import close_old_connections
from rq import Queue

from llm_calls import catalog
from queueing import conf, leases, notifications, services
from queueing.limiter import get_limiter
from queueing.models import LLMRequest
from queueing.scheduler import get_scheduler
from ratelimit_project.redis import get_redis

log = logging.getLogger(__name__)

LLM_QUEUE = "llm"


def llm_queue() -> Queue:
    return django_rq.get_queue(LLM_QUEUE, connection=get_redis())


@dataclass(frozen=True)
class Step:
    dispatched: int | None  # request id handed to RQ, if any
    idle_for_s: float  # how long the caller may sleep before trying again


def dispatch_once() -> Step:
    queue = llm_queue()
    if queue.count >= conf.dispatch_backlog():
        return Step(None, 0.02)
    scheduler = get_scheduler()
    item = scheduler.peek()
    if item is None:
        return Step(None, 0.5)
    row = (
        LLMRequest.objects.filter(pk=item.request_id)
        .values("model", "estimated_input_tokens", "max_tokens", "status")
        .first()
    )
    if row is None or row["status"] != LLMRequest.Status.QUEUED:
        scheduler.pop(request_id=item.request_id)  # cancelled or finished elsewhere: drop it
        return Step(None, 0.0)
    limiter = get_limiter()
    model_class = catalog.model_class(row["model"])
    estimate = math.ceil(row["estimated_input_tokens"] * limiter.estimate_factor(model_class))
    admission = limiter.try_reserve(
        model_class=model_class, input_tokens=estimate, output_tokens=row["max_tokens"]
    )
    if not admission.admitted or admission.reservation is None:
        return Step(None, max(0.005, min(admission.wait_s, 0.5)))
    reservation = admission.reservation
    if not scheduler.pop(request_id=item.request_id):
        limiter.release(reservation=reservation)
        return Step(None, 0.0)
    dispatch = services.mark_dispatched(request_id=item.request_id)
    if dispatch is None:
        limiter.release(reservation=reservation)
        return Step(None, 0.0)
    leases.take_for_dispatch(item.request_id)
    queue.enqueue(
        "queueing.jobs.run_request",
        item.request_id,
        dataclasses.asdict(reservation),
        dispatch,
        job_id=services.dispatch_job_id(request_id=item.request_id, dispatch=dispatch),
        result_ttl=600,
        failure_ttl=86400,
    )
    return Step(item.request_id, 0.0)


def run_dispatcher(stop: threading.Event) -> None:
    """Dispatch until ``stop`` is set; survives Redis and database hiccups."""
    while not stop.is_set():
        try:
            step = dispatch_once()
        except Exception:
            log.exception("dispatch step failed; retrying shortly")
            close_old_connections()
            stop.wait(0.5)
            continue
        if step.idle_for_s > 0:
            notifications.wait_for_work(step.idle_for_s)
