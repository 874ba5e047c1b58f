"""Log lines an operator can search: JSON (``LOG_FORMAT=json``) with the request on every line.

``request_context(request_id=…)`` marks everything logged while a call is handled — in a worker
thread (``queueing.services.execute_request``) or in the endpoint's asyncio task — with that
request's id: a contextvar, so threads and tasks each keep their own. ``RequestIdFilter`` copies
it onto every record (``-`` outside a call), and ``JsonFormatter`` writes one JSON object per
line: ``ts``, ``level``, ``logger``, ``message``, ``request_id`` and, for an exception, ``exc``.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
from collections.abc import Iterator

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("gateway_request_id", default="-")


@contextlib.contextmanager
def request_context(*, request_id: int | str) -> Iterator[None]:
    token = _request_id.set(str(request_id))
    try:
        yield
    finally:
        _request_id.reset(token)


def current_request_id() -> str:
    return _request_id.get()


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", _request_id.get()),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)
