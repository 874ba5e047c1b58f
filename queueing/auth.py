"""API tokens (gateway keys): create one (shown once), and authenticate a request by it.

One kind of key serves the JSON API (``Authorization: Bearer``) and the Anthropic-compatible
endpoint (``x-api-key`` too, as the official SDKs send it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from queueing.models import ApiToken, Quota

TOKEN_PREFIX = "gwt_"


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


# last_used_at is for people ("used 3 minutes ago"): one write a minute per key is enough.
_LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def api_token_create(
    *,
    user: Any,
    name: str,
    expires_at: dt.datetime | None = None,
    allowed_models: Sequence[str] = (),
    default_priority: str = "",
    budget_usd_per_day: Decimal | None = None,
    budget_usd_per_month: Decimal | None = None,
) -> tuple[ApiToken, str]:
    """A new key and the key itself (shown once). With a budget, the key's own ``Quota`` row
    is written in the same transaction: there is never a moment the key works without it."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user,
            name=name,
            key_hash=_hash(raw),
            prefix=raw[:10],
            expires_at=expires_at,
            allowed_models=list(allowed_models),
            default_priority=default_priority,
        )
        if budget_usd_per_day is not None or budget_usd_per_month is not None:
            Quota.objects.create(
                api_token=token, usd_per_day=budget_usd_per_day, usd_per_month=budget_usd_per_month
            )
    return token, raw


def api_token_revoke(*, token: ApiToken) -> bool:
    """Revoke a key for good: it is refused from the next request on (``token_for_key``
    reads the row every time). True if this call revoked it, False if it already was."""
    revoked = ApiToken.objects.filter(pk=token.pk, revoked=False).update(revoked=True)
    token.revoked = True
    return bool(revoked)


def bearer_value(header: str) -> str | None:
    """The credential of an ``Authorization: Bearer <key>`` (or ``Token <key>``) header."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("token", "bearer") and value.strip():
        return value.strip()
    return None


def bearer_token(request: HttpRequest) -> str | None:
    return bearer_value(request.headers.get("Authorization", ""))


def token_for_key(raw: str) -> tuple[ApiToken | None, str]:
    """The usable token ``raw`` names, or None and why not (in words for its holder)."""
    token = ApiToken.objects.select_related("user").filter(key_hash=_hash(raw)).first()
    if token is None:
        return None, "invalid x-api-key"
    if token.revoked:
        return None, f"this key ({token.prefix}…) has been revoked"
    now = timezone.now()
    if token.expires_at is not None and token.expires_at <= now:
        return None, f"this key ({token.prefix}…) expired at {token.expires_at:%Y-%m-%d %H:%M} UTC"
    if not token.user.is_active:
        return None, f"the account this key ({token.prefix}…) belongs to is deactivated"
    if token.last_used_at is None or now - token.last_used_at >= _LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token, ""


def user_for_token(raw: str) -> Any | None:
    """The active user a token belongs to, or None (unknown, revoked, expired, inactive user)."""
    token, _ = token_for_key(raw)
    return None if token is None else token.user
