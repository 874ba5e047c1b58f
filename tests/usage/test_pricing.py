"""Hand-computed costs from the shipped price sheet. Rates are USD per million tokens; each
comment shows the arithmetic "per M" (the sum of tokens x rate), then the dollars."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from llm_calls.types import Usage
from usage import pricing
from usage.price_sheets import shipped_price

DAY = dt.date(2026, 12, 1)


def price(model: str, *, on: dt.date = DAY, speed: str = "standard") -> pricing.Price:
    found = shipped_price(model=model, on=on, speed=speed)
    assert found is not None, f"no shipped price for {model} ({speed}) on {on}"
    return found


def cost(usage: Usage, model: str, **kwargs) -> Decimal:
    return pricing.call_cost_usd(usage=usage, price=price(model, **kwargs))


# input 1,000 / 5-minute write 2,000 / 1-hour write 3,000 / cache read 10,000 / output 500
EVERY_KIND = Usage(
    input_tokens=1000,
    cache_creation_input_tokens=5000,
    cache_creation_5m=2000,
    cache_creation_1h=3000,
    cache_read_input_tokens=10_000,
    output_tokens=500,
)


@pytest.mark.parametrize(
    ("model", "expected", "expected_uncached"),
    [
        # Fable 5.2 (8 / 10 / 16 / 0.20 / 40):
        #   1000*8 + 2000*10 + 3000*16 + 10000*0.20 + 500*40
        #   = 8000 + 20000 + 48000 + 2000 + 20000 = 98000 per M -> $0.098
        #   uncached: 16000*8 + 500*40 = 128000 + 20000 = 148000 -> $0.148
        ("claude-fable-5-2", "0.098", "0.148"),
        # Fable 5.1 (10 / 12.50 / 20 / 0.25 / 50):
        #   10000 + 25000 + 60000 + 2500 + 25000 = 122500 -> $0.1225
        #   uncached: 16000*10 + 25000 = 185000 -> $0.185
        ("claude-fable-5-1", "0.1225", "0.185"),
        # Opus 5.5 (4 / 5 / 8 / 0.20 / 20):
        #   4000 + 10000 + 24000 + 2000 + 10000 = 50000 -> $0.05
        #   uncached: 16000*4 + 10000 = 74000 -> $0.074
        ("claude-opus-5-5", "0.05", "0.074"),
        # Sonnet 5.5 from 2026-10-07 (2 / 2.50 / 4 / 0.10 / 10):
        #   2000 + 5000 + 12000 + 1000 + 5000 = 25000 -> $0.025
        #   uncached: 16000*2 + 5000 = 37000 -> $0.037
        ("claude-sonnet-5-5", "0.025", "0.037"),
        # Haiku 5.5, prompt 16,000 <= 100,000 (0.10 / 0.125 / 0.20 / 0.01 / 0.50):
        #   100 + 250 + 600 + 100 + 250 = 1300 -> $0.0013
        #   uncached: 16000*0.10 + 250 = 1850 -> $0.00185
        ("claude-haiku-5-5", "0.0013", "0.00185"),
        # legacy Fable 5 (10 / 12.50 / 20 / 1.00 / 50): cache reads 4x Fable 5.1's
        #   10000 + 25000 + 60000 + 10000 + 25000 = 130000 -> $0.13
        ("claude-fable-5", "0.13", "0.185"),
        # legacy Opus 4.6 (5 / 6.25 / 10 / 0.50 / 25):
        #   5000 + 12500 + 30000 + 5000 + 12500 = 65000 -> $0.065; uncached 80000 + 12500
        ("claude-opus-4-6", "0.065", "0.0925"),
        # legacy Sonnet 4.6 (3 / 3.75 / 6 / 0.30 / 15):
        #   3000 + 7500 + 18000 + 3000 + 7500 = 39000 -> $0.039; uncached 48000 + 7500
        ("claude-sonnet-4-6", "0.039", "0.0555"),
        # legacy Haiku 4.5 (1 / 1.25 / 2 / 0.10 / 5):
        #   1000 + 2500 + 6000 + 1000 + 2500 = 13000 -> $0.013; uncached 16000 + 2500
        ("claude-haiku-4-5", "0.013", "0.0185"),
        # retired Haiku 3 (0.25 / 0.30 / 0.50 / 0.03 / 1.25): not the 1.25x/2x/0.1x formula
        #   250 + 600 + 1500 + 300 + 625 = 3275 -> $0.003275; uncached 4000 + 625 = 4625
        ("claude-3-haiku", "0.003275", "0.004625"),
        # retired Opus 4.1 (15 / 18.75 / 30 / 1.50 / 75):
        #   15000 + 37500 + 90000 + 15000 + 37500 = 195000 -> $0.195; uncached 240000 + 37500
        ("claude-opus-4-1", "0.195", "0.2775"),
    ],
)
def test_every_token_kind_on_current_and_legacy_models(
    model: str, expected: str, expected_uncached: str
) -> None:
    assert cost(EVERY_KIND, model) == Decimal(expected)
    assert pricing.uncached_cost_usd(usage=EVERY_KIND, price=price(model)) == Decimal(
        expected_uncached
    )


def test_sonnet_5_5_cache_reads_got_cheaper_on_2026_10_07() -> None:
    reads = Usage(input_tokens=1000, cache_read_input_tokens=100_000, output_tokens=500)
    # 2026-10-06: 1000*2 + 100000*0.20 + 500*10 = 2000 + 20000 + 5000 = 27000 -> $0.027
    assert cost(reads, "claude-sonnet-5-5", on=dt.date(2026, 10, 6)) == Decimal("0.027")
    # 2026-10-07: 1000*2 + 100000*0.10 + 500*10 = 2000 + 10000 + 5000 = 17000 -> $0.017
    assert cost(reads, "claude-sonnet-5-5", on=dt.date(2026, 10, 7)) == Decimal("0.017")
    # before its release (2026-09-28) there is no price at all
    assert shipped_price(model="claude-sonnet-5-5", on=dt.date(2026, 9, 27)) is None


def test_haiku_5_5_band_edge_bills_every_token_of_the_longer_prompt_at_the_band() -> None:
    haiku = price("claude-haiku-5-5")
    at_edge = Usage(  # prompt = 40,000 + 10,000 + 50,000 = 100,000: not over the threshold
        input_tokens=40_000,
        cache_creation_input_tokens=10_000,
        cache_creation_5m=10_000,
        cache_read_input_tokens=50_000,
        output_tokens=2000,
    )
    over = Usage(  # one more input token: prompt 100,001
        input_tokens=40_001,
        cache_creation_input_tokens=10_000,
        cache_creation_5m=10_000,
        cache_read_input_tokens=50_000,
        output_tokens=2000,
    )
    # base: 40000*0.10 + 10000*0.125 + 50000*0.01 + 2000*0.50
    #     = 4000 + 1250 + 500 + 1000 = 6750 per M -> $0.00675
    assert pricing.call_cost_usd(usage=at_edge, price=haiku) == Decimal("0.00675")
    # band, every token including output: 40001*0.50 + 10000*0.625 + 50000*0.05 + 2000*2.50
    #     = 20000.5 + 6250 + 2500 + 5000 = 33750.5 per M -> $0.0337505
    assert pricing.call_cost_usd(usage=over, price=haiku) == Decimal("0.0337505")
    # uncached, band: 100001*0.50 + 2000*2.50 = 50000.5 + 5000 = 55000.5 -> $0.0550005
    assert pricing.uncached_cost_usd(usage=over, price=haiku) == Decimal("0.0550005")
    edge_card = pricing.usage_rate_card(usage=at_edge, price=haiku)
    over_card = pricing.usage_rate_card(usage=over, price=haiku)
    assert (edge_card.band, edge_card.output) == (0, 500_000)  # $0.50/M = 500,000 pico per token
    assert (over_card.band, over_card.output) == (100_000, 2_500_000)


def test_batch_cache_and_us_inference_stack_on_every_rate() -> None:
    sonnet = price("claude-sonnet-5-5")
    # standard: 25000 per M (see the table above) -> $0.025
    assert pricing.call_cost_usd(usage=EVERY_KIND, price=sonnet) == Decimal("0.025")
    # batch x0.5: 12500 -> $0.0125; US-only x1.1: 27500 -> $0.0275
    assert pricing.call_cost_usd(usage=EVERY_KIND, price=sonnet, service_tier="batch") == Decimal(
        "0.0125"
    )
    assert pricing.call_cost_usd(usage=EVERY_KIND, price=sonnet, inference_geo="us") == Decimal(
        "0.0275"
    )
    both = Usage(**{**EVERY_KIND.__dict__, "service_tier": "batch", "inference_geo": "us"})
    # both, x0.55 per token: input 2*0.55 = 1.1, 5m 1.375, 1h 2.2, read 0.055, output 5.5
    #   1000*1.1 + 2000*1.375 + 3000*2.2 + 10000*0.055 + 500*5.5
    #   = 1100 + 2750 + 6600 + 550 + 2750 = 13750 per M -> $0.01375
    assert pricing.call_cost_usd(usage=both, price=sonnet) == Decimal("0.01375")
    card = pricing.usage_rate_card(usage=both, price=sonnet)
    assert (card.input, card.cache_write_5m, card.cache_write_1h, card.cache_read, card.output) == (
        1_100_000,
        1_375_000,
        2_200_000,
        55_000,
        5_500_000,
    )
    # "global" is the default region: no premium
    global_geo = Usage(**{**EVERY_KIND.__dict__, "inference_geo": "global"})
    assert pricing.call_cost_usd(usage=global_geo, price=sonnet) == Decimal("0.025")


def test_band_batch_and_us_together_on_haiku_5_5() -> None:
    over = Usage(
        input_tokens=40_001,
        cache_creation_input_tokens=10_000,
        cache_creation_5m=10_000,
        cache_read_input_tokens=50_000,
        output_tokens=2000,
        service_tier="batch",
        inference_geo="us",
    )
    # band x0.55: 40001*0.275 + 10000*0.34375 + 50000*0.0275 + 2000*1.375
    #   = 11000.275 + 3437.5 + 1375 + 2750 = 18562.775 per M -> $0.018562775
    assert cost(over, "claude-haiku-5-5") == Decimal("0.018562775")


def test_the_smallest_rate_is_still_whole_picodollars() -> None:
    # one Haiku 5.5 cache-read token, batch + US: 0.01 * 0.5 * 1.1 = 0.0055 per M
    usage = Usage(cache_read_input_tokens=1, service_tier="batch", inference_geo="us")
    assert cost(usage, "claude-haiku-5-5") == Decimal("0.0000000055")
    assert pricing.usd_to_pico(Decimal("0.0000000055")) == 5_500


def test_fast_mode_is_its_own_price_row() -> None:
    # Opus 5.5 fast (8 / 10 / 16 / 0.40 / 40):
    #   8000 + 20000 + 48000 + 4000 + 20000 = 100000 per M -> $0.10 (standard: $0.05)
    assert cost(EVERY_KIND, "claude-opus-5-5", speed="fast") == Decimal("0.1")
    # fast + US-only: x1.1 -> 110000 -> $0.11
    us = Usage(**{**EVERY_KIND.__dict__, "inference_geo": "us", "speed": "fast"})
    assert cost(us, "claude-opus-5-5", speed="fast") == Decimal("0.11")
    # Opus 5 fast: $10 / $50: 1000*10 + 500*50 = 35000 -> $0.035
    assert cost(Usage(1000, 500), "claude-opus-5", speed="fast") == Decimal("0.035")
    # Fable 5.2 fast (16 / 20 / 32 / 0.40 / 80, twice every standard rate):
    #   16000 + 40000 + 96000 + 4000 + 40000 = 196000 per M -> $0.196
    assert cost(EVERY_KIND, "claude-fable-5-2", speed="fast") == Decimal("0.196")
    # a model without a fast row has no fast price (never the standard one)
    assert shipped_price(model="claude-sonnet-5-5", on=DAY, speed="fast") is None


def test_web_search_is_per_search_without_batch_or_geo() -> None:
    searched = Usage(input_tokens=1000, output_tokens=500, web_search_requests=3)
    # tokens 1000*2 + 500*10 = 7000 per M = $0.007; 3 searches * $10/1000 = $0.03 -> $0.037
    assert cost(searched, "claude-sonnet-5-5") == Decimal("0.037")
    # batch halves the tokens only: $0.0035 + $0.03 = $0.0335
    batch = Usage(**{**searched.__dict__, "service_tier": "batch"})
    assert cost(batch, "claude-sonnet-5-5") == Decimal("0.0335")
    # US-only: $0.0077 + $0.03 = $0.0377
    us = Usage(**{**searched.__dict__, "inference_geo": "us"})
    assert cost(us, "claude-sonnet-5-5") == Decimal("0.0377")
    # without caching it is the same call: searches are in the uncached cost too
    assert pricing.uncached_cost_usd(usage=searched, price=price("claude-sonnet-5-5")) == Decimal(
        "0.037"
    )


def test_thinking_tokens_are_part_of_output_not_added_again() -> None:
    plain = Usage(input_tokens=100, output_tokens=1000)
    thinking = Usage(input_tokens=100, output_tokens=1000, thinking_tokens=800)
    # 100*4 + 1000*20 = 20400 per M -> $0.0204, thinking or not
    assert cost(plain, "claude-opus-5-5") == cost(thinking, "claude-opus-5-5") == Decimal("0.0204")


def test_legacy_usage_without_ttl_split_counts_writes_as_five_minute() -> None:
    usage = Usage(input_tokens=0, cache_creation_input_tokens=1000)
    # 1000*3.75 = 3750 per M -> $0.00375 (not 1000*3 + 1000*3.75: writes are counted once)
    assert cost(usage, "claude-sonnet-4-6") == Decimal("0.00375")


@pytest.mark.parametrize(
    ("usage", "message"),
    [
        (
            Usage(cache_creation_input_tokens=1000, cache_creation_5m=600, cache_creation_1h=600),
            "must add up to the total",
        ),
        (Usage(output_tokens=-1), "usage.output_tokens must be a non-negative integer"),
        (Usage(web_search_requests=-2), "usage.web_search_requests must be a non-negative"),
        (Usage(1, 1, service_tier="flex"), "unknown service_tier 'flex'"),
        (Usage(1, 1, inference_geo="eu"), "unknown inference_geo 'eu'"),
    ],
)
def test_what_cannot_be_billed_is_refused(usage: Usage, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cost(usage, "claude-sonnet-4-6")


def test_price_finer_than_picodollars_is_refused_not_rounded() -> None:
    fine = pricing.Rates(*(Decimal("0.0000001"),) * 5)
    with pytest.raises(ValueError, match="not a whole number of picodollars"):
        pricing.call_cost_usd(usage=Usage(input_tokens=1), price=pricing.Price(rates=fine))


def test_worst_case_uses_the_dearest_input_rate_and_a_prompt_margin_for_the_band() -> None:
    haiku = price("claude-haiku-5-5")
    # 90,000 estimated prompt tokens, taken as 108,000 (+20%) for the band: over 100,000, so the
    # band; dearest input-side rate there is the 1-hour write, $1.00:
    #   90000*1.00 + 1000*2.50 = 92500 per M -> $0.0925 (the base band would say 18,500)
    assert pricing.worst_case_cost_usd(
        price=haiku, prompt_tokens=90_000, max_tokens=1000
    ) == Decimal("0.0925")
    # x1.1 US-only -> 101750 -> $0.10175; x0.5 batch -> $0.04625; both -> 50875 -> $0.050875
    assert pricing.worst_case_cost_usd(
        price=haiku, prompt_tokens=90_000, max_tokens=1000, inference_geo="us"
    ) == Decimal("0.10175")
    assert pricing.worst_case_cost_usd(
        price=haiku, prompt_tokens=90_000, max_tokens=1000, batch=True
    ) == Decimal("0.04625")
    assert pricing.worst_case_cost_usd(
        price=haiku, prompt_tokens=90_000, max_tokens=1000, inference_geo="us", batch=True
    ) == Decimal("0.050875")
    # far below the band: 1000*0.20 + 500*0.50 = 450 per M -> $0.00045
    assert pricing.worst_case_cost_usd(price=haiku, prompt_tokens=1000, max_tokens=500) == Decimal(
        "0.00045"
    )


def test_worst_case_bounds_the_actual_cost() -> None:
    sonnet = price("claude-sonnet-4-6")
    # 1000*6 + 500*15 = 13500 per M -> $0.0135
    bound = pricing.worst_case_cost_usd(price=sonnet, prompt_tokens=1000, max_tokens=500)
    assert bound == Decimal("0.0135")
    for usage in (
        Usage(input_tokens=1000, output_tokens=500),
        Usage(cache_creation_input_tokens=1000, cache_creation_1h=1000, output_tokens=500),
        Usage(cache_read_input_tokens=1000, output_tokens=500),
    ):
        assert pricing.call_cost_usd(usage=usage, price=sonnet) <= bound


def test_pico_strings_are_exact() -> None:
    assert pricing.pico_to_usd_str(18_300_000_000) == "0.0183"
    assert pricing.pico_to_usd_str(-5_000_000_000_000) == "-5"
    assert pricing.pico_to_usd(5_500) == Decimal("0.0000000055")


def test_in_force_honours_explicit_end_dates() -> None:
    periods = [
        (dt.date(2026, 1, 1), dt.date(2026, 2, 1), "january"),
        (dt.date(2026, 3, 1), None, "march on"),
    ]
    assert pricing.in_force(periods, on=dt.date(2025, 12, 31)) is None
    assert pricing.in_force(periods, on=dt.date(2026, 1, 31)) == "january"
    assert pricing.in_force(periods, on=dt.date(2026, 2, 1)) is None  # the end is exclusive
    assert pricing.in_force(periods, on=dt.date(2026, 3, 1)) == "march on"


def test_overlaps_are_found_per_model_and_speed() -> None:
    a = ("m", "standard", dt.date(2026, 1, 1), dt.date(2026, 3, 1), "A")
    b = ("m", "standard", dt.date(2026, 2, 1), None, "B")
    fast = ("m", "fast", dt.date(2026, 2, 1), None, "F")
    after = ("m", "standard", dt.date(2026, 3, 1), None, "C")
    assert pricing.first_overlap([a, b]) == ("A", "B")
    assert pricing.first_overlap([a, fast, after]) is None
    open_ended = ("m", "standard", dt.date(2026, 1, 1), None, "D")
    assert pricing.first_overlap([open_ended, b]) is None  # D simply ends where B starts
