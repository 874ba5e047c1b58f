from __future__ import annotations

import datetime as dt
from dataclasses import fields
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from llm_calls.types import Usage
from tests.usage.factories import at, make_org, make_price, make_user, record
from usage import price_sheets, selectors, services
from usage.models import (
    AuditLog,
    ModelPrice,
    OrganizationUsageDaily,
    Outcome,
    ServiceTier,
    SessionUsage,
    Speed,
    UnpricedModel,
    UsageCounters,
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
    make_price("claude-haiku-4-5", "2026-06-01", "2", "10")
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


# --- the 2026-12-01 price sheet, through record_call ------------------------------------------

EVERY_KIND = Usage(
    input_tokens=1000,
    cache_creation_input_tokens=5000,
    cache_creation_5m=2000,
    cache_creation_1h=3000,
    cache_read_input_tokens=10_000,
    output_tokens=500,
)


def assert_recomputes(row: AuditLog) -> None:
    """The stored cost follows from the row's own counts and rates, nothing else."""
    stored = AuditLog.objects.get(pk=row.pk)
    cost = (
        stored.input_tokens * stored.input_rate_pico_usd
        + stored.cache_creation_5m_tokens * stored.cache_write_5m_rate_pico_usd
        + stored.cache_creation_1h_tokens * stored.cache_write_1h_rate_pico_usd
        + stored.cache_read_input_tokens * stored.cache_read_rate_pico_usd
        + stored.output_tokens * stored.output_rate_pico_usd
        + stored.web_search_requests * stored.web_search_rate_pico_usd
    )
    uncached = (
        stored.total_input_tokens * stored.input_rate_pico_usd
        + stored.output_tokens * stored.output_rate_pico_usd
        + stored.web_search_requests * stored.web_search_rate_pico_usd
    )
    assert (cost, uncached) == (stored.cost_pico_usd, stored.uncached_cost_pico_usd)
    assert stored.recomputed_costs_pico_usd() == (cost, uncached)


@pytest.mark.parametrize(
    ("model", "expected", "rates"),
    [
        # 1000*8 + 2000*10 + 3000*16 + 10000*0.20 + 500*40 = 98000 per M -> $0.098
        ("claude-fable-5-2", "0.098", (8_000_000, 10_000_000, 16_000_000, 200_000, 40_000_000)),
        # 10000 + 25000 + 60000 + 2500 + 25000 = 122500 -> $0.1225
        ("claude-fable-5-1", "0.1225", (10_000_000, 12_500_000, 20_000_000, 250_000, 50_000_000)),
        # 4000 + 10000 + 24000 + 2000 + 10000 = 50000 -> $0.05
        ("claude-opus-5-5", "0.05", (4_000_000, 5_000_000, 8_000_000, 200_000, 20_000_000)),
        # 2000 + 5000 + 12000 + 1000 + 5000 = 25000 -> $0.025
        ("claude-sonnet-5-5", "0.025", (2_000_000, 2_500_000, 4_000_000, 100_000, 10_000_000)),
        # 100 + 250 + 600 + 100 + 250 = 1300 -> $0.0013
        ("claude-haiku-5-5", "0.0013", (100_000, 125_000, 200_000, 10_000, 500_000)),
        # legacy Opus 4.5 (5 / 6.25 / 10 / 0.50 / 25): 5000 + 12500 + 30000 + 5000 + 12500
        ("claude-opus-4-5", "0.065", (5_000_000, 6_250_000, 10_000_000, 500_000, 25_000_000)),
        # legacy Sonnet 5 (2 / 2.50 / 4 / 0.20 / 10): 2000 + 5000 + 12000 + 2000 + 5000
        ("claude-sonnet-5", "0.026", (2_000_000, 2_500_000, 4_000_000, 200_000, 10_000_000)),
        # retired Sonnet 4.5, still priced for old and late calls: 3000+7500+18000+3000+7500
        ("claude-sonnet-4-5", "0.039", (3_000_000, 3_750_000, 6_000_000, 300_000, 15_000_000)),
    ],
)
def test_current_and_legacy_models_are_billed_and_recorded_at_their_own_rates(
    model: str, expected: str, rates: tuple[int, ...]
) -> None:
    row = record(user=make_user(), model=model, usage=EVERY_KIND, occurred_at=at("2026-12-01"))
    assert row.cost_usd == Decimal(expected)
    stored = AuditLog.objects.get(pk=row.pk)
    assert (
        stored.input_rate_pico_usd,
        stored.cache_write_5m_rate_pico_usd,
        stored.cache_write_1h_rate_pico_usd,
        stored.cache_read_rate_pico_usd,
        stored.output_rate_pico_usd,
    ) == rates
    assert stored.web_search_rate_pico_usd == 10_000_000_000  # $10 per 1,000 = $0.01 a search
    assert (stored.price_band, stored.price_missing) == (0, False)
    assert_recomputes(row)


def test_sonnet_5_5_cache_reads_on_2026_10_06_and_2026_10_07() -> None:
    user = make_user()
    reads = Usage(input_tokens=1000, cache_read_input_tokens=100_000, output_tokens=500)
    before = record(
        user=user, model="claude-sonnet-5-5", usage=reads, occurred_at=at("2026-10-06", 23, 59)
    )
    after = record(
        user=user, model="claude-sonnet-5-5", usage=reads, occurred_at=at("2026-10-07", 0, 0)
    )
    # 1000*2 + 100000*0.20 + 500*10 = 27000 per M -> $0.027
    assert before.cost_usd == Decimal("0.027")
    # 1000*2 + 100000*0.10 + 500*10 = 17000 per M -> $0.017
    assert after.cost_usd == Decimal("0.017")
    assert (before.cache_read_rate_pico_usd, after.cache_read_rate_pico_usd) == (200_000, 100_000)
    # the day's rollups carry the two different prices
    days = dict(UsageDaily.objects.values_list("day", "cost_pico_usd"))
    assert days == {dt.date(2026, 10, 6): 27_000_000_000, dt.date(2026, 10, 7): 17_000_000_000}


def test_haiku_5_5_band_edge_through_record_call() -> None:
    user = make_user()

    def call(input_tokens: int) -> AuditLog:
        return record(
            user=user,
            model="claude-haiku-5-5",
            occurred_at=at("2026-11-02"),
            usage=Usage(
                input_tokens=input_tokens,
                cache_creation_input_tokens=10_000,
                cache_creation_5m=10_000,
                cache_read_input_tokens=50_000,
                output_tokens=2000,
            ),
        )

    edge, over = call(40_000), call(40_001)  # prompts of 100,000 and 100,001 tokens
    # 40000*0.10 + 10000*0.125 + 50000*0.01 + 2000*0.50 = 6750 per M -> $0.00675
    assert (edge.cost_usd, edge.price_band, edge.output_rate_pico_usd) == (
        Decimal("0.00675"),
        0,
        500_000,
    )
    # every token at the band, output too: 40001*0.50 + 10000*0.625 + 50000*0.05 + 2000*2.50
    #   = 20000.5 + 6250 + 2500 + 5000 = 33750.5 per M -> $0.0337505
    assert (over.cost_usd, over.price_band, over.output_rate_pico_usd) == (
        Decimal("0.0337505"),
        100_000,
        2_500_000,
    )
    # 0.00675 + 0.0337505 = 0.0405005: each request priced on its own, summed exactly
    assert UsageDaily.objects.get().cost_usd == Decimal("0.0405005")
    assert_recomputes(edge)
    assert_recomputes(over)


def test_batch_cache_and_us_inference_stack_and_are_recorded() -> None:
    usage = Usage(**{**EVERY_KIND.__dict__, "service_tier": "batch", "inference_geo": "us"})
    row = record(
        user=make_user(), model="claude-sonnet-5-5", usage=usage, occurred_at=at("2026-11-20")
    )
    # x0.55: 1000*1.1 + 2000*1.375 + 3000*2.2 + 10000*0.055 + 500*5.5 = 13750 per M -> $0.01375
    assert row.cost_usd == Decimal("0.01375")
    # uncached: 16000*1.1 + 500*5.5 = 17600 + 2750 = 20350 -> $0.02035
    assert row.uncached_cost_usd == Decimal("0.02035")
    stored = AuditLog.objects.get(pk=row.pk)
    assert (stored.service_tier, stored.inference_geo, stored.speed) == (
        ServiceTier.BATCH,
        "us",
        Speed.STANDARD,
    )
    assert (stored.input_rate_pico_usd, stored.cache_read_rate_pico_usd) == (1_100_000, 55_000)
    assert_recomputes(row)


def test_fast_mode_is_billed_at_its_own_row_and_never_at_the_standard_one() -> None:
    user = make_user()
    fast = Usage(**{**EVERY_KIND.__dict__, "speed": "fast"})
    row = record(user=user, model="claude-opus-5-5", usage=fast, occurred_at=at("2026-11-20"))
    # Opus 5.5 fast (8 / 10 / 16 / 0.40 / 40): 8000 + 20000 + 48000 + 4000 + 20000 = $0.10
    assert (row.cost_usd, row.speed, row.price_missing) == (Decimal("0.1"), Speed.FAST, False)
    assert_recomputes(row)
    # Sonnet 5.5 has no fast row: flagged, not billed at its standard price
    sonnet = record(user=user, model="claude-sonnet-5-5", usage=fast, occurred_at=at("2026-11-20"))
    assert (sonnet.cost_pico_usd, sonnet.price_missing) == (0, True)
    assert UnpricedModel.objects.get().speed == Speed.FAST


def test_web_search_is_billed_per_search_and_rolled_up() -> None:
    user = make_user()
    searched = Usage(
        input_tokens=1000, output_tokens=500, web_search_requests=3, thinking_tokens=200
    )
    row = record(user=user, model="claude-sonnet-5-5", usage=searched, occurred_at=at("2026-11-20"))
    # 1000*2 + 500*10 = 7000 per M = $0.007, + 3 * $0.01 = $0.037
    assert row.cost_usd == Decimal("0.037")
    batch = Usage(**{**searched.__dict__, "service_tier": "batch"})
    halved = record(user=user, model="claude-sonnet-5-5", usage=batch, occurred_at=at("2026-11-20"))
    # batch halves the tokens, not the searches: $0.0035 + $0.03 = $0.0335
    assert halved.cost_usd == Decimal("0.0335")
    daily = UsageDaily.objects.get()
    assert (daily.web_search_requests, daily.thinking_tokens) == (6, 400)
    assert daily.cost_usd == Decimal("0.0705")
    assert_recomputes(row)
    assert_recomputes(halved)


def test_every_kind_of_row_recomputes_from_its_own_columns() -> None:
    user = make_user()
    rows = [
        record(user=user, usage=EVERY_KIND, occurred_at=at("2026-03-02")),
        record(user=user, model="claude-opus-5", usage=Usage(**{**EVERY_KIND.__dict__, "speed": "fast", "inference_geo": "us"}), occurred_at=at("2026-11-02")),
        record(user=user, model="claude-haiku-5-5", usage=Usage(input_tokens=150_000, output_tokens=9, service_tier="batch", inference_geo="us", web_search_requests=1), occurred_at=at("2026-11-02")),
        record(user=user, outcome=Outcome.FAILED, attempts=6, usage=None),
        services.record_response_cache_hit(user=user, organization=None, session_id="s", model="claude-haiku-4-5", priority="q", latency_ms=1),
        record(user=user, model="claude-unpriced-1", usage=EVERY_KIND),
    ]  # fmt: skip
    for row in rows:
        assert_recomputes(row)
    make_price("claude-unpriced-1", "2026-01-01", "1", "5")
    services.reprice_missing_calls()
    assert_recomputes(rows[-1])
    # Haiku 5.5 band (150,000 > 100,000) x0.55: 150000*0.275 + 9*1.375 = 41250 + 12.375
    #   = 41262.375 per M = $0.041262375, + one search $0.01 -> $0.051262375
    assert rows[2].cost_usd == Decimal("0.051262375")


def test_unknown_region_or_tier_is_flagged_and_stays_flagged() -> None:
    user = make_user()
    eu = record(user=user, model="claude-sonnet-5-5", usage=Usage(1000, 10, inference_geo="eu"))
    flex = record(user=user, model="claude-sonnet-5-5", usage=Usage(1000, 10, service_tier="flex"))
    assert eu.price_missing and flex.price_missing and eu.cost_pico_usd == flex.cost_pico_usd == 0
    assert AuditLog.objects.get(pk=flex.pk).service_tier == ServiceTier.UNKNOWN
    # re-pricing never guesses: an unknown tier is not billed as standard
    assert services.reprice_missing_calls().still_missing == 2


# --- a model with no price ------------------------------------------------------------------------


def test_a_model_without_a_price_is_flagged_alerted_once_and_repriced_when_priced(
    caplog, settings, mailoutbox, django_capture_on_commit_callbacks
) -> None:
    settings.ADMINS = [("Ops", "ops@example.com")]
    org = make_org()
    user = make_user(org=org)
    usage = Usage(input_tokens=1000, output_tokens=100)
    with caplog.at_level("WARNING", logger="usage.services"):
        with django_capture_on_commit_callbacks(execute=True):
            first = record(
                user=user, org=org, model="claude-next-6", usage=usage, occurred_at=at("2026-11-30")
            )
        with django_capture_on_commit_callbacks(execute=True):
            second = record(
                user=user, org=org, model="claude-next-6", usage=usage, occurred_at=at("2026-12-01")
            )
    assert (first.price_missing, second.price_missing) == (True, True)
    assert first.cost_pico_usd == second.cost_pico_usd == 0
    assert caplog.text.count("no price for model 'claude-next-6'") == 1  # warned once
    assert len(mailoutbox) == 1  # and mailed once
    assert "claude-next-6" in mailoutbox[0].subject
    noted = UnpricedModel.objects.get()
    assert (noted.model, noted.calls, noted.first_seen_at, noted.last_seen_at) == (
        "claude-next-6",
        2,
        at("2026-11-30"),
        at("2026-12-01"),
    )
    assert UsageDaily.objects.filter(price_missing=1).count() == 2

    # the price arrives (from 2026-11-01): 1000*2 + 100*10 = 3000 per M -> $0.003 per call
    sheet = price_sheets.loads(
        '{"prices": [{"model": "claude-next-6", "speed": "standard", '
        '"effective_from": "2026-11-01", "input": "2", "cache_write_5m": "2.5", '
        '"cache_write_1h": "4", "cache_read": "0.2", "output": "10"}]}'
    )
    with django_capture_on_commit_callbacks(execute=True) as committed:
        result = services.prices_load(rows=sheet)
    assert result.repriced is None  # inside this test's transaction: re-priced on commit
    assert services.reprice_missing_calls in committed
    for row in (first, second):
        row.refresh_from_db()
        assert (row.cost_usd, row.price_missing, row.input_rate_pico_usd) == (
            Decimal("0.003"),
            False,
            2_000_000,
        )
        assert_recomputes(row)
    # rollups moved by the same amounts: each day $0.003 and nothing unpriced left
    assert sorted(UsageDaily.objects.values_list("cost_pico_usd", "price_missing")) == [
        (3_000_000_000, 0),
        (3_000_000_000, 0),
    ]
    assert SessionUsage.objects.get().cost_usd == Decimal("0.006")
    assert UserUsageDaily.objects.filter(price_missing=0).count() == 2
    assert sum(OrganizationUsageDaily.objects.values_list("uncached_cost_pico_usd", flat=True)) == (
        6_000_000_000
    )
    assert services.rollups_check() == []
    assert not UnpricedModel.objects.exists()  # the staff notice is gone


def test_zero_token_call_on_an_unpriced_model_is_not_flagged() -> None:
    row = record(user=make_user(), model="claude-next-6", usage=Usage())
    assert (row.price_missing, row.cost_pico_usd) == (False, 0)
    assert not UnpricedModel.objects.exists()


def test_rollup_counters_have_one_list() -> None:
    assert tuple(f.name for f in fields(selectors.Totals)) == UsageCounters.COUNTER_FIELDS
    row = record(user=make_user(), usage=Usage(10, 5, web_search_requests=2), attempts=3)
    assert set(services.rollup_increments(row=row)) == set(UsageCounters.COUNTER_FIELDS)
    assert services.rollup_increments(row=row)["web_search_requests"] == 2
    assert services.rollup_increments(row=row)["retries"] == 2
