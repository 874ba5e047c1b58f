"""API tokens: create one (shown once), and authenticate a request by it."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.http import HttpRequest
from django.utils import timezone

from queueing.models import ApiToken

TOKEN_PREFIX = "gwt_"


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def api_token_create(*, user: Any, name: str) -> tuple[ApiToken, str]:
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name, key_hash=_hash(raw), prefix=raw[:10])
    return token, raw


def bearer_token(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("token", "bearer") and value.strip():
        return value.strip()
    return None


def user_for_token(raw: str) -> Any | None:
    """The active user a token belongs to, or None (unknown, revoked, or inactive user)."""
    token = (
        ApiToken.objects.select_related("user").filter(key_hash=_hash(raw), revoked=False).first()
    )
    if token is None or not token.user.is_active:
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user
