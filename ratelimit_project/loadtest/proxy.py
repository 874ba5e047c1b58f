"""``loadtest proxy``: the Anthropic-compatible endpoint as an app sees it, beside the API itself.

One stack: a private Redis, the emulator upstream, ONE worker host (``llm_worker --threads T``)
and the endpoint served by the documented command (``manage.py serve --port P``: uvicorn, the
Anthropic API's own paths under ``/v1/``). Two arms make the same calls with the official SDK
(``llm_calls.client.app_client`` / ``async_app_client``, ``max_retries=0`` so every error a
caller would see is counted, not retried away): ``direct`` talks to the emulator, ``gateway``
to the endpoint with a gateway key (``queueing.auth.api_token_create``). Four phases, in order:

1. ``overhead`` — zero-latency emulator, ``calls`` sequential non-streaming rounds, each round a
   direct call then a gateway call (both see the same machine noise), after ``warmup`` rounds.
   ``added_latency_p50_ms`` = p50(gateway) − p50(direct); ``added_latency_p99_ms`` =
   p99(gateway) − p50(direct) (the ``overhead`` scenario's convention); ``paired_added_*`` are
   the percentiles of the per-round differences.
2. ``streaming`` — the emulator paces a stream (``stream_event_ms`` before each content delta,
   so the first token comes well before the last); ``stream_calls`` rounds of ``messages.stream``
   per arm. Time to first token = request start → the first ``text_delta`` event the SDK yields;
   ``stream_ttft_added_p50_ms`` = p50(gateway TTFT) − p50(direct TTFT).
3. ``holding`` — emulator latency ``latency_ms`` (2 s), no limits; ``clients`` (1,000) asyncio
   callers on the async SDK, each calling the gateway again as soon as its last call ends, for
   ``hold_s`` seconds (started over ``ramp_s``); then no new calls, and the calls still open get
   ``drain_cap_s`` to finish (what is still open after that is cancelled and counted as
   ``unfinished``). Every 0.2 s the emulator's in-flight gauge (``/_emulator/stats``), how many
   calls the callers have open, and the resident memory of the ``serve`` and worker processes
   together (``stack.rss_mb``). ``max_in_flight``: the emulator's own maximum since the phase
   began; ``mean_in_flight``: the gauge averaged over the hold window, from the first call
   upstream to the end of ``hold_s``; ``rss_mb``: the highest sample.
4. ``over_limit`` — the organization's limit is ``rpm`` requests per minute (ITPM and OTPM
   unlimited) for the model class of ``catalog.DEFAULT_SMALL_MODEL``: the workers get it
   through ``GATEWAY_RATE_LIMITS_JSON`` (``Stack(rate_limits=…)``, as every scenario), and the
   emulator is set to the same limit for this phase. Poisson arrivals at ``factor`` (3) × the
   limit for ``--duration`` seconds, each a caller that waits for its answer. With ``drain=1``
   (default) the gateway's RPM bucket is emptied first (as if a minute of traffic had just
   spent it; ``backlog.drain_limiter`` does the same for ITPM), so the steady window starts
   ``settle_s`` after the first arrival; with ``drain=0`` it starts once the full first bucket
   has run dry at the offered rate (``60 / (factor − 1)`` s) plus ``settle_s``.
   ``goodput_ratio`` = answers the callers got within the steady window ÷ what the limit
   allows in it (limit / 60 × window seconds); ``goodput_ratio_slope`` is the least-squares
   rate of those answers (``utilization.sustained_rate``) ÷ the limit's rate. When arrivals
   stop, the callers still waiting hang up (their queued requests must be cancelled by the
   gateway: ``rows_not_settled`` counts requests still queued, dispatched or running 20 s
   later).

``client_errors``: exceptions a gateway-arm caller saw in any phase (other than the
deliberate disconnects at the end of a phase); ``client_429s``: those that were HTTP 429.
``upstream_429s``: 429s the emulator sent the gateway (it waits and retries them; callers must
not see them). Percentiles are ``stack.percentile`` (nearest rank), as in ``overhead``.

``--duration`` sets phase 4's arrivals (default 50 s); ``--scale`` multiplies ``calls`` and
``stream_calls``. Options (``--opt k=v``): calls, warmup, stream_calls, stream_event_ms,
stream_output_tokens, clients, hold_s, ramp_s, drain_cap_s, latency_ms, threads, rpm, factor,
settle_s, drain, limit_latency_ms, seed. A smoke run: ``--opt calls=20 --opt stream_calls=5
--opt clients=50 --opt hold_s=3 --opt latency_ms=500 --opt threads=64 --duration 12``.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from argparse import ArgumentParser
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import close_old_connections

from llm_calls import catalog
from llm_calls.client import app_client, async_app_client
from queueing.auth import api_token_create
from queueing.limiter import get_limiter
from queueing.models import LLMRequest
from ratelimit_project.loadtest.backlog import MODEL, MODEL_CLASS
from ratelimit_project.loadtest.stack import (
    Stack,
    cpu_s,
    make_users,
    percentile,
    quiet_http_logs,
    rss_mb,
)
from ratelimit_project.loadtest.utilization import sustained_rate

# The AOF policy of the embedded Redis (the default deployment), not the test default "always".
REDIS_APPENDFSYNC = "everysec"
UNLIMITED = {"rpm": 0, "itpm": 0, "otpm": 0}
LIMITED_MODEL = catalog.DEFAULT_SMALL_MODEL
LIMITED_CLASS = catalog.model_class(LIMITED_MODEL)
DIRECT_KEY = "sk-ant-bench-direct"  # the direct arm's own key: its own emulator buckets
DEFAULT_DURATION_S = 50.0
DEFAULTS: dict[str, float] = {
    "calls": 200,
    "warmup": 10,
    "stream_calls": 50,
    "stream_event_ms": 20,
    "stream_output_tokens": 60,
    "clients": 1000,
    "hold_s": 20,
    "ramp_s": 1,
    "drain_cap_s": 60,
    "latency_ms": 2000,
    "threads": 1000,
    "rpm": 120,
    "factor": 3,
    "settle_s": 5,
    "drain": 1,
    "limit_latency_ms": 300,
    "seed": 1,
}
# One async SDK client (one connection pool of 1,000, the SDK's default) per this many callers.
CALLERS_PER_SDK_CLIENT = 500
SAMPLE_EVERY_S = 0.2
TARGETS = {
    "added_latency_p50_ms_max": 5.0,
    "added_latency_p99_ms_max": 20.0,
    "stream_ttft_added_p50_ms_max": 5.0,
    "max_in_flight_min": 500,
    "max_in_flight_moonshot": 1000,
    "rss_mb_max": 1024.0,
    "client_errors": 0,
    "client_429s": 0,
    "goodput_ratio_min": 0.97,
}


def add_arguments(parser: ArgumentParser) -> None:
    """No flags of its own: --duration, --scale, --chars-per-token and --opt k=v (see module doc)."""


# --- what a caller saw ----------------------------------------------------------------------


@dataclass
class Failures:
    """Exceptions callers saw, by HTTP status (or exception type when no response came)."""

    by_status: Counter[str] = field(default_factory=Counter)

    def add(self, error: BaseException) -> None:
        status = getattr(error, "status_code", None)
        self.by_status[str(status) if status else type(error).__name__] += 1

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def http_429(self) -> int:
        return self.by_status.get("429", 0)


def _messages(label: str, number: int, output_tokens: int) -> list[dict[str, Any]]:
    return [
        {
            "role": "user",
            "content": f"{label} call {number}: one short question. "
            f"[[emulator:output_tokens={output_tokens}]]",
        }
    ]


def _ms_since(began: float) -> float:
    return (time.perf_counter() - began) * 1000


def _summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(samples, 0.5), 3),
        "p90_ms": round(percentile(samples, 0.9), 3),
        "p99_ms": round(percentile(samples, 0.99), 3),
        "n": len(samples),
    }


@dataclass(frozen=True)
class Visit:
    """One gateway call as its caller saw it: the request id the gateway answered with
    (``x-gateway-request-id``) and when the call began and ended, in epoch seconds."""

    request_id: int
    began: float
    ended: float


def _visit(raw: Any, began: float) -> Visit | None:
    request_id = raw.headers.get("x-gateway-request-id")
    return Visit(int(request_id), began, time.time()) if request_id else None


STAGES = ("to_submit", "queued", "dispatch_to_start", "call", "to_caller")


def stage_breakdown(visits: list[Visit]) -> dict[str, dict[str, float]]:
    """Where a gateway call's time went, from the caller's clock and the request's row (one
    machine, one clock): ``to_submit`` = call began → row created (HTTP, key, body, submit);
    ``queued`` = created → dispatched; ``dispatch_to_start`` = dispatched → a worker thread
    started it; ``call`` = started → finished (the upstream call and its recording);
    ``to_caller`` = finished → the caller had the answer (done notice, row read, response)."""
    rows = {
        row["pk"]: row
        for row in LLMRequest.objects.filter(pk__in=[v.request_id for v in visits]).values(
            "pk", "created_at", "dispatched_at", "started_at", "finished_at"
        )
    }
    samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for visit in visits:
        row = rows.get(visit.request_id)
        if row is None:
            continue
        stamps = [row["created_at"], row["dispatched_at"], row["started_at"], row["finished_at"]]
        if any(stamp is None for stamp in stamps):
            continue
        moments = [visit.began, *(stamp.timestamp() for stamp in stamps if stamp), visit.ended]
        for stage, earlier, later in zip(STAGES, moments, moments[1:], strict=False):
            samples[stage].append((later - earlier) * 1000)
    return {stage: _summary(values) for stage, values in samples.items()}


# --- phase 1: sequential calls at zero latency ----------------------------------------------


def phase_overhead(
    *, direct_url: str, gateway_url: str, key: str, rounds: int, warmup: int
) -> dict[str, Any]:
    direct = app_client(base_url=direct_url, api_key=DIRECT_KEY, max_retries=0).with_options(
        timeout=30
    )
    gateway = app_client(base_url=gateway_url, api_key=key, max_retries=0).with_options(timeout=30)
    samples: dict[str, list[float]] = {"direct": [], "gateway": []}
    paired: list[float] = []
    visits: list[Visit] = []
    failures = {"direct": Failures(), "gateway": Failures()}
    try:
        for number in range(warmup + rounds):
            took: dict[str, float] = {}
            for arm, client in (("direct", direct), ("gateway", gateway)):
                began, began_at = time.perf_counter(), time.time()
                try:
                    raw = client.messages.with_raw_response.create(
                        model=MODEL,
                        max_tokens=64,
                        messages=_messages(arm, number, 20),  # type: ignore[arg-type]
                    )
                    raw.parse()
                except Exception as error:  # the SDK's errors: counted, the round goes on
                    failures[arm].add(error)
                    continue
                took[arm] = _ms_since(began)
                visit = _visit(raw, began_at) if arm == "gateway" else None
                if visit is not None and number >= warmup:
                    visits.append(visit)
            if number < warmup:  # the first rounds warm connections, caches and code paths
                continue
            for arm, ms in took.items():
                samples[arm].append(ms)
            if len(took) == 2:
                paired.append(took["gateway"] - took["direct"])
    finally:
        direct.close()
        gateway.close()
    direct_p50 = percentile(samples["direct"], 0.5)
    return {
        "rounds": rounds,
        "warmup_rounds": warmup,
        "added_latency_p50_ms": round(percentile(samples["gateway"], 0.5) - direct_p50, 3),
        "added_latency_p99_ms": round(percentile(samples["gateway"], 0.99) - direct_p50, 3),
        "paired_added_p50_ms": round(percentile(paired, 0.5), 3),
        "paired_added_p99_ms": round(percentile(paired, 0.99), 3),
        "direct": _summary(samples["direct"]),
        "gateway": _summary(samples["gateway"]),
        "gateway_stages": stage_breakdown(visits),
        "direct_errors": dict(failures["direct"].by_status),
        "client_errors": dict(failures["gateway"].by_status),
        "_failures": failures["gateway"],
    }


# --- phase 2: streams paced by the emulator -------------------------------------------------


def _stream_once(
    client: Any, *, label: str, number: int, output_tokens: int
) -> tuple[float, float]:
    """(ms to the first text delta, ms to the end of the stream)."""
    began = time.perf_counter()
    first: float | None = None
    with client.messages.stream(
        model=MODEL,
        max_tokens=output_tokens + 40,
        messages=_messages(label, number, output_tokens),
    ) as stream:
        for event in stream:
            if (
                first is None
                and event.type == "content_block_delta"
                and getattr(event.delta, "type", "") == "text_delta"
            ):
                first = _ms_since(began)
    total = _ms_since(began)
    if first is None:
        raise RuntimeError(f"{label} stream {number} ended without a text delta")
    return first, total


def phase_streaming(
    *, direct_url: str, gateway_url: str, key: str, rounds: int, warmup: int, output_tokens: int
) -> dict[str, Any]:
    direct = app_client(base_url=direct_url, api_key=DIRECT_KEY, max_retries=0).with_options(
        timeout=30
    )
    gateway = app_client(base_url=gateway_url, api_key=key, max_retries=0).with_options(timeout=30)
    ttft: dict[str, list[float]] = {"direct": [], "gateway": []}
    whole: dict[str, list[float]] = {"direct": [], "gateway": []}
    failures = {"direct": Failures(), "gateway": Failures()}
    try:
        for number in range(warmup + rounds):
            for arm, client in (("direct", direct), ("gateway", gateway)):
                try:
                    first, total = _stream_once(
                        client, label=f"stream-{arm}", number=number, output_tokens=output_tokens
                    )
                except Exception as error:
                    failures[arm].add(error)
                    continue
                if number >= warmup:
                    ttft[arm].append(first)
                    whole[arm].append(total)
    finally:
        direct.close()
        gateway.close()
    direct_ttft = percentile(ttft["direct"], 0.5)
    direct_whole = percentile(whole["direct"], 0.5)
    return {
        "rounds": rounds,
        "output_tokens": output_tokens,
        "stream_ttft_added_p50_ms": round(percentile(ttft["gateway"], 0.5) - direct_ttft, 3),
        "stream_ttft_added_p99_ms": round(percentile(ttft["gateway"], 0.99) - direct_ttft, 3),
        "stream_total_added_p50_ms": round(percentile(whole["gateway"], 0.5) - direct_whole, 3),
        "ttft": {arm: _summary(values) for arm, values in ttft.items()},
        "total": {arm: _summary(values) for arm, values in whole.items()},
        "direct_errors": dict(failures["direct"].by_status),
        "client_errors": dict(failures["gateway"].by_status),
        "_failures": failures["gateway"],
    }


# --- phase 3: a thousand callers holding calls open -----------------------------------------


class Sampler(threading.Thread):
    """Every 0.2 s: the emulator's in-flight gauge, the callers' open calls and the resident
    memory of the serve and worker processes together."""

    def __init__(self, *, stack: Stack, pids: list[int], open_calls: list[int]) -> None:
        super().__init__(name="proxy-sampler", daemon=True)
        self.stack = stack
        self.pids = pids
        self.open_calls = open_calls  # [n], updated by the event loop
        self.stop = threading.Event()
        self.samples: list[tuple[float, int, int]] = []  # (time.monotonic(), upstream, open)
        self.max_rss_mb = 0.0
        self.errors = 0

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_EVERY_S):
            self.max_rss_mb = max(self.max_rss_mb, rss_mb(self.pids))
            try:
                in_flight = int(self.stack.emulator.stats()["in_flight"])
            except Exception:  # a sample missed under load is not a failure of the gateway
                self.errors += 1
                continue
            self.samples.append((time.monotonic(), in_flight, self.open_calls[0]))


@dataclass
class HoldOutcome:
    latencies_ms: list[float] = field(default_factory=list)
    visits: list[Visit] = field(default_factory=list)
    failures: Failures = field(default_factory=Failures)
    open_calls: list[int] = field(default_factory=lambda: [0])
    unfinished: int = 0
    started: float = 0.0  # time.monotonic() of the first call
    started_at: float = 0.0  # the same moment, epoch seconds
    hold_end: float = 0.0  # no call starts after this
    ended: float = 0.0


async def _hold(
    *,
    url: str,
    key: str,
    clients: int,
    hold_s: float,
    ramp_s: float,
    drain_cap_s: float,
    outcome: HoldOutcome,
) -> None:
    sdks = [
        async_app_client(base_url=url, api_key=key, max_retries=0).with_options(timeout=300)
        for _ in range(math.ceil(clients / CALLERS_PER_SDK_CLIENT))
    ]
    outcome.started, outcome.started_at = time.monotonic(), time.time()
    outcome.hold_end = outcome.started + hold_s

    async def caller(number: int) -> None:
        sdk = sdks[number % len(sdks)]
        await asyncio.sleep(ramp_s * number / clients)
        turn = 0
        while time.monotonic() < outcome.hold_end:
            turn += 1
            began, began_at = time.perf_counter(), time.time()
            outcome.open_calls[0] += 1
            try:
                raw = await sdk.messages.with_raw_response.create(
                    model=MODEL,
                    max_tokens=100,
                    messages=_messages(f"holder {number}", turn, 50),  # type: ignore[arg-type]
                )
                await raw.parse()
            except asyncio.CancelledError:
                outcome.unfinished += 1
                raise
            except Exception as error:
                outcome.failures.add(error)
            else:
                outcome.latencies_ms.append(_ms_since(began))
                visit = _visit(raw, began_at)
                if visit is not None:
                    outcome.visits.append(visit)
            finally:
                outcome.open_calls[0] -= 1

    tasks = [asyncio.ensure_future(caller(n)) for n in range(clients)]
    _done, pending = await asyncio.wait(tasks, timeout=hold_s + drain_cap_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    outcome.ended = time.monotonic()
    for sdk in sdks:
        await sdk.close()


def _timeline(
    outcome: HoldOutcome,
    samples: list[tuple[float, int, int]],
    rows: Sequence[Mapping[str, Any]],
    *,
    bin_s: float,
) -> list[dict[str, float]]:
    """Per ``bin_s`` from the first call: requests the gateway took (rows created), calls a
    worker started, answers callers received, and the mean of the sampled gauges."""
    offset = outcome.started_at - outcome.started  # epoch - monotonic

    def index(epoch: float) -> int:
        return max(0, int((epoch - outcome.started_at) // bin_s))

    count = index(outcome.started_at + (outcome.ended - outcome.started)) + 1
    bins: list[dict[str, Any]] = [
        {
            "t_s": round(n * bin_s, 1),
            "submitted": 0,
            "started": 0,
            "answered": 0,
            "_up": [],
            "_open": [],
        }
        for n in range(count)
    ]

    def add(epoch: float, name: str) -> None:
        bins[min(count - 1, index(epoch))][name] += 1

    for row in rows:
        add(row["created_at"].timestamp(), "submitted")
        if row["started_at"] is not None:
            add(row["started_at"].timestamp(), "started")
    for visit in outcome.visits:
        add(visit.ended, "answered")
    for moment, upstream, open_calls in samples:
        slot = bins[min(count - 1, index(moment + offset))]
        slot["_up"].append(upstream)
        slot["_open"].append(open_calls)
    for slot in bins:
        up, opened = slot.pop("_up"), slot.pop("_open")
        slot["upstream_in_flight"] = round(sum(up) / len(up), 1) if up else 0.0
        slot["open_calls"] = round(sum(opened) / len(opened), 1) if opened else 0.0
    return bins


def _mean_in_hold(samples: list[tuple[float, int, int]], *, hold_end: float) -> float:
    """The emulator's gauge averaged from its first non-zero sample to the end of the hold (the
    host's first second and the drain after the hold are left out)."""
    window = [value for moment, value, _open in samples if moment <= hold_end]
    busy = [i for i, value in enumerate(window) if value > 0]
    if not busy:
        return 0.0
    kept = window[busy[0] :]
    return round(sum(kept) / len(kept), 1)


