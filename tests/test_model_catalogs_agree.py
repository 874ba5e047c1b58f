"""The gateway's model catalog and the emulator's agree on every fact both hold.

The emulator plays Anthropic, so it keeps its own table (it must not import the gateway);
this test is what keeps the two copies one fact.
"""

from __future__ import annotations

import dataclasses

from llm_calls import catalog
from llm_calls.emulator import model_catalog as emulated

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
