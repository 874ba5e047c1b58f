"""Wake-ups through Redis, so waiting code reacts in milliseconds without polling the database."""

from __future__ import annotations

import contextlib
import time

import redis

from ratelimit_project.redis import get_redis

WAKE_KEY = "gw:wake"
DONE_TTL_S = 600


def wake_dispatchers() -> None:
    with contextlib.suppress(redis.RedisError):
        pipe = get_redis().pipeline(transaction=False)
        pipe.lpush(WAKE_KEY, 1)
        pipe.ltrim(WAKE_KEY, 0, 63)
        pipe.execute()


def wait_for_work(timeout_s: float) -> None:
    try:
        get_redis().blpop([WAKE_KEY], timeout=max(timeout_s, 0.01))
    except redis.RedisError:
        time.sleep(timeout_s)


def notify_done(request_id: int) -> None:
    with contextlib.suppress(redis.RedisError):
        get_redis().set(f"gw:done:{request_id}", 1, ex=DONE_TTL_S)


def wait_done(request_id: int, *, timeout_s: float) -> None:
    """Return once the request's done marker is set, or after ``timeout_s``; callers re-check the DB.

    The marker is a plain key rather than a list item so that any number of waiters see it.
    """
    key = f"gw:done:{request_id}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            if get_redis().exists(key):
                return
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
