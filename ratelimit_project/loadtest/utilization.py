"""``loadtest utilization``: how much of the rate limit turns into answers, and at what price in 429s.

One emulator with small per-minute limits (default RPM 120 / ITPM 60,000 / OTPM 12,000 per API
key) and 300-800 ms of latency. One request stream — mixed prompt sizes (~150 to ~2,100 tokens
at 4 characters per token) and output lengths — arrives at ``factor`` (3) times the rate the
binding limit sustains, for ``--duration`` seconds, and is fed to two arms AT THE SAME TIME, each
with its own API key (the emulator keeps buckets per key, so they do not share capacity):

- ``pipeline``: ``queueing.services.submit_request`` on arrival; one worker host
  (``llm_worker --threads <concurrency>``) with the fair scheduler, the Redis limiter and our
  retry policy makes the calls.
- ``naive``: what an app does without the gateway: on arrival, a call with the official SDK and
  its default retries (``max_retries=2``, honouring ``retry-after``) on a pool of the same
  ``concurrency`` threads; no queue, no limiter.

Figures, per arm, from the emulator itself (ledger = what it accepted and billed, log = every
HTTP response including 429s):

- ``goodput_ratio``: the rate at which the emulator accepted tokens of the binding dimension
  in the steady window ÷ the rate its limit allows (limit / 60 per second). The rate is the
  least-squares slope of cumulative accepted tokens over the window (sampled every 0.25 s), so
  it does not depend on how full the bucket happens to be at the window's two edges (a
  gateway that keeps 2% headroom hovers a little higher than one that does not, which is
  not lost throughput). The window runs from ``warmup_s`` after the first arrival to the end
  of the arrivals; warm-up is the time the first full bucket (one minute of capacity) takes to
  run dry at the offered rate — ``60 / (factor - 1)`` s — plus ``settle_s`` (10 s).
  Two window-total variants are reported beside it, per dimension:
  ``accepted_over_refill_by_dimension`` = accepted in the window ÷ limit × window (can exceed
  1 while leftover burst capacity drains) and ``window_total_goodput_by_dimension`` = accepted
  ÷ (limit × window + what was still in the bucket when the window opened) (cannot exceed 1,
  and counts the level kept at the window's end as unused). ``bucket_level_at_window_*`` are
  the levels replayed from the ledger, as a fraction of capacity. Tokens are counted at
  billing time, 0.3-0.8 s after admission.
- ``rate_limit_errors``: 429s the emulator sent to the arm (``..._after_warmup``: in the window).
- ``requests_ok`` / ``requests_failed``: answers the caller got / errors the caller saw.
  ``requests_unfinished`` (pipeline only): requests still queued when arrivals stopped; at 3×
  overload two thirds of the offered load cannot be served in the window by anyone. The
  harness cancels them (they would be served later); they are neither ok nor failed.
- ``p50_latency_ms`` / ``p95_latency_ms``: submit → answer of the requests that succeeded. For
  the pipeline this is mostly queue wait, which grows through an overloaded run (a queue turns
  excess load into waiting instead of errors); ``p50_call_ms`` is the call alone.

``--chars-per-token`` changes how the emulator counts tokens, so the gateway's local estimate
(4 chars/token) is wrong by that much; the offered rate is computed from the emulator's true
counts, so the offered load stays ``factor`` × the binding limit. ``--scale`` multiplies the
limits (and with them the offered load). Options (``--opt k=v``): factor, concurrency, users,
latency_ms, slow_ms, slow_rate, settle_s, seed, rpm, itpm, otpm.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from argparse import ArgumentParser
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.db import close_old_connections

from llm_calls.client import naive_client
from llm_calls.emulator.ledger import key_fingerprint
from llm_calls.tokens import estimate_input_tokens
from queueing import services
from queueing.models import LLMRequest
from ratelimit_project.loadtest.backlog import MODEL, MODEL_CLASS
from ratelimit_project.loadtest.stack import Stack, make_users, percentile, quiet_http_logs

# The AOF policy of the embedded Redis (the default deployment), not the test default "always".
REDIS_APPENDFSYNC = "everysec"
PIPELINE_KEY = "sk-ant-bench-key"  # what Stack gives the gateway
NAIVE_KEY = "sk-ant-bench-naive"
DEFAULT_DURATION_S = 90.0
DEFAULTS: dict[str, float] = {
    "factor": 3.0,
    "concurrency": 32,
    "users": 4,
    "latency_ms": 300.0,  # every response takes this long ...
    "slow_ms": 500.0,  # ... plus this much for a `slow_rate` share of them: 300 or 800 ms
    "slow_rate": 0.5,
    "settle_s": 10.0,
    "seed": 1,
    "rpm": 120,
    "itpm": 60_000,
    "otpm": 12_000,
}
# Prompt sizes in characters (~150 .. ~2,100 tokens at 4 chars/token, mean ~1,000 tokens): big
# enough that input tokens bind before requests or output tokens at every chars-per-token tried.
PROMPT_CHARS = (600, 1500, 3000, 4500, 6000, 8400)
OUTPUT_TOKENS = (20, 140)  # uniform range; max_tokens leaves room above it
MAX_TOKENS_SLACK = 60
DIMENSIONS = ("rpm", "itpm", "otpm")

WORDS = [
    "ledger",
    "invoice",
    "shipment",
    "warranty",
    "refund",
    "account",
    "parcel",
    "routing",
    "quota",
    "tariff",
    "schedule",
    "summary",
    "policy",
    "contract",
    "renewal",
    "audit",
    "forecast",
    "budget",
    "region",
    "channel",
    "segment",
]


def add_arguments(parser: ArgumentParser) -> None:
    """No flags of its own: --duration, --scale, --chars-per-token and --opt k=v (see module doc)."""


# --- the workload ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    number: int
    at_s: float  # seconds after the start
    user_index: int
    text: str
    max_tokens: int
    output_tokens: int

    def messages(self) -> list[dict[str, Any]]:
        return [{"role": "user", "content": self.text}]

    def body(self) -> dict[str, Any]:
        return {"model": MODEL, "max_tokens": self.max_tokens, "messages": self.messages()}


def _prompt(rng: random.Random, chars: int, number: int, output_tokens: int) -> str:
    directive = f" [[emulator:output_tokens={output_tokens}]]"
    head = f"Request {number}: summarise the following notes. "
    words: list[str] = []
    length = len(head) + len(directive)
    while length < chars:
        word = rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    return (head + " ".join(words))[: chars - len(directive)] + directive


def demand_per_request(offers: list[Offer], chars_per_token: float) -> dict[str, float]:
    """Mean charge of one request in each dimension, as the emulator counts it."""
    inputs = [estimate_input_tokens(o.body(), chars_per_token) for o in offers]
    return {
        "rpm": 1.0,
        "itpm": statistics.fmean(inputs),
        "otpm": statistics.fmean(o.output_tokens for o in offers),
    }


def build_offers(
    *,
    seed: int,
    duration_s: float,
    factor: float,
    limits: dict[str, int],
    chars_per_token: float,
    users: int,
) -> tuple[list[Offer], float, dict[str, float], str]:
    """The arrival schedule: Poisson arrivals at ``factor`` × the rate the binding limit allows.

    Returns (offers, arrival rate per second, offered load ÷ limit per dimension, binding).
    """
    rng = random.Random(seed)
    sample = [_offer(rng, n, 0.0, users) for n in range(400)]
    per_request = demand_per_request(sample, chars_per_token)
    sustainable = {dim: limits[dim] / 60.0 / per_request[dim] for dim in DIMENSIONS if limits[dim]}
    binding = min(sustainable, key=lambda dim: sustainable[dim])
    rate = factor * sustainable[binding]
    rng = random.Random(seed)
    offers: list[Offer] = []
    at = 0.0
    while True:
        at += rng.expovariate(rate)
        if at >= duration_s:
            break
        offers.append(_offer(rng, len(offers), at, users))
    offered = {dim: rate / sustainable[dim] for dim in sustainable}
    return offers, rate, offered, binding


def _offer(rng: random.Random, number: int, at: float, users: int) -> Offer:
    chars = rng.choice(PROMPT_CHARS)
    output_tokens = rng.randint(*OUTPUT_TOKENS)
    return Offer(
        number=number,
        at_s=at,
        user_index=number % users,
        text=_prompt(rng, chars, number, output_tokens),
        max_tokens=output_tokens + MAX_TOKENS_SLACK,
        output_tokens=output_tokens,
    )


# --- the arms ----------------------------------------------------------------------------------


@dataclass
class NaiveOutcome:
    ok_latencies_ms: list[float] = field(default_factory=list)
    failed: int = 0
    failure_statuses: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def run_naive(
    *, offers: list[Offer], start: float, base_url: str, concurrency: int
) -> NaiveOutcome:
    """Each arrival becomes one SDK call (default retries) on a pool of ``concurrency`` threads."""
    client = naive_client(base_url=base_url, api_key=NAIVE_KEY)
    outcome = NaiveOutcome()

    def call(offer: Offer) -> None:
        with outcome.lock:
            outcome.in_flight += 1
            outcome.max_in_flight = max(outcome.max_in_flight, outcome.in_flight)
        began = time.perf_counter()
        try:
            client.messages.create(
                model=MODEL,
                max_tokens=offer.max_tokens,
                messages=offer.messages(),  # type: ignore[arg-type]
            )
        except Exception as error:  # the SDK's errors; the status says which
            status = str(getattr(error, "status_code", None) or type(error).__name__)
            with outcome.lock:
                outcome.failed += 1
                outcome.failure_statuses[status] = outcome.failure_statuses.get(status, 0) + 1
        else:
            with outcome.lock:
                outcome.ok_latencies_ms.append((time.perf_counter() - began) * 1000)
        finally:
            with outcome.lock:
                outcome.in_flight -= 1

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="naive") as pool:
        for offer in offers:
            _sleep_until(start + offer.at_s)
            pool.submit(call, offer)
    client.close()
    return outcome


def run_pipeline_submitter(
    *, offers: list[Offer], start: float, users: list[Any], submitted: list[int]
) -> None:
    """``submit_request`` on each arrival, as an application would; the ids go to ``submitted``."""
    try:
        for offer in offers:
            _sleep_until(start + offer.at_s)
            row = services.submit_request(
                user=users[offer.user_index],
                session_id=f"util-{offer.number}",
                model=MODEL,
                messages=offer.messages(),
                max_tokens=offer.max_tokens,
                priority="query",
            )
            submitted.append(row.pk)
    finally:
        close_old_connections()


def finish_pipeline(*, submitted: list[int], timeout_s: float = 60.0) -> int:
    """Cancel what is still queued (returns how many) and wait for the calls in flight."""
    unfinished = 0
    for row in LLMRequest.objects.filter(pk__in=submitted, status=LLMRequest.Status.QUEUED):
        try:
            services.cancel_request(request=row, by_user=row.user)
        except services.CannotCancel:
            continue  # dispatched meanwhile: it finishes below
        unfinished += 1
    deadline = time.monotonic() + timeout_s
    active = (LLMRequest.Status.DISPATCHED, LLMRequest.Status.RUNNING)
    while LLMRequest.objects.filter(pk__in=submitted, status__in=active).exists():
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return unfinished


def pipeline_figures(submitted: list[int]) -> dict[str, Any]:
    rows = list(
        LLMRequest.objects.filter(pk__in=submitted).values(
            "status", "created_at", "dispatched_at", "started_at", "finished_at", "attempts"
        )
    )
    # A succeeded row has every timestamp.
    done = [
        r
        for r in rows
        if r["status"] == LLMRequest.Status.SUCCEEDED
        and None not in (r["finished_at"], r["started_at"], r["dispatched_at"])
    ]

    def ms(later: Any, earlier: Any) -> float:
        return float((later - earlier).total_seconds() * 1000)

    latencies = [ms(r["finished_at"], r["created_at"]) for r in done]
    calls = [ms(r["finished_at"], r["started_at"]) for r in done]
    waits = [ms(r["dispatched_at"], r["created_at"]) for r in done]
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    return {
        "requests_offered": len(submitted),
        "requests_ok": len(done),
        "requests_failed": statuses.get(LLMRequest.Status.FAILED, 0)
        + statuses.get(LLMRequest.Status.REJECTED, 0),
        "statuses": statuses,
        "p50_latency_ms": round(percentile(latencies, 0.5), 1),
        "p95_latency_ms": round(percentile(latencies, 0.95), 1),
        "p50_queue_wait_ms": round(percentile(waits, 0.5), 1),
        "p50_call_ms": round(percentile(calls, 0.5), 1),
        "p95_call_ms": round(percentile(calls, 0.95), 1),
        "retried_requests": sum(1 for r in done if (r["attempts"] or 0) > 1),
    }


# --- what the emulator saw -------------------------------------------------------------------


def bucket_level(
    charges: list[tuple[float, int]], *, limit: int, t_start: float, at: float
) -> float:
    """The emulator's bucket level at ``at``, replayed from what it accepted (time-ordered
    ``(time, amount)``): full at ``t_start``, refilled at limit/60 per second, capped at the
    limit. Charges are placed at billing time, slightly after the real admission."""
    rate = limit / 60.0
    level, moment = float(limit), t_start
    for when, amount in charges:
        if when > at:
            break
        level = min(float(limit), level + rate * max(0.0, when - moment)) - amount
        moment = max(moment, when)
    return min(float(limit), level + rate * max(0.0, at - moment))


def sustained_rate(
    charges: list[tuple[float, int]], *, t_from: float, t_to: float, step_s: float = 0.25
) -> float:
    """Least-squares slope (units per second) of cumulative accepted units over [t_from, t_to],
    sampled every ``step_s``. Unlike accepted ÷ window, it does not depend on how full the
    bucket happens to be at the two edges of the window, only on the rate in between."""
    inside = [(when, amount) for when, amount in charges if t_from < when <= t_to]
    points: list[tuple[float, float]] = []
    total, index = 0.0, 0
    moment = t_from
    while moment <= t_to:
        while index < len(inside) and inside[index][0] <= moment:
            total += inside[index][1]
            index += 1
        points.append((moment - t_from, total))
        moment += step_s
    if len(points) < 2:
        return 0.0
    mean_t = statistics.fmean(t for t, _ in points)
    mean_a = statistics.fmean(a for _, a in points)
    var_t = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (a - mean_a) for t, a in points) / var_t


def emulator_figures(
    *,
    ledger: dict[str, Any],
    log: list[dict[str, Any]],
    api_key: str,
    limits: dict[str, int],
    binding: str,
    t_start: float,
    t_window: float,
    t_end: float,
) -> dict[str, Any]:
    """Goodput and 429s of one API key, from the emulator's ledger and request log."""
    fingerprint = key_fingerprint(api_key)
    entries = ledger["keys"].get(fingerprint, {"requests": []})["requests"]

    def charge(entry: dict[str, Any], dim: str) -> int:
        usage = entry["usage"]
        if dim == "rpm":
            return 1
        if dim == "itpm":  # cache-aware: reads are free on this model
            return int(usage["input_tokens"] + usage["cache_creation_input_tokens"])
        return int(usage["output_tokens"])

    window_s = t_end - t_window
    goodput: dict[str, float] = {}
    window_total: dict[str, float] = {}
    refill_only: dict[str, float] = {}
    levels: dict[str, dict[str, float]] = {}
    ordered = sorted(entries, key=lambda e: e["time"])
    for dim in DIMENSIONS:
        limit = limits[dim]
        if not limit:
            continue
        charges = [(e["time"], charge(e, dim)) for e in ordered]
        refill = limit / 60.0 * window_s
        accepted = sum(amount for moment, amount in charges if t_window < moment <= t_end)
        level_start = bucket_level(charges, limit=limit, t_start=t_start, at=t_window)
        level_end = bucket_level(charges, limit=limit, t_start=t_start, at=t_end)
        goodput[dim] = round(
            sustained_rate(charges, t_from=t_window, t_to=t_end) / (limit / 60.0), 4
        )
        window_total[dim] = round(accepted / (refill + max(0.0, level_start)), 4)
        refill_only[dim] = round(accepted / refill, 4)
        levels[dim] = {"start": round(level_start / limit, 3), "end": round(level_end / limit, 3)}
    mine = [e for e in log if e["key_fingerprint"] == fingerprint and e["path"] == "/v1/messages"]
    limited = [e for e in mine if e["status"] == 429]
    return {
        "goodput_ratio": goodput.get(binding, 0.0),
        "goodput_by_dimension": goodput,
        "window_total_goodput_by_dimension": window_total,
        "accepted_over_refill_by_dimension": refill_only,
        "bucket_level_at_window_start": {d: v["start"] for d, v in levels.items()},
        "bucket_level_at_window_end": {d: v["end"] for d, v in levels.items()},
        "rate_limit_errors": len(limited),
        "rate_limit_errors_after_warmup": sum(1 for e in limited if e["time"] > t_window),
        "http_requests": len(mine),
        "billed_requests": len(entries),
    }


