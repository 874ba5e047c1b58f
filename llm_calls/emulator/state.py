"""All mutable emulator state, and the one place a response is billed.

Everything runs on one asyncio event loop. State changes (bucket admission, cache planning,
billing) happen between awaits, so each is atomic with respect to other requests without
locks.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from .batches import BatchStore
from .buckets import INPUT_TOKENS, OUTPUT_TOKENS, REQUESTS, BucketSet
from .config import EmulatorConfig
from .faults import FaultInjector
from .ledger import Ledger, RequestLog
from .prompt_cache import PromptCache

# count_tokens has its own requests-per-minute bucket, separate from every model class.
COUNT_TOKENS_CLASS = "count_tokens"


class EmulatorState:
    """All mutable emulator state; ``reset`` restores the startup configuration."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.startup_config = config.copy()
        self.config = config.copy()
        self.buckets: dict[tuple[str, str], BucketSet] = {}
        self.cache = PromptCache()
        self.ledger = Ledger()
        self.log = RequestLog()
        self.batches = BatchStore()
        self.faults = FaultInjector(seed=config.seed, script=config.script)
        # Added to the wall clock by POST /_emulator/clock so tests can age cache entries and
        # refill buckets without sleeping for minutes.
        self.clock_offset_s = 0.0
        # /v1/messages requests being handled right now (any outcome), and the most seen at once
        # since the last reset: what GET /_emulator/stats reports to the concurrency benchmark.
        self.in_flight = 0
        self.max_in_flight = 0
        self.messages_total = 0

    def now(self) -> float:
        return time.time() + self.clock_offset_s

    def reset(self) -> None:
        self.clock_offset_s = 0.0
        self.max_in_flight = self.in_flight
        self.messages_total = 0
        self.apply_config(self.startup_config.copy())
        self.cache.clear()
        self.ledger.clear()
        self.log.clear()
        self.batches.clear()

    def apply_config(self, config: EmulatorConfig) -> None:
        """New limits start with full buckets; a new seed or script restarts the fault stream."""
        self.config = config
        self.buckets.clear()
        self.faults = FaultInjector(seed=config.seed, script=config.script)

    def bucket_set(self, fingerprint: str, model_class: str, now: float) -> BucketSet:
        found = self.buckets.get((fingerprint, model_class))
        if found is None:
            if model_class == COUNT_TOKENS_CLASS:
                limits = {REQUESTS: self.config.rpm}
            else:
                limits = {
                    REQUESTS: self.config.rpm,
                    INPUT_TOKENS: self.config.itpm,
                    OUTPUT_TOKENS: self.config.otpm,
                }
            found = BucketSet(limits=limits, now=now)
            self.buckets[(fingerprint, model_class)] = found
        return found

    def settle_output(self, buckets: BucketSet, *, reserved: int, produced: int) -> None:
        """OTPM after the reply: refund the unused reservation, or charge what was produced."""
        if self.config.otpm_mode == "reserve":
            buckets.adjust(OUTPUT_TOKENS, produced - reserved, self.now())
        else:
            buckets.adjust(OUTPUT_TOKENS, produced, self.now())

    def bill(
        self,
        *,
        fingerprint: str,
        request_id: str,
        message: dict[str, Any],
        request: web.Request | None = None,
        batch_id: str | None = None,
    ) -> None:
        """Record one completed (billed) response in the ledger."""
        headers = request.headers if request is not None else {}
        self.ledger.bill(
            fingerprint=fingerprint,
            request_id=request_id,
            message_id=message["id"],
            model=message["model"],
            time=self.now(),
            usage=message["usage"],
            batch_id=batch_id,
            client_request_id=headers.get("x-client-request-id"),
            user_profile_id=headers.get("anthropic-user-profile-id"),
        )


STATE_KEY: web.AppKey[EmulatorState] = web.AppKey("emulator_state")
TASKS_KEY: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("emulator_batch_tasks")
