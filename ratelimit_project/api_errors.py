"""The JSON API's one error shape, for every app's JSON endpoints.

``{"error": {"type": kind, "message": message, ...extra}}`` with a fitting status. It lives
here, below the apps (which may import ``ratelimit_project`` as they import its Redis
connection), so ``queueing``'s API and ``usage``'s JSON endpoints answer alike without
``usage`` importing ``queueing``. The ``type`` names in use: ``invalid_request`` (400),
``authentication_error`` (401), ``permission_error`` / ``csrf_error`` (403), ``not_found``
(404), ``method_not_allowed`` (405), and the API's own (409, 422, 429, 503).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.http import JsonResponse


def error(http_status: int, kind: str, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": {"type": kind, "message": message, **extra}}, status=http_status)


def method_not_allowed(methods: Sequence[str]) -> JsonResponse:
    """The 405 for a method an endpoint does not take; RFC 9110: it names, in ``Allow``, the
    methods the resource does allow."""
    refused = error(405, "method_not_allowed", f"use {' or '.join(methods)}")
    refused["Allow"] = ", ".join(methods)
    return refused
