"""The call engine: every Claude call of a worker host held by one event loop.

A call is seconds of waiting on the network. Held by a thread each, hundreds of calls mean
hundreds of threads (300 MB for 256 of them, and a database connection per busy thread). Here
one asyncio loop, in a thread of its own, holds every call in flight with the official SDK's
async client, and what blocks — row reads and writes, Redis scripts, the journal — runs in a
few intake and bookkeeping threads.

Where its work comes from: the host's own dispatcher hands it the requests it takes off the
scheduler, as many as the engine has ``room`` for (``offer``: no RQ job, whose protocol cost a
quarter of a host's CPU and a hand-over between processes per request); and RQ jobs that other
hosts' dispatchers enqueued reach it through the host's few RQ threads (``take``).

A request goes through the phases of ``services.execute_request``, split across threads:
``services.begin_call`` and the cache planner in an intake thread (lease, ``running``,
response cache), the call on the loop (retries and their waits are ``asyncio`` sleeps), then
one bookkeeping step for the outcome — journal, ``Call.finish``, lease — in a bookkeeping
thread. Each hop between the loop and a thread costs a wake-up, so a call makes as few as it
can: one, plus one per retry and one per event of a stream relayed live.

What a thread host guarantees holds here the same way: the running lease is held from
``begin_call`` until the outcome is recorded (the process's lease keeper renews it), a billed
answer is journaled before anything else may wait, and a host killed mid-call leaves leases
that expire for the reaper. ``drain`` is the warm shutdown: it waits for every call in flight
and every request handed over but not yet started.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import close_old_connections, connections

from llm_calls import client
from llm_calls.caching import CachePlan
from llm_calls.retry import ClaudeCallError
from llm_calls.services import SentMessage, asend_prepared, prepare_message
from queueing import leases, relay, services
from queueing.limiter import Reservation
from ratelimit_project.logs import request_context

log = logging.getLogger(__name__)

_R = TypeVar("_R")

_running: CallEngine | None = None


def running() -> CallEngine | None:
    """This process's started engine, if any: RQ jobs hand their call to it (``queueing.jobs``)."""
    return _running


@dataclass(frozen=True)
class Handoff:
    """A request its host's own dispatcher marked dispatched for this engine (no RQ job)."""

    request_id: int
    reservation: Reservation | None
    dispatch: int


