from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from llm_calls.types import Usage
from tests.usage.factories import at, make_org, make_user, record
from usage import services
from usage.models import (
    AuditLog,
    ModelPrice,
    OrganizationUsageDaily,
    Outcome,
    ServiceTier,
    SessionUsage,
    UsageDaily,
    UserUsageDaily,
)

pytestmark = pytest.mark.django_db

CACHED = Usage(
    input_tokens=100,
    output_tokens=500,
    cache_creation_input_tokens=2000,
    cache_creation_5m=2000,
    cache_read_input_tokens=10_000,
)


def test_record_call_writes_one_row_with_exact_cost_and_rollups() -> None:
    org = make_org()
    user = make_user(org=org)
    row = record(user=user, org=org, usage=CACHED, attempts=3, occurred_at=at("2026-03-02", 9))

    # sonnet 4.5 ($3/$15): 100*3 + 2000*3*1.25 + 10000*3*0.1 + 500*15
    #   = 300 + 7500 + 3000 + 7500 = 18300 per M -> 0.0183
    assert row.cost_usd == Decimal("0.0183")
    # uncached: (100 + 2000 + 10000)*3 + 500*15 = 36300 + 7500 = 43800 per M -> 0.0438
    assert row.uncached_cost_usd == Decimal("0.0438")
    assert AuditLog.objects.count() == 1
    stored = AuditLog.objects.get()
    assert stored.cost_usd == Decimal("0.0183")
    assert stored.cache_creation_input_tokens == 2000
    assert stored.service_tier == ServiceTier.STANDARD

    daily = UsageDaily.objects.get()
    assert (daily.day, daily.user_id, daily.organization_id, daily.model) == (
        dt.date(2026, 3, 2),
        user.pk,
        org.pk,
        "claude-sonnet-4-5",
    )
    assert (daily.requests, daily.errors, daily.retries) == (1, 0, 2)
    assert daily.cache_read_input_tokens == 10_000
    assert daily.cost_usd == Decimal("0.0183")
    session = SessionUsage.objects.get()
    assert session.first_at == session.last_at == at("2026-03-02", 9)
    assert OrganizationUsageDaily.objects.get().uncached_cost_usd == Decimal("0.0438")


def test_rollups_add_up_across_calls_and_track_session_bounds() -> None:
    user = make_user()
    record(user=user, usage=Usage(10, 5), occurred_at=at("2026-03-02", 10))
    record(user=user, usage=Usage(20, 7), occurred_at=at("2026-03-02", 8))
    record(user=user, outcome=Outcome.FAILED, attempts=6, occurred_at=at("2026-03-02", 11))
    record(user=None, usage=Usage(1, 1), occurred_at=at("2026-03-02", 11))  # system call
    record(user=None, usage=Usage(1, 1), occurred_at=at("2026-03-02", 12))

    daily = UsageDaily.objects.get(user=user)
    assert (daily.requests, daily.errors, daily.retries) == (3, 1, 5)
    assert (daily.input_tokens, daily.output_tokens) == (30, 12)
    # (10*3 + 5*15) + (20*3 + 7*15) = 105 + 165 = 270 per M
    assert daily.cost_usd == Decimal("0.00027")
    assert daily.latency_ms_sum == 300
    # NULL user keys still collapse into one row per key
    assert UsageDaily.objects.filter(user=None).get().requests == 2
    session = SessionUsage.objects.get(user=user)
    assert session.first_at == at("2026-03-02", 8)
    assert session.last_at == at("2026-03-02", 11)
    assert OrganizationUsageDaily.objects.get(organization=None).requests == 5
    per_user = UserUsageDaily.objects.get(user=user)
    assert (per_user.requests, per_user.cost_usd) == (3, Decimal("0.00027"))


