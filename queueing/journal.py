"""The billed-response journal: a billed answer is written to Redis before the database.

Why: between the moment Anthropic bills a response and the moment its ``audit_log`` row
commits, a worker can die (SIGKILL, OOM, host loss) — and that window is long when the
database is busy, because recording waits for it (``services._write_with_retry``). Without
this journal the reaper then queues the request again and the API bills it a second time,
while the first bill is never recorded.

With it: the worker journals the result (usage, text, ids) the instant ``send_message``
returns — one Redis ``SET``, no database — and deletes the entry once the audit row and the
request's terminal state have committed. The reaper (``services.recover_orphans``), before
re-queueing a request whose worker is gone, looks here first; an entry for the request's
current dispatch means "this was billed": it records that response (idempotent on
``client_request_id``) and finishes the request instead of calling the API again.

What it cannot cover: a worker killed after the API sent the response but before the journal
write (parsing the reply, a few milliseconds), or while Redis is unreachable (writing is best
effort: a call never fails because the journal could not be written). Closing that last gap
needs the API's help (an idempotency key or a per-request usage lookup), which Anthropic's
Messages API does not offer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any

import redis

from llm_calls.types import Attempt, MessageResult, Usage
from ratelimit_project.redis import get_redis

log = logging.getLogger(__name__)

# Long enough for any reaper to find it (they run every few seconds); short enough not to keep
# leftovers (an entry whose delete failed while Redis restarted) forever.
ENTRY_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class JournalEntry:
    dispatch: int
    result: MessageResult


def _key(request_id: int) -> str:
    return f"gw:billed:{request_id}"


def _encode(dispatch: int, result: MessageResult) -> str:
    return json.dumps(
        {
            "dispatch": dispatch,
            "message_id": result.message_id,
            "model": result.model,
            "text": result.text,
            "stop_reason": result.stop_reason,
            "usage": dataclasses.asdict(result.usage),
            "request_id": result.request_id,
            "attempts": [dataclasses.asdict(a) for a in result.attempts],
            "latency_ms": result.latency_ms,
            "content": [dict(block) for block in result.content],
        },
        separators=(",", ":"),
    )


def _decode(raw: bytes | str) -> JournalEntry:
    data: dict[str, Any] = json.loads(raw)
    return JournalEntry(
        dispatch=int(data["dispatch"]),
        result=MessageResult(
            message_id=str(data["message_id"]),
            model=str(data["model"]),
            text=str(data["text"]),
            stop_reason=data["stop_reason"],
            usage=Usage(**data["usage"]),
            request_id=data["request_id"],
            attempts=tuple(Attempt(**a) for a in data["attempts"]),
            latency_ms=float(data["latency_ms"]),
            content=tuple(data["content"]),
        ),
    )


def remember(*, request_id: int, dispatch: int, result: MessageResult) -> bool:
    """Journal a billed response before recording it; False if Redis could not be written."""
    try:
        get_redis().set(_key(request_id), _encode(dispatch, result), ex=ENTRY_TTL_S)
    except redis.RedisError as error:
        log.warning("could not journal the billed response of request %s: %s", request_id, error)
        return False
    return True


def forget(*, request_id: int, dispatch: int) -> None:
    """Drop the entry once the response is recorded (only this dispatch's; best effort)."""
    try:
        entry = pending(request_id=request_id)
        if entry is not None and entry.dispatch == dispatch:
            get_redis().delete(_key(request_id))
    except redis.RedisError:
        pass  # the reaper ignores entries of finished requests; the TTL removes it


def pending(*, request_id: int) -> JournalEntry | None:
    """The journaled, possibly unrecorded, billed response of this request, if any."""
    raw = get_redis().get(_key(request_id))
    return None if raw is None else _decode(raw)
