"""The limiter reserves what a call will be charged: its prompt minus what the cache holds now.

Real parts: the emulator over HTTP (its prompt cache and ITPM bucket behave as the API's), the
isolated Redis, the gateway's own submit and call paths. What is checked is what an operator
would notice: a reservation that shrinks once a response shows the prefix cached, that grows
back when the premise changes (another upstream, an idle gap, a cache that lost the entry),
and zero 429s when the cache is cold again behind the same address.
"""

from __future__ import annotations

import time

import pytest

from llm_calls import caching
from llm_calls.caching import WarmPrefixes
from llm_calls.catalog import model_class
from llm_calls.types import Usage
from queueing import services
from queueing.limiter import get_limiter, input_reservation
from queueing.models import LLMRequest
from tests.usage.factories import make_user
from usage import services as usage_services

MODEL = "claude-sonnet-5-5"
BUCKET = model_class(MODEL)
# ~6,000 tokens of shared instructions (well above Sonnet 5.5's 512-token cache minimum).
SYSTEM = " ".join(f"Rule {n}: answer politely and cite the handbook section." for n in range(330))


def body(question: str, system: str = SYSTEM) -> dict:
    return {
        "model": MODEL,
        "max_tokens": 16,
        "system": system,
        "messages": [{"role": "user", "content": f"{question} [[emulator:output_tokens=4]]"}],
    }


@pytest.fixture
def upstream(emulator, redis_client, settings, db):
    settings.ANTHROPIC_BASE_URL = emulator.base_url
    settings.ANTHROPIC_API_KEY = "sk-ant-test-warmth"
    settings.LLM_RETRY_BASE_S = 0.01
    settings.LLM_RETRY_CAP_S = 0.05
    settings.GATEWAY_BATCH_PRIORITY_CLASSES = []
    usage_services.prices_seed_defaults()
    usage_services.price_cache_clear()
    return emulator


def queued(user, question: str, system: str = SYSTEM) -> LLMRequest:
    row = services.submit_request(
        user=user, session_id="warmth", priority="query", **body(question, system)
    )
    return row


def reservation(row: LLMRequest, *, forecast: bool = False) -> int:
    """What the dispatcher would reserve for this queued row now (forecast: what the ETA uses)."""
    return input_reservation(
        model=row.model,
        estimated_input_tokens=row.estimated_input_tokens,
        prefixes=caching.prefixes_from_json(row.cache_prefixes),
        warm=WarmPrefixes(forecast=forecast),
        factor=get_limiter().estimate_factor(BUCKET),
    )


def answer(user, question: str, system: str = SYSTEM) -> dict:
    """The usage the API billed for one inline call."""
    row = services.call_claude(user=user, session_id="warmth", **body(question, system))
    assert row.result is not None
    return row.result["usage"]


def test_a_prefix_is_reserved_in_full_until_a_response_shows_it_cached(upstream, settings) -> None:
    user = make_user("warm-a")
    first = queued(user, "Which form do I need?")
    assert first.estimated_input_tokens > 3_000
    assert reservation(first) == first.estimated_input_tokens  # cold: every token is charged

    written = answer(user, "Where is the travel policy?")
    assert written["cache_creation_input_tokens"] > 3_000

    row = queued(user, "How many days of leave?")
    question_only = row.estimated_input_tokens - row.cache_prefixes[-1][1]
    # The tokenizer factor learned from one response, times the part the cache will not serve.
    assert reservation(row) == pytest.approx(
        question_only * get_limiter().estimate_factor(BUCKET), abs=2
    )
    assert reservation(row) < 100

    read = answer(user, "Who approves expenses?")
    assert read["cache_read_input_tokens"] > 3_000  # the prediction was right

    # Another account (or another emulator) has its own, cold cache: reserved in full again.
    settings.ANTHROPIC_API_KEY = "sk-ant-test-another-account"
    elsewhere = queued(user, "And now?")
    assert reservation(elsewhere) == elsewhere.estimated_input_tokens


def test_a_warm_record_is_trusted_only_while_responses_confirm_it(upstream) -> None:
    user = make_user("warm-b")
    row = queued(user, "Anything new?")
    plan = caching.plan_cache(params=body("Anything new?"))
    now = time.time()
    prefix = plan.breakpoints[-1].prefix_tokens
    usage = Usage(input_tokens=20, cache_creation_input_tokens=prefix)
    # A response 60 s ago wrote the prefix: the entry lives 5 minutes, but nothing has
    # confirmed it for longer than the limiter trusts (an idle gap).
    caching.record_warm_prefixes(plan, usage=usage, sent_at=now - 61, now=now - 60)
    assert reservation(row) == row.estimated_input_tokens
    assert reservation(row, forecast=True) < 100  # the ETA still expects it served
    # Confirmed just now: trusted.
    caching.record_warm_prefixes(plan, usage=usage, sent_at=now - 1)
    assert reservation(row) < 100
    # Sent more than 5 minutes ago: the entry has expired, nothing is recorded.
    other = caching.plan_cache(params=body("x", system=SYSTEM + " Expired."))
    caching.record_warm_prefixes(
        other, usage=Usage(cache_creation_input_tokens=prefix), sent_at=now - 400
    )
    assert reservation(queued(user, "x", system=SYSTEM + " Expired."), forecast=True) > 3_000


def test_a_response_that_rewrites_a_prefix_held_warm_forgets_every_warm_prefix(upstream) -> None:
    user = make_user("warm-c")
    other_system = SYSTEM.replace("politely", "briefly")
    answer(user, "first")
    answer(user, "second", system=other_system)
    assert reservation(queued(user, "q", system=other_system)) < 100

    upstream.reset()  # the upstream lost its cache behind the same address
    rewritten = answer(user, "third")
    assert rewritten["cache_creation_input_tokens"] > 3_000
    # That response contradicted us: what we held of the *other* prompt is not trusted either.
    assert reservation(queued(user, "q2", system=other_system)) > 3_000
    # The rewritten prefix itself is known again from that response.
    assert reservation(queued(user, "q3")) < 100


def test_a_cold_cache_behind_the_same_address_draws_no_429(gateway, settings, monkeypatch) -> None:
    """The demo's second run, made strict: the cache is cold but our records say warm."""
    itpm = 12_000  # four cold prompts of ~3,000 tokens overrun it, one a second fits
    settings.GATEWAY_RATE_LIMITS = {BUCKET: {"rpm": 0, "itpm": itpm, "otpm": 0}}
    gateway.emulator.configure(itpm=itpm, latency_ms=300)
    user = make_user("warm-d")
    answer(user, "warm it")
    get_limiter().try_reserve(model_class=BUCKET, input_tokens=0, output_tokens=0)

    gateway.emulator.reset()  # cold cache, same URL and key; the reset restores its limits
    gateway.emulator.configure(itpm=itpm, latency_ms=300)
    monkeypatch.setattr(caching, "WARM_CONFIRMED_S", 0.5)
    time.sleep(0.6)  # an idle gap longer than the limiter trusts a warm record
    rows = [queued(user, f"question {n}") for n in range(6)]
    deadline = time.time() + 90
    while (
        time.time() < deadline
        and LLMRequest.objects.filter(
            pk__in=[r.pk for r in rows], status__in=["queued", "dispatched", "running"]
        ).exists()
    ):
        time.sleep(0.2)
    statuses = set(
        LLMRequest.objects.filter(pk__in=[r.pk for r in rows]).values_list("status", flat=True)
    )
    assert statuses == {"succeeded"}
    assert [e for e in gateway.emulator.log() if e.get("status") == 429] == []