def test_same_client_request_id_is_recorded_once() -> None:
    user = make_user()
    first = record(user=user, usage=CACHED, client_request_id="llmreq-1:1")
    again = record(user=user, usage=Usage(999, 999), client_request_id="llmreq-1:1")
    assert again.pk == first.pk
    assert again.input_tokens == 100
    assert AuditLog.objects.count() == 1
    assert UsageDaily.objects.get().requests == 1
    assert SessionUsage.objects.get().input_tokens == 100


def test_unknown_model_keeps_the_record_with_zero_cost_and_a_flag(caplog) -> None:
    user = make_user()
    with caplog.at_level("WARNING", logger="usage.services"):
        row = record(user=user, model="claude-nonexistent-9", usage=Usage(1000, 1000))
    assert row.price_missing is True
    assert row.cost_usd == 0
    assert row.input_tokens == 1000
    assert UsageDaily.objects.get().price_missing == 1
    assert "no price for model 'claude-nonexistent-9'" in caplog.text


def test_failed_request_without_usage_is_free_and_counted_as_error() -> None:
    row = record(user=make_user(), outcome=Outcome.FAILED, attempts=6, usage=None)
    assert (row.input_tokens, row.cost_pico_usd, row.price_missing) == (0, 0, False)
    assert row.error_type == "overloaded_error"
    assert UsageDaily.objects.get().errors == 1


def test_response_cache_hit_is_free() -> None:
    user = make_user()
    row = services.record_response_cache_hit(
        user=user,
        organization=None,
        session_id="s",
        model="claude-haiku-4-5",
        priority="query",
        latency_ms=3,
    )
    assert row.outcome == Outcome.RESPONSE_CACHE_HIT
    assert row.cost_usd == 0
    assert UsageDaily.objects.get().response_cache_hits == 1


def test_price_follows_effective_date_and_admin_edits_apply_at_once() -> None:
    user = make_user()
    ModelPrice.objects.create(
        model="claude-haiku-4-5",
        effective_from=dt.date(2026, 6, 1),
        input_usd_per_mtok=Decimal(2),
        output_usd_per_mtok=Decimal(10),
    )
    before = record(
        user=user,
        model="claude-haiku-4-5",
        usage=Usage(1_000_000, 0),
        occurred_at=at("2026-05-31", 23, 59),
    )
    after = record(
        user=user,
        model="claude-haiku-4-5",
        usage=Usage(1_000_000, 0),
        occurred_at=at("2026-06-01", 0, 1),
    )
    assert (before.cost_usd, after.cost_usd) == (Decimal(1), Decimal(2))

    price = ModelPrice.objects.get(model="claude-haiku-4-5", effective_from=dt.date(2026, 6, 1))
    price.input_usd_per_mtok = Decimal(4)
    price.save()  # what the admin does; the cached price book must not survive it
    edited = record(
        user=user, model="claude-haiku-4-5", usage=Usage(1_000_000, 0), occurred_at=at("2026-06-02")
    )
    assert edited.cost_usd == Decimal(4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"usage": Usage(input_tokens=-5)}, "usage.input_tokens must be a non-negative"),
        ({"usage": Usage(cache_creation_input_tokens=10, cache_creation_5m=3)}, "must add up"),
        ({"outcome": "exploded"}, "unknown outcome 'exploded'"),
        ({"model": ""}, "model is required"),
        ({"session_id": "x" * 129}, "session_id is 129 characters long; the limit is 128"),
        ({"attempts": -1}, "attempts must be a non-negative number"),
        ({"occurred_at": dt.datetime(2026, 1, 1, 12)}, "timezone-aware"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(overrides, message) -> None:
    user = make_user()
    with pytest.raises(ValueError, match=message):
        record(user=user, **overrides)
    assert AuditLog.objects.count() == 0
    assert UsageDaily.objects.count() == SessionUsage.objects.count() == 0


def test_record_call_is_a_handful_of_queries() -> None:
    user = make_user()
    record(user=user)  # creates the rollup rows and loads the price book
    with CaptureQueriesContext(connection) as queries:
        record(user=user, client_request_id="abc")
    # insert + four rollup updates (+ savepoint bookkeeping on some backends)
    statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) == 5, statements
