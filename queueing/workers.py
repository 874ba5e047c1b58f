"""One worker host: many Claude calls in flight in one process.

An LLM call is seconds of waiting on the network, so a process per call (RQ's forking
``Worker``) wastes memory. A host holds up to ``threads`` calls at once, in one of two ways:

- ``loop`` (the default): one event loop holds every call (``queueing.engine``); a few RQ
  ``SimpleWorker`` loops run as threads, each taking a job from the ``llm`` queue, starting its
  request and handing the call to the loop;
- ``threads``: ``threads`` RQ ``SimpleWorker`` loops as threads, each running its job's call
  inline (the engine before the loop; kept to compare against, ``--engine threads``);

plus, either way:

- a dispatcher thread (``queueing.dispatcher``) releasing work when the limiter admits it,
- a reaper thread re-queueing requests whose worker died (``services.recover_orphans``),
- a batcher thread running the Message Batches route (``queueing.batching``),
- a supervisor loop restarting any worker thread that quit (e.g. after a Redis restart).

Redis outages: an RQ thread cannot live without Redis (it registers, heartbeats and records
every job there), so a thread that loses it ends, and the supervisor starts a new one once Redis
answers again — trying with a growing wait while it is out, and never dying of a Redis error.
Calls in flight carry on meanwhile (recording a call needs the database, not Redis). The host
logs one warning when it finds Redis gone and one line when it is back, not one per thread.

SIGTERM / SIGINT: stop taking jobs, let every in-flight call finish, then exit (warm shutdown,
waiting up to ``DRAIN_TIMEOUT_S`` for the loop's calls).
A second signal exits at once; requests still running then are recovered by another host's
reaper once their leases expire. Start it with ``python manage.py llm_worker --threads 256``.
"""

from __future__ import annotations

import contextlib
import ctypes
import heapq
import itertools
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import redis
from django.db import close_old_connections, connections
from redis.client import Pipeline
from rq.exceptions import StopRequested
from rq.job import Job
from rq.queue import Queue
from rq.timeouts import BaseDeathPenalty, JobTimeoutException
from rq.worker import SimpleWorker

from queueing import alert_delivery, batching, conf, cpu_gate, services
from queueing.dispatcher import LLM_QUEUE, run_dispatcher
from queueing.engine import CallEngine
from queueing.scheduler import get_scheduler
from ratelimit_project.redis import MAX_POOL_CONNECTIONS, get_redis, new_client

log = logging.getLogger(__name__)

REAP_EVERY_S = 5.0
BATCH_CYCLE_EVERY_S = 1.0
STARTUP_WAIT_S = 30.0
# While Redis is out the supervisor tries to start the missing threads after 1 s, 2 s, 4 s, then
# every 4 s: a new thread is working at most a few seconds after Redis is back.
RESPAWN_FIRST_WAIT_S = 1.0
RESPAWN_MAX_WAIT_S = 4.0
PROBE_TIMEOUT_S = 2.0
# Each host announces itself (capacity, engine, calls in flight) under this key, renewed every
# second of its supervisor loop; a dead host's entry expires.
HOST_KEY_PREFIX = "gw:worker-host:"
HOST_KEY_TTL_S = 15
# Warm shutdown waits this long for the calls the engine holds (a call's retries end sooner).
DRAIN_TIMEOUT_S = 300.0

# Redis could not be reached (refused, reset, timed out; a server still loading its data after a
# restart answers LOADING, a ConnectionError too) — unlike an error Redis replied with.
LOST_REDIS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)

# What RQ logs, in every thread and at every attempt, when its connection fails. The host says
# once that Redis is gone instead (``_Outage``); these stay visible at DEBUG.
_RQ_OUTAGE_LINES = frozenset(
    {
        "Worker %s: could not connect to Redis instance: %s retrying in %d seconds...",
        "Worker %s: found an unhandled exception, quitting...",
        "Worker %s: Redis connection timeout, quitting...",
    }
)


