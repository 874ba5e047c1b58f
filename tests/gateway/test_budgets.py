"""A gateway key's budget, as an app on the official SDK meets it.

The key's spend is counted from what its calls were billed (``audit_log``), its refusal is the
400 Anthropic answers when a spend limit is reached (the SDKs do not retry it), and the budget
is the key's alone: the user's other calls do not spend it.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import anthropic
import pytest
from anthropic.types import MessageParam

from llm_calls.types import Usage
from queueing import quotas
from queueing.models import LLMRequest, Quota
from tests.gateway.conftest import MODEL, Served
from tests.usage.factories import record

HELLO: list[MessageParam] = [{"role": "user", "content": "Say hello to the gateway."}]


def test_a_key_whose_budget_is_spent_is_refused_naming_it_and_nothing_is_sent(
    served: Served,
) -> None:
    # Earlier today the key's calls cost what its budget allows (billed and recorded, as a
    # worker records them); Redis has no counter for it yet, so it is rebuilt from audit_log.
    earlier = LLMRequest.objects.create(
        user=served.user,
        session_id="earlier",
        model=MODEL,
        params={},
        max_tokens=2_000,
        status=LLMRequest.Status.SUCCEEDED,
        api_token=served.token,
    )
    spent = record(
        user=served.user,
        model=MODEL,
        usage=Usage(input_tokens=3_000, output_tokens=2_000),
        llm_request=earlier,
    ).cost_usd
    Quota.objects.create(api_token=served.token, usd_per_day=spent)

    client = served.sdk().with_options(max_retries=2)
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    assert refused.value.status_code == 400
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    message = refused.value.message
    assert f"Daily USD budget of gateway key 'alice's app' ({served.token.prefix}…) exceeded" in (
        message
    )
    assert "resets at" in message
    # One refusal (not retried), kept as a rejected row with its reason; nothing was sent.
    row = LLMRequest.objects.exclude(pk=earlier.pk).get()
    assert row.status == LLMRequest.Status.REJECTED
    assert row.api_token_id == served.token.pk
    assert "budget of gateway key 'alice's app'" in row.error_message
    assert served.emulator.log() == []


def test_a_keys_calls_spend_its_budget_at_what_they_were_billed(served: Served) -> None:
    Quota.objects.create(api_token=served.token, usd_per_day=Decimal("1"))
    served.sdk().messages.create(model=MODEL, max_tokens=64, messages=HELLO)

    row = LLMRequest.objects.get()
    billed = row.audit_rows.get()

    def day() -> dict[str, Any]:
        counted: dict[str, Any] = quotas.usage_now(holder_kind="key", holder_id=served.token.pk)
        return counted["day"]  # type: ignore[no-any-return]

    deadline = time.monotonic() + 10  # the worker settles a moment after the answer is sent
    while day()["usd_held"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert day()["usd_held"] == 0
    assert day()["usd_used"] == billed.cost_usd > 0
    assert day()["tokens_used"] == billed.total_input_tokens + billed.output_tokens
