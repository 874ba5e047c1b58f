"""Continuously refilled token buckets: Anthropic's per-minute rate limits.

Each bucket holds ``capacity`` (= the per-minute limit) and refills at ``capacity / 60`` per
second. A limit of 0 means unlimited (no bucket at all).

Oversized requests: a request needing more than a bucket's whole capacity could never fit, so
it is admitted only when that bucket is FULL, and the bucket then goes negative — later
requests wait until the debt has refilled. This mirrors how the real API lets a single
request larger than the per-minute limit through rather than rejecting it forever.

All state lives in one asyncio event loop, so check-and-charge needs no lock: ``admit`` runs
without awaiting and is therefore atomic with respect to every other request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Dimension names as they appear in the response headers.
REQUESTS = "requests"
INPUT_TOKENS = "input-tokens"
OUTPUT_TOKENS = "output-tokens"

_UNIT_PHRASE = {
    REQUESTS: "requests per minute",
    INPUT_TOKENS: "input tokens per minute",
    OUTPUT_TOKENS: "output tokens per minute",
}


@dataclass
class TokenBucket:
    capacity: float
    level: float
    updated: float

    @property
    def rate(self) -> float:
        return self.capacity / 60.0

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = max(self.updated, now)

    def can_take(self, need: float) -> bool:
        if need > self.capacity:
            return self.level >= self.capacity
        return self.level >= need

    def seconds_until(self, need: float) -> float:
        """Seconds until ``can_take(need)`` holds (0 if it already does)."""
        target = min(need, self.capacity)
        return max(0.0, (target - self.level) / self.rate)

    def seconds_until_full(self) -> float:
        return max(0.0, (self.capacity - self.level) / self.rate)


@dataclass
class Rejection:
    dimension: str
    limit: int
    retry_after_s: int

    @property
    def message(self) -> str:
        return (
            "This request would exceed the rate limit for your organization of "
            f"{self.limit:,} {_UNIT_PHRASE[self.dimension]}. For details, refer to: "
            "https://docs.claude.com/en/api/rate-limits."
        )


@dataclass
class BucketSet:
    """The three buckets of one (API key, model class) — or one RPM bucket for count_tokens."""

    limits: dict[str, int]
    now: float
    buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for dimension, limit in self.limits.items():
            if limit > 0:
                self.buckets[dimension] = TokenBucket(limit, float(limit), self.now)

    def refill(self, now: float) -> None:
        for bucket in self.buckets.values():
            bucket.refill(now)

    def admit(self, needs: dict[str, float], now: float) -> Rejection | None:
        """Charge every need at once, or nothing and say which bucket refused.

        ``needs`` maps a dimension to what it must hold. A need of 0 (OTPM in "actual" mode, or
        an all-cached prompt for ITPM) still requires the bucket to be above 0: a bucket in debt
        admits nothing.
        """
        self.refill(now)
        for dimension, need in needs.items():
            bucket = self.buckets.get(dimension)
            if bucket is None:
                continue
            ok = bucket.can_take(need) if need > 0 else bucket.level > 0
            if not ok:
                wait = bucket.seconds_until(need) if need > 0 else -bucket.level / bucket.rate
                return Rejection(
                    dimension=dimension,
                    limit=int(bucket.capacity),
                    retry_after_s=max(1, math.ceil(wait)),
                )
        for dimension, need in needs.items():
            bucket = self.buckets.get(dimension)
            if bucket is not None and need > 0:
                bucket.level -= need
        return None

    def adjust(self, dimension: str, delta: float, now: float) -> None:
        """Charge (delta > 0) or refund (delta < 0) a bucket after the fact; never above full."""
        bucket = self.buckets.get(dimension)
        if bucket is None:
            return
        bucket.refill(now)
        bucket.level = min(bucket.capacity, bucket.level - delta)
