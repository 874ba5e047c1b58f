"""Live stream events of a call, from the worker making it to the process serving its caller.

A request submitted with ``live_events`` (the Anthropic-compatible endpoint's ``stream:
true``) is called upstream with streaming, and the worker appends each of the API's events —
``message_start``, ``content_block_*``, ``message_delta``, ``message_stop`` — to a Redis Stream
as it arrives (``relay_key``). The endpoint reads the stream and writes the events to its
caller, so the first token reaches the caller as soon as it reaches the worker.

Once an event was published, the caller may have seen part of the answer, so a call that
fails after that is not retried: the stream ends with the API's ``error`` event instead
(``StreamInterrupted``). A failure before any event is retried like any call. The stream
expires ``RELAY_TTL_S`` after its last event; the row in the database stays the record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import redis

from llm_calls.types import API_ERROR_STATUS
from ratelimit_project.redis import get_redis

log = logging.getLogger(__name__)

RELAY_TTL_S = 600
# The last entry of every relayed stream: the call ended (its row says how).
END = "gateway_end"


def relay_key(request_id: int) -> str:
    return f"gw:relay:{request_id}"


class StreamInterrupted(Exception):
    """A streamed call failed after some of its events were relayed: not retried."""


class EventRelay:
    """The worker's side: publish one call's events, then its end."""

    def __init__(self, request_id: int) -> None:
        self.key = relay_key(request_id)
        self.published = 0
        self._broken = False

    @property
    def started(self) -> bool:
        return self.published > 0

    def publish(self, name: str, data: Mapping[str, Any]) -> None:
        self._add(name, data)
        self.published += 1

    def fail(self, *, error_type: str, message: str) -> None:
        """The call ended without its answer: the caller gets the API's ``error`` event."""
        kind = error_type if error_type in API_ERROR_STATUS else "api_error"
        self._add("error", {"type": "error", "error": {"type": kind, "message": message}})
        self._add(END, {})

    def end(self) -> None:
        self._add(END, {})

    def _add(self, name: str, data: Mapping[str, Any]) -> None:
        if self._broken:
            return
        try:
            pipe = get_redis().pipeline(transaction=False)
            pipe.xadd(self.key, {"e": name, "d": json.dumps(data, separators=(",", ":"))})
            pipe.expire(self.key, RELAY_TTL_S)
            pipe.execute()
        except redis.RedisError as error:
            # The call goes on and is recorded; the endpoint, seeing the row finish without an
            # end marker, tells its caller the stream was cut off.
            self._broken = True
            log.warning("could not relay events to %s (%s); the call continues", self.key, error)


def decode(fields: Mapping[bytes, bytes]) -> tuple[str, dict[str, Any]]:
    """One relayed entry as (event name, data)."""
    return fields[b"e"].decode(), json.loads(fields[b"d"])


def relayed_count(*, request_id: int) -> int:
    """How many events were relayed for this request (0: none, or they expired)."""
    return int(get_redis().xlen(relay_key(request_id)))
