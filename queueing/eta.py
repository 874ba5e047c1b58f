"""Queue position and estimated wait, and how people read them (staff views: ``overview``).

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
head of the queue and the recent mix of arrivals: ITPM at what the queued requests are
expected to be *charged*, evaluated now — each one's prompt minus the part the prompt cache
will serve (``llm_calls.caching.WarmPrefixes`` in forecast mode: cached now, or being written
by a call ahead), at the tokenizer's learned ratio; output at the learned ratio of actual to
``max_tokens`` and one request per request, in the mix of arrivals. A queue of requests
sharing a cached 9,000-token system prompt costs ITPM only their questions; modelling it as
9,000 tokens each is how an estimate ends up 50 times too long. The request's own amounts are
what the dispatcher will reserve (the same cache-aware charge at the factor with its margin,
all of ``max_tokens``). The wait is the smallest ``T`` that satisfies every bucket (a
piecewise-linear equation), or the limiter's pause after a 429 if that is longer.

Calibration and uncertainty: every dispatcher step records ln(actual / model) of the
requests it dispatched, per priority class (``record_dispatch_waits``). Their running mean is
the model's bias in that class — under bursty traffic the arrival rates a class sees ahead of
it are a poor forecast of the next seconds, and the error is systematic per class (the lowest
class waits on everything above it) — and ``estimate_wait`` corrects the model's figure by it;
their spread around the mean gives the range shown beside the estimate (about 4 in 5 waits
should end inside it). Both are blended with a modest prior while samples are few. The bias
is learned from the model's own figure (``LLMRequest.model_wait_s``), not from the corrected
one, so the correction does not chase itself. People read it as ``describe_wait_range``:
"about 3 min (2–4 min)". The ``eta`` benchmark measures how far what people were told lands
from the actual waits, on a plain and on a cached workload.

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

from llm_calls import caching, catalog
from llm_calls.caching import WarmPrefixes
from queueing import conf
from queueing.limiter import admission_headroom, expected_itpm_charge, get_limiter
from queueing.lua import LuaScript
from queueing.models import LLMRequest
from queueing.scheduler import Position, get_scheduler, user_key_for
from ratelimit_project.redis import get_redis

OUTPUT_RATIO_KEY = "gw:eta:output_ratio"
# Per priority class and model class: traffic to another model class uses other buckets.
ARRIVALS_KEY = "gw:eta:arrivals:{priority}:{model_class}"
# Time constant of the arrival-rate estimate: long enough that a few requests do not swing it,
# short enough to follow a burst that makes people wait.
ARRIVAL_RATE_TAU_S = 60.0
_ARRIVALS_TTL_S = 3600
_MAX_COMPETITORS = 500  # the busiest senders of a class; the rest add little
_MAX_WAIT_S = 24 * 3600.0
# Queued requests whose expected charges are summed for the ITPM conversion: enough to
# represent the head of a busy queue, few enough for one indexed query per estimate.
_QUEUE_SAMPLE = 100
_ARRIVAL = LuaScript("eta_arrival")
_CALIBRATE = LuaScript("eta_calibrate")

CALIBRATION_KEY = "gw:eta:calibration:{priority}"
# Waits shorter than this are "no wait" to a person: their relative error means nothing.
_CALIBRATION_FLOOR_S = 1.0
_CALIBRATION_ALPHA = 0.05
_CALIBRATION_TTL_S = 7 * 24 * 3600
# Without evidence yet, say "within a factor of about 1.7 either way".
_PRIOR_DEVIATION = 0.35
_PRIOR_WEIGHT = 20  # samples the prior counts for while evidence accumulates
# The range covers ~80% of outcomes for Laplace-like errors: P(|x - m| < k d) = 1 - e^-k.
_RANGE_DEVIATIONS = 1.6
# The correction is bounded: a model wrong by more than 4x either way has a defect to fix,
# and an unbounded correction would hide it (and swing on a few outliers).
_MAX_BIAS = math.log(4.0)


def record_output_ratio(*, max_tokens: int, output_tokens: int) -> None:
    """Learn how much of ``max_tokens`` calls really use (EWMA), for the OTPM part of the ETA."""
    if max_tokens <= 0:
        return
    ratio = min(1.0, output_tokens / max_tokens)
    client = get_redis()
    old = client.get(OUTPUT_RATIO_KEY)
    value = ratio if old is None else 0.9 * float(old) + 0.1 * ratio
    client.set(OUTPUT_RATIO_KEY, repr(value), ex=7 * 24 * 3600)


@dataclass(frozen=True)
class DispatchWait:
    """One dispatched request's wait, for calibration: the model's figure at submit (None when
    it was never estimated) and the wait it had, in seconds."""

    priority: str
    model_s: float | None
    actual_s: float


def record_dispatch_waits(*, waits: Iterable[DispatchWait]) -> None:
    """Learn how far the model's predictions land, per priority class: ln(actual / model) of
    the requests just dispatched, both floored at 1 s. One script per class per step."""
    errors: dict[str, list[str]] = {}
    for wait in waits:
        if wait.model_s is None or max(wait.model_s, wait.actual_s) < _CALIBRATION_FLOOR_S:
            continue
        error = math.log(
            max(wait.actual_s, _CALIBRATION_FLOOR_S) / max(wait.model_s, _CALIBRATION_FLOOR_S)
        )
        errors.setdefault(wait.priority, []).append(repr(error))
    client = get_redis()
    for priority, values in errors.items():
        _CALIBRATE(
            client,
            keys=[CALIBRATION_KEY.format(priority=priority)],
            args=[repr(_CALIBRATION_ALPHA), _CALIBRATION_TTL_S, *values],
        )


@dataclass(frozen=True)
class Calibration:
    """How one class's predictions have landed lately: ln(actual / model) has mean ``bias``
    and mean absolute deviation ``spread``, over ``samples`` dispatched requests."""

    bias: float
    spread: float
    samples: int

    def corrected_s(self, model_s: float) -> float:
        """The model's figure corrected by the learned bias: what people are told."""
        return round(model_s * math.exp(max(-_MAX_BIAS, min(_MAX_BIAS, self.bias))), 2)

    def range_s(self, told_s: float) -> tuple[float, float]:
        """Where the actual wait should fall, about 4 times in 5, around the corrected figure."""
        low = told_s * math.exp(-_RANGE_DEVIATIONS * self.spread)
        high = told_s * math.exp(_RANGE_DEVIATIONS * self.spread)
        return round(low, 1), round(high, 1)