def live_hosts() -> list[dict[str, Any]]:
    """The worker hosts whose announcement has not expired: name, capacity, engine, in flight."""
    client = get_redis()
    keys = sorted(client.scan_iter(f"{HOST_KEY_PREFIX}*", count=1000))
    entries = client.mget(keys) if keys else []
    return [
        {"host": key.decode()[len(HOST_KEY_PREFIX) :], **json.loads(raw)}
        for key, raw in zip(keys, entries, strict=True)
        if raw is not None
    ]


class RedisLost(StopRequested):
    """An RQ thread lost Redis. A StopRequested, so RQ's loop ends the thread quietly instead of
    retrying on its own (for up to 60 s between attempts, deaf to the host's stop request); the
    supervisor starts a new thread once Redis answers."""


class _OutageQuietLog(logging.LoggerAdapter[logging.Logger]):
    """RQ's worker logger, with its per-thread lost-connection lines turned down to DEBUG."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if msg in _RQ_OUTAGE_LINES and isinstance(sys.exc_info()[1], LOST_REDIS):
            level = logging.DEBUG
        # Records name RQ's line as their source, not this method.
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
        super().log(level, msg, *args, **kwargs)


class _Outage:
    """Whether this host finds Redis unreachable, logged once when an outage begins and once
    when it ends. Every RQ thread, the reaper and the batcher notice an outage on their own;
    hundreds of threads each logging it would bury the one line an operator needs."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None

    @property
    def ongoing(self) -> bool:
        return self._since is not None

    def began(self, error: BaseException) -> None:
        with self._lock:
            if self._since is not None:
                return
            self._since = time.monotonic()
        log.warning(
            "Redis unreachable (%s): calls in flight carry on; worker threads that lose it are "
            "restarted once it answers",
            error,
        )

    def ended(self, *, restarted: int, threads: int) -> None:
        with self._lock:
            if self._since is None:
                return
            lasted, self._since = time.monotonic() - self._since, None
        log.warning(
            "Redis answers again after %.1f s: outage over; restarted %s of %s worker threads",
            lasted,
            restarted,
            threads,
        )


class _Watchdog:
    """Job timeouts for every worker thread of the process, kept by ONE thread.

    RQ's ``TimerDeathPenalty`` starts a ``threading.Timer`` — a new OS thread — for every job;
    at hundreds of jobs a second that thread churn alone costs a good part of a core. Here a
    deadline is a heap entry; the watchdog raises ``JobTimeoutException`` in an overdue job's
    thread the way RQ's timer does (``PyThreadState_SetAsyncExc``).
    """

    def __init__(self) -> None:
        self._deadlines: list[tuple[float, int, int, type[BaseException]]] = []
        self._live: set[int] = set()
        self._tokens = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, *, seconds: float, exception: type[BaseException]) -> int:
        token = next(self._tokens)
        with self._wake:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="job-watchdog", daemon=True)
                self._thread.start()
            target = threading.get_ident()
            entry = (time.monotonic() + seconds, token, target, exception)
            heapq.heappush(self._deadlines, entry)
            self._live.add(token)
            if self._deadlines[0] is entry:  # it sleeps until the earliest deadline: wake it
                self._wake.notify()
        return token

    def disarm(self, token: int) -> None:
        with self._wake:
            self._live.discard(token)

    def _run(self) -> None:
        with self._wake:
            while True:
                while self._deadlines and self._deadlines[0][1] not in self._live:
                    heapq.heappop(self._deadlines)  # finished in time
                if not self._deadlines:
                    self._wake.wait()
                    continue
                deadline, token, target, exception = self._deadlines[0]
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    self._wake.wait(remaining)
                    continue
                heapq.heappop(self._deadlines)
                self._live.discard(token)
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(target), ctypes.py_object(exception)
                )


_watchdog = _Watchdog()


class WatchdogDeathPenalty(BaseDeathPenalty):
    """RQ's job timeout, enforced by the process's one ``_Watchdog`` thread."""

    def __init__(
        self, timeout: float, exception: type[BaseException] = JobTimeoutException, **kwargs: Any
    ) -> None:
        super().__init__(timeout, exception, **kwargs)
        self._token: int | None = None

    def setup_death_penalty(self) -> None:
        if self._timeout > 0:
            self._token = _watchdog.arm(seconds=self._timeout, exception=self._exception)

    def cancel_death_penalty(self) -> None:
        if self._token is not None:
            _watchdog.disarm(self._token)
            self._token = None


