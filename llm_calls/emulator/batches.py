"""Message Batches: storage, paging and the API shape. Processing lives in the server.

A batch is processed in one go ``batch_latency_ms`` after creation (or ends early when
cancelled). Batches are scoped to the API key that created them.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import ApiError, invalid, new_id

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_BATCH_REQUESTS = 100_000
BATCH_EXPIRY_S = 24 * 3600


def rfc3339(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Batch:
    id: str
    fingerprint: str
    requests: list[dict[str, Any]]
    created_at: float
    processing_status: str = "in_progress"
    ended_at: float | None = None
    cancel_initiated_at: float | None = None
    # custom_id -> result object ({"type": "succeeded", "message": ...} etc.), once ended.
    results: list[dict[str, Any]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        if self.processing_status != "ended":
            counts["processing"] = len(self.requests)
            return counts
        for item in self.results:
            counts[item["result"]["type"]] += 1
        return counts

    def as_api(self, base_url: str) -> dict[str, Any]:
        ended = self.processing_status == "ended"
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.processing_status,
            "request_counts": self.counts(),
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.created_at + BATCH_EXPIRY_S),
            "ended_at": rfc3339(self.ended_at),
            "cancel_initiated_at": rfc3339(self.cancel_initiated_at),
            "archived_at": None,
            "results_url": f"{base_url}/v1/messages/batches/{self.id}/results" if ended else None,
        }


def validate_batch_body(body: Any) -> list[dict[str, Any]]:
    """Check the envelope; each request's params are validated when it is processed."""
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    extra = sorted(set(body) - {"requests"})
    if extra:
        raise invalid(f"{extra[0]}: Extra inputs are not permitted")
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise invalid("requests: a non-empty list of {custom_id, params} is required")
    if len(requests) > MAX_BATCH_REQUESTS:
        raise invalid(f"requests: at most {MAX_BATCH_REQUESTS} requests per batch")
    seen: set[str] = set()
    for index, item in enumerate(requests):
        if not isinstance(item, dict) or set(item) != {"custom_id", "params"}:
            raise invalid(f"requests.{index}: must be an object with custom_id and params")
        custom_id = item["custom_id"]
        if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
            raise invalid(f"requests.{index}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$")
        if custom_id in seen:
            raise invalid(f"requests.{index}.custom_id: duplicate custom_id {custom_id!r}")
        seen.add(custom_id)
        if not isinstance(item["params"], dict):
            raise invalid(f"requests.{index}.params: Input should be a valid dictionary")
    return requests


class BatchStore:
    def __init__(self) -> None:
        # Insertion order = creation order; listings show newest first like the real API.
        self._batches: dict[str, Batch] = {}

    def clear(self) -> None:
        for batch in self._batches.values():
            batch.wake.set()
        self._batches.clear()

    def create(self, *, fingerprint: str, requests: list[dict[str, Any]], now: float) -> Batch:
        batch = Batch(
            id=new_id("msgbatch"), fingerprint=fingerprint, requests=requests, created_at=now
        )
        self._batches[batch.id] = batch
        return batch

    def get(self, *, fingerprint: str, batch_id: str) -> Batch:
        batch = self._batches.get(batch_id)
        if batch is None or batch.fingerprint != fingerprint:
            raise ApiError(404, f"message_batch_id: no batch with id {batch_id!r}")
        return batch

    def is_live(self, batch: Batch) -> bool:
        return self._batches.get(batch.id) is batch

    def delete(self, *, fingerprint: str, batch_id: str) -> None:
        batch = self.get(fingerprint=fingerprint, batch_id=batch_id)
        if batch.processing_status != "ended":
            raise invalid(
                f"message batch {batch_id} is still {batch.processing_status}; "
                "cancel it and wait for it to end before deleting"
            )
        del self._batches[batch_id]

    def page(
        self, *, fingerprint: str, before_id: str | None, after_id: str | None, limit: int
    ) -> tuple[list[Batch], bool]:
        """One page, newest first. after_id → older than it; before_id → newer than it."""
        ordered = [b for b in reversed(self._batches.values()) if b.fingerprint == fingerprint]
        ids = [b.id for b in ordered]
        if after_id is not None:
            if after_id not in ids:
                raise invalid(f"after_id: unknown batch id {after_id!r}")
            rest = ordered[ids.index(after_id) + 1 :]
            return rest[:limit], len(rest) > limit
        if before_id is not None:
            if before_id not in ids:
                raise invalid(f"before_id: unknown batch id {before_id!r}")
            rest = ordered[: ids.index(before_id)]
            return rest[-limit:], len(rest) > limit
        return ordered[:limit], len(ordered) > limit