def calibration(*, priority: str) -> Calibration:
    """A class's learned calibration, blended with a modest prior while samples are few."""
    key = CALIBRATION_KEY.format(priority=priority)
    mean, deviation, samples = get_redis().hmget(key, ["m", "d", "n"])
    n = int(samples or 0)
    if mean is None or n == 0:
        return Calibration(bias=0.0, spread=_PRIOR_DEVIATION, samples=0)
    share = n / (n + _PRIOR_WEIGHT)
    return Calibration(
        bias=share * float(mean),
        spread=share * float(deviation or 0) + (1 - share) * _PRIOR_DEVIATION,
        samples=n,
    )


def _output_ratio() -> float:
    raw = get_redis().get(OUTPUT_RATIO_KEY)
    return 1.0 if raw is None else max(0.05, float(raw))


def record_arrival(
    *,
    priority: str,
    model_class: str,
    user_key: str,
    weight: float,
    input_tokens: int,
    max_tokens: int,
    now: float | None = None,
) -> None:
    """Count one newly queued request in its class's arrival rates (see the module docstring)."""
    _ARRIVAL(
        get_redis(),
        keys=[ARRIVALS_KEY.format(priority=priority, model_class=model_class)],
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


def arrival_rates(
    *, classes: Iterable[str], model_class: str, now: float | None = None
) -> dict[str, ClassArrivals]:
    """Decayed arrival sums → rates, per priority class, of one model class's traffic (``now``
    in epoch seconds, default Redis clock)."""
    names = list(classes)
    pipe = get_redis().pipeline(transaction=False)
    pipe.time()
    for name in names:
        pipe.hgetall(ARRIVALS_KEY.format(priority=name, model_class=model_class))
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


def _queue_charges(
    *, request: LLMRequest, warm: WarmPrefixes, mean: float, factor: float
) -> tuple[float, float]:
    """(expected ITPM charge per cost token of the head of the queue and this request, what
    the dispatcher will reserve for this request).

    The head of the queue is its ``_QUEUE_SAMPLE`` oldest requests, taken in order: a prefix
    that is cached (or being written) is free for all of them, and one that is not is paid by
    the first request carrying it and free for those after it — the first call writes it.
    """
    ahead = (
        LLMRequest.objects.filter(status=LLMRequest.Status.QUEUED)
        .exclude(pk=request.pk)
        .order_by("created_at")
        .only("model", "estimated_input_tokens", "max_tokens", "cache_prefixes")[:_QUEUE_SAMPLE]
    )
    carried: set[tuple[str, str]] = set()
    charge = cost = 0.0
    own_cached = 0
    for row in [*ahead, request]:
        prefixes = caching.prefixes_from_json(row.cache_prefixes)
        cached = max(
            (p.tokens for p in prefixes if (row.model, p.prefix_hash) in carried), default=0
        )
        if prefixes:
            cached = max(cached, warm.tokens(model=row.model, prefixes=prefixes))
        charge += expected_itpm_charge(
            model=row.model,
            estimated_input_tokens=row.estimated_input_tokens,
            cached_tokens=cached,
            factor=mean,
        )
        cost += row.estimated_input_tokens + row.max_tokens
        carried.update((row.model, p.prefix_hash) for p in prefixes)
        own_cached = cached
    own = expected_itpm_charge(
        model=request.model,
        estimated_input_tokens=request.estimated_input_tokens,
        cached_tokens=own_cached,
        factor=factor,
    )
    return charge / max(1.0, cost), float(own)


def predict_wait_s(*, request: LLMRequest) -> float | None:
    """Seconds until this queued request is dispatched, or None when it is not in the queue."""
    predicted = _predict(request=request)
    return None if predicted is None else predicted[0]


def _predict(*, request: LLMRequest) -> tuple[float, Position] | None:
    """The model's wait and the scheduler position it was computed from (one position lookup:
    it reads every request ahead, so a submission asks once)."""
    names = conf.priority_class_names()
    rates = arrival_rates(classes=names, model_class=catalog.model_class(request.model))
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

    # The request itself is what the dispatcher will reserve for it (the part of its prompt
    # the cache will not serve, at the tokenizer factor with its margin). Everything else is
    # in the scheduler's cost tokens, converted to each bucket's units: ITPM at the expected
    # charge per cost token of the queue's head, evaluated now (warmth changes faster than
    # any average of past arrivals would follow); output at the learned ratio of actual to
    # ``max_tokens`` and one request per request, in the recent mix of arrivals.
    itpm_per_cost, own_itpm = _queue_charges(
        request=request,
        warm=WarmPrefixes(forecast=True),
        mean=state["estimate_mean"],
        factor=state["estimate_factor"],
    )
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
        "itpm": itpm_per_cost,
        "otpm": (1 - input_share) * _output_ratio(),
    }
    own = {"rpm": 1.0, "itpm": own_itpm, "otpm": float(request.max_tokens)}
    wait = state["paused_for_s"]
    for dim in ("rpm", "itpm", "otpm"):
        limit, level = limits[dim], levels[dim]
        if not limit or level is None:
            continue
        target = min(
            own[dim] + admission_headroom(dim=dim, limit=limit, fraction=headroom[dim]),
            float(limit),
        )
        base = fraction[dim] * position.tokens_ahead + target - level
        wait = max(
            wait,
            solve_wait_s(refill_per_s=limit / 60.0, base=base, fraction=fraction[dim], flows=flows),
        )
    return round(wait, 2), position