class ThreadWorker(SimpleWorker):
    """An RQ SimpleWorker that can live in a non-main thread: the host owns signals, and job
    timeouts are kept by one watchdog thread instead of SIGALRM. It skips RQ's per-worker
    pub/sub thread (one per host is plenty; commands reach the host through its signals)."""

    death_penalty_class = WatchdogDeathPenalty

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ready = threading.Event()  # registered in Redis and about to take jobs
        # RQ types it a Logger; it only ever calls the logging methods an adapter has too.
        self.log = _OutageQuietLog(self.log)  # type: ignore[assignment]

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        # RQ's dequeue loop catches a lost connection and retries in place, sleeping up to 60 s
        # between attempts without looking at _stop_requested: a warm shutdown during an outage
        # would wait for Redis. Its next heartbeat fails too; that ends the thread instead.
        try:
            super().heartbeat(timeout, pipeline)
        except LOST_REDIS as error:
            raise RedisLost(str(error)) from error

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        super().bootstrap(*args, **kwargs)
        self.ready.set()

    def execute_job(self, job: Job, queue: Queue) -> None:
        # RQ's bookkeeping and our own code run inside a CPU slot; the call itself gives the
        # slot up (services.execute_request), so slots never limit calls in flight.
        with cpu_gate.working():
            super().execute_job(job, queue)

    def _install_signal_handlers(self) -> None:
        pass

    def subscribe(self) -> None:
        pass

    def unsubscribe(self) -> None:
        pass

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        if timeout is None:  # burst mode: one look, None when the queue is empty
            return super().dequeue_job_and_maintain_ttl(None, max_idle_time=max_idle_time)
        # RQ's loop only ends on a signal, which a thread never gets: wait in short rounds and
        # return None (ending ``work``) once the host asked this thread to stop.
        poll = max(1, self.worker_ttl - 15)
        while not self._stop_requested:
            result = super().dequeue_job_and_maintain_ttl(poll, max_idle_time=poll)
            if result is not None:
                return result
        return None


def _closing_connections(loop: Callable[[], None]) -> None:
    """Run a helper thread's loop; close the thread's database connections when it ends."""
    try:
        loop()
    finally:
        connections.close_all()


