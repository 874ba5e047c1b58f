"""Leases: how the gateway knows a dispatched request still has a live worker.

A lease is a Redis key ``gw:lease:<request id>`` with a short TTL. The dispatcher takes it when it
hands a request to RQ; the process running the call holds it (``hold`` … ``let_go``), and one keeper thread
per worker process renews every lease the process holds. A worker that is SIGKILLed stops
renewing, its leases expire, and ``services.recover_orphans`` queues those requests again.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Sequence

from queueing import conf
from ratelimit_project.redis import get_redis

# TTLs come from settings (conf.lease_ttl_s, conf.dispatch_lease_ttl_s): 30 s and 120 s by default.

_held: set[int] = set()
_held_lock = threading.Lock()
_keeper: threading.Thread | None = None
OWNER = f"{socket.gethostname()}:{os.getpid()}"


def _key(request_id: int) -> str:
    return f"gw:lease:{request_id}"


def take_for_dispatch(request_id: int) -> None:
    take_for_dispatch_many([request_id])


def take_for_dispatch_many(request_ids: Sequence[int]) -> None:
    """``take_for_dispatch`` for many requests in one round trip."""
    pipe = get_redis().pipeline(transaction=False)
    ttl = conf.dispatch_lease_ttl_s()
    for request_id in request_ids:
        pipe.set(_key(request_id), OWNER, ex=ttl)
    pipe.execute()


def is_held(request_id: int) -> bool:
    return bool(get_redis().exists(_key(request_id)))


def may_have_lost_leases() -> bool:
    """Whether a missing lease may still belong to a live call: Redis (re)started less than a
    lease's lifetime ago, possibly empty, and the keepers of calls still running put their
    leases back only at their next renewal (``renew_every_s``). Until then a missing lease
    proves nothing, and re-queueing that call would have the API bill it twice."""
    uptime = int(get_redis().info("server")["uptime_in_seconds"])
    return uptime < conf.lease_ttl_s()


def hold(request_id: int) -> None:
    """Take the running lease; the process's keeper renews it until ``let_go`` (which any
    thread of the process may call: the call engine starts a call in one and ends it in
    another)."""
    global _keeper
    get_redis().set(_key(request_id), OWNER, ex=conf.lease_ttl_s())
    with _held_lock:
        _held.add(request_id)
        if _keeper is None or not _keeper.is_alive() or _keeper_pid != os.getpid():
            _start_keeper()


def let_go(request_id: int) -> None:
    with _held_lock:
        _held.discard(request_id)
    with contextlib.suppress(Exception):
        get_redis().delete(_key(request_id))


_keeper_pid = 0


def renew_every_s() -> float:
    """A third of the lease: two renewals may fail (Redis restarting) before it expires."""
    return min(5.0, conf.lease_ttl_s() / 3)


def _start_keeper() -> None:
    global _keeper, _keeper_pid
    _keeper_pid = os.getpid()
    _keeper = threading.Thread(target=_renew_forever, name="lease-keeper", daemon=True)
    _keeper.start()


def _renew_forever() -> None:
    stop = threading.Event()
    while not stop.wait(renew_every_s()):
        with _held_lock:
            ids = list(_held)
        if not ids:
            continue
        try:
            ttl = conf.lease_ttl_s()
            pipe = get_redis().pipeline(transaction=False)
            for request_id in ids:
                pipe.set(_key(request_id), OWNER, ex=ttl)
            pipe.execute()
        except Exception:  # Redis restarting: try again next round, the TTL leaves room
            continue
