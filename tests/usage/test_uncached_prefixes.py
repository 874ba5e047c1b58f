"""Staff see which prompt prefixes were sent at full price most: what to cache next."""

from __future__ import annotations

import pytest
from django.test import Client

from llm_calls.caching import plan_cache, record_uncached, uncached_prefixes
from tests.usage.factories import make_user

MODEL = "claude-sonnet-4-6"


def body(system: str) -> dict:
    return {
        "model": MODEL,
        "max_tokens": 50,
        "system": system,
        "messages": [{"role": "user", "content": "hello"}],
    }


def test_a_prefix_below_the_minimum_is_reported_with_its_reason_and_size(redis_client) -> None:
    small = "short policy. " * 50  # ~175 tokens: below Sonnet's 1,024 minimum
    for _ in range(3):
        record_uncached(plan_cache(params=body(small)))
    big = "the long handbook. " * 600  # ~2,850 tokens: the planner caches it
    record_uncached(plan_cache(params=body(big)))

    report = uncached_prefixes()

    assert len(report) == 1
    (row,) = report
    assert row.model == MODEL and row.kind == "system"
    assert row.times_sent == 3
    assert row.uncached_tokens == 3 * row.prefix_tokens
    assert "below" in row.reason and "minimum" in row.reason


@pytest.mark.django_db
def test_the_staff_page_lists_them_with_their_cost(redis_client) -> None:
    record_uncached(plan_cache(params=body("short policy. " * 50)))
    staff = make_user("cache-ops", staff=True)
    client = Client()
    client.force_login(staff)
    page = client.get("/usage/caching/uncached-prefixes/").content.decode()
    assert "below claude-sonnet-4-6" in page
    assert "$0.0005" in page  # ~176 tokens at $3 per million
    client.force_login(make_user("not-staff"))
    assert client.get("/usage/caching/uncached-prefixes/").status_code == 403
