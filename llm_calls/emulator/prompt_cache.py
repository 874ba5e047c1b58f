"""Prompt caching as the API documents it.

- Blocks in order tools → system → messages; a breakpoint is a block with ``cache_control``
  (a top-level ``cache_control`` marks the last cacheable block: not an empty prefill, not a
  thinking block).
- An entry's key is (API key fingerprint, model, hash of the whole prefix up to and including
  the block). Entries are written only at breakpoints whose prefix reaches the model's minimum.
- Lookup: each breakpoint checks its own prefix and then up to ``LOOKBACK_BLOCKS`` earlier
  block boundaries for a written prefix; the longest match over all breakpoints wins.
- usage: cache_read = matched prefix; cache_creation = from the end of the match to the last
  written breakpoint, each segment attributed to the TTL of the breakpoint that closes it;
  input_tokens = the rest.
- A hit refreshes the entry's TTL. Writes are committed by ``commit`` when the writing response
  STARTS, so two identical requests in flight together both pay the write.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from .model_catalog import ModelInfo
from .tokens import PromptBlock

LOOKBACK_BLOCKS = 20
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}

CacheKey = tuple[str, str, bytes]


@dataclass
class CacheEntry:
    ttl_s: float
    expires_at: float


@dataclass
class CachePlan:
    input_tokens: int
    cache_read_input_tokens: int
    cache_creation_5m: int
    cache_creation_1h: int
    # Entries to write once the response starts: (key, ttl seconds).
    writes: list[tuple[CacheKey, float]] = field(default_factory=list)

    @property
    def cache_creation_input_tokens(self) -> int:
        return self.cache_creation_5m + self.cache_creation_1h


class PromptCache:
    def __init__(self) -> None:
        self._entries: dict[CacheKey, CacheEntry] = {}
        self._commits_since_sweep = 0

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _live(self, key: CacheKey, now: float) -> CacheEntry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= now:
            del self._entries[key]
            return None
        return entry

    def plan(
        self,
        *,
        key_fingerprint: str,
        model: ModelInfo,
        blocks: list[PromptBlock],
        top_level_cache_control: dict[str, Any] | None,
        now: float,
    ) -> CachePlan:
        """Work out this request's cache usage; refreshes the TTL of the entry it reads."""
        breakpoints: list[tuple[int, str]] = [
            (index, (block.cache_control or {}).get("ttl", "5m"))
            for index, block in enumerate(blocks)
            if block.cache_control is not None
        ]
        if top_level_cache_control is not None:
            # Automatic caching: the breakpoint sits on the last block that can carry one, so
            # it moves forward as the conversation grows; a marker already there (validation
            # made sure it has the same TTL) is that same breakpoint.
            last = next((i for i in range(len(blocks) - 1, -1, -1) if blocks[i].cacheable), None)
            if last is not None and blocks[last].cache_control is None:
                breakpoints.append((last, top_level_cache_control.get("ttl", "5m")))
                breakpoints.sort()
        cumulative: list[int] = []
        chain: list[bytes] = []
        running = 0
        digest = b""
        for block in blocks:
            running += block.tokens
            digest = hashlib.sha256(digest + block.digest).digest()
            cumulative.append(running)
            chain.append(digest)
        total = running

        def cache_key(index: int) -> CacheKey:
            return (key_fingerprint, model.model_id, chain[index])

        match = -1
        for index, _ttl in breakpoints:
            for candidate in range(index, max(-1, index - LOOKBACK_BLOCKS - 1), -1):
                if candidate <= match:
                    break
                if self._live(cache_key(candidate), now) is not None:
                    match = candidate
                    break
        if match >= 0:
            entry = self._entries[cache_key(match)]
            entry.expires_at = now + entry.ttl_s
        read = cumulative[match] if match >= 0 else 0

        creation = {"5m": 0, "1h": 0}
        writes: list[tuple[CacheKey, float]] = []
        covered_until = read
        for index, ttl in breakpoints:
            if index <= match or cumulative[index] < model.min_cache_tokens:
                continue
            creation[ttl] += cumulative[index] - covered_until
            covered_until = cumulative[index]
            writes.append((cache_key(index), TTL_SECONDS[ttl]))
        return CachePlan(
            input_tokens=total - covered_until,
            cache_read_input_tokens=read,
            cache_creation_5m=creation["5m"],
            cache_creation_1h=creation["1h"],
            writes=writes,
        )

    def commit(self, plan: CachePlan, now: float) -> None:
        """Make the plan's written prefixes readable (called when the response starts)."""
        for key, ttl_s in plan.writes:
            existing = self._live(key, now)
            expires_at = now + ttl_s
            if existing is None:
                self._entries[key] = CacheEntry(ttl_s=ttl_s, expires_at=expires_at)
            else:
                existing.ttl_s = max(existing.ttl_s, ttl_s)
                existing.expires_at = max(existing.expires_at, expires_at)
        self._commits_since_sweep += 1
        if self._commits_since_sweep >= 1000:
            self._commits_since_sweep = 0
            for key in [k for k, e in self._entries.items() if e.expires_at <= now]:
                del self._entries[key]
