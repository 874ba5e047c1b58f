"""RQ jobs. They take ids, never objects, and call one service."""

from __future__ import annotations

from typing import Any

from django.db import close_old_connections

from queueing import services
from queueing.limiter import Reservation


def run_request(request_id: int, reservation: dict[str, Any] | None, dispatch: int) -> None:
    close_old_connections()
    try:
        services.execute_request(
            request_id=request_id,
            reservation=Reservation(**reservation) if reservation else None,
            dispatch=dispatch,
        )
    finally:
        close_old_connections()
