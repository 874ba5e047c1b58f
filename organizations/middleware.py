"""Every page in the zone its reader chose (Settings), UTC for everyone else."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from organizations.selectors import time_zone_of


class UserTimeZoneMiddleware:
    """Activates the user's zone for the request, so templates (``{{ value }}``, the ``when``
    filter, the admin) convert every aware datetime to it. JSON keeps ISO 8601 with an offset:
    ``isoformat()`` ignores the active zone.

    Deactivated in ``finally``: a worker thread serves the next request, maybe another user's,
    with whatever zone the last one left active. Goes after ``AuthenticationMiddleware``.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        timezone.activate(zoneinfo.ZoneInfo(time_zone_of(user=request.user)))
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