@dataclass(frozen=True)
class WaitEstimate:
    """A queued request's wait: the model's figure, what people are told (corrected by the
    class's calibration) and the range the wait should end in, in seconds."""

    model_s: float
    eta_s: float
    low_s: float
    high_s: float
    position: int | None = None  # 1 = next in its class's dispatch order

    @property
    def text(self) -> str:
        return describe_wait_range(self.eta_s, self.low_s, self.high_s)


def estimate_wait(*, request: LLMRequest) -> WaitEstimate | None:
    """``predict_wait_s`` corrected by its class's learned bias, with its range; None when the
    request is not in the queue."""
    predicted = _predict(request=request)
    if predicted is None:
        return None
    model_s, position = predicted
    learned = calibration(priority=request.priority)
    told = learned.corrected_s(model_s)
    low, high = learned.range_s(told)
    return WaitEstimate(
        model_s=model_s, eta_s=told, low_s=low, high_s=high, position=position.position
    )


QUEUE_UNAVAILABLE = "the queue (Redis) is unreachable: position and wait are unknown for now"


def queue_status(request: LLMRequest) -> dict[str, Any]:
    """What a user sees next to a request: where it stands and how long it waits.

    Queued: ``position`` (1 = next), ``requests_ahead``, ``eta_s`` with ``eta_range_s`` (where
    the wait should end, about 4 times in 5, from how recent predictions landed) and
    ``eta_text`` ("about 3 min"). Once dispatched: ``waited_s`` / ``waited_text``, the wait it
    had. While Redis is unreachable the position is unknown, and says so
    (``queue_unavailable``), rather than failing the page or the API answer that shows the
    request's saved state.
    """
    waited = waited_s(request)
    status: dict[str, Any] = {
        "position": None,
        "requests_ahead": 0,
        "eta_s": None,
        "eta_range_s": None,
        "eta_text": None,
        "waited_s": None if waited is None else round(waited, 2),
        "waited_text": None if waited is None else describe_waited(waited),
    }
    if request.status != LLMRequest.Status.QUEUED:
        if not request.is_terminal:
            status["eta_s"] = 0.0
        return status
    try:
        position = get_scheduler().position(request_id=request.pk)
        estimate = estimate_wait(request=request) if position is not None else None
    except redis.RedisError:
        return {**status, "requests_ahead": None, "queue_unavailable": QUEUE_UNAVAILABLE}
    if position is None or estimate is None:
        return {**status, "requests_ahead": None}
    return {
        **status,
        "position": position.position,
        "requests_ahead": position.requests_ahead,
        "eta_s": estimate.eta_s,
        "eta_range_s": [estimate.low_s, estimate.high_s],
        "eta_text": estimate.text,
    }


def waited_s(request: LLMRequest) -> float | None:
    """Seconds from submit to leaving the queue, once it has left (None before)."""
    if request.dispatched_at is None or request.created_at is None:
        return None
    return max(0.0, (request.dispatched_at - request.created_at).total_seconds())


def describe_wait_range(predicted: float, low: float, high: float) -> str:
    """ "about 3 min (2–4 min)", "about 30 s (up to 1 min)"; just "under 10 s" when even the
    long end is that short."""
    text = describe_wait(predicted)
    if high < 10:
        return text
    low_text, high_text = _bare(describe_wait(low)), _bare(describe_wait(high))
    if low_text == high_text:
        return text
    if low < 10:
        return f"{text} (up to {high_text})"
    low_value, _, low_unit = low_text.partition(" ")
    high_value, _, high_unit = high_text.partition(" ")
    if low_unit == high_unit:
        return f"{text} ({low_value}–{high_value} {high_unit})"
    return f"{text} ({low_text}–{high_text})"


def _bare(text: str) -> str:
    return text.removeprefix("about ")


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
