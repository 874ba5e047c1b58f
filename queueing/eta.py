"""Queue position and estimated wait, for users; queue depth and limiter state, for staff.

The estimate is a fluid model of the rate limiter and the fair scheduler. A request is
dispatched when, for every one of the three buckets, the refill since now covers

    (what is dispatched before it) + its own amount + the admission headroom - the level now

"What is dispatched before it" has two parts:

- the requests queued ahead of it now (``FairScheduler.position``: its own FIFO, the other
  users of its class with smaller start tags, higher classes bounded by its minimum share);
- requests that arrive while it waits and still go first. Start-time fair queueing serves
  another user's new request first when it starts below this one's start tag, so a user who
  has a long backlog shares the limiter with everyone else's new traffic: another user ``j``
  takes ``min(rate_j * T, room_j)`` tokens ahead of it within a wait of ``T`` seconds, where
  ``rate_j`` is ``j``'s recent arrival rate and ``room_j`` the scheduler's bound
  (``Position.competitor_room``). Higher classes' new traffic counts the same way, bounded by
  what this class's minimum share leaves them.

Arrival rates are exponentially decayed sums per class and user (time constant
``ARRIVAL_RATE_TAU_S``), kept in Redis by ``record_arrival`` (one Lua script). Amounts are
converted from the scheduler's cost (estimated input + max_tokens) to each bucket with the
recent mix of arrivals: input at the learned actual/estimated ratio, output at the learned
ratio of actual to ``max_tokens``, one request per request. The request's own amounts are
exactly what the dispatcher will reserve (input × ``estimate_factor``, all of ``max_tokens``).
The wait is the smallest ``T`` that satisfies every bucket (a piecewise-linear equation), or the
limiter's pause after a 429 if that is longer. The ``eta`` benchmark measures how far
predictions land from actual waits.

Not modelled: requests of other model classes queued ahead (they do not use this bucket but
are counted), reservations of calls in flight that come back when they are reconciled.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from llm_calls import catalog
from queueing import conf
from queueing.limiter import get_limiter
from queueing.lua import LuaScript
from queueing.models import LLMRequest
from queueing.scheduler import Position, get_scheduler, user_key_for
from ratelimit_project.redis import get_redis

OUTPUT_RATIO_KEY = "gw:eta:output_ratio"
ARRIVALS_KEY = "gw:eta:arrivals:{}"
# Time constant of the arrival-rate estimate: long enough that a few requests do not swing it,
# short enough to follow a burst that makes people wait.
ARRIVAL_RATE_TAU_S = 60.0
_ARRIVALS_TTL_S = 3600
_MAX_COMPETITORS = 500  # the busiest senders of a class; the rest add little
_MAX_WAIT_S = 24 * 3600.0
_ARRIVAL = LuaScript("eta_arrival")


def record_output_ratio(*, max_tokens: int, output_tokens: int) -> None:
    """Learn how much of ``max_tokens`` calls really use (EWMA), for the OTPM part of the ETA."""
    if max_tokens <= 0:
        return
    ratio = min(1.0, output_tokens / max_tokens)
    client = get_redis()
    old = client.get(OUTPUT_RATIO_KEY)
    value = ratio if old is None else 0.9 * float(old) + 0.1 * ratio
    client.set(OUTPUT_RATIO_KEY, repr(value), ex=7 * 24 * 3600)


def _output_ratio() -> float:
    raw = get_redis().get(OUTPUT_RATIO_KEY)
    return 1.0 if raw is None else max(0.05, float(raw))


def record_arrival(
    *,
    priority: str,
    user_key: str,
    weight: float,
    input_tokens: int,
    max_tokens: int,
    now: float | None = None,
) -> None:
    """Count one newly queued request in its class's arrival rates (see the module docstring)."""
    _ARRIVAL(
        get_redis(),
        keys=[ARRIVALS_KEY.format(priority)],
        args=[
            "" if now is None else repr(float(now)),
            repr(ARRIVAL_RATE_TAU_S),
            user_key,
            repr(float(weight)),
            input_tokens + max_tokens,
            input_tokens,
            max_tokens,
            _ARRIVALS_TTL_S,
        ],
    )


@dataclass
class ClassArrivals:
    """Recent arrival rates of one priority class, per second (cost = input + max_tokens)."""

    cost: float = 0.0
    input_tokens: float = 0.0
    max_tokens: float = 0.0
    requests: float = 0.0
    users: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (cost/s, weight)


