"""The ASGI application ``manage.py serve`` runs: one host serves the pages, the JSON API and
the Anthropic-compatible endpoint.

Paths under ``/v1/`` (the Anthropic API's own) go to ``gateway.app``, an asyncio app that
holds thousands of waiting or streaming connections; everything else goes to Django.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ratelimit_project.settings")

django_application = get_asgi_application()

from gateway.app import app as gateway_application  # noqa: E402  (needs Django set up)

ANTHROPIC_PREFIX = "/v1/"


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"].startswith(ANTHROPIC_PREFIX):
        await gateway_application(scope, receive, send)
    else:
        await django_application(scope, receive, send)
