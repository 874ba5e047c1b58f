"""The JSON API: submit, status (with queue position and ETA), result, cancel.

Authenticated by the browser session (CSRF enforced on writes) or by an API token
(``Authorization: Bearer gwt_…`` / ``Token gwt_…``; no CSRF, no cookies involved). Every error
is a JSON body ``{"error": {"type", "message", "field"?}}`` with a fitting status (the shape's
one home is ``ratelimit_project.api_errors``, which usage's JSON endpoints answer with too).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

import redis
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from llm_calls.params import MESSAGE_FIELDS
from llm_calls.validation import InvalidRequest
from queueing import eta, selectors, services
from queueing.auth import bearer_token, user_for_token
from queueing.models import LLMRequest
from queueing.overview import queue_overview
from ratelimit_project.api_errors import error, method_not_allowed

View = Callable[..., HttpResponse]

# The gateway's own fields of a submission; everything else is the Messages body
# (llm_calls.params.MessageParams), passed on as it came.
GATEWAY_FIELDS = frozenset({"session_id", "priority", "response_cache", "shared", "batch"})
# How soon a client should try again when Redis is unreachable (a restart or a Sentinel
# failover takes seconds).
OUTAGE_RETRY_AFTER_S = 5


def _csrf_failure(request: HttpRequest) -> HttpResponse | None:
    def no_response(req: HttpRequest) -> HttpResponse:
        return HttpResponse()

    return CsrfViewMiddleware(no_response).process_view(request, no_response, (), {})


def api_view(*methods: str) -> Callable[[View], View]:
    def decorate(view: View) -> View:
        @csrf_exempt
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return method_not_allowed(methods)
            raw = bearer_token(request)
            if raw is not None:
                user = user_for_token(raw)
                if user is None:
                    return error(401, "authentication_error", "invalid or revoked API token")
                request.user = user
            else:
                if not request.user.is_authenticated:
                    return error(
                        401,
                        "authentication_error",
                        "log in or send Authorization: Bearer <API token>",
                    )
                if request.method not in ("GET", "HEAD", "OPTIONS"):
                    rejected = _csrf_failure(request)
                    if rejected is not None:
                        return error(403, "csrf_error", "CSRF token missing or incorrect")
            try:
                return view(request, *args, **kwargs)
            except Http404:
                return error(404, "not_found", "no such request")
            except redis.RedisError:
                # Only what needs Redis gets here (a submission is saved without it, and a
                # request's saved state is shown with its position unknown): nothing was
                # changed, so the client may simply try again.
                response = error(
                    503,
                    "service_unavailable",
                    "the queue (Redis) is unreachable; nothing was changed, try again shortly",
                )
                response["Retry-After"] = str(OUTAGE_RETRY_AFTER_S)
                return response

        return wrapper

    return decorate


@csrf_exempt  # answers every visitor and method alike, and changes nothing
def unknown_endpoint(request: HttpRequest) -> HttpResponse:
    """Any path under an API prefix that no endpoint matched (the root URLconf routes them
    here, after every real route). An API client gets the API's JSON error rather than
    Django's HTML 404 page — which, under DEBUG, would also list every URL pattern."""
    return error(404, "not_found", f"no API endpoint at {request.path}")


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise InvalidRequest("body", "is larger than this server accepts") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("body", "is not valid UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            "body", f"is not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    except RecursionError:
        raise InvalidRequest("body", "is nested too deeply") from None
    except ValueError:  # an integer past Python's 4,300-digit conversion limit
        raise InvalidRequest("body", "contains a number too long to read") from None
    if not isinstance(data, dict):
        raise InvalidRequest("body", "must be a JSON object")
    return data


def _bool_field(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise InvalidRequest(name, "must be true or false")
    return value


@api_view("GET", "POST")
def requests_collection(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        status = request.GET.get("status") or None
        if status not in (None, "pending", "finished", *LLMRequest.Status.values):
            return error(
                400, "invalid_request", f"unknown status filter {status!r}", field="status"
            )
        rows = selectors.requests_for_user(user=request.user, status=status)
        return JsonResponse(
            {"requests": [selectors.request_as_json(r, position=eta.queue_status(r)) for r in rows]}
        )
    try:
        data = _json_body(request)
        unknown = sorted(set(data) - GATEWAY_FIELDS - MESSAGE_FIELDS)
        if unknown:
            raise InvalidRequest(unknown[0], "is not a field of this API")
        # Types are checked by submit_request itself (check_submission), with field names.
        params = {name: value for name, value in data.items() if name in MESSAGE_FIELDS}
        created = services.submit_request(
            user=request.user,
            session_id=data.get("session_id"),  # type: ignore[arg-type]  # checked there
            priority=data.get("priority", "query"),
            use_response_cache=_bool_field(data, "response_cache"),
            response_cache_shared=_bool_field(data, "shared"),
            batch=_bool_field(data, "batch"),
            idempotency_key=request.headers.get("Idempotency-Key"),
            **params,  # type: ignore[typeddict-item]  # a JSON object, validated there
        )
    except InvalidRequest as exc:
        return error(400, "invalid_request", str(exc), field=exc.field)
    except services.QuotaExceeded as exc:
        response = error(429, "quota_exceeded", str(exc), request_id=exc.request.pk)
        if exc.request.replayed:
            response["Idempotent-Replayed"] = "true"
        return response
    except services.IdempotencyKeyReused as exc:
        return error(
            422, "idempotency_error", str(exc), field="Idempotency-Key", request_id=exc.request.pk
        )
    body = selectors.request_as_json(created, position=eta.queue_status(created))
    headers = {"Location": f"/api/v1/requests/{created.pk}"}
    if created.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JsonResponse(body, status=202, headers=headers)


@api_view("GET")
def request_detail(request: HttpRequest, pk: int) -> HttpResponse:
    row = selectors.request_for_user(user=request.user, pk=pk)
    return JsonResponse(selectors.request_as_json(row, position=eta.queue_status(row)))


@api_view("GET")
def request_result(request: HttpRequest, pk: int) -> HttpResponse:
    """The answer; ``?wait=S`` (at most 60) long-polls until it is ready."""
    row = selectors.request_for_user(user=request.user, pk=pk)
    raw_wait = request.GET.get("wait", "0")
    try:
        wait = float(raw_wait)
    except ValueError:
        return error(
            400,
            "invalid_request",
            f"wait must be a number of seconds, got {raw_wait!r}",
            field="wait",
        )
    if not 0 <= wait <= 60:
        return error(400, "invalid_request", "wait must be between 0 and 60 seconds", field="wait")
    if not row.is_terminal and wait > 0:
        try:
            row = services.wait_for_result(request_id=row.pk, timeout_s=wait)
        except TimeoutError:
            row.refresh_from_db()
    if not row.is_terminal:
        return error(409, "not_ready", f"request {row.pk} is still {row.status}", status=row.status)
    return JsonResponse(selectors.request_as_json(row))


@api_view("POST")
def request_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    row = selectors.request_for_user(user=request.user, pk=pk)
    try:
        row = services.cancel_request(request=row, by_user=request.user)
    except services.CannotCancel as exc:
        return error(409, "cannot_cancel", str(exc), status=row.status)
    except LLMRequest.DoesNotExist:
        return error(404, "not_found", "no such request")
    return JsonResponse(selectors.request_as_json(row))


@api_view("GET")
def my_quota(request: HttpRequest) -> HttpResponse:
    """The caller's own limits and their organization's: used, held, left, reset, forecast
    (Redis away: the wrapper's 503)."""
    lines = selectors.quota_lines(user=request.user)
    return JsonResponse({"quotas": [line.as_json() for line in lines]})


@api_view("GET")
def queue_stats(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        return error(403, "permission_error", "staff only")
    return JsonResponse(queue_overview())