def arrival_rates(*, classes: Iterable[str], now: float | None = None) -> dict[str, ClassArrivals]:
    """Decayed arrival sums → rates, per class (``now`` in epoch seconds, default Redis clock)."""
    names = list(classes)
    pipe = get_redis().pipeline(transaction=False)
    pipe.time()
    for name in names:
        pipe.hgetall(ARRIVALS_KEY.format(name))
    clock, *hashes = pipe.execute()
    at = now if now is not None else clock[0] + clock[1] / 1_000_000
    tau = ARRIVAL_RATE_TAU_S
    result: dict[str, ClassArrivals] = {}
    for name, raw in zip(names, hashes, strict=True):
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if "since" not in fields:
            result[name] = ClassArrivals()
            continue
        # Normalise by the part of the window that has been observed, so a young estimate is
        # not biased low: E[sum] = rate * tau * (1 - exp(-age / tau)).
        observed = tau * -math.expm1(-max(at - float(fields["since"]), 1.0) / tau)

        rate = functools.partial(_decayed_rate, at=at, observed=observed)
        last = fields.get("t")
        arrivals = ClassArrivals(
            cost=rate(fields.get("cost"), last),
            input_tokens=rate(fields.get("in"), last),
            max_tokens=rate(fields.get("out"), last),
            requests=rate(fields.get("n"), last),
        )
        for key, value in fields.items():
            if key.startswith("c:"):
                user = key[2:]
                weight = float(fields.get(f"w:{user}", "1") or 1)
                arrivals.users[user] = (rate(value, fields.get(f"t:{user}")), weight)
        result[name] = arrivals
    return result


def _decayed_rate(value: str | None, since: str | None, *, at: float, observed: float) -> float:
    """A decayed sum written at ``since``, decayed to ``at``, as a rate per second."""
    if value is None:
        return 0.0
    age = max(0.0, at - float(since)) if since is not None else 0.0
    return float(value) * math.exp(-age / ARRIVAL_RATE_TAU_S) / observed


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def solve_wait_s(
    *, refill_per_s: float, base: float, fraction: float, flows: Iterable[tuple[float, float]]
) -> float:
    """Smallest ``T >= 0`` with ``refill_per_s * T >= base + fraction * sum(min(rate * T,
    room))`` over ``flows`` of (rate, room): when the bucket has refilled what is due before the
    request, including what other traffic adds meanwhile. ``_MAX_WAIT_S`` when never."""
    if base <= 0:
        return 0.0
    if refill_per_s <= 0:
        return _MAX_WAIT_S
    active = [(rate, room) for rate, room in flows if rate > 0 and room > 0]
    # Walk the segments between the times at which flows exhaust their room.
    active.sort(key=lambda flow: flow[1] / flow[0])
    slope = fraction * sum(rate for rate, _ in active)
    constant = 0.0
    start = 0.0
    for rate, room in active:
        until = room / rate
        if refill_per_s > slope:
            t = (base + constant) / (refill_per_s - slope)
            if t <= until:
                return min(max(t, start), _MAX_WAIT_S)
        slope -= fraction * rate
        constant += fraction * room
        start = until
    return min(max((base + constant) / refill_per_s, start), _MAX_WAIT_S)


def _flows(
    *, request: LLMRequest, position: Position, rates: dict[str, ClassArrivals]
) -> list[tuple[float, float]]:
    """(rate, room) in cost tokens of the traffic that may still arrive and go first."""
    own = rates.get(request.priority, ClassArrivals())
    flows = [
        (own.users[key][0], room)
        for key, room in position.competitor_room.items()
        if key in own.users
    ]
    classes = conf.priority_classes()
    names = [name for name, _ in classes]
    share = dict(classes)[request.priority]
    higher_rate = sum(
        rates.get(name, ClassArrivals()).cost for name in names[: names.index(request.priority)]
    )
    if higher_rate > 0:
        # Higher classes go first, but leave this class at least its minimum share.
        others_now = position.tokens_ahead - position.class_tokens_ahead
        room = (
            _MAX_WAIT_S * higher_rate
            if share <= 0
            else (position.class_tokens_ahead + position.cost) * (1 - share) / share - others_now
        )
        flows.append((higher_rate, max(0.0, room)))
    return flows


