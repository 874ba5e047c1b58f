"""Workload pieces shared by the queueing scenarios (``fairness``, ``priority``, ``eta``).

- ``Stream``: one simulated user in one priority class, sending requests of random size; by
  default a one-message prompt of random words, optionally behind a shared system prompt and
  tools, with random output and thinking sizes and multi-turn ``Sessions`` (the demo's shape).
- ``ClosedLoop``: keeps each stream's backlog (requests still queued in the gateway) topped up,
  so a stream stays backlogged for as long as the loop runs; ``OpenLoop`` submits at a random
  (Poisson) rate instead. Both go through ``queueing.services.submit_request``, the real door.
- ``drain_limiter``: start a measurement from an (almost) empty ITPM bucket. A fresh bucket
  holds a whole minute of tokens, so without this the first minute of any "limiter-bound" run
  is in fact bound by the pipeline's own speed.
- ``collect`` / ``percentile`` / ``jain_index``: the figures, from the ``LLMRequest`` rows
  (``created_at`` = submitted, ``dispatched_at`` = left the queue; the wait is their difference).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import User

from llm_calls import catalog
from llm_calls.params import MessageParams
from organizations.models import Membership, Organization
from queueing import conf, services
from queueing.limiter import get_limiter
from queueing.models import LLMRequest
from ratelimit_project.loadtest.stack import Stack

# Every scenario runs on today's default model and counts in its rate-limit bucket.
MODEL = catalog.DEFAULT_MODEL
MODEL_CLASS = catalog.model_class(MODEL)
Status = LLMRequest.Status
_WORDS = [
    "queue", "limiter", "bucket", "token", "request", "answer", "model", "share", "fair",
    "wait", "priority", "class", "user", "session", "cache", "prompt", "output", "input",
    "minute", "second", "dispatch", "worker", "gateway",
]  # fmt: skip


@dataclass
class Stream:
    """One user sending to one priority class. ``backlog`` = requests kept queued (closed loop).

    The defaults send what every queueing scenario sends: one user message of
    ``input_tokens`` random words asking for exactly ``output_tokens`` tokens, ``max_tokens``
    = that, in one session per stream. The rest is for a workload shaped like the demo's:
    ``output_tokens`` as a ``(low, high)`` range (drawn per request), ``thinking_tokens`` (the
    emulator's ``[[emulator:thinking_tokens=N]]``, drawn per request), a fixed ``max_tokens``,
    a shared ``system`` prompt and ``tools``, and ``sessions`` for multi-turn conversations.
    """

    label: str
    user: User
    priority: str = "query"
    backlog: int = 1
    input_tokens: tuple[int, int] = (200, 1400)
    output_tokens: int | tuple[int, int] = 50
    traffic_weight: float = 1.0  # OpenLoop: relative share of the arrivals
    outstanding: list[int] = field(default_factory=list)
    thinking_tokens: tuple[int, int] | None = None
    max_tokens: int | None = None  # None: the output size (a range's upper bound)
    system: str | None = None
    tools: list[dict[str, Any]] | None = None
    sessions: Sessions | None = None  # None: every request alone in session bench-<label>


@dataclass
class _Session:
    session_id: str
    messages: list[Mapping[str, Any]]
    pending: int | None  # request id of its last turn, until its answer is in


@dataclass
class Sessions:
    """Multi-turn conversations of one stream, held the way the demo's users hold them
    (``ratelimit_project.demo.Traffic``): a request continues, with probability
    ``follow_up``, one of the stream's last ``keep_open`` sessions whose answer has arrived and
    that has fewer than ``max_turns`` turns — carrying the earlier questions and the real
    answers, so the uncached part of the prompt grows turn by turn — or else opens a new one.
    A session whose last request did not succeed is closed."""

    prefix: str
    follow_up: float = 0.6
    max_turns: int = 4
    keep_open: int = 3
    opened: int = 0
    open: list[_Session] = field(default_factory=list)

    def next_turn(self, rng: random.Random) -> tuple[str, list[Mapping[str, Any]]]:
        """The session id and earlier messages of the stream's next request."""
        self._collect_answers()
        ready = [s for s in self.open if s.pending is None and len(s.messages) < 2 * self.max_turns]
        if ready and rng.random() < self.follow_up:
            session = rng.choice(ready)
            return session.session_id, list(session.messages)
        self.opened += 1
        return f"{self.prefix}-{self.opened}", []

    def sent(self, session_id: str, messages: Sequence[Mapping[str, Any]], request_id: int) -> None:
        for session in self.open:
            if session.session_id == session_id:
                session.messages, session.pending = list(messages), request_id
                return
        self.open.append(_Session(session_id, list(messages), request_id))
        del self.open[: -self.keep_open]

    def _collect_answers(self) -> None:
        waiting = {s.pending: s for s in self.open if s.pending is not None}
        if not waiting:
            return
        done = LLMRequest.objects.filter(pk__in=list(waiting)).exclude(
            status__in=[Status.QUEUED, Status.DISPATCHED, Status.RUNNING]
        )
        for pk, status, result in done.values_list("pk", "status", "result"):
            session = waiting[pk]
            text = (result or {}).get("text") if status == Status.SUCCEEDED else None
            if text:
                session.messages.append({"role": "assistant", "content": text})
                session.pending = None
            else:
                self.open.remove(session)


@dataclass(frozen=True)
class Submitted:
    """One request as the load generator saw it at submit time."""

    request_id: int
    label: str
    priority: str
    submitted_at: float  # epoch seconds
    cost: int  # the scheduler's cost: estimated input tokens + max_tokens
    own_tokens_ahead: int  # cost of this stream's requests still queued ahead of it
    predicted_wait_s: float | None  # what the submitter was told
    model_wait_s: float | None  # the queue model's figure before its calibration
    baseline_wait_s: float | None = None  # a scenario's own comparison model, if any


def make_users(prefix: str, count: int) -> list[User]:
    """``count`` fresh users of one organization (no quotas: the limiter is what binds)."""
    org, _ = Organization.objects.get_or_create(name=f"bench-{prefix}")
    users = []
    for n in range(count):
        user = User.objects.create_user(username=f"{prefix}-{n}-{time.time_ns()}")
        Membership.objects.create(user=user, organization=org)
        users.append(user)
    return users


def prompt(
    rng: random.Random, tokens: int, output_tokens: int, *, thinking_tokens: int | None = None
) -> str:
    """About ``tokens`` input tokens (4 characters each) ending in the emulator's output marker
    (and its thinking marker, if ``thinking_tokens`` is given)."""
    marker = f" [[emulator:output_tokens={output_tokens}]]"
    if thinking_tokens is not None:
        marker += f" [[emulator:thinking_tokens={thinking_tokens}]]"
    target = max(1, tokens * 4 - len(marker))
    words: list[str] = []
    size = 0
    while size < target:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:target] + marker


