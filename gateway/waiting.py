"""Waiting for queued requests and reading their live events, without a thread each.

A process serving the endpoint may hold thousands of connections whose requests are queued or
streaming. Each waits on asyncio futures and queues, fed by two threads per process:

- ``DoneWatcher`` subscribes to ``notifications.DONE_CHANNEL`` (workers publish every finished
  request id there) and resolves the futures of the ids it hears. Pub/sub is fire-and-forget —
  a message published while the subscription reconnects is lost — so a waiter also re-reads
  its row every ``RECHECK_S``: a lost message costs that much latency, never a request.
- ``RelayReader`` reads the Redis Streams that workers append a streamed call's events to
  (``queueing.relay``): one blocking ``XREAD`` over every stream this process serves, woken by
  an entry on its own wake stream when a new one joins.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import redis

from queueing.notifications import DONE_CHANNEL
from queueing.relay import decode, relay_key
from ratelimit_project.redis import get_redis

log = logging.getLogger(__name__)

RECHECK_S = 2.0
_RECONNECT_S = 0.5
# Below the Redis client's socket timeout (5 s in redis-py 8): a blocking read that outlives
# it is cut off as a timeout, logged as an outage and followed by a reconnect pause.
_READ_BLOCK_MS = 1_000
_READ_COUNT = 1_000


class DoneWatcher:
    """Futures keyed by request id, resolved from the done channel by one listener thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[int, set[asyncio.Future[None]]] = defaultdict(set)
        self._thread: threading.Thread | None = None
        self.subscribed = threading.Event()

    def watch(self, request_id: int) -> asyncio.Future[None]:
        """A future resolved when ``request_id`` is announced done. Register BEFORE reading the
        row, so an announcement between the read and the wait is not missed."""
        self._ensure_listening()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiters[request_id].add(future)
        return future

    def forget(self, request_id: int, future: asyncio.Future[None]) -> None:
        with self._lock:
            waiting = self._waiters.get(request_id)
            if waiting is not None:
                waiting.discard(future)
                if not waiting:
                    del self._waiters[request_id]

    def _ensure_listening(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._listen, name="gateway-done-watcher", daemon=True
                )
                self._thread.start()

    def _listen(self) -> None:
        outage = False
        while True:
            try:
                pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(DONE_CHANNEL)
                self.subscribed.set()
                outage = False
                while True:
                    # A bounded wait, not listen(): the client's socket timeout would end an
                    # idle listen() with a TimeoutError, and each reconnect can lose a message.
                    message = pubsub.get_message(timeout=_READ_BLOCK_MS / 1000)
                    if message is not None:
                        self._announce(message.get("data"))
            except redis.RedisError as exc:
                self.subscribed.clear()
                if sys.is_finalizing():
                    return  # the process is exiting: nobody waits any more
                # Once per outage; waiters meanwhile re-read their rows every RECHECK_S.
                if not outage:
                    log.warning("done channel unavailable (%s); waiters re-read their rows", exc)
                outage = True
                time.sleep(_RECONNECT_S)

    def _announce(self, data: object) -> None:
        try:
            request_id = int(data)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return
        with self._lock:
            futures = self._waiters.pop(request_id, set())
        for future in futures:
            future.get_loop().call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


Event = tuple[str, dict[str, Any]]


@dataclass
class _Subscription:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Event]
    last_id: bytes | str = "0-0"  # from the start: events relayed before we joined count too


class RelayReader:
    """Relayed events of the requests this process serves, put on one asyncio queue each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: dict[bytes, _Subscription] = {}
        self._wake_key = f"gw:relay:wake:{uuid.uuid4().hex}"
        self._thread: threading.Thread | None = None

    def subscribe(self, request_id: int) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        with self._lock:
            self._subscriptions[relay_key(request_id).encode()] = _Subscription(
                asyncio.get_running_loop(), queue
            )
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._read, name="gateway-relay-reader", daemon=True
                )
                self._thread.start()
        self._wake()
        return queue

    def unsubscribe(self, request_id: int) -> None:
        with self._lock:
            self._subscriptions.pop(relay_key(request_id).encode(), None)

    def _wake(self) -> None:
        try:
            pipe = get_redis().pipeline(transaction=False)
            pipe.xadd(self._wake_key, {"w": 1}, maxlen=16, approximate=False)
            pipe.expire(self._wake_key, 3600)
            pipe.execute()
        except redis.RedisError as exc:
            # The reader still picks the new stream up when its current read times out.
            log.warning("could not wake the relay reader (%s)", exc)

    def _read(self) -> None:
        wake_key = self._wake_key.encode()
        wake_last: bytes | str = "0-0"
        outage = False
        while True:
            with self._lock:
                streams: dict[Any, Any] = {wake_key: wake_last}
                streams.update({key: sub.last_id for key, sub in self._subscriptions.items()})
            try:
                # [(stream key, [(entry id, {field: value}), ...]), ...]
                replies: list[Any] = get_redis().xread(  # type: ignore[assignment]
                    streams, count=_READ_COUNT, block=_READ_BLOCK_MS
                )
            except redis.RedisError as exc:
                if sys.is_finalizing():
                    return
                if not outage:
                    log.warning("relay streams unavailable (%s); retrying", exc)
                outage = True
                time.sleep(_RECONNECT_S)
                continue
            outage = False
            for key, entries in replies or []:
                if key == wake_key:
                    wake_last = entries[-1][0]
                    continue
                with self._lock:
                    sub = self._subscriptions.get(key)
                if sub is None:
                    continue
                for entry_id, fields in entries:
                    sub.last_id = entry_id
                    sub.loop.call_soon_threadsafe(sub.queue.put_nowait, decode(fields))


watcher = DoneWatcher()
relays = RelayReader()
