"""The demo's summary is one accounting of the run's requests, whoever submitted them.

Rows are made the way the demo, the web page and the JSON API make them; the figures are read
back from the printed ``Summary:`` line, as a person watching ``make demo`` reads them.
"""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from llm_calls.types import Usage
from queueing import services as queue_services
from queueing.models import LLMRequest, Quota
from ratelimit_project import demo
from tests.demo_summary import FINAL_STATES, STATES, parse_summary
from tests.usage.factories import api_client, make_user, record
from usage import services as usage_services

Status = LLMRequest.Status
MODEL = "claude-sonnet-5-5"
BODY: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "Which receipts do I keep for travel?"}],
}


@pytest.fixture
def prices(db) -> None:
    usage_services.prices_seed_defaults()
    usage_services.price_cache_clear()


def row(user: Any, status: str) -> LLMRequest:
    """A request in ``status`` as the demo's traffic leaves one (the workers moved it there)."""
    return LLMRequest.objects.create(
        user=user,
        session_id=f"{user.username}-chat-demo-1",
        model=MODEL,
        params={"messages": BODY["messages"]},
        max_tokens=50,
        status=status,
    )


def summary(*, first_pk: int, by_traffic: int) -> str:
    out = io.StringIO()
    demo.final_summary(
        out=out,
        first_pk=first_pk,
        since=timezone.now(),
        emulator=None,
        by_traffic=by_traffic,
        serving=False,
    )
    return out.getvalue()


def test_summary_counts_every_request_of_the_run_once_whoever_sent_it(redis_client, prices) -> None:
    carol = make_user("carol")
    earlier = row(carol, Status.SUCCEEDED)  # a previous demo's: not this run's
    first_pk = earlier.pk + 1

    # The demo's traffic: a request in each state, and a quota rejection made by the service.
    pending = [row(carol, status) for status in (Status.QUEUED, Status.DISPATCHED, Status.RUNNING)]
    row(carol, Status.FAILED)
    answered = row(carol, Status.SUCCEEDED)
    record(
        user=carol,
        llm_request=answered,
        model=MODEL,
        usage=Usage(input_tokens=20, output_tokens=40, cache_read_input_tokens=7_000),
    )
    dave = make_user("dave")
    Quota.objects.create(user=dave, tokens_per_day=10, usd_per_day=Decimal("1"))
    with pytest.raises(queue_services.QuotaExceeded):
        queue_services.submit_request(user=dave, session_id="dave-chat-demo-1", **BODY)
    by_traffic = 6

    # Someone exploring meanwhile: a rejected submission on the page, one queued and then
    # cancelled through the API.
    explorer = make_user("explorer")
    Quota.objects.create(user=explorer, tokens_per_day=10, usd_per_day=Decimal("1"))
    page = Client()
    page.force_login(explorer)
    form = {"session_id": "explore", "model": MODEL, "priority": "query", "prompt": "Hi"}
    assert page.post("/queue/", {**form, "max_tokens": "50"}).status_code == 200
    api = api_client(make_user("integrator"))
    created = api.post(
        "/api/v1/requests", data={**BODY, "session_id": "svc"}, content_type="application/json"
    )
    assert created.status_code in (200, 201, 202), created.content
    pk = created.json()["id"]
    assert api.post(f"/api/v1/requests/{pk}/cancel").status_code == 200

    text = summary(first_pk=first_pk, by_traffic=by_traffic)
    assert "The queue has not drained: 1 requests are still queued and 2 in flight" in text
    while_running = parse_summary(text)
    assert while_running is not None
    assert (while_running.submitted, while_running.from_others) == (8, 2)
    assert {state: while_running.count(state) for state in STATES} == {
        "queued": 1,
        "in flight": 2,
        "done": 1,
        "failed": 1,
        "rejected": 2,  # dave's by the traffic, the explorer's on the page
        "cancelled": 1,
    }
    assert while_running.figures["cache hits"] == "100%"  # of the one call answered
    assert while_running.in_states() == while_running.submitted

    # The queue drains: every request has its final state and the finals add up.
    LLMRequest.objects.filter(pk__in=[r.pk for r in pending]).update(status=Status.SUCCEEDED)
    text = summary(first_pk=first_pk, by_traffic=by_traffic)
    drained = parse_summary(text)
    assert drained is not None
    assert drained.count("done") == 4
    assert drained.in_states(FINAL_STATES) == drained.submitted == 8
    assert "has not drained" not in text