def phase_holding(
    stack: Stack,
    *,
    key: str,
    user: Any,
    clients: int,
    hold_s: float,
    ramp_s: float,
    drain_cap_s: float,
    latency_ms: float,
) -> dict[str, Any]:
    assert stack.serve is not None
    stack.emulator.reset()  # zero the in-flight maximum (and restore the startup config)
    stack.emulator.configure(latency_ms=latency_ms, stream_event_ms=0)
    pids = [stack.serve.pid, *(w.pid for w in stack.workers)]
    outcome = HoldOutcome()
    sampler = Sampler(stack=stack, pids=pids, open_calls=outcome.open_calls)
    cpu_before = {"serve": cpu_s([stack.serve.pid]), "worker": cpu_s(pids[1:])}
    sampler.start()
    try:
        asyncio.run(
            _hold(
                url=stack.serve_url,
                key=key,
                clients=clients,
                hold_s=hold_s,
                ramp_s=ramp_s,
                drain_cap_s=drain_cap_s,
                outcome=outcome,
            )
        )
    finally:
        sampler.stop.set()
        sampler.join()
    cpu_used = {
        "serve": cpu_s([stack.serve.pid]) - cpu_before["serve"],
        "worker": cpu_s(pids[1:]) - cpu_before["worker"],
    }
    stats = stack.emulator.stats()
    rss_after = rss_mb(pids)
    log = stack.emulator.log()
    rows = list(LLMRequest.objects.filter(user=user).values("status", "created_at", "started_at"))
    statuses = Counter(str(r["status"]) for r in rows)
    answered = len(outcome.latencies_ms)
    elapsed = outcome.ended - outcome.started
    in_hold = [s for s in sampler.samples if s[0] <= outcome.hold_end]
    return {
        "clients": clients,
        "hold_s": hold_s,
        "ramp_s": ramp_s,
        "emulator_latency_ms": latency_ms,
        "max_in_flight": int(stats["max_in_flight"]),
        "max_in_flight_sampled": max((s[1] for s in sampler.samples), default=0),
        "mean_in_flight": _mean_in_hold(sampler.samples, hold_end=outcome.hold_end),
        "mean_client_open_calls": round(sum(s[2] for s in in_hold) / max(1, len(in_hold)), 1),
        "rss_mb": round(sampler.max_rss_mb, 1),
        "rss_mb_after": round(rss_after, 1),
        "answered": answered,
        "answers_per_s": round(answered / elapsed, 1) if elapsed else 0.0,
        "client_latency": _summary(outcome.latencies_ms),
        "stages": stage_breakdown(outcome.visits),
        "unfinished": outcome.unfinished,
        "phase_s": round(elapsed, 1),
        "timeline": _timeline(outcome, sampler.samples, rows, bin_s=5.0 if hold_s >= 10 else 1.0),
        "rows": dict(statuses),
        "cpu_ms_per_answer": {
            name: round(seconds / max(1, answered) * 1000, 1) for name, seconds in cpu_used.items()
        },
        "upstream_calls": sum(1 for e in log if e["path"] == "/v1/messages"),
        "upstream_429s": sum(1 for e in log if e["status"] == 429),
        "sampler_misses": sampler.errors,
        "client_errors": dict(outcome.failures.by_status),
        "_failures": outcome.failures,
    }


