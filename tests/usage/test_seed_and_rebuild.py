from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum

from llm_calls.types import Usage
from tests.usage.factories import at, make_org, make_user, record
from usage import seeding, services
from usage.models import (
    AuditLog,
    OrganizationUsageDaily,
    Outcome,
    SessionUsage,
    UsageCounters,
    UsageDaily,
    UserUsageDaily,
)

pytestmark = pytest.mark.django_db


def snapshot() -> dict[str, Any]:
    counters = UsageCounters.COUNTER_FIELDS
    return {
        "daily": sorted(
            UsageDaily.objects.values_list("day", "user_id", "organization_id", "model", *counters),
            key=str,
        ),
        "user_daily": sorted(
            UserUsageDaily.objects.values_list("day", "user_id", *counters), key=str
        ),
        "sessions": sorted(
            SessionUsage.objects.values_list(
                "user_id", "session_id", "first_at", "last_at", *counters
            ),
            key=str,
        ),
        "orgs": sorted(
            OrganizationUsageDaily.objects.values_list(
                "day", "organization_id", "model", *counters
            ),
            key=str,
        ),
    }


def test_rebuilding_from_audit_log_gives_the_rollups_record_call_maintained() -> None:
    org = make_org()
    alice, bob = make_user(org=org), make_user()
    for i in range(6):
        record(
            user=alice if i % 2 else bob,
            org=org if i % 2 else None,
            session_id=f"s{i % 3}",
            model="claude-haiku-4-5" if i % 3 else "claude-sonnet-4-5",
            occurred_at=at("2026-03-01", 8 + i) + dt.timedelta(days=i % 2),
            usage=Usage(10 * i, 5, 100, 1000 * i, 60, 40, "batch" if i == 4 else "standard"),
            attempts=1 + i % 3,
        )
    record(user=alice, org=org, outcome=Outcome.FAILED, attempts=6, session_id="")
    record(user=None, usage=Usage(1, 1), model="claude-unknown")
    services.record_response_cache_hit(
        user=bob,
        organization=None,
        session_id="s0",
        model="claude-haiku-4-5",
        priority="q",
        latency_ms=2,
    )
    maintained = snapshot()
    result = services.rollups_rebuild()
    assert snapshot() == maintained
    assert result.session_rows == len(maintained["sessions"])
    assert services.rollups_check() == []


def test_rollups_check_names_a_disagreement() -> None:
    record(user=make_user(), usage=Usage(10, 10))
    UsageDaily.objects.update(output_tokens=11)
    assert services.rollups_check() == ["UsageDaily.output_tokens: rollup 11 != audit_log 10"]


def test_seed_usage_writes_consistent_realistic_history(capsys) -> None:
    call_command("seed_usage", rows=3000, users=20, sessions=60, days=10, seed=7)
    out = capsys.readouterr().out
    assert "inserted 3,000 rows for 20 users in 60 sessions" in out
    assert "rollups match audit_log" in out
    assert AuditLog.objects.count() == 3000
    assert services.rollups_check() == []
    assert SessionUsage.objects.count() == 60
    outcomes = dict(AuditLog.objects.values_list("outcome").annotate(n=Sum(1)).order_by())
    assert outcomes[Outcome.SUCCESS] > 2500
    assert outcomes.get(Outcome.FAILED, 0) > 0
    totals = AuditLog.objects.aggregate(
        read=Sum("cache_read_input_tokens"), cost=Sum("cost_pico_usd")
    )
    assert totals["read"] > 0 and totals["cost"] > 0
    assert not AuditLog.objects.filter(price_missing=True).exists()
    # the same call priced by record_call costs what the seed stored
    row = AuditLog.objects.filter(outcome=Outcome.SUCCESS, cache_read_input_tokens__gt=0).first()
    assert row is not None
    again = services.call_price(
        model=row.model, usage=services.audit_usage(row=row), on=row.occurred_at.date()
    )
    assert again.cost_pico_usd == row.cost_pico_usd
    # and every seeded row recomputes from the rates it carries
    for seeded in AuditLog.objects.all():
        assert seeded.recomputed_costs_pico_usd() == (
            seeded.cost_pico_usd,
            seeded.uncached_cost_pico_usd,
        ), seeded.pk
    # the history has the 2026 features in it: US-only, fast, web search, the 5.x models
    assert AuditLog.objects.filter(inference_geo="us").exists()
    assert AuditLog.objects.filter(web_search_requests__gt=0).exists()
    assert AuditLog.objects.filter(model="claude-sonnet-5-5").exists()

    # --clear starts over; a second seed without it adds to the history
    call_command("seed_usage", rows=500, users=20, sessions=10, days=10, clear=True)
    assert AuditLog.objects.count() == 500
    assert services.rollups_check() == []


def test_seed_usage_refuses_nonsense() -> None:
    with pytest.raises(CommandError, match="must all be at least 1"):
        call_command("seed_usage", rows=0)
    assert seeding.USER_PREFIX == "seed-user-"
