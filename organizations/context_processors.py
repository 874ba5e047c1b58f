"""What every page's navigation needs to know about organizations."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from organizations.selectors import administers_any


def organization_admin(request: HttpRequest) -> dict[str, Any]:
    """``administers_organizations``: whether to show the Organization entry (org admins and
    staff). Lazy, so a page that never renders the navigation (JSON, CSV) pays no query."""
    user = getattr(request, "user", None)
    return {
        "administers_organizations": SimpleLazyObject(
            lambda: user is not None and administers_any(user=user)
        )
    }