def message_params(
    stream: Stream, rng: random.Random, *, history: Sequence[Mapping[str, Any]] = ()
) -> MessageParams:
    """The Messages body of ``stream``'s next request, after ``history`` (a session's earlier
    turns). Draws from ``rng`` in a fixed order — input size, then output and thinking sizes
    only if the stream has ranges for them, then the words — so a default stream's requests
    are the same, seed for seed, as before those options existed."""
    low, high = stream.input_tokens
    tokens = rng.randint(low, high)
    if isinstance(stream.output_tokens, tuple):
        output = rng.randint(*stream.output_tokens)
        ceiling = stream.output_tokens[1]
    else:
        output = ceiling = stream.output_tokens
    thinking = rng.randint(*stream.thinking_tokens) if stream.thinking_tokens else None
    text = prompt(rng, tokens, output, thinking_tokens=thinking)
    params: MessageParams = {
        "model": MODEL,
        "messages": [*history, {"role": "user", "content": text}],
        "max_tokens": stream.max_tokens or ceiling,
    }
    if stream.system is not None:
        params["system"] = stream.system
    if stream.tools is not None:
        params["tools"] = stream.tools
    return params


Baseline = Callable[[LLMRequest], float | None]


def submit(
    stream: Stream,
    rng: random.Random,
    *,
    own_tokens_ahead: int = 0,
    baseline: Baseline | None = None,
) -> Submitted:
    history: list[Mapping[str, Any]] = []
    if stream.sessions is None:
        session_id = f"bench-{stream.label}"
    else:
        session_id, history = stream.sessions.next_turn(rng)
    params = message_params(stream, rng, history=history)
    row = services.submit_request(
        user=stream.user, session_id=session_id, priority=stream.priority, **params
    )
    if stream.sessions is not None:
        stream.sessions.sent(session_id, params["messages"], row.pk)
    return Submitted(
        request_id=row.pk,
        label=stream.label,
        priority=stream.priority,
        submitted_at=row.created_at.timestamp(),
        cost=row.estimated_input_tokens + row.max_tokens,
        own_tokens_ahead=own_tokens_ahead,
        predicted_wait_s=row.predicted_wait_s,
        model_wait_s=row.model_wait_s,
        baseline_wait_s=baseline(row) if baseline is not None else None,
    )


