"""Queue pages: my requests with live position and ETA, one request, and the staff overview."""

from __future__ import annotations

import redis
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from llm_calls.validation import InvalidRequest
from queueing import api, eta, selectors, services
from queueing.forms import SubmitForm
from queueing.overview import queue_overview
from ratelimit_project.api_errors import error


@login_required
def my_queue(request: HttpRequest) -> HttpResponse:
    form = SubmitForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            created = services.submit_request(
                user=request.user,
                session_id=data["session_id"],
                model=data["model"],
                priority=data["priority"],
                max_tokens=data["max_tokens"],
                messages=[{"role": "user", "content": data["prompt"]}],
            )
        except InvalidRequest as exc:
            form.add_error(None, str(exc))
        except services.QuotaExceeded as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Request {created.pk} queued.")
            return redirect("queueing:my_queue")
    pending = list(selectors.requests_for_user(user=request.user, status="pending"))
    rows = [(r, eta.queue_status(r)) for r in pending]
    finished = [
        (r, eta.describe_waited(eta.waited_s(r)))
        for r in selectors.requests_for_user(user=request.user, status="finished", limit=25)
    ]
    try:
        limits: list[selectors.QuotaLine] | None = selectors.quota_lines(user=request.user)
    except redis.RedisError:
        limits = None  # the page still shows the requests; the panel says the counts are away
    return render(
        request,
        "queueing/my_queue.html",
        {
            "form": form,
            "pending": rows,
            "finished": finished,
            "limits": limits,
            "alerts": selectors.alert_notices(user=request.user),
        },
    )


@login_required
def request_page(request: HttpRequest, pk: int) -> HttpResponse:
    row = selectors.request_for_user(user=request.user, pk=pk)
    context = {
        "req": row,
        "position": eta.queue_status(row),
        "predicted_text": eta.describe_wait(row.predicted_wait_s),
    }
    return render(request, "queueing/request.html", context)


@login_required
@require_POST
def cancel(request: HttpRequest, pk: int) -> HttpResponse:
    row = selectors.request_for_user(user=request.user, pk=pk)
    try:
        services.cancel_request(request=row, by_user=request.user)
    except services.CannotCancel as exc:
        messages.error(request, str(exc))
    except redis.RedisError:
        messages.error(
            request,
            f"Request {pk} was not cancelled: the queue (Redis) is unreachable. "
            "Nothing changed; try again in a few seconds.",
        )
    else:
        messages.success(request, f"Request {pk} cancelled.")
    return redirect("queueing:my_queue")


@staff_member_required
def staff_queue(request: HttpRequest) -> HttpResponse:
    """The page, complete without JavaScript; static/js/staff_queue.js then keeps it live from
    ``staff_queue_data``. Rendered without Redis too (503), so the script can fill it in once
    Redis answers again."""
    try:
        overview = queue_overview(detail=True)
    except redis.RedisError:
        return render(
            request, "queueing/staff_queue.html", {"unavailable": eta.QUEUE_UNAVAILABLE}, status=503
        )
    return render(request, "queueing/staff_queue.html", {"overview": overview})


@never_cache  # polled every 2 s: never an old answer from a cache on the way
@api.api_view("GET")
def staff_queue_data(request: HttpRequest) -> HttpResponse:
    """What the staff queue page shows, as JSON, for its poller (a staff session or a staff
    API token; the API's JSON errors: 401 signed out, 403 not staff, 503 while Redis is
    unreachable)."""
    if not request.user.is_staff:
        return error(403, "permission_error", "staff only")
    try:
        overview = queue_overview(detail=True)
    except redis.RedisError:
        response = error(503, "service_unavailable", eta.QUEUE_UNAVAILABLE)
        response["Retry-After"] = str(api.OUTAGE_RETRY_AFTER_S)
        return response
    return JsonResponse(overview)