# --- phase 4: three times the organization's limit ------------------------------------------


def drain_requests(model_class: str) -> int:
    """Take every request the gateway's RPM bucket of ``model_class`` holds (down to its
    admission headroom), as if a minute of traffic had just spent it; returns how many."""
    limiter = get_limiter()
    taken = 0
    while taken < 1_000_000:
        if not limiter.try_reserve(
            model_class=model_class, input_tokens=0, output_tokens=0
        ).admitted:
            break
        taken += 1
    return taken


@dataclass
class LimitOutcome:
    answered_at: list[float] = field(default_factory=list)  # epoch seconds
    latencies_ms: list[float] = field(default_factory=list)
    failures: Failures = field(default_factory=Failures)
    offered: int = 0
    disconnected: int = 0  # still waiting when arrivals stopped: the caller hung up


async def _over_limit(
    *,
    url: str,
    key: str,
    arrivals: list[float],
    start: float,
    grace_s: float,
    outcome: LimitOutcome,
) -> None:
    sdk = async_app_client(base_url=url, api_key=key, max_retries=0).with_options(timeout=300)

    async def caller(number: int) -> None:
        began = time.perf_counter()
        try:
            await sdk.messages.create(
                model=LIMITED_MODEL,
                max_tokens=60,
                messages=_messages("over-limit", number, 20),  # type: ignore[arg-type]
            )
        except asyncio.CancelledError:
            outcome.disconnected += 1
            raise
        except Exception as error:
            outcome.failures.add(error)
        else:
            outcome.answered_at.append(time.time())
            outcome.latencies_ms.append(_ms_since(began))

    tasks = []
    for number, at in enumerate(arrivals):
        delay = start + at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(caller(number)))
    outcome.offered = len(tasks)
    # Calls sent upstream just before the end finish; the rest are still queued: hang up.
    _done, pending = await asyncio.wait(tasks, timeout=grace_s) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await sdk.close()