class ClosedLoop:
    """Keep every stream's queued backlog at ``stream.backlog``, checking every ``tick_s``.

    A stream's request leaves its backlog when the dispatcher takes it; the next tick submits
    a replacement, so each stream stays backlogged (minus at most one tick) the whole run.
    """

    def __init__(self, streams: list[Stream], *, seed: int, tick_s: float = 0.02) -> None:
        self.streams = streams
        self.rng = random.Random(seed)
        self.tick_s = tick_s
        self.submitted: list[Submitted] = []
        self.costs: dict[int, int] = {}
        self.ticks = 0
        self.short_ticks: dict[str, int] = {s.label: 0 for s in streams}

    def step(self) -> None:
        waiting = [pk for s in self.streams for pk in s.outstanding]
        queued = set(
            LLMRequest.objects.filter(pk__in=waiting, status=Status.QUEUED).values_list(
                "pk", flat=True
            )
        )
        self.ticks += 1
        for stream in self.streams:
            stream.outstanding = [pk for pk in stream.outstanding if pk in queued]
            if not stream.outstanding:
                self.short_ticks[stream.label] += 1  # found empty: not backlogged this tick
            while len(stream.outstanding) < stream.backlog:
                ahead = sum(self.costs[pk] for pk in stream.outstanding)
                item = submit(stream, self.rng, own_tokens_ahead=ahead)
                self.costs[item.request_id] = item.cost
                stream.outstanding.append(item.request_id)
                self.submitted.append(item)

    def run_until(self, done: Callable[[], bool]) -> None:
        while not done():
            started = time.monotonic()
            self.step()
            time.sleep(max(0.0, self.tick_s - (time.monotonic() - started)))

    def outstanding(self) -> list[int]:
        return [pk for s in self.streams for pk in s.outstanding]


class OpenLoop:
    """Poisson arrivals at ``rate_per_s``, each from a stream picked with probability
    proportional to its ``traffic_weight``.

    ``rate_at`` (epoch seconds -> requests/s, never above ``rate_per_s``) makes the rate vary
    (bursts): candidate arrivals come at ``rate_per_s`` and each is kept with probability
    ``rate_at(t) / rate_per_s`` (thinning, exact for any rate shape). Without it the loop draws
    exactly what it always did, seed for seed."""

    def __init__(
        self,
        streams: list[Stream],
        *,
        rate_per_s: float,
        seed: int,
        baseline: Baseline | None = None,
        rate_at: Callable[[float], float] | None = None,
    ) -> None:
        self.streams = streams
        self.baseline = baseline
        self.rate_per_s = rate_per_s
        self.rate_at = rate_at
        self.rng = random.Random(seed)
        self.submitted: list[Submitted] = []
        self.behind_s = 0.0  # the most the generator ever lagged its arrival schedule

    def run_until(self, end: float) -> None:
        """Submit until epoch time ``end``."""
        weights = [s.traffic_weight for s in self.streams]
        due = time.time()
        while True:
            due += self.rng.expovariate(self.rate_per_s)
            if due >= end:
                time.sleep(max(0.0, end - time.time()))
                return
            if self.rate_at is not None and (
                self.rng.random() * self.rate_per_s >= self.rate_at(due)
            ):
                continue
            lag = time.time() - due
            if lag < 0:
                time.sleep(-lag)
            self.behind_s = max(self.behind_s, lag)
            stream = self.rng.choices(self.streams, weights=weights)[0]
            self.submitted.append(submit(stream, self.rng, baseline=self.baseline))


def drain_limiter(model_class: str = MODEL_CLASS) -> float:
    """Take what the ITPM bucket holds, leaving only its admission headroom; returns tokens taken.

    The reservation is never reconciled: those tokens are simply spent, as if a minute of
    earlier traffic had used them.
    """
    limiter = get_limiter()
    state = limiter.state(model_class=model_class)
    level = state["levels"]["itpm"]
    capacity = state["limits"]["effective"]["itpm"]
    if level is None or not capacity:
        return 0.0
    take = math.floor(level - conf.limiter_headroom()["itpm"] * capacity)
    if take <= 0:
        return 0.0
    admission = limiter.try_reserve(model_class=model_class, input_tokens=take, output_tokens=0)
    return float(take) if admission.admitted else 0.0


def cancel_queued(ids: Iterable[int]) -> int:
    """Cancel every still-queued request among ``ids`` (as its owner would); returns how many."""
    cancelled = 0
    for row in LLMRequest.objects.filter(pk__in=list(ids), status=Status.QUEUED).select_related(
        "user"
    ):
        try:
            services.cancel_request(request=row, by_user=row.user)
        except services.CannotCancel:
            continue  # dispatched in the meantime
        cancelled += 1
    return cancelled