def predict_wait_s(*, request: LLMRequest) -> float | None:
    """Seconds until this queued request is dispatched, or None when it is not in the queue."""
    names = conf.priority_class_names()
    rates = arrival_rates(classes=names)
    own_key = user_key_for(user_id=request.user_id)
    senders = rates.get(request.priority, ClassArrivals()).users
    busiest = sorted(
        ((key, value) for key, value in senders.items() if key != own_key),
        key=lambda item: -item[1][0],
    )[:_MAX_COMPETITORS]
    position = get_scheduler().position(
        request_id=request.pk, competitors={key: weight for key, (_, weight) in busiest}
    )
    if position is None:
        return None
    state = get_limiter().state(model_class=catalog.model_class(request.model))
    levels = state["levels"]
    limits = state["limits"]["effective"]
    headroom = conf.limiter_headroom()
    flows = _flows(request=request, position=position, rates=rates)

    # The traffic mix converts cost tokens into each bucket's units; the request itself is
    # what the dispatcher will reserve for it.
    own_cost = max(1, request.estimated_input_tokens + request.max_tokens)
    mix = [rates[name] for name in names if name in rates]
    mix_cost = sum(r.cost for r in mix)
    if mix_cost > 0:
        input_share = sum(r.input_tokens for r in mix) / mix_cost
        per_cost_request = sum(r.requests for r in mix) / mix_cost
    else:
        input_share = request.estimated_input_tokens / own_cost
        per_cost_request = 1 / own_cost
    fraction = {
        "rpm": per_cost_request,
        "itpm": input_share * state["estimate_mean"],
        "otpm": (1 - input_share) * _output_ratio(),
    }
    own = {
        "rpm": 1.0,
        "itpm": float(math.ceil(request.estimated_input_tokens * state["estimate_factor"])),
        "otpm": float(request.max_tokens),
    }
    wait = state["paused_for_s"]
    for dim in ("rpm", "itpm", "otpm"):
        limit, level = limits[dim], levels[dim]
        if not limit or level is None:
            continue
        target = min(own[dim] + headroom[dim] * limit, float(limit))  # limiter_reserve.lua
        base = fraction[dim] * position.tokens_ahead + target - level
        wait = max(
            wait,
            solve_wait_s(refill_per_s=limit / 60.0, base=base, fraction=fraction[dim], flows=flows),
        )
    return round(wait, 2)


QUEUE_UNAVAILABLE = "the queue (Redis) is unreachable: position and wait are unknown for now"


def queue_status(request: LLMRequest) -> dict[str, Any]:
    """What a user sees next to a request: position (1 = next) and estimated wait in seconds.

    While Redis is unreachable the position is unknown, and says so (``queue_unavailable``),
    rather than failing the page or the API answer that shows the request's saved state.
    """
    if request.status != LLMRequest.Status.QUEUED:
        return {
            "position": None,
            "requests_ahead": 0,
            "eta_s": 0.0 if not request.is_terminal else None,
        }
    try:
        position = get_scheduler().position(request_id=request.pk)
        if position is None:
            return {"position": None, "requests_ahead": None, "eta_s": None}
        return {
            "position": position.position,
            "requests_ahead": position.requests_ahead,
            "eta_s": predict_wait_s(request=request),
        }
    except redis.RedisError:
        return {
            "position": None,
            "requests_ahead": None,
            "eta_s": None,
            "queue_unavailable": QUEUE_UNAVAILABLE,
        }


def describe_wait(seconds: float | None) -> str:
    """A wait as people read it: "under 10 s", "about 40 s", "about 3 min", "about 2 h".

    Rounded to what an estimate can promise: 5 s steps under a minute, whole minutes under an
    hour, then hours (half hours under 3 h).
    """
    if seconds is None:
        return "unknown"
    if seconds < 10:
        return "under 10 s"
    if seconds < 57.5:
        return f"about {5 * round(seconds / 5)} s"
    if seconds < 3570:
        return f"about {max(1, round(seconds / 60))} min"
    hours = seconds / 3600
    if hours < 3:
        half = round(hours * 2) / 2
        return f"about {half:g} h"
    return f"about {round(hours)} h"


def describe_waited(seconds: float | None) -> str:
    """A wait that happened, as people read it: "0.4 s", "34 s", "3 min 5 s", "1 h 12 min"."""
    if seconds is None:
        return "—"
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(whole, 3600)
    return f"{hours} h {rest // 60} min"
