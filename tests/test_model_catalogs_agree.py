"""The gateway's model catalog and the emulator's agree on every fact both hold — and so do
the gateway's shipped prices and the emulator's price table.

The emulator plays Anthropic, so it keeps its own tables (it must not import the gateway);
this test is what keeps the two copies one fact.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any

from llm_calls import catalog
from llm_calls.emulator import model_catalog as emulated
from llm_calls.emulator import prices as emulated_prices
from llm_calls.types import Usage
from usage import price_sheets, pricing

GATEWAY_ONLY: set[str] = set()
EMULATOR_ONLY = {"default_thinking_display"}


def test_both_catalogs_list_the_same_models() -> None:
    assert set(catalog.DEFAULT_MODELS) == set(emulated.MODELS)


def test_both_catalogs_hold_the_same_fields() -> None:
    ours = {f.name for f in dataclasses.fields(catalog.ModelInfo)} - GATEWAY_ONLY
    theirs = {f.name for f in dataclasses.fields(emulated.ModelInfo)} - EMULATOR_ONLY
    assert ours == theirs


def test_every_shared_fact_agrees() -> None:
    shared = {f.name for f in dataclasses.fields(catalog.ModelInfo)} - GATEWAY_ONLY
    disagreements = [
        f"{model_id}.{name}: gateway {getattr(info, name)!r}, emulator "
        f"{getattr(emulated.MODELS[model_id], name)!r}"
        for model_id, info in catalog.DEFAULT_MODELS.items()
        for name in sorted(shared)
        if getattr(info, name) != getattr(emulated.MODELS[model_id], name)
    ]
    assert disagreements == []


# -- prices ------------------------------------------------------------------------------------
# The emulator prices its cost report with its own table (``llm_calls/emulator/prices.py``);
# the gateway bills from the shipped price sheet that ``usage.services.prices_seed_defaults``
# loads. A reconciler compares the two, so they must be one set of facts.


def _gateway_rows() -> dict[tuple[str, str, dt.date], price_sheets.SheetRow]:
    return {row.key: row for row in price_sheets.shipped_rows()}


def _emulated_rows() -> dict[tuple[str, str, dt.date], emulated_prices.PriceRow]:
    return {(row.model, row.speed, row.effective_from): row for row in emulated_prices.PRICES}


def _rates(rates: pricing.Rates | emulated_prices.Rates) -> tuple[Decimal, ...]:
    return (rates.input, rates.cache_write_5m, rates.cache_write_1h, rates.cache_read, rates.output)


def test_both_price_tables_hold_the_same_rows() -> None:
    assert set(_emulated_rows()) == set(_gateway_rows())


def test_every_price_agrees() -> None:
    gateway = _gateway_rows()
    disagreements = []
    for key, ours in _emulated_rows().items():
        theirs = gateway[key]
        facts = {
            "effective_until": (ours.effective_until, theirs.effective_until),
            "rates": (_rates(ours.rates), _rates(theirs.rates)),
            "web_search_per_1k": (ours.web_search_per_1k, theirs.web_search_usd_per_1k),
            "bands": (
                [(b.above_prompt_tokens, _rates(b.rates)) for b in ours.bands],
                [(b.above_prompt_tokens, _rates(b.rates)) for b in theirs.bands],
            ),
        }
        disagreements += [
            f"{key}.{name}: emulator {mine!r}, gateway {other!r}"
            for name, (mine, other) in facts.items()
            if mine != other
        ]
    assert disagreements == []


def test_every_emulated_model_is_priced_or_knowingly_not() -> None:
    priced = {row.model for row in emulated_prices.PRICES}
    assert not priced & emulated_prices.UNPRICED
    assert priced | emulated_prices.UNPRICED == set(emulated.MODELS)


USAGES: list[tuple[dict[str, Any], str]] = [
    # (usage, why): every token kind, both tiers, both geos, both sides of a band.
    ({"input_tokens": 1_234, "output_tokens": 567}, "plain"),
    (
        {
            "input_tokens": 10,
            "output_tokens": 99,
            "cache_creation_input_tokens": 3_000,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 1_000,
                "ephemeral_1h_input_tokens": 2_000,
            },
            "cache_read_input_tokens": 4_321,
            "server_tool_use": {"web_search_requests": 3},
            "service_tier": "batch",
            "inference_geo": "us",
        },
        "cached, batch, US-only, web search",
    ),
    ({"input_tokens": 150_000, "output_tokens": 10, "cache_read_input_tokens": 60_000}, "long"),
]


def test_the_emulators_cost_of_a_response_is_the_gateways() -> None:
    """Whatever the emulator's cost report says a response cost, the gateway bills the same."""
    for key, row in _emulated_rows().items():
        model, speed, on = key
        price = price_sheets.shipped_price(model=model, on=on, speed=speed)
        assert price is not None, key
        for usage_fields, why in USAGES:
            usage = {
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "service_tier": "standard",
                "inference_geo": "global",
                **usage_fields,
                "speed": speed,
            }
            ours = sum((charge.usd for charge in emulated_prices.charges(row, usage)), Decimal(0))
            theirs = pricing.call_cost_usd(usage=Usage.from_api(usage), price=price)
            assert ours == theirs, (key, why)