def run(options: dict[str, Any]) -> dict[str, Any]:
    extra = options.get("extra") or {}
    unknown = set(extra) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown --opt {sorted(unknown)}; known: {', '.join(sorted(DEFAULTS))}")
    cfg = {key: float(extra.get(key, default)) for key, default in DEFAULTS.items()}
    scale = float(options.get("scale") or 1.0)
    limits = {dim: int(cfg[dim] * scale) for dim in DIMENSIONS}
    factor = cfg["factor"]
    if factor <= 1:
        raise ValueError(f"factor must be > 1 (offered load above the limit), got {factor}")
    duration_s = float(options.get("duration") or DEFAULT_DURATION_S)
    chars_per_token = float(options.get("chars_per_token") or 4.0)
    warmup_s = 60.0 / (factor - 1) + cfg["settle_s"]
    if duration_s <= warmup_s + 10:
        raise ValueError(
            f"--duration {duration_s:g} leaves no steady window: warm-up alone is {warmup_s:g} s"
        )
    concurrency = int(cfg["concurrency"])
    offers, rate, offered, binding = build_offers(
        seed=int(cfg["seed"]),
        duration_s=duration_s,
        factor=factor,
        limits=limits,
        chars_per_token=chars_per_token,
        users=int(cfg["users"]),
    )

    began = time.monotonic()
    with (
        quiet_http_logs(),
        Stack(
            emulator={
                **limits,
                "latency_ms": cfg["latency_ms"],
                "fault_rate_slow": cfg["slow_rate"],
                "slow_ms": cfg["slow_ms"],
                "seed": int(cfg["seed"]),
                "chars_per_token": chars_per_token,
            },
            rate_limits={MODEL_CLASS: limits},
            redis_appendfsync=REDIS_APPENDFSYNC,
            debug=False,  # production settings: DEBUG off
        ) as stack,
    ):
        users = make_users(count=int(cfg["users"]), prefix="util")
        stack.start_worker(threads=concurrency)
        stack.wait_for_workers(threads=concurrency)
        submitted: list[int] = []
        start = time.monotonic() + 0.5
        t_start = time.time() + 0.5
        setup_s = start - began
        submitter = threading.Thread(
            target=run_pipeline_submitter,
            kwargs={"offers": offers, "start": start, "users": users, "submitted": submitted},
            name="pipeline-submitter",
        )
        naive_result: list[NaiveOutcome] = []
        naive = threading.Thread(
            target=lambda: naive_result.append(
                run_naive(
                    offers=offers,
                    start=start,
                    base_url=stack.emulator.base_url,
                    concurrency=concurrency,
                )
            ),
            name="naive-arm",
        )
        submitter.start()
        naive.start()
        submitter.join()
        t_end = t_start + duration_s
        unfinished = finish_pipeline(submitted=submitted)
        naive.join()
        ledger = stack.emulator.ledger()
        log = stack.emulator.log()
        pipeline = pipeline_figures(submitted)
        stack.stop_workers(graceful=False)  # nothing is in flight any more
        finished = time.monotonic()

    window = {"t_start": t_start, "t_window": t_start + warmup_s, "t_end": t_end}
    pipeline.update(
        emulator_figures(
            ledger=ledger, log=log, api_key=PIPELINE_KEY, limits=limits, binding=binding, **window
        )
    )
    pipeline["requests_unfinished"] = unfinished
    naive_outcome = naive_result[0]
    naive_figures = {
        "requests_offered": len(offers),
        "requests_ok": len(naive_outcome.ok_latencies_ms),
        "requests_failed": naive_outcome.failed,
        "failures_by_status": naive_outcome.failure_statuses,
        "p50_latency_ms": round(percentile(naive_outcome.ok_latencies_ms, 0.5), 1),
        "p95_latency_ms": round(percentile(naive_outcome.ok_latencies_ms, 0.95), 1),
        "max_in_flight": naive_outcome.max_in_flight,
        **emulator_figures(
            ledger=ledger, log=log, api_key=NAIVE_KEY, limits=limits, binding=binding, **window
        ),
    }
    targets = {"pipeline_goodput_ratio_min": 0.97, "pipeline_rate_limit_errors_after_warmup": 0}
    return {
        "scenario": "utilization",
        "model": MODEL,
        "limits": limits,
        "binding_dimension": binding,
        "offered_load_factor": round(offered[binding], 3),
        "offered_load_by_dimension": {d: round(v, 3) for d, v in offered.items()},
        "arrival_rate_per_s": round(rate, 3),
        "chars_per_token": chars_per_token,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "steady_window_s": round(duration_s - warmup_s, 1),
        "concurrency": concurrency,
        "emulator_latency_ms": f"{cfg['latency_ms']:g} or {cfg['latency_ms'] + cfg['slow_ms']:g} "
        f"({cfg['slow_rate']:.0%} of calls)",
        "pipeline": pipeline,
        "naive": naive_figures,
        "timings_s": {
            "setup": round(setup_s, 1),
            "load": duration_s,
            "finish": round(finished - start - duration_s, 1),
        },
        "targets": targets,
        "targets_met": {
            "pipeline_goodput": pipeline["goodput_ratio"] >= targets["pipeline_goodput_ratio_min"],
            "pipeline_zero_429_after_warmup": pipeline["rate_limit_errors_after_warmup"] == 0,
            "pipeline_zero_failed": pipeline["requests_failed"] == 0,
        },
    }
