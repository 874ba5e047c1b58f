"""Hand-computed costs. Prices are USD per million tokens; each comment shows the arithmetic."""

from __future__ import annotations

from decimal import Decimal

import pytest

from llm_calls.types import Usage
from usage import pricing

SONNET = pricing.Price(Decimal(3), Decimal(15))
OPUS_45 = pricing.Price(Decimal(5), Decimal(25))
OPUS_41 = pricing.Price(Decimal(15), Decimal(75))
HAIKU_45 = pricing.Price(Decimal(1), Decimal(5))
HAIKU_35 = pricing.Price(Decimal("0.80"), Decimal(4))


def test_five_minute_cache_write() -> None:
    usage = Usage(
        input_tokens=100,
        output_tokens=500,
        cache_creation_input_tokens=2000,
        cache_creation_5m=2000,
    )
    # 100*3 + 2000*3*1.25 + 500*15 = 300 + 7500 + 7500 = 15300 per M -> 0.0153
    assert pricing.call_cost_usd(usage=usage, price=SONNET) == Decimal("0.0153")
    # (100 + 2000)*3 + 500*15 = 6300 + 7500 = 13800 per M -> 0.0138
    assert pricing.uncached_cost_usd(usage=usage, price=SONNET) == Decimal("0.0138")


def test_one_hour_cache_write() -> None:
    usage = Usage(
        input_tokens=10, output_tokens=100, cache_creation_input_tokens=4000, cache_creation_1h=4000
    )
    # 10*5 + 4000*5*2 + 100*25 = 50 + 40000 + 2500 = 42550 per M -> 0.04255
    assert pricing.call_cost_usd(usage=usage, price=OPUS_45) == Decimal("0.04255")


def test_cache_read_is_a_tenth_and_counted_once() -> None:
    usage = Usage(input_tokens=50, output_tokens=200, cache_read_input_tokens=10_000)
    # 50*1 + 10000*1*0.1 + 200*5 = 50 + 1000 + 1000 = 2050 per M -> 0.00205
    assert pricing.call_cost_usd(usage=usage, price=HAIKU_45) == Decimal("0.00205")
    # uncached: (50 + 10000)*1 + 200*5 = 11050 per M -> 0.01105
    assert pricing.uncached_cost_usd(usage=usage, price=HAIKU_45) == Decimal("0.01105")


def test_batch_halves_everything() -> None:
    usage = Usage(input_tokens=1000, output_tokens=1000, service_tier="batch")
    # (1000*3 + 1000*15) * 0.5 = 9000 per M -> 0.009
    assert pricing.call_cost_usd(usage=usage, price=SONNET) == Decimal("0.009")
    assert pricing.call_cost_usd(usage=usage, price=SONNET, service_tier="standard") == Decimal(
        "0.018"
    )


def test_mixed_batch_with_every_cache_kind() -> None:
    usage = Usage(
        input_tokens=3,
        output_tokens=77,
        cache_creation_input_tokens=3000,
        cache_creation_5m=1000,
        cache_creation_1h=2000,
        cache_read_input_tokens=5000,
        service_tier="batch",
    )
    # 3*0.8 = 2.4; 1000*0.8*1.25 = 1000; 2000*0.8*2 = 3200; 5000*0.8*0.1 = 400; 77*4 = 308
    # sum 4910.4, *0.5 = 2455.2 per M -> 0.0024552
    assert pricing.call_cost_usd(usage=usage, price=HAIKU_35) == Decimal("0.0024552")
    # uncached: (3 + 3000 + 5000)*0.8 + 77*4 = 6402.4 + 308 = 6710.4, *0.5 = 3355.2 -> 0.0033552
    assert pricing.uncached_cost_usd(usage=usage, price=HAIKU_35) == Decimal("0.0033552")
    assert pricing.usd_to_pico(Decimal("0.0024552")) == 2_455_200_000


def test_smallest_batch_cache_read_is_exact_in_picodollars() -> None:
    # one cache-read token of Haiku 3.5 in batch: 0.8 * 0.1 * 0.5 = 0.04 per M = 4e-8 USD
    usage = Usage(cache_read_input_tokens=1, service_tier="batch")
    cost = pricing.call_cost_usd(usage=usage, price=HAIKU_35)
    assert cost == Decimal("0.00000004")
    assert pricing.usd_to_pico(cost) == 40_000
    assert pricing.pico_to_usd(40_000) == Decimal("0.00000004")


def test_one_output_token_of_opus_41() -> None:
    assert pricing.call_cost_usd(usage=Usage(output_tokens=1), price=OPUS_41) == Decimal("0.000075")


def test_legacy_usage_without_ttl_split_counts_writes_as_five_minute() -> None:
    usage = Usage(input_tokens=0, cache_creation_input_tokens=1000)
    # 1000*3*1.25 = 3750 per M -> 0.00375 (not 1000*3 + 1000*3*1.25: writes are counted once)
    assert pricing.call_cost_usd(usage=usage, price=SONNET) == Decimal("0.00375")


def test_inconsistent_ttl_split_is_refused() -> None:
    usage = Usage(cache_creation_input_tokens=1000, cache_creation_5m=600, cache_creation_1h=600)
    with pytest.raises(ValueError, match="must add up to the total"):
        pricing.call_cost_usd(usage=usage, price=SONNET)


def test_negative_tokens_are_refused() -> None:
    with pytest.raises(ValueError, match="usage.output_tokens must be a non-negative integer"):
        pricing.call_cost_usd(usage=Usage(output_tokens=-1), price=SONNET)


def test_unknown_tier_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown service_tier 'flex'"):
        pricing.call_cost_usd(usage=Usage(1, 1, service_tier="flex"), price=SONNET)


def test_price_finer_than_picodollars_is_refused_not_rounded() -> None:
    cost = pricing.call_cost_usd(
        usage=Usage(input_tokens=1), price=pricing.Price(Decimal("0.0000001"), Decimal(0))
    )
    with pytest.raises(ValueError, match="not a whole number of picodollars"):
        pricing.usd_to_pico(cost)


def test_worst_case_is_an_upper_bound() -> None:
    # 1000*3*2 + 500*15 = 13500 per M
    assert pricing.worst_case_cost_usd(price=SONNET, input_tokens=1000, max_tokens=500) == Decimal(
        "0.0135"
    )
    actual = pricing.call_cost_usd(
        usage=Usage(
            input_tokens=0,
            output_tokens=500,
            cache_creation_input_tokens=1000,
            cache_creation_5m=1000,
        ),
        price=SONNET,
    )
    assert actual < Decimal("0.0135")


@pytest.mark.parametrize("model", sorted(pricing.LIST_PRICES))
@pytest.mark.parametrize("tier", ["standard", "batch"])
def test_integer_rate_card_agrees_with_decimal_costing(model: str, tier: str) -> None:
    price = pricing.Price(*pricing.LIST_PRICES[model])
    card = pricing.rate_card(price=price, service_tier=tier)
    usage = Usage(
        input_tokens=1234,
        output_tokens=567,
        cache_creation_input_tokens=8910,
        cache_creation_5m=8000,
        cache_creation_1h=910,
        cache_read_input_tokens=11_121,
        service_tier=tier,
    )
    assert pricing.pico_to_usd(card.cost_pico(usage=usage)) == pricing.call_cost_usd(
        usage=usage, price=price
    )
    assert pricing.pico_to_usd(card.uncached_cost_pico(usage=usage)) == pricing.uncached_cost_usd(
        usage=usage, price=price
    )