ACTIVE = (LLMRequest.Status.QUEUED, LLMRequest.Status.DISPATCHED, LLMRequest.Status.RUNNING)


def _wait_settled(user: Any, timeout_s: float = 20.0) -> int:
    """Wait until none of ``user``'s requests is queued, dispatched or running; returns how
    many still are (a hung-up caller's queued request must be cancelled by the gateway)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = LLMRequest.objects.filter(user=user, status__in=ACTIVE).count()
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def phase_over_limit(
    stack: Stack,
    *,
    key: str,
    user: Any,
    rpm: int,
    factor: float,
    duration_s: float,
    settle_s: float,
    drain: bool,
    latency_ms: float,
    seed: int,
) -> dict[str, Any]:
    stack.emulator.reset()
    stack.emulator.configure(rpm=rpm, itpm=0, otpm=0, latency_ms=latency_ms, stream_event_ms=0)
    drained = drain_requests(LIMITED_CLASS) if drain else 0
    warmup_s = settle_s if drain else 60.0 / (factor - 1) + settle_s
    if duration_s <= warmup_s + 5:
        raise ValueError(
            f"--duration {duration_s:g} leaves no steady window in phase 4: warm-up is "
            f"{warmup_s:g} s (drain={int(drain)})"
        )
    rate = factor * rpm / 60.0
    rng = random.Random(seed)
    arrivals: list[float] = []
    at = 0.0
    while True:
        at += rng.expovariate(rate)
        if at >= duration_s:
            break
        arrivals.append(at)
    outcome = LimitOutcome()
    start = time.time() + 0.2
    asyncio.run(
        _over_limit(
            url=stack.serve_url,
            key=key,
            arrivals=arrivals,
            start=start,
            grace_s=max(1.0, 2 * latency_ms / 1000),
            outcome=outcome,
        )
    )
    t_window, t_end = start + warmup_s, start + duration_s
    window_s = t_end - t_window
    in_window = [moment for moment in outcome.answered_at if t_window < moment <= t_end]
    allowed = rpm / 60.0 * window_s
    slope = sustained_rate(
        [(moment, 1) for moment in sorted(in_window)], t_from=t_window, t_to=t_end
    )
    left = _wait_settled(user)
    rows = Counter(
        str(s) for s in LLMRequest.objects.filter(user=user).values_list("status", flat=True)
    )
    log = stack.emulator.log()
    return {
        "model": LIMITED_MODEL,
        "limit_rpm": rpm,
        "offered_load_factor": factor,
        "arrival_rate_per_s": round(rate, 3),
        "duration_s": duration_s,
        "drained_requests": drained,
        "warmup_s": warmup_s,
        "steady_window_s": round(window_s, 1),
        "offered": outcome.offered,
        "answered": len(outcome.answered_at),
        "answered_in_window": len(in_window),
        "allowed_in_window": round(allowed, 1),
        "goodput_ratio": round(len(in_window) / allowed, 4) if allowed else 0.0,
        "goodput_ratio_slope": round(slope / (rpm / 60.0), 4),
        "client_latency": _summary(outcome.latencies_ms),
        "disconnected_while_waiting": outcome.disconnected,
        "rows": dict(rows),
        "rows_not_settled": left,
        "upstream_calls": sum(1 for e in log if e["path"] == "/v1/messages"),
        "upstream_429s": sum(1 for e in log if e["status"] == 429),
        "client_errors": dict(outcome.failures.by_status),
        "_failures": outcome.failures,
    }


# --- the run --------------------------------------------------------------------------------


def _upstream_429s(stack: Stack) -> int:
    return sum(1 for e in stack.emulator.log() if e["status"] == 429)


def run(options: dict[str, Any]) -> dict[str, Any]:
    extra = options.get("extra") or {}
    unknown = set(extra) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown --opt {sorted(unknown)}; known: {', '.join(sorted(DEFAULTS))}")
    cfg = {key: float(extra.get(key, default)) for key, default in DEFAULTS.items()}
    scale = float(options.get("scale") or 1.0)
    rounds = max(5, int(cfg["calls"] * scale))
    stream_rounds = max(3, int(cfg["stream_calls"] * scale))
    warmup = int(cfg["warmup"])
    clients = int(cfg["clients"])
    threads = int(cfg["threads"])
    rpm = int(cfg["rpm"])
    factor = cfg["factor"]
    if factor <= 1:
        raise ValueError(f"factor must be > 1 (offered load above the limit), got {factor:g}")
    duration_s = float(options.get("duration") or DEFAULT_DURATION_S)
    began = time.monotonic()
    with (
        quiet_http_logs(),
        Stack(
            emulator={
                **UNLIMITED,
                "latency_ms": 0,
                "seed": int(cfg["seed"]),
                "chars_per_token": float(options.get("chars_per_token") or 4.0),
            },
            # Phases 1-3 on a class without limits; phase 4 on one limited to `rpm`.
            rate_limits={
                MODEL_CLASS: UNLIMITED,
                LIMITED_CLASS: {"rpm": rpm, "itpm": 0, "otpm": 0},
            },
            redis_appendfsync=REDIS_APPENDFSYNC,
            debug=False,  # production settings: DEBUG off
        ) as stack,
    ):
        users = make_users(count=3, prefix="proxy")
        keys = [
            api_token_create(user=user, name=f"proxy bench {n}")[1] for n, user in enumerate(users)
        ]
        close_old_connections()
        stack.start_worker(threads=threads)
        stack.start_serve()
        stack.wait_for_workers(threads=threads, timeout_s=120 + threads / 10)
        setup_s = time.monotonic() - began

        phases: dict[str, dict[str, Any]] = {}
        stack.emulator.configure(latency_ms=0, stream_event_ms=0)
        phases["overhead"] = phase_overhead(
            direct_url=stack.emulator.base_url,
            gateway_url=stack.serve_url,
            key=keys[0],
            rounds=rounds,
            warmup=warmup,
        )
        stack.emulator.configure(stream_event_ms=cfg["stream_event_ms"])
        phases["streaming"] = phase_streaming(
            direct_url=stack.emulator.base_url,
            gateway_url=stack.serve_url,
            key=keys[0],
            rounds=stream_rounds,
            warmup=min(warmup, 3),
            output_tokens=int(cfg["stream_output_tokens"]),
        )
        phases["overhead"]["upstream_429s"] = _upstream_429s(stack)  # phases 1 and 2
        phases["holding"] = phase_holding(
            stack,
            key=keys[1],
            user=users[1],
            clients=clients,
            hold_s=cfg["hold_s"],
            ramp_s=cfg["ramp_s"],
            drain_cap_s=cfg["drain_cap_s"],
            latency_ms=cfg["latency_ms"],
        )
        phases["over_limit"] = phase_over_limit(
            stack,
            key=keys[2],
            user=users[2],
            rpm=rpm,
            factor=factor,
            duration_s=duration_s,
            settle_s=cfg["settle_s"],
            drain=bool(int(cfg["drain"])),
            latency_ms=cfg["limit_latency_ms"],
            seed=int(cfg["seed"]),
        )
        workers_alive = all(w.poll() is None for w in stack.workers)
        serve_alive = stack.serve is not None and stack.serve.poll() is None
        stack.stop_workers(graceful=False)
    total_s = time.monotonic() - began

    failures = [phase.pop("_failures") for phase in phases.values()]
    client_errors = sum(f.total for f in failures)
    client_429s = sum(f.http_429 for f in failures)
    overhead, streaming = phases["overhead"], phases["streaming"]
    holding, over_limit = phases["holding"], phases["over_limit"]
    result = {
        "scenario": "proxy",
        "model": MODEL,
        "command": f"manage.py serve --port P + llm_worker --threads {threads}",
        "added_latency_p50_ms": overhead["added_latency_p50_ms"],
        "added_latency_p99_ms": overhead["added_latency_p99_ms"],
        "stream_ttft_added_p50_ms": streaming["stream_ttft_added_p50_ms"],
        "clients": clients,
        "max_in_flight": holding["max_in_flight"],
        "mean_in_flight": holding["mean_in_flight"],
        "rss_mb": holding["rss_mb"],
        "client_errors": client_errors,
        "client_429s": client_429s,
        "goodput_ratio": over_limit["goodput_ratio"],
        "upstream_429s": overhead["upstream_429s"]
        + holding["upstream_429s"]
        + over_limit["upstream_429s"],
        "worker_threads": threads,
        "phases": phases,
        "processes_alive_at_end": {"serve": serve_alive, "worker": workers_alive},
        "database": _db_engine(),
        "timings_s": {"setup": round(setup_s, 1), "total": round(total_s, 1)},
        "targets": TARGETS,
    }
    result["met"] = {
        "added_latency_p50": result["added_latency_p50_ms"] <= TARGETS["added_latency_p50_ms_max"],
        "added_latency_p99": result["added_latency_p99_ms"] <= TARGETS["added_latency_p99_ms_max"],
        "stream_ttft_added_p50": result["stream_ttft_added_p50_ms"]
        <= TARGETS["stream_ttft_added_p50_ms_max"],
        "in_flight": result["max_in_flight"] >= min(TARGETS["max_in_flight_min"], clients / 2),
        "in_flight_moonshot": result["max_in_flight"]
        >= min(TARGETS["max_in_flight_moonshot"], clients),
        "in_flight_sustained": result["mean_in_flight"]
        >= min(TARGETS["max_in_flight_min"], clients / 2),
        "rss": result["rss_mb"] < TARGETS["rss_mb_max"],
        "client_errors": client_errors == 0,
        "client_429s": client_429s == 0,
        "goodput": result["goodput_ratio"] >= TARGETS["goodput_ratio_min"],
    }
    return result


def _db_engine() -> str:
    from django.db import connection

    return "sqlite (WAL)" if connection.vendor == "sqlite" else str(connection.vendor)
