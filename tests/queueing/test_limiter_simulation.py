"""The limiter's design target, in simulated time against a model of Anthropic's buckets.

Offered load is 3x the limit and the client's input estimates are 30% wrong (both ways, with
per-request noise); requests take 0.5-3 s. The real Redis limiter (explicit ``now``) gates every
call, learns from the simulated server's headers, reconciles with actual usage and learns the
estimate factor. After a warm-up the server must never answer 429, and the binding bucket must
be used at >= 97% of its limit.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from queueing.limiter import Limits, RedisRateLimiter, Reservation

T0 = 1_900_000_000.0
LIMITS = Limits(rpm=50, itpm=30_000, otpm=8_000)


class Bucket:
    """Anthropic's continuously refilled bucket (capacity = limit, refill = limit / 60 per s)."""

    def __init__(self, limit: int, now: float) -> None:
        self.limit = limit
        self.level = float(limit)
        self.at = now

    def refill(self, now: float) -> None:
        self.level = min(self.limit, self.level + (now - self.at) * self.limit / 60)
        self.at = now

    def fits(self, amount: int) -> bool:
        return self.level >= min(amount, self.limit)

    def seconds_until_full(self) -> float:
        return max(0.0, (self.limit - self.level) * 60 / self.limit)


class SimulatedAnthropic:
    """ITPM charged on arrival, OTPM reserves max_tokens and refunds the unused part at the end."""

    def __init__(self, now: float) -> None:
        self.buckets = {
            "requests": Bucket(LIMITS.rpm, now),
            "input-tokens": Bucket(LIMITS.itpm, now),
            "output-tokens": Bucket(LIMITS.otpm, now),
        }
        self.rate_limited = 0

    def admit(self, *, input_tokens: int, max_tokens: int, now: float) -> bool:
        need = {"requests": 1, "input-tokens": input_tokens, "output-tokens": max_tokens}
        for bucket in self.buckets.values():
            bucket.refill(now)
        if not all(self.buckets[name].fits(amount) for name, amount in need.items()):
            self.rate_limited += 1
            return False
        for name, amount in need.items():
            self.buckets[name].level -= amount
        return True

    def finish(self, *, max_tokens: int, output_tokens: int, now: float) -> None:
        bucket = self.buckets["output-tokens"]
        bucket.refill(now)
        bucket.level = min(bucket.limit, bucket.level + max_tokens - output_tokens)

    def headers(self, now: float) -> dict[str, str]:
        out = {}
        for name, bucket in self.buckets.items():
            bucket.refill(now)
            level = max(0, math.floor(bucket.level))
            remaining = level if name == "requests" else level // 1000 * 1000
            reset = datetime.fromtimestamp(math.ceil(now + bucket.seconds_until_full()), UTC)
            out[f"anthropic-ratelimit-{name}-limit"] = str(bucket.limit)
            out[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
            out[f"anthropic-ratelimit-{name}-reset"] = reset.isoformat().replace("+00:00", "Z")
        return out


@dataclass(order=True)
class InFlight:
    done_at: float
    seq: int
    reservation: Reservation = field(compare=False)
    estimate: int = field(compare=False)
    input_tokens: int = field(compare=False)
    max_tokens: int = field(compare=False)
    output_tokens: int = field(compare=False)


def simulate(
    *, bias: float, seconds: float = 300.0, warmup: float = 60.0, seed: int = 7
) -> dict[str, float]:
    rng = random.Random(seed)
    limiter = RedisRateLimiter(configured=lambda _mc: LIMITS)
    server = SimulatedAnthropic(T0)
    in_flight: list[InFlight] = []
    accepted_input = 0  # ITPM tokens the server accepted after warm-up
    rate_limited_after_warmup = 0
    seq = 0
    next_request = None
    step = 0.05
    ticks = int(seconds / step)
    for tick in range(ticks + 1):
        now = T0 + tick * step
        while in_flight and in_flight[0].done_at <= now:
            done = heapq.heappop(in_flight)
            server.finish(max_tokens=done.max_tokens, output_tokens=done.output_tokens, now=now)
            limiter.observe_headers(
                model_class="sonnet", status=200, headers=server.headers(now), now=now
            )
            limiter.reconcile(
                reservation=done.reservation,
                input_tokens=done.input_tokens,
                output_tokens=done.output_tokens,
                now=now,
            )
            limiter.record_estimate("sonnet", done.estimate, done.input_tokens)
        # 3x offered load: there is always a request waiting, so dispatch as fast as admitted
        while True:
            if next_request is None:
                estimate = rng.randint(300, 2_500)
                noise = rng.uniform(-0.04, 0.04)
                next_request = (estimate, max(1, round(estimate * (bias + noise))))
            estimate, actual = next_request
            max_tokens = 400
            reserve = math.ceil(estimate * limiter.estimate_factor("sonnet"))
            admission = limiter.try_reserve(
                model_class="sonnet", input_tokens=reserve, output_tokens=max_tokens, now=now
            )
            if not admission.admitted or admission.reservation is None:
                break
            if not server.admit(input_tokens=actual, max_tokens=max_tokens, now=now):
                if now >= T0 + warmup:
                    rate_limited_after_warmup += 1
                limiter.observe_headers(
                    model_class="sonnet",
                    status=429,
                    headers={"retry-after": "1", **server.headers(now)},
                    now=now,
                )
                limiter.release(reservation=admission.reservation, now=now)
                continue  # the same request waits for the pause to end
            next_request = None
            if now >= T0 + warmup:
                accepted_input += actual
            seq += 1
            heapq.heappush(
                in_flight,
                InFlight(
                    done_at=now + rng.uniform(0.5, 3.0),
                    seq=seq,
                    reservation=admission.reservation,
                    estimate=estimate,
                    input_tokens=actual,
                    max_tokens=max_tokens,
                    output_tokens=rng.randint(20, max_tokens),
                ),
            )
    window = seconds - warmup
    return {
        "goodput": accepted_input / (LIMITS.itpm * window / 60),
        "rate_limited_after_warmup": rate_limited_after_warmup,
        "rate_limited_total": server.rate_limited,
    }


@pytest.mark.parametrize(
    "bias", [1.3, 0.7, 1.0], ids=["under-estimates", "over-estimates", "exact"]
)
def test_full_use_of_the_binding_limit_with_zero_429s_after_warmup(redis_client, bias) -> None:
    result = simulate(bias=bias)
    assert result["rate_limited_after_warmup"] == 0, result
    assert result["goodput"] >= 0.97, result
