"""Migration 0005 on a database written by the old code: five explicit rates, audit rows
backfilled with the rates they were billed at, the shipped sheet loaded."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from usage import services
from usage.models import AuditLog, ModelPrice, UnpricedModel

BEFORE = [("usage", "0003_user_usage_daily")]
AFTER = [("usage", "0005_price_sheet_2026_12_01")]


@pytest.fixture(autouse=True)
def _full_schema_afterwards():
    """Migrating back to BEFORE also unapplies every later migration of the other apps that
    depends on usage; put the whole schema back for the tests that follow."""
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def at(day: str) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(hour=12, tzinfo=dt.UTC)


@pytest.mark.django_db(transaction=True)
def test_0005_makes_rates_explicit_and_backfills_audit_rows() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    OldPrice = old.get_model("usage", "ModelPrice")
    OldAudit = old.get_model("usage", "AuditLog")
    OldPrice.objects.all().delete()
    OldPrice.objects.create(
        model="claude-old",
        effective_from=dt.date(2026, 1, 1),
        input_usd_per_mtok=Decimal("0.80"),
        output_usd_per_mtok=Decimal(4),
    )
    OldPrice.objects.create(
        model="claude-old",
        effective_from=dt.date(2026, 6, 1),
        input_usd_per_mtok=Decimal(1),
        output_usd_per_mtok=Decimal(5),
    )
    common = {"outcome": 1, "session_id": "", "attempts": 1}
    # old formula at $0.80/$4: 100*0.8 + 1000*0.8*1.25 + 2000*0.8*2 + 5000*0.8*0.1 + 77*4
    #   = 80 + 1000 + 3200 + 400 + 308 = 4988 per M; uncached 8100*0.8 + 308 = 6788
    cached = OldAudit.objects.create(
        occurred_at=at("2026-03-01"), model="claude-old", input_tokens=100,
        cache_creation_5m_tokens=1000, cache_creation_1h_tokens=2000,
        cache_creation_input_tokens=3000, cache_read_input_tokens=5000, output_tokens=77,
        cost_pico_usd=4_988_000_000, uncached_cost_pico_usd=6_788_000_000, **common,
    )  # fmt: skip
    # batch at $1/$5 (the June price): (1000*1 + 100*5) * 0.5 = 750 per M
    batch = OldAudit.objects.create(
        occurred_at=at("2026-07-01"), model="claude-old", input_tokens=1000, output_tokens=100,
        service_tier=2, cost_pico_usd=750_000_000, uncached_cost_pico_usd=750_000_000, **common,
    )  # fmt: skip
    gone = OldAudit.objects.create(
        occurred_at=at("2026-07-02"), model="claude-gone", input_tokens=10, output_tokens=10,
        price_missing=True, **common,
    )  # fmt: skip
    failed = OldAudit.objects.create(
        occurred_at=at("2026-07-02"), model="claude-old", **{**common, "outcome": 2}
    )

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    services.price_cache_clear()

    june = ModelPrice.objects.get(model="claude-old", effective_from=dt.date(2026, 6, 1))
    assert (
        june.input_usd_per_mtok,
        june.cache_write_5m_usd_per_mtok,
        june.cache_write_1h_usd_per_mtok,
        june.cache_read_usd_per_mtok,
        june.output_usd_per_mtok,
    ) == (Decimal(1), Decimal("1.25"), Decimal(2), Decimal("0.1"), Decimal(5))
    row = AuditLog.objects.get(pk=cached.pk)
    assert (
        row.input_rate_pico_usd,
        row.cache_write_5m_rate_pico_usd,
        row.cache_write_1h_rate_pico_usd,
        row.cache_read_rate_pico_usd,
        row.output_rate_pico_usd,
        row.price_band,
    ) == (800_000, 1_000_000, 1_600_000, 80_000, 4_000_000, 0)
    assert row.recomputed_costs_pico_usd() == (4_988_000_000, 6_788_000_000)
    halved = AuditLog.objects.get(pk=batch.pk)
    assert (halved.input_rate_pico_usd, halved.output_rate_pico_usd) == (500_000, 2_500_000)
    assert halved.recomputed_costs_pico_usd() == (750_000_000, 750_000_000)
    assert AuditLog.objects.get(pk=gone.pk).input_rate_pico_usd == 0
    assert AuditLog.objects.get(pk=failed.pk).recomputed_costs_pico_usd() == (0, 0)
    assert list(UnpricedModel.objects.values_list("model", "calls")) == [("claude-gone", 1)]
    # the sheet arrived: the current models have their prices
    assert services.price_for(model="claude-haiku-5-5", on=dt.date(2026, 12, 1)) is not None
