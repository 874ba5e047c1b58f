"""One worker host: many Claude calls in flight in one process.

An LLM call is seconds of waiting on the network, so a process per call (RQ's forking
``Worker``) wastes memory. A host runs ``threads`` RQ ``SimpleWorker`` loops as threads in one
process — each picks a job from the ``llm`` queue and runs it inline — plus:

- a dispatcher thread (``queueing.dispatcher``) releasing work when the limiter admits it,
- a reaper thread re-queueing requests whose worker died (``services.recover_orphans``),
- a batcher thread running the Message Batches route (``queueing.batching``),
- a supervisor loop restarting any worker thread that quit (e.g. after a Redis restart).

SIGTERM / SIGINT: stop taking jobs, let every in-flight call finish, then exit (warm shutdown).
A second signal exits at once; requests still running then are recovered by another host's
reaper once their leases expire. Start it with ``python manage.py llm_worker --threads 256``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from types import FrameType

import redis
from django.db import close_old_connections
from rq.job import Job
from rq.queue import Queue
from rq.timeouts import TimerDeathPenalty
from rq.worker import SimpleWorker

from queueing import batching, services
from queueing.dispatcher import LLM_QUEUE, run_dispatcher
from ratelimit_project.redis import MAX_POOL_CONNECTIONS, get_redis, redis_url

log = logging.getLogger(__name__)

REAP_EVERY_S = 5.0
BATCH_CYCLE_EVERY_S = 1.0


class ThreadWorker(SimpleWorker):
    """An RQ SimpleWorker that can live in a non-main thread: the host owns signals, and timeouts
    use a timer instead of SIGALRM. It skips RQ's per-worker pub/sub thread (one per host is
    plenty; commands reach the host through its signals)."""

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        pass

    def subscribe(self) -> None:
        pass

    def unsubscribe(self) -> None:
        pass

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        # RQ's loop only ends on a signal, which a thread never gets: wait in short rounds and
        # return None (ending ``work``) once the host asked this thread to stop.
        poll = max(1, self.worker_ttl - 15)
        while not self._stop_requested:
            result = super().dequeue_job_and_maintain_ttl(poll, max_idle_time=poll)
            if result is not None:
                return result
        return None


class WorkerHost:
    def __init__(
        self,
        *,
        threads: int,
        dispatch: bool = True,
        reap: bool = True,
        burst: bool = False,
        idle_poll_s: int = 5,
    ) -> None:
        self.threads = threads
        # RQ blocks an idle thread for worker_ttl - 15 s; shutdown waits that long for it at most.
        self.worker_ttl = idle_poll_s + 15
        # RQ's threads block in BLPOP for up to idle_poll_s: they get a pool of their own whose
        # socket timeout is above that from the first connection (redis-py's default of 5 s would
        # race the BLPOP and send threads into RQ's reconnect back-off).
        get_redis()  # starts the embedded server first when REDIS_URL is unset
        self.rq_connection = redis.Redis.from_url(
            redis_url(),
            socket_timeout=idle_poll_s + 10,
            health_check_interval=30,
            # One connection per thread at least: redis-py 8 caps a pool at 100 by default.
            max_connections=MAX_POOL_CONNECTIONS,
        )
        self.dispatch = dispatch
        self.reap = reap
        self.burst = burst
        self.stop = threading.Event()
        self.workers: dict[int, tuple[threading.Thread, ThreadWorker]] = {}
        self.prefix = f"{socket.gethostname()}.{os.getpid()}"
        self._signals = 0

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
        except Exception:
            log.exception("worker thread %s stopped", worker.name)
        finally:
            close_old_connections()

    def _reap_forever(self) -> None:
        while not self.stop.wait(REAP_EVERY_S):
            try:
                if get_redis().set("gw:reaper", self.prefix, nx=True, ex=int(REAP_EVERY_S)):
                    recovered = services.recover_orphans()
                    if recovered:
                        log.warning("re-queued %s orphaned requests", recovered)
            except Exception:
                log.exception("reaper round failed")
            finally:
                close_old_connections()

    def _batch_forever(self) -> None:
        """The Message Batches route: collect bulk rows into batches, poll, deliver results."""
        while not self.stop.wait(BATCH_CYCLE_EVERY_S):
            try:
                batching.run_batch_cycle()
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
        helpers: list[threading.Thread] = []
        if self.dispatch:
            helpers.append(
                threading.Thread(
                    target=run_dispatcher, args=(self.stop,), name="dispatcher", daemon=True
                )
            )
        if self.reap:
            helpers.append(threading.Thread(target=self._reap_forever, name="reaper", daemon=True))
            helpers.append(
                threading.Thread(target=self._batch_forever, name="batcher", daemon=True)
            )
        for helper in helpers:
            helper.start()
        for slot in range(self.threads):
            self.workers[slot] = self._new_worker(slot)
        log.warning("worker host %s: %s threads on queue %r", self.prefix, self.threads, LLM_QUEUE)
        while not self.stop.wait(1.0):
            for slot, (thread, _worker) in list(self.workers.items()):
                if not thread.is_alive():
                    if self.burst:
                        del self.workers[slot]
                        continue
                    self.workers[slot] = self._new_worker(slot)
            if self.burst and not self.workers:
                self.stop.set()
        self._shutdown()

    def _shutdown(self) -> None:
        for _thread, worker in self.workers.values():
            worker._stop_requested = True
        for thread, worker in self.workers.values():
            # Idle threads leave after their dequeue timeout; busy ones after their call.
            thread.join(timeout=max(worker.dequeue_timeout + 5, 30))
        with contextlib.suppress(Exception):
            close_old_connections()
        log.warning("worker host %s stopped", self.prefix)
