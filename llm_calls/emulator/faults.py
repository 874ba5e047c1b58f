"""Injected failures: a deterministic script first, then seeded random faults.

Each /v1/messages request consumes one decision. The script (a list of actions, one per
request, in order) lets a test say exactly what happens to attempt 1, 2, 3...; once it is used
up, random faults apply at the configured rates with an RNG seeded by ``seed``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from .errors import invalid

SCRIPT_STATUSES = (400, 408, 429, 500, 503, 529)


@dataclass(frozen=True)
class FaultAction:
    """What to do with one request. All fields default to "behave normally"."""

    status: int | None = None
    retry_after: int | None = None
    spend_limit: bool = False
    reset: bool = False
    midstream: bool = False
    slow_ms: float = 0.0


NORMAL = FaultAction()


def validate_script(script: Any) -> list[dict[str, Any]]:
    """Check a script (list of action dicts); raises ApiError(400) naming the bad entry."""
    if not isinstance(script, list):
        raise invalid("script must be a list of actions")
    for index, action in enumerate(script):
        if not isinstance(action, dict) or not action:
            raise invalid(f"script[{index}] must be a non-empty object")
        allowed = {"status", "retry_after", "spend_limit", "reset", "midstream", "slow_ms", "ok"}
        extra = set(action) - allowed
        if extra:
            raise invalid(f"script[{index}]: unknown key {sorted(extra)[0]!r}")
        if "status" in action and action["status"] not in SCRIPT_STATUSES:
            raise invalid(f"script[{index}].status must be one of {SCRIPT_STATUSES}")
        if "retry_after" in action and (
            not isinstance(action["retry_after"], int) or action["retry_after"] < 0
        ):
            raise invalid(f"script[{index}].retry_after must be a non-negative integer")
        if "slow_ms" in action and (
            not isinstance(action["slow_ms"], int | float) or action["slow_ms"] < 0
        ):
            raise invalid(f"script[{index}].slow_ms must be a non-negative number")
    return [dict(action) for action in script]


def action_from_script(entry: dict[str, Any]) -> FaultAction:
    return FaultAction(
        status=entry.get("status"),
        retry_after=entry.get("retry_after"),
        spend_limit=bool(entry.get("spend_limit")),
        reset=bool(entry.get("reset")),
        midstream=bool(entry.get("midstream")),
        slow_ms=float(entry.get("slow_ms", 0.0)),
    )


class FaultInjector:
    def __init__(self, *, seed: int, script: list[dict[str, Any]]) -> None:
        self._rng = random.Random(seed)
        self._script = list(script)

    def set_script(self, script: list[dict[str, Any]]) -> None:
        self._script = list(script)

    @property
    def script_left(self) -> int:
        return len(self._script)

    def next_action(
        self,
        *,
        rate_529: float,
        rate_500: float,
        rate_reset: float,
        rate_slow: float,
        slow_ms: float,
        rate_midstream: float,
        stream: bool,
    ) -> FaultAction:
        if self._script:
            return action_from_script(self._script.pop(0))
        if not (rate_529 or rate_500 or rate_reset or rate_slow or rate_midstream):
            return NORMAL
        draw = self._rng.random()
        for rate, action in (
            (rate_529, FaultAction(status=529)),
            (rate_500, FaultAction(status=500)),
            (rate_reset, FaultAction(reset=True)),
            # A non-streaming request cannot fail mid-stream: it gets the 529 instead.
            (rate_midstream, FaultAction(midstream=True) if stream else FaultAction(status=529)),
            (rate_slow, FaultAction(slow_ms=slow_ms)),
        ):
            if draw < rate:
                return action
            draw -= rate
        return NORMAL