class WorkerHost:
    def __init__(
        self,
        *,
        threads: int,
        dispatch: bool = True,
        reap: bool = True,
        burst: bool = False,
        idle_poll_s: int = 5,
        cpu_slots: int | None = None,
        engine: str | None = None,
    ) -> None:
        # None: the setting (GATEWAY_WORKER_ENGINE).
        self.engine_kind = conf.worker_engine() if engine is None else engine
        if self.engine_kind not in conf.WORKER_ENGINES:
            raise ValueError(f"engine must be one of {conf.WORKER_ENGINES}, got {engine!r}")
        self.capacity = threads  # calls in flight at most
        self.engine: CallEngine | None = None
        if self.engine_kind == "loop":
            self.engine = CallEngine(
                capacity=threads,
                bookkeeping_threads=conf.worker_bookkeeping_threads(),
                intake_threads=conf.worker_intake_threads(),
            )
            # RQ threads only feed the engine: a few suffice, and fewer threads contend less.
            threads = min(threads, conf.worker_intake_threads())
            cpu_slots = 0
        self.threads = threads  # RQ threads
        # None: the setting (GATEWAY_WORKER_CPU_SLOTS); 0: no gate.
        self.cpu_slots = conf.worker_cpu_slots() if cpu_slots is None else cpu_slots
        # RQ blocks an idle thread for worker_ttl - 15 s; shutdown waits that long for it at most.
        self.worker_ttl = idle_poll_s + 15
        # RQ's threads block in BLPOP for up to idle_poll_s: they get a pool of their own whose
        # socket timeout is above that from the first connection (redis-py's default of 5 s would
        # race the BLPOP and send threads into RQ's reconnect back-off).
        get_redis()  # starts the embedded server first when REDIS_URL is unset
        self.rq_connection = new_client(
            socket_timeout=idle_poll_s + 10,
            health_check_interval=30,
            # One connection per thread at least: redis-py 8 caps a pool at 100 by default.
            max_connections=MAX_POOL_CONNECTIONS,
        )
        # The supervisor's look at Redis before it starts threads: one attempt with short
        # timeouts, so a round costs it little while Redis is out (even unreachable rather than
        # refusing) and it stays quick to notice a stop request.
        self._probe = new_client(
            socket_timeout=PROBE_TIMEOUT_S, socket_connect_timeout=PROBE_TIMEOUT_S
        )
        self.dispatch = dispatch
        self.reap = reap
        self.burst = burst
        self.stop = threading.Event()
        self.workers: dict[int, tuple[threading.Thread, ThreadWorker]] = {}
        self.prefix = f"{socket.gethostname()}.{os.getpid()}"
        self._signals = 0
        self._outage = _Outage()
        self._respawn_at = 0.0  # monotonic time of the next attempt while Redis is out
        self._respawn_wait = RESPAWN_FIRST_WAIT_S
        self._helpers: list[threading.Thread] = []

    # -- threads --------------------------------------------------------------------------
    def _new_worker(self, slot: int) -> tuple[threading.Thread, ThreadWorker]:
        worker = ThreadWorker(
            [LLM_QUEUE],
            connection=self.rq_connection,
            name=f"{self.prefix}.{slot}.{int(time.time())}",
            worker_ttl=self.worker_ttl,
        )
        thread = threading.Thread(target=self._work, args=(worker,), name=f"rq-{slot}", daemon=True)
        thread.start()
        return thread, worker

    def _work(self, worker: ThreadWorker) -> None:
        try:
            worker.work(burst=self.burst, logging_level="WARNING")
        except LOST_REDIS as error:
            # RQ could not register the thread, or unregister it after it lost Redis: Redis is
            # out right now. The supervisor starts a new thread once it answers.
            self._outage.began(error)
        except Exception:
            log.exception("worker thread %s stopped", worker.name)
        finally:
            connections.close_all()  # this thread's own: a thread that ends leaves none open

    def _start_threads(self, slots: list[int]) -> None:
        """Start an RQ thread for each of ``slots`` (ones that never started, or whose thread
        ended). Starting one talks to Redis; while Redis is out this leaves the slots for a later
        round, after a wait that doubles up to RESPAWN_MAX_WAIT_S, and returns."""
        if not slots and not self._outage.ongoing:
            return
        now = time.monotonic()
        if now < self._respawn_at:
            return
        started = 0
        try:
            # One cheap look first: while Redis is out, a round is one failed PING, not one
            # failed registration per thread.
            self._probe.ping()
            for slot in slots:
                self.workers[slot] = self._new_worker(slot)
                started += 1
        except redis.RedisError as error:
            self._outage.began(error)
            self._respawn_at = now + self._respawn_wait
            self._respawn_wait = min(2 * self._respawn_wait, RESPAWN_MAX_WAIT_S)
            return
        self._respawn_wait = RESPAWN_FIRST_WAIT_S
        self._outage.ended(restarted=started, threads=self.threads)

    def _reap_forever(self) -> None:
        while not self.stop.wait(REAP_EVERY_S):
            try:
                if get_redis().set("gw:reaper", self.prefix, nx=True, ex=int(REAP_EVERY_S)):
                    recovered = services.recover_orphans()
                    if recovered:
                        log.warning("re-queued %s orphaned requests", recovered)
                    # Quota alerts to the people concerned: here, never on a call's path.
                    alert_delivery.deliver_pending()
            except LOST_REDIS as error:
                self._outage.began(error)  # logged once per outage, not every round
            except Exception:
                log.exception("reaper round failed")
            finally:
                close_old_connections()

    def _batch_forever(self) -> None:
        """The Message Batches route: collect bulk rows into batches, poll, deliver results."""
        while not self.stop.wait(BATCH_CYCLE_EVERY_S):
            try:
                batching.run_batch_cycle()
            except LOST_REDIS as error:
                self._outage.began(error)  # logged once per outage, not every second
            except Exception:
                log.exception("batch cycle failed")
            finally:
                close_old_connections()

    # -- signals --------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning(
                "second signal: exiting now; in-flight requests will be recovered by the reaper"
            )
            os._exit(1)
        log.warning("signal %s: finishing in-flight calls, taking no new work", signum)
        self.stop.set()

    # -- main loop ------------------------------------------------------------------------
    def run(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        if self.cpu_slots:
            cpu_gate.enable(slots=self.cpu_slots)
        if self.engine is not None:
            self.engine.start()
        self._start_threads(list(range(self.threads)))  # Redis out: the supervisor does it later
        # Release work only once the threads that take it are up: otherwise the first seconds
        # of a busy host go to registering hundreds of threads while jobs wait for them.
        deadline = time.monotonic() + STARTUP_WAIT_S
        for _thread, worker in self.workers.values():
            if self.stop.is_set():
                break
            worker.ready.wait(max(0.0, deadline - time.monotonic()))
        loops: list[tuple[str, Callable[[], None]]] = []
        if self.dispatch:
            loops.append(("dispatcher", lambda: run_dispatcher(self.stop, engine=self.engine)))
        if self.reap:
            loops += [("reaper", self._reap_forever), ("batcher", self._batch_forever)]
        helpers = [
            threading.Thread(target=_closing_connections, args=(loop,), name=name, daemon=True)
            for name, loop in loops
        ]
        for helper in helpers:
            helper.start()
        self._helpers = helpers
        log.warning(
            "worker host %s: up to %s calls in flight (%s engine, %s RQ threads) on queue %r",
            self.prefix,
            self.capacity,
            self.engine_kind,
            self.threads,
            LLM_QUEUE,
        )
        self._announce()
        while not self.stop.wait(1.0):
            self._announce()
            ended = [slot for slot, (thread, _w) in self.workers.items() if not thread.is_alive()]
            if self.burst:
                for slot in ended:
                    del self.workers[slot]
                if not self.workers and self._dispatched_everything():
                    self.stop.set()
                continue
            self._start_threads(
                [slot for slot in range(self.threads) if slot in ended or slot not in self.workers]
            )
        self._shutdown()

    def _dispatched_everything(self) -> bool:
        """Burst mode's end: the RQ queue is empty (its threads ended), and with the engine fed
        by this host's dispatcher, the scheduler holds nothing and no call is in flight."""
        if self.engine is None or not self.dispatch:
            return True
        return get_scheduler().peek() is None and self.engine.room() == self.engine.capacity

    def _announce(self) -> None:
        """What this host offers, for operators and for benchmarks waiting on a host's start."""
        in_flight = self.engine.in_flight if self.engine is not None else None
        entry = {"capacity": self.capacity, "engine": self.engine_kind, "in_flight": in_flight}
        try:
            get_redis().set(HOST_KEY_PREFIX + self.prefix, json.dumps(entry), ex=HOST_KEY_TTL_S)
        except LOST_REDIS as error:
            self._outage.began(error)

    def _shutdown(self) -> None:
        with contextlib.suppress(redis.RedisError):
            get_redis().delete(HOST_KEY_PREFIX + self.prefix)
        for _thread, worker in self.workers.values():
            worker._stop_requested = True
        for thread, worker in self.workers.values():
            # Idle threads leave after their dequeue timeout; busy ones after their call. With
            # Redis out, idle ones leave within a second or so (ThreadWorker.heartbeat).
            thread.join(timeout=max(worker.dequeue_timeout + 5, 30))
        if self.engine is not None:
            # The dispatcher may be ending a step that hands the engine more work: let it end
            # first, so that the drain below waits for that work too.
            for helper in self._helpers:
                if helper.name == "dispatcher":
                    helper.join(timeout=30)
            if not self.engine.drain(timeout_s=DRAIN_TIMEOUT_S):
                log.warning(
                    "%s calls still in flight after %.0f s; leaving them to the reaper",
                    self.engine.in_flight,
                    DRAIN_TIMEOUT_S,
                )
            self.engine.stop()
        with contextlib.suppress(Exception):
            close_old_connections()
        self._probe.close()
        log.warning("worker host %s stopped", self.prefix)
