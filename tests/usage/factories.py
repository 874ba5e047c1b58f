"""Factory functions for usage tests (no fixture files)."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.test import Client

from llm_calls.types import Usage
from organizations.models import Membership, Organization
from queueing.auth import api_token_create
from usage import services
from usage.models import AuditLog, ModelPrice, Outcome, PriceBand, Speed

_seq = itertools.count(1)


def make_org(name: str | None = None) -> Organization:
    return Organization.objects.create(name=name or f"org-{next(_seq)}")


def make_user(
    username: str | None = None,
    *,
    staff: bool = False,
    org: Organization | None = None,
    password: str | None = None,
) -> User:
    """A user (tests log in with ``force_login``; a password only when a test needs one —
    hashing it is the slowest thing a test here does)."""
    user = User.objects.create_user(
        username=username or f"user-{next(_seq)}", password=password, is_staff=staff
    )
    if org is not None:
        Membership.objects.create(user=user, organization=org)
    return user


def at(day: str, hour: int = 12, minute: int = 0) -> dt.datetime:
    """An aware UTC datetime on ``day`` (YYYY-MM-DD)."""
    return dt.datetime.fromisoformat(day).replace(hour=hour, minute=minute, tzinfo=dt.UTC)


def record(
    *,
    user: User | None,
    org: Organization | None = None,
    session_id: str = "s-1",
    model: str = "claude-sonnet-4-5",
    occurred_at: dt.datetime | None = None,
    outcome: Outcome = Outcome.SUCCESS,
    attempts: int = 1,
    usage: Usage | None = None,
    latency_ms: int = 100,
    **overrides: Any,
) -> AuditLog:
    kwargs: dict[str, Any] = {
        "user": user,
        "organization": org,
        "session_id": session_id,
        "model": model,
        "priority": "query",
        "outcome": outcome,
        "attempts": attempts,
        "final_status": 200 if outcome == Outcome.SUCCESS else 529,
        "error_type": "" if outcome == Outcome.SUCCESS else "overloaded_error",
        "usage": usage if usage is not None or outcome != Outcome.SUCCESS else Usage(10, 5),
        "latency_ms": latency_ms,
        "queue_wait_ms": 7,
        "request_id": f"req_{next(_seq)}",
        "occurred_at": occurred_at,
    }
    kwargs.update(overrides)
    return services.record_call(**kwargs)


def make_price(
    model: str,
    effective_from: str,
    input_usd: str,
    output_usd: str,
    *,
    cache_write_5m: str | None = None,
    cache_write_1h: str | None = None,
    cache_read: str | None = None,
    speed: Speed = Speed.STANDARD,
    effective_until: str | None = None,
    bands: tuple[tuple[int, str, str, str, str, str], ...] = (),
) -> ModelPrice:
    """A price row; cache rates, when not given, at the classic 1.25x / 2x / 0.1x of input
    (written out here, in the test, never inferred by the code under test)."""
    price_in = Decimal(input_usd)
    row = ModelPrice.objects.create(
        model=model,
        speed=speed,
        effective_from=dt.date.fromisoformat(effective_from),
        effective_until=dt.date.fromisoformat(effective_until) if effective_until else None,
        input_usd_per_mtok=price_in,
        cache_write_5m_usd_per_mtok=Decimal(cache_write_5m or price_in * Decimal("1.25")),
        cache_write_1h_usd_per_mtok=Decimal(cache_write_1h or price_in * 2),
        cache_read_usd_per_mtok=Decimal(cache_read or price_in * Decimal("0.1")),
        output_usd_per_mtok=Decimal(output_usd),
    )
    for threshold, *rates in bands:
        PriceBand.objects.create(
            price=row,
            above_prompt_tokens=threshold,
            **dict(
                zip(
                    (
                        "input_usd_per_mtok",
                        "cache_write_5m_usd_per_mtok",
                        "cache_write_1h_usd_per_mtok",
                        "cache_read_usd_per_mtok",
                        "output_usd_per_mtok",
                    ),
                    map(Decimal, rates),
                    strict=True,
                )
            ),
        )
    return row


def api_client(user: User, *, name: str = "tests") -> Client:
    """A JSON API client authenticated as ``user`` by a new API token (no session, no CSRF)."""
    _, raw = api_token_create(user=user, name=name)
    return Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
