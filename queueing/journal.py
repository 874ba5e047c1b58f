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

While Redis is unreachable the entry goes to a file of this process instead
(``$VAR_DIR/journal/<host>-<pid>.jsonl``, fsynced): the journal must not depend on the thing
that is down. The file is emptied once every entry in it is recorded; if the process dies, the
reaper of any worker host on the same machine moves the entries of dead processes' files into
Redis (``adopt_orphaned_files``), where recovery finds them as usual.

What it cannot cover: a worker killed after the API sent the response but before the journal
write (parsing the reply, a few milliseconds); and a machine lost for good during a Redis
outage (its files go with it). Closing that last gap needs the API's help (an idempotency key
or a per-request usage lookup), which Anthropic's Messages API does not offer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from django.conf import settings

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


# --- the local file, while Redis is away ---------------------------------------------------

_HOST = socket.gethostname()
_file_lock = threading.Lock()
_in_file: set[tuple[int, int]] = set()  # (request, dispatch) of this process's unrecorded entries


def _directory() -> Path:
    return Path(settings.VAR_DIR) / "journal"


def _own_file() -> Path:
    # The pid is read at each write: a forked worker process gets a file of its own.
    return _directory() / f"{_HOST}-{os.getpid()}.jsonl"


def _write_locally(request_id: int, dispatch: int, result: MessageResult) -> bool:
    line = json.dumps({"request_id": request_id, "entry": _encode(dispatch, result)}) + "\n"
    try:
        with _file_lock:
            _directory().mkdir(parents=True, exist_ok=True)
            with _own_file().open("a", encoding="utf-8") as file:
                file.write(line)
                file.flush()
                os.fsync(file.fileno())
            _in_file.add((request_id, dispatch))
    except OSError as error:
        log.warning("could not journal the billed response of request %s: %s", request_id, error)
        return False
    return True


def _forget_locally(request_id: int, dispatch: int) -> None:
    with _file_lock:
        if (request_id, dispatch) not in _in_file:
            return
        _in_file.discard((request_id, dispatch))
        if not _in_file:  # every entry in it is recorded: nothing left to recover from it
            # Left behind, it is adopted later: its entries are of finished requests, which
            # recovery skips.
            with contextlib.suppress(OSError):
                _own_file().unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def adopt_orphaned_files() -> int:
    """Move the entries of dead processes' journal files on this machine into Redis.

    Run by the reaper before it looks for orphans; returns how many entries it moved. An entry
    already in Redis is left as it is (``NX``); a file is deleted only once all of it is in.
    """
    moved = 0
    directory = _directory()
    if not directory.is_dir():
        return 0
    for path in directory.glob(f"{_HOST}-*.jsonl"):
        pid_text = path.stem.rsplit("-", 1)[-1]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        pipe = get_redis().pipeline(transaction=False)
        lines = path.read_text(encoding="utf-8").splitlines()
        for line in lines:
            try:
                item = json.loads(line)
                pipe.set(_key(int(item["request_id"])), item["entry"], ex=ENTRY_TTL_S, nx=True)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by the kill: that response was not journaled
        pipe.execute()
        moved += len(lines)
        path.unlink(missing_ok=True)
        log.warning("adopted %s journal entries of dead worker process %s", len(lines), pid_text)
    return moved


# --- the journal -----------------------------------------------------------------------------


def remember(*, request_id: int, dispatch: int, result: MessageResult) -> bool:
    """Journal a billed response before recording it: in Redis, or in this process's file while
    Redis is unreachable. False only if neither could be written."""
    try:
        get_redis().set(_key(request_id), _encode(dispatch, result), ex=ENTRY_TTL_S)
    except redis.RedisError as error:
        log.warning(
            "journaling the billed response of request %s in %s (no Redis: %s)",
            request_id,
            _own_file(),
            error,
        )
        return _write_locally(request_id, dispatch, result)
    return True


def forget(*, request_id: int, dispatch: int) -> None:
    """Drop the entry once the response is recorded (only this dispatch's; best effort)."""
    _forget_locally(request_id, dispatch)
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