def queued_among(ids: Iterable[int]) -> bool:
    """True while any of ``ids`` is still waiting in the queue."""
    return LLMRequest.objects.filter(pk__in=list(ids), status=Status.QUEUED).exists()


def wait_settled(ids: Iterable[int], *, timeout_s: float = 60.0) -> int:
    """Wait until none of ``ids`` is queued, dispatched or running; returns how many still are."""
    pks = list(ids)
    deadline = time.monotonic() + timeout_s
    active = (Status.QUEUED, Status.DISPATCHED, Status.RUNNING)
    while True:
        left = LLMRequest.objects.filter(pk__in=pks, status__in=active).count()
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


@dataclass(frozen=True)
class WindowRun:
    loop: ClosedLoop
    outcomes: list[Outcome]
    window: tuple[float, float]  # epoch seconds [start, end) of the measured window
    info: dict[str, Any]


def run_window(
    stack: Stack,
    streams: list[Stream],
    *,
    threads: int,
    warmup_s: float,
    duration_s: float,
    tail_cap_s: float,
    measured: Callable[[Submitted], bool],
    seed: int = 7,
) -> WindowRun:
    """Start a worker host, drain the ITPM bucket, run the closed loop for ``warmup_s`` +
    ``duration_s``, keep it running until every ``measured`` request submitted in the window
    has left the queue (at most ``tail_cap_s`` more), then cancel what is still queued, wait for
    the calls in flight and stop the worker host."""
    stack.emulator.reset()
    stack.start_worker(threads=threads)
    stack.wait_for_workers(threads=threads)
    drained = drain_limiter()
    loop = ClosedLoop(streams, seed=seed)
    started = time.time()
    window = (started + warmup_s, started + warmup_s + duration_s)
    loop.run_until(lambda: time.time() >= window[1])
    pending = {s.request_id for s in loop.submitted if s.submitted_at < window[1] and measured(s)}
    tail_deadline = time.time() + tail_cap_s
    # Keep every stream backlogged until the window's measured requests have left the queue,
    # so their waits are measured under the same load they were submitted into.
    loop.run_until(
        lambda: time.time() > tail_deadline or not pending.intersection(loop.outstanding())
    )
    load_s = time.time() - started
    cancelled = cancel_queued(loop.outstanding())
    unsettled = wait_settled([s.request_id for s in loop.submitted])
    stack.stop_workers()
    http_429 = sum(1 for entry in stack.emulator.log() if entry.get("status") == 429)
    return WindowRun(
        loop=loop,
        outcomes=collect(loop.submitted),
        window=window,
        info={
            "load_s": round(load_s, 1),
            "drained_itpm_tokens": drained,
            "submitted": len(loop.submitted),
            "cancelled_after_run": cancelled,
            "unsettled": unsettled,
            "rate_limit_errors": http_429,
            "ticks": loop.ticks,
            "ticks_found_empty": dict(loop.short_ticks),
        },
    )


@dataclass(frozen=True)
class Outcome:
    """A submitted request joined with its row after the run."""

    item: Submitted
    status: str
    created_at: float
    dispatched_at: float | None
    billed_tokens: int  # input + cache + output tokens the API billed (0 if no answer)

    @property
    def wait_s(self) -> float | None:
        return None if self.dispatched_at is None else self.dispatched_at - self.created_at


def collect(submitted: list[Submitted]) -> list[Outcome]:
    by_id = {s.request_id: s for s in submitted}
    rows = LLMRequest.objects.filter(pk__in=list(by_id)).values(
        "pk", "status", "created_at", "dispatched_at", "result"
    )
    outcomes = []
    for row in rows:
        usage: dict[str, Any] = (row["result"] or {}).get("usage") or {}
        billed = sum(
            int(usage.get(key) or 0)
            for key in (
                "input_tokens",
                "output_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
            )
        )
        outcomes.append(
            Outcome(
                item=by_id[row["pk"]],
                status=row["status"],
                created_at=row["created_at"].timestamp(),
                dispatched_at=row["dispatched_at"].timestamp() if row["dispatched_at"] else None,
                billed_tokens=billed,
            )
        )
    outcomes.sort(key=lambda o: o.item.request_id)
    return outcomes


def percentile(values: Iterable[float], q: float) -> float | None:
    """Linear-interpolated percentile (``q`` in 0..100), None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def jain_index(values: Iterable[float]) -> float | None:
    """(Σx)² / (n·Σx²): 1.0 when all equal, 1/n when one takes everything."""
    xs = list(values)
    squares = sum(x * x for x in xs)
    if not xs or squares == 0:
        return None
    return sum(xs) ** 2 / (len(xs) * squares)


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)
