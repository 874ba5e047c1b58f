"""``/healthz`` (liveness) and ``/readyz`` (readiness), for load balancers and orchestrators.

No login (a probe has none), GET and HEAD only (anything else is the JSON 405), never cached,
never redirected to HTTPS (``SECURE_REDIRECT_EXEMPT``), and nothing secret in the answer.
``/healthz`` touches no dependency: it says this process answers. ``/readyz`` runs
``queueing.health.readiness`` and answers 200 when every check passes, otherwise 503 with
``Retry-After`` and the names of the failed checks.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.csrf import csrf_exempt

from queueing import health
from ratelimit_project.api_errors import method_not_allowed

METHODS = ("GET", "HEAD")


def _answer(body: dict[str, Any], status: int = 200) -> JsonResponse:
    response = JsonResponse(body, status=status)
    add_never_cache_headers(response)
    return response


@csrf_exempt  # GET and HEAD only: a POST gets the JSON 405, not Django's HTML CSRF page
def healthz(request: HttpRequest) -> HttpResponse:
    if request.method not in METHODS:
        return method_not_allowed(METHODS)
    return _answer({"status": "ok"})


@csrf_exempt
def readyz(request: HttpRequest) -> HttpResponse:
    if request.method not in METHODS:
        return method_not_allowed(METHODS)
    result = health.readiness()
    if result.ready:
        return _answer(result.as_json())
    response = _answer(result.as_json(), status=503)
    response["Retry-After"] = str(health.RETRY_AFTER_S)
    return response
