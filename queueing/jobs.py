"""RQ jobs. They take ids, never objects, and call one service."""

from __future__ import annotations

from typing import Any

from django.db import close_old_connections

from queueing import engine, services
from queueing.limiter import Reservation


def run_request(request_id: int, reservation: dict[str, Any] | None, dispatch: int) -> None:
    """Run one dispatch: handed to this process's call engine when it runs one (the job then
    ends once the call is in flight), else made in this thread."""
    close_old_connections()
    held = Reservation(**reservation) if reservation else None
    calls = engine.running()
    try:
        if calls is not None:
            calls.take(request_id=request_id, reservation=held, dispatch=dispatch)
        else:
            services.execute_request(request_id=request_id, reservation=held, dispatch=dispatch)
    finally:
        close_old_connections()
