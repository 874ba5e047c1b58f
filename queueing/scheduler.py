"""The fair scheduler: which queued request is dispatched next, held in Redis.

Three levels decide the order:

1. **Priority classes** (``GATEWAY_PRIORITY_CLASSES``, highest first, each with a minimum
   share). The highest non-empty class goes first — unless a non-empty class has fallen below
   its minimum share of dispatched tokens while competing, in which case it goes first. This is
   a deficit counter per class: every dispatch of ``cost`` tokens credits each non-empty class
   ``cost × min_share`` and debits the class served ``cost``; a class whose balance is positive
   is owed service. Two rules keep the window "recent": a class's debt never exceeds its last
   dispatch (being served while nobody else competed is not held against it later), and a
   class that empties loses its credit (no banking while idle). Over any stretch where a class
   stays backlogged it therefore receives at least its ``min_share`` of dispatched tokens.
2. **Users within a class**: start-time fair queueing by tokens. Each user has a virtual start
   tag; the user with the smallest tag goes next and their tag advances by ``cost / weight``.
   A user whose queue was empty starts at the class's current virtual time (the tag of the
   request last served), so idle time earns no credit. A user with 10k-token requests and one
   with 1k-token requests get the same token throughput; weight 2 gets twice as much.
3. **Requests of one user**: FIFO by ``enqueued_at``.

``cost`` is what the caller passes: estimated input tokens + ``max_tokens``.

What is atomic: each method is ONE Lua script (``queueing/lua/scheduler_*.lua``); ``pop`` checks
that the request is still the head and dispatches it in the same step, so of two dispatchers
racing for the same head exactly one wins. ``peek``, ``position``, ``depth`` and ``heads`` are
read-only.

Redis holds only the order; ``LLMRequest`` rows are the truth. After Redis loses its state the
caller re-enqueues the queued rows with their original ``enqueued_at`` (enqueue is idempotent
per request id), which restores FIFO order within each user. Renaming or removing a class in
settings strands requests queued in it until they are re-enqueued.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from queueing import conf
from queueing.lua import LuaScript
from ratelimit_project.redis import get_redis

_LIB = ["scheduler_lib"]
_ENQUEUE = LuaScript("scheduler_enqueue", prelude=_LIB)
_PEEK = LuaScript("scheduler_peek", prelude=_LIB)
_POP = LuaScript("scheduler_pop", prelude=_LIB)
_REMOVE = LuaScript("scheduler_remove", prelude=_LIB)
_POSITION = LuaScript("scheduler_position", prelude=_LIB)
_DEPTH = LuaScript("scheduler_depth", prelude=_LIB)
_HEADS = LuaScript("scheduler_heads", prelude=_LIB)


@dataclass(frozen=True)
class QueuedItem:
    request_id: int
    user_key: str
    priority: str
    cost: int
    enqueued_at: float


@dataclass(frozen=True)
class Position:
    """Where a queued request stands. ``position`` is 1-based (1 = dispatched next).

    ``user_*`` counts are exact (the user's own FIFO); ``class_*`` counts are exact within the
    class if nothing else arrives; ``requests_ahead`` / ``tokens_ahead`` add an estimate of what
    other classes will dispatch first (higher classes, bounded by this class's minimum share,
    and lower classes' minimum shares). Tokens are costs (estimated input + max_tokens).
    """

    position: int
    requests_ahead: int
    tokens_ahead: int
    user_requests_ahead: int
    user_tokens_ahead: int
    class_requests_ahead: int
    class_tokens_ahead: int
    class_requests: int
    class_tokens: int
    priority: str
    cost: int
    # Per competitor passed to ``position``: tokens of NEW requests it could still get
    # dispatched ahead of this one (start-time fair queueing lets a user whose queue ends
    # below this request's start tag go first). 0 when its queue already reaches past it.
    competitor_room: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ClassHeads:
    """The front of one priority class (``FairScheduler.heads``).

    ``requests``: its next requests in the order the class dispatches them if nothing else
    arrives (index 0 goes first). ``user_next``: for each user key asked about that has
    requests in this class, the id of its first one.
    """

    requests: list[QueuedItem]
    user_next: dict[str, int]


def user_key_for(*, user_id: int) -> str:
    """The key a user's requests are queued under (one shared key in ``fifo`` mode)."""
    return "fifo" if conf.scheduler_mode() == "fifo" else f"u{user_id}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _member(request_id: int) -> str:
    return f"{request_id:020d}"


def _request_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"request_id must be a non-negative integer, got {value!r}")
    return value


class FairScheduler:
    """Priority classes → weighted fair queueing across users by tokens → FIFO per user."""

    def __init__(self, *, client: redis.Redis | None = None) -> None:
        self._client = client

    @property
    def redis(self) -> redis.Redis:
        return self._client if self._client is not None else get_redis()

    def _class_args(self) -> list[Any]:
        classes = conf.priority_classes()
        return [
            len(classes),
            *(name for name, _ in classes),
            *(repr(share) for _, share in classes),
        ]

    def enqueue(
        self,
        *,
        request_id: int,
        user_key: str,
        priority: str,
        cost: int,
        weight: float = 1.0,
        enqueued_at: float | None = None,
        now: float | None = None,
    ) -> bool:
        """Queue a request; True if added, False if it was already queued (idempotent).

        ``enqueued_at`` (epoch seconds) orders the user's FIFO: pass the row's creation time
        when rebuilding after Redis lost its state. Default: ``now``, else the Redis clock.
        """
        _request_id(request_id)
        names = conf.priority_class_names()
        if priority not in names:
            raise ValueError(
                f"Unknown priority class {priority!r}; configured classes: {', '.join(names)}."
            )
        if not isinstance(user_key, str) or not user_key or ":" in user_key:
            raise ValueError(f"user_key must be a non-empty string without ':', got {user_key!r}")
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise ValueError(f"cost must be a positive whole number of tokens, got {cost!r}")
        if not (isinstance(weight, int | float) and math.isfinite(weight) and weight > 0):
            raise ValueError(f"weight must be a positive number, got {weight!r}")
        at = enqueued_at if enqueued_at is not None else now
        added = _ENQUEUE(
            self.redis,
            keys=[],
            args=[
                *self._class_args(),
                str(request_id),
                _member(request_id),
                user_key,
                priority,
                cost,
                repr(float(weight)),
                "" if at is None else repr(float(at)),
            ],
        )
        return int(added) == 1

    def peek(self, *, now: float | None = None) -> QueuedItem | None:
        """The request ``pop`` would take next, without taking it."""
        raw = _PEEK(self.redis, keys=[], args=self._class_args())
        if not raw:
            return None
        request_id, user_key, priority, cost, enqueued_at = (_text(v) for v in raw)
        return QueuedItem(
            request_id=int(request_id),
            user_key=user_key,
            priority=priority,
            cost=int(float(cost)),
            enqueued_at=float(enqueued_at),
        )

    def pop(self, *, request_id: int, now: float | None = None) -> bool:
        """Dispatch ``request_id`` if it is still the head; False (nothing changes) otherwise."""
        taken = _POP(
            self.redis,
            keys=[],
            args=[
                *self._class_args(),
                str(_request_id(request_id)),
                conf.scheduler_idle_user_ttl_s(),
            ],
        )
        return int(taken) == 1

    def remove(self, *, request_id: int) -> bool:
        """Cancel a queued request wherever it stands; False if it was not queued."""
        removed = _REMOVE(
            self.redis,
            keys=[],
            args=[
                *self._class_args(),
                str(_request_id(request_id)),
                conf.scheduler_idle_user_ttl_s(),
            ],
        )
        return int(removed) == 1

    def contains(self, *, request_id: int) -> bool:
        return request_id in self.contains_many(request_ids=[request_id])

    def contains_many(self, *, request_ids: Sequence[int]) -> set[int]:
        """Which of ``request_ids`` the scheduler holds, in one round trip."""
        ids = [_request_id(r) for r in request_ids]
        pipe = self.redis.pipeline(transaction=False)
        for request_id in ids:
            pipe.exists(f"gw:sch:req:{request_id}")
        return {r for r, present in zip(ids, pipe.execute(), strict=True) if present}

    def position(
        self, *, request_id: int, competitors: Mapping[str, float] | None = None
    ) -> Position | None:
        """Where a queued request stands (see ``Position``); None if it is not queued.

        ``competitors`` (user key → weight, same class) asks for each one's
        ``competitor_room``: what it could still get ahead of this request by submitting more.
        """
        pairs = list((competitors or {}).items())
        raw = _POSITION(
            self.redis,
            keys=[],
            args=[
                *self._class_args(),
                str(_request_id(request_id)),
                len(pairs),
                *(part for key, weight in pairs for part in (key, repr(float(weight)))),
            ],
        )
        if not raw:
            return None
        priority = _text(raw[0])
        cost, user_n, user_tok, class_n, class_tok = (int(v) for v in raw[1:6])
        classes = conf.priority_classes()
        depth = {
            name: (int(raw[6 + 2 * i]), int(raw[7 + 2 * i])) for i, (name, _) in enumerate(classes)
        }
        rooms = raw[6 + 2 * len(classes) :]
        competitor_room = {
            key: max(0.0, float(_text(room))) for (key, _), room in zip(pairs, rooms, strict=True)
        }
        shares = dict(classes)
        index = [name for name, _ in classes].index(priority)
        share = shares[priority]

        # Tokens this class dispatches up to and including the request; meanwhile higher
        # classes take the rest, but no more than this class's minimum share leaves them.
        own = class_tok + cost
        higher_n = sum(depth[name][0] for name, _ in classes[:index])
        higher_tok = sum(depth[name][1] for name, _ in classes[:index])
        higher_taken = higher_tok if share <= 0 else min(higher_tok, own * (1 - share) / share)
        requests = _prorate(higher_n, higher_tok, higher_taken)
        tokens = higher_taken
        # Lower classes that compete get about their minimum share of everything dispatched.
        lower = classes[index + 1 :]
        lower_share = sum(s for _, s in lower)
        for name, lower_min in lower:
            n, tok = depth[name]
            if n and lower_min > 0 and lower_share < 1:
                taken = min(tok, (own + higher_taken) * lower_min / (1 - lower_share))
                requests += _prorate(n, tok, taken)
                tokens += taken
        requests_ahead = class_n + requests
        return Position(
            position=requests_ahead + 1,
            requests_ahead=requests_ahead,
            tokens_ahead=class_tok + round(tokens),
            user_requests_ahead=user_n,
            user_tokens_ahead=user_tok,
            class_requests_ahead=class_n,
            class_tokens_ahead=class_tok,
            class_requests=depth[priority][0],
            class_tokens=depth[priority][1],
            priority=priority,
            cost=cost,
            competitor_room=competitor_room,
        )

    def heads(self, *, limit: int, user_keys: Sequence[str] = ()) -> dict[str, ClassHeads]:
        """The next ``limit`` requests of every class, and where each of ``user_keys`` starts.

        One read-only script that replays the class's fair queueing for ``limit`` steps, so it
        costs O(limit) per class (plus users tied on one start tag), not O(queue): cheap enough
        for a page that polls. The order is within each class; which class goes first is
        ``peek`` / ``position``'s business.
        """
        keys = list(user_keys)
        raw = _HEADS(self.redis, keys=[], args=[*self._class_args(), int(limit), len(keys), *keys])
        result: dict[str, ClassHeads] = {}
        for name, (flat, firsts) in zip(conf.priority_class_names(), raw, strict=True):
            values = [_text(v) for v in flat]
            requests = [
                QueuedItem(
                    request_id=int(values[i]),
                    user_key=values[i + 1],
                    priority=name,
                    cost=int(float(values[i + 2])),
                    enqueued_at=float(values[i + 3]),
                )
                for i in range(0, len(values), 4)
            ]
            user_next = {
                key: int(_text(first))
                for key, first in zip(keys, firsts, strict=True)
                if _text(first)
            }
            result[name] = ClassHeads(requests=requests, user_next=user_next)
        return result

    def depth(self) -> dict[str, Any]:
        """Queued requests and tokens: ``{"requests", "tokens", "classes": {name: {"requests",
        "tokens", "users": {user_key: {"requests", "tokens"}}}}, "users": {user_key: {...}}}``
        (top-level ``users`` sums each user over classes)."""
        raw = _DEPTH(self.redis, keys=[], args=self._class_args())
        classes: dict[str, Any] = {}
        users: dict[str, dict[str, int]] = {}
        for (name, _), (n, tok, flat) in zip(conf.priority_classes(), raw, strict=True):
            class_users: dict[str, dict[str, int]] = {}
            for i in range(0, len(flat), 3):
                key, user_n, user_tok = _text(flat[i]), int(flat[i + 1]), int(flat[i + 2])
                class_users[key] = {"requests": user_n, "tokens": user_tok}
                total = users.setdefault(key, {"requests": 0, "tokens": 0})
                total["requests"] += user_n
                total["tokens"] += user_tok
            classes[name] = {"requests": int(n), "tokens": int(tok), "users": class_users}
        return {
            "requests": sum(c["requests"] for c in classes.values()),
            "tokens": sum(c["tokens"] for c in classes.values()),
            "classes": classes,
            "users": users,
        }


def _prorate(n: int, tokens: int, taken: float) -> int:
    """Requests among ``n`` queued ones that ``taken`` of their ``tokens`` amount to."""
    if n <= 0 or tokens <= 0:
        return 0
    return min(n, math.ceil(n * taken / tokens - 1e-9))


_scheduler: FairScheduler | None = None


def get_scheduler() -> FairScheduler:
    """The process-wide scheduler (it reads settings and the Redis client on every call)."""
    global _scheduler
    if _scheduler is None:
        _scheduler = FairScheduler()
    return _scheduler