class CallEngine:
    def __init__(self, *, capacity: int, bookkeeping_threads: int, intake_threads: int) -> None:
        if min(capacity, bookkeeping_threads, intake_threads) < 1:
            raise ValueError(
                "capacity, bookkeeping_threads and intake_threads must be at least 1, got "
                f"{capacity!r}, {bookkeeping_threads!r} and {intake_threads!r}"
            )
        self.capacity = capacity
        self._slots = threading.BoundedSemaphore(capacity)
        self._in_flight = 0
        self._pending = 0  # handed over by this host's dispatcher, not yet started
        self._idle = threading.Condition()
        self._handoffs: queue.SimpleQueue[Handoff | None] = queue.SimpleQueue()
        self._intake = [
            threading.Thread(target=self._take_handoffs, name=f"intake-{n}", daemon=True)
            for n in range(intake_threads)
        ]
        self._bookkeepers = 0  # threads the pool has started (it starts them as work comes)
        self._bookkeeping = concurrent.futures.ThreadPoolExecutor(
            max_workers=bookkeeping_threads,
            thread_name_prefix="bookkeeping",
            initializer=self._bookkeeper_started,
        )
        self._loop = asyncio.new_event_loop()
        self._loop.set_default_executor(self._bookkeeping)
        self._thread = threading.Thread(target=self._loop.run_forever, name="call-engine")

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        global _running
        self._thread.start()
        for thread in self._intake:
            thread.start()
        _running = self

    def stop(self) -> None:
        """End the loop (after ``drain``: calls still in flight are abandoned to the reaper)."""
        global _running
        if _running is self:
            _running = None
        for _thread in self._intake:
            self._handoffs.put(None)
        for thread in self._intake:
            thread.join(timeout=5)
        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(client.aclose_clients(), self._loop)
            try:
                future.result(timeout=5)
            except Exception:  # closing idle connections is best effort
                log.debug("could not close the engine's HTTP clients", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._close_bookkeepers_connections()
        self._bookkeeping.shutdown(wait=False, cancel_futures=True)

    def _bookkeeper_started(self) -> None:
        with self._idle:
            self._bookkeepers += 1

    def _close_bookkeepers_connections(self) -> None:
        """Each bookkeeping thread closes its own database connections (Django's are per
        thread; an idle pool thread would otherwise keep a PostgreSQL session open after the
        engine stopped). A barrier makes each of them take exactly one closing task."""
        with self._idle:
            threads = self._bookkeepers
        if not threads:
            return
        barrier = threading.Barrier(threads)

        def close() -> None:
            barrier.wait(timeout=5)
            connections.close_all()

        futures = [self._bookkeeping.submit(close) for _ in range(threads)]
        concurrent.futures.wait(futures, timeout=10)

    @property
    def in_flight(self) -> int:
        with self._idle:
            return self._in_flight

    def room(self) -> int:
        """How many more requests this engine can start at once (its dispatcher's step size)."""
        with self._idle:
            return self.capacity - self._in_flight - self._pending

    def drain(self, *, timeout_s: float) -> bool:
        """Wait until no call is in flight or waiting to start; False if some still are after
        ``timeout_s``."""
        with self._idle:
            return self._idle.wait_for(
                lambda: self._in_flight == 0 and self._pending == 0, timeout=timeout_s
            )

    # -- intake from this host's dispatcher --------------------------------------------------
    def offer(self, handoffs: Sequence[Handoff]) -> None:
        """Start these dispatched requests (the dispatcher took them within ``room``). They
        have no RQ job: a request still ``dispatched`` past the reaper's grace lost its host
        and is queued again (``services.recover_orphans``)."""
        with self._idle:
            self._pending += len(handoffs)
        for handoff in handoffs:
            self._handoffs.put(handoff)

    def _take_handoffs(self) -> None:
        while (handoff := self._handoffs.get()) is not None:
            try:
                self.take(
                    request_id=handoff.request_id,
                    reservation=handoff.reservation,
                    dispatch=handoff.dispatch,
                )
            except Exception:
                # The row stays dispatched; the reaper queues it again after its grace.
                log.exception("request %s: could not start its call", handoff.request_id)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()
                close_old_connections()
        connections.close_all()  # this thread's own, as it ends

    # -- intake ------------------------------------------------------------------------------
    def take(self, *, request_id: int, reservation: Reservation | None, dispatch: int) -> None:
        """Start one dispatched request and hand its call to the loop; returns once handed
        over. Waits first while ``capacity`` calls are in flight. The start — the row, the
        lease, the cache planner — runs here, in an intake thread (this engine's own, or an RQ
        thread whose job named the request), so the loop only sends."""
        self._slots.acquire()
        try:
            call = services.begin_call(
                request_id=request_id, reservation=reservation, dispatch=dispatch
            )
            if call is None:  # nothing to send: stale, cancelled, or answered from the cache
                self._slots.release()
                return
            try:
                plan = prepare_message(params=call.body, cache_rates=call.cache_rates)
            except ClaudeCallError as error:  # a body the API would refuse: nothing is sent
                _settle(call, error, [])
                self._slots.release()
                return
        except BaseException:
            self._slots.release()
            raise
        with self._idle:
            self._in_flight += 1
        asyncio.run_coroutine_threadsafe(self._run(call, plan), self._loop)

    # -- on the loop -------------------------------------------------------------------------
    async def _run(self, call: services.Call, plan: CachePlan) -> None:
        request_id = call.request.pk
        # Response headers the loop saw, learned from in the next bookkeeping step (before a
        # retry's reservation, or with the outcome): no thread hop of their own.
        seen: list[tuple[int | None, Mapping[str, str]]] = []
        live = call.live
        try:
            with request_context(request_id=request_id):
                outcome: SentMessage | ClaudeCallError | relay.StreamInterrupted
                try:
                    outcome = await asend_prepared(
                        plan=plan,
                        stream=live is not None,
                        before_attempt=lambda number: self._reserve(call, number, seen),
                        on_attempt=call.on_attempt,
                        on_response_headers=lambda status, headers: seen.append((status, headers)),
                        client_request_id=call.client_request_id,
                        on_event=None
                        if live is None
                        else lambda name, data: self._blocking(live.publish, name, data),
                    )
                except (ClaudeCallError, relay.StreamInterrupted) as error:
                    outcome = error
                # One bookkeeping step records it all: journal, answer, limiter, quota, lease.
                await self._blocking(_settle, call, outcome, seen)
        except Exception:
            # Not recorded (e.g. the database stayed unreachable past its retries): the request
            # stays ``running`` without a lease, and the reaper finishes it from the journal or
            # queues it again, as for a thread whose job raised.
            log.exception("request %s: the call engine could not finish it", request_id)
        finally:
            self._slots.release()
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    async def _reserve(
        self, call: services.Call, number: int, seen: list[tuple[int | None, Mapping[str, str]]]
    ) -> None:
        """``Call.before_attempt`` with the limiter's waits slept on the loop, not in a thread
        (a storm of retries must not occupy every bookkeeping thread)."""
        if not call.needs_reservation(number):
            return
        wait = await self._blocking(_retry_reservation, call, seen)
        while wait > 0:
            await asyncio.sleep(wait)
            wait = await self._blocking(call.try_reserve)

    async def _blocking(self, function: Callable[..., _R], *args: Any) -> _R:
        """Run blocking bookkeeping in a bookkeeping thread (the task's log context goes along)."""
        return await asyncio.to_thread(_closing_after, function, *args)


def _learn(call: services.Call, seen: list[tuple[int | None, Mapping[str, str]]]) -> None:
    for status, headers in seen:
        call.on_headers(status, headers)
    seen.clear()


def _retry_reservation(
    call: services.Call, seen: list[tuple[int | None, Mapping[str, str]]]
) -> float:
    """Before a retry: learn from the failed attempt's headers, give its tokens back, try the
    limiter once; the seconds to wait before trying again (0: reserved)."""
    _learn(call, seen)
    call.give_back()
    return call.try_reserve()


def _settle(
    call: services.Call,
    outcome: SentMessage | ClaudeCallError | relay.StreamInterrupted,
    seen: list[tuple[int | None, Mapping[str, str]]],
) -> None:
    """Record how the call ended and let its lease go (a bookkeeping thread)."""
    try:
        if isinstance(outcome, SentMessage):
            result = outcome.result()
            # Billed: journaled before anything else may wait (queueing.journal).
            call.journal(result)
            _learn(call, seen)
            call.finish(result)
        else:
            _learn(call, seen)
            call.finish_failed(outcome)
    finally:
        leases.let_go(call.request.pk)


def _closing_after(function: Callable[..., _R], *args: Any) -> _R:
    """A bookkeeping step, then the thread's broken or expired database connections closed,
    as RQ jobs do around theirs."""
    try:
        return function(*args)
    finally:
        close_old_connections()
