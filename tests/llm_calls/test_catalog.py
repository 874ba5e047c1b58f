"""The model catalog: today's models, their facts, and settings that add or override models."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from llm_calls import catalog
from llm_calls.tokens import estimate_input_tokens
from llm_calls.validation import InvalidRequest, check_message_params


def info(model: str) -> catalog.ModelInfo:
    found = catalog.model_info(model)
    assert found is not None, model
    return found


def test_the_defaults_are_current_models() -> None:
    for model in (catalog.DEFAULT_MODEL, catalog.DEFAULT_SMALL_MODEL):
        assert info(model).status == catalog.ACTIVE


def test_newer_tokenizer_models_are_estimated_at_about_30_percent_more_tokens() -> None:
    text = "word " * 2_000  # 10,000 characters
    old = estimate_input_tokens(
        {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": text}]}
    )
    new = estimate_input_tokens(
        {"model": "claude-haiku-5-5", "messages": [{"role": "user", "content": text}]}
    )
    assert old == 2_500 + 4  # 10,000 / 4, plus the message overhead
    # At 4 / 1.3 characters per token (3,250 and a float's rounding): the emulator's count too.
    assert new == math.ceil(10_000 / (4 / 1.3)) + 4 == 3_251 + 4


def test_settings_add_a_model_without_a_code_change(settings) -> None:
    settings.CLAUDE_MODELS = {
        "claude-sonnet-6": {
            "display_name": "Claude Sonnet 6",
            "line": "sonnet",
            "version": "6.0",
            "status": "active",
            "model_class": "sonnet-6",
            "context_window": 2_000_000,
            "max_output_tokens": 256_000,
            "min_cache_tokens": 512,
            "released_on": "2027-03-01",
        }
    }
    added = check_message_params(
        {
            "model": "claude-sonnet-6",
            "max_tokens": 200_000,
            "messages": [{"role": "user", "content": "hi"}],
        }
    )
    assert added.released_on == dt.date(2027, 3, 1)
    assert "sonnet-6" in catalog.model_classes()


def test_settings_override_one_fact_of_a_known_model(settings) -> None:
    settings.CLAUDE_MODELS = {"claude-haiku-4-5": {"status": "retired", "retires_on": "2026-12-01"}}
    with pytest.raises(InvalidRequest) as error:
        check_message_params(
            {
                "model": "claude-haiku-4-5",
                "max_tokens": 1,
                "messages": [{"role": "user", "content": "x"}],
            }
        )
    assert "retired on 2026-12-01" in error.value.problem
    # Everything not overridden stays as it was.
    assert info("claude-haiku-4-5").min_cache_tokens == 4096


def test_a_misspelt_setting_names_the_field(settings) -> None:
    settings.CLAUDE_MODELS = {"claude-haiku-4-5": {"min_cache_token": 1}}
    with pytest.raises(ImproperlyConfigured, match="min_cache_token"):
        catalog.known_models()


def test_lifecycle_notes_say_what_to_do() -> None:
    note = info("claude-opus-4-5").lifecycle_note()
    assert note == "deprecated on 2026-11-23, retires 2027-01-22, use claude-opus-5-5 instead"


def test_docs_models_table_is_the_catalog() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text()
    _, _, generated = text.partition("<!-- generated: claude_models -->\n")
    assert generated == catalog.markdown_table(), "run: python manage.py claude_models"
