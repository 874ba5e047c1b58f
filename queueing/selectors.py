"""Reads for the queue pages and the JSON API. A user only ever sees their own requests."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, QuerySet
from django.http import Http404

from queueing.models import LLMRequest

PENDING = (LLMRequest.Status.QUEUED, LLMRequest.Status.DISPATCHED, LLMRequest.Status.RUNNING)


def request_for_user(*, user: Any, pk: int) -> LLMRequest:
    """The request if ``user`` may see it (owner or staff); 404 otherwise, never 403, so that
    ids of other users' requests reveal nothing."""
    qs = LLMRequest.objects.all() if user.is_staff else LLMRequest.objects.filter(user_id=user.pk)
    try:
        return qs.get(pk=pk)
    except LLMRequest.DoesNotExist:
        raise Http404("No such request.") from None


def requests_for_user(
    *, user: Any, status: str | None = None, limit: int = 100
) -> QuerySet[LLMRequest]:
    qs = LLMRequest.objects.filter(user_id=user.pk).order_by("-created_at")
    if status == "pending":
        qs = qs.filter(status__in=PENDING)
    elif status == "finished":
        qs = qs.exclude(status__in=PENDING)
    elif status:
        qs = qs.filter(status=status)
    return qs[:limit]


def status_counts() -> dict[str, int]:
    rows = LLMRequest.objects.values("status").annotate(n=Count("pk"))
    return {row["status"]: row["n"] for row in rows}


def request_as_json(
    request: LLMRequest, *, position: dict[str, Any] | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": request.pk,
        "status": request.status,
        "session_id": request.session_id,
        "model": request.model,
        "priority": request.priority,
        "max_tokens": request.max_tokens,
        "created_at": request.created_at.isoformat() if request.created_at else None,
        "dispatched_at": request.dispatched_at.isoformat() if request.dispatched_at else None,
        "finished_at": request.finished_at.isoformat() if request.finished_at else None,
        "predicted_wait_s": request.predicted_wait_s,
        "attempts": request.attempts,
        "estimated_input_tokens": request.estimated_input_tokens,
    }
    if position is not None:
        data.update(position)
    if request.is_terminal:
        data["error"] = (
            {"type": request.error_type, "message": request.error_message}
            if request.error_type
            else None
        )
        data["result"] = request.result
    return data
