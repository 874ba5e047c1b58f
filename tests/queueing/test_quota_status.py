"""People see their own limits: used, in progress, left, reset and where their pace leads."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from queueing import quotas, selectors, services
from queueing.auth import api_token_create
from queueing.models import LLMRequest, Quota
from tests.conftest import Gateway
from tests.usage.factories import api_client, make_org, make_user
from usage.models import AuditLog

MODEL = "claude-haiku-4-5"


def body(output_tokens: int, max_tokens: int) -> dict[str, Any]:
    content = f"Hello [[emulator:output_tokens={output_tokens}]]"
    return {
        "model": MODEL,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": content}],
    }


def ask(user: Any, output_tokens: int = 40, max_tokens: int = 200) -> LLMRequest:
    row = services.submit_request(user=user, session_id="limits", **body(output_tokens, max_tokens))
    done = services.wait_for_result(request_id=row.pk, timeout_s=30)
    # The quota is settled a moment after the row is written: wait for nothing to be held.
    deadline = time.monotonic() + 10
    while quotas.usage_now(holder_kind="user", holder_id=user.pk)["day"]["tokens_held"]:
        assert time.monotonic() < deadline, "the quota was never settled"
        time.sleep(0.02)
    return done


def test_a_user_sees_used_left_reset_and_a_forecast_from_the_last_hours_pace(
    gateway: Gateway,
) -> None:
    acme = make_org("Acme")
    alice = make_user("alice", org=acme)
    Quota.objects.create(user=alice, tokens_per_day=100_000)
    Quota.objects.create(organization=acme, usd_per_month=Decimal("50"))
    for _ in range(2):
        assert ask(alice).status == LLMRequest.Status.SUCCEEDED

    lines = {(line.holder, line.label): line for line in selectors.quota_lines(user=alice)}
    assert set(lines) == {("you", "daily tokens"), ("Acme", "monthly USD")}
    billed = list(AuditLog.objects.filter(user=alice))
    tokens = sum(row.total_input_tokens + row.output_tokens for row in billed)
    daily = lines[("you", "daily tokens")]
    assert daily.used == tokens and daily.held == 0
    assert daily.remaining == 100_000 - tokens
    assert daily.resets_at.hour == 0 and daily.resets_at > dt.datetime.now(dt.UTC)
    # Everything was spent within the hour, so the pace is all of it.
    assert daily.pace_per_hour == tokens
    expected = dt.datetime.now(dt.UTC) + dt.timedelta(hours=(100_000 - tokens) / tokens)
    if expected < daily.resets_at:
        assert daily.reaches_limit_at is not None
        assert abs((daily.reaches_limit_at - expected).total_seconds()) < 60
        assert "you reach it around" in daily.forecast()
    else:
        assert daily.reaches_limit_at is None and "lasts until it resets" in daily.forecast()
    monthly = lines[("Acme", "monthly USD")]
    assert monthly.used == sum(row.cost_usd for row in billed) > 0


def test_a_spent_quota_says_reached_and_when_it_resets(gateway: Gateway) -> None:
    bob = make_user("bob")
    quota = Quota.objects.create(user=bob, tokens_per_day=1_000_000)
    ask(bob)
    used = sum(r.total_input_tokens + r.output_tokens for r in AuditLog.objects.filter(user=bob))
    Quota.objects.filter(pk=quota.pk).update(tokens_per_day=used)

    (line,) = selectors.quota_lines(user=bob)
    assert line.remaining == 0 and line.percent_used == 100.0
    assert line.forecast().startswith("reached; resets ")


@pytest.mark.django_db
def test_no_quota_means_no_lines_and_the_page_says_so(redis_client: Any) -> None:
    carol = make_user("carol")
    assert selectors.quota_lines(user=carol) == []
    client = Client()
    client.force_login(carol)
    page = client.get("/queue/").content.decode()
    assert "Your limits" in page and "No quota applies" in page


def test_the_page_and_the_api_show_only_the_callers_own_limits(gateway: Gateway) -> None:
    dave = make_user("dave")
    erin = make_user("erin")
    Quota.objects.create(user=dave, tokens_per_day=25_000)
    Quota.objects.create(user=erin, tokens_per_day=777_777)
    ask(dave)

    reply = api_client(dave).get("/api/v1/quota")
    assert reply.status_code == 200
    (line,) = reply.json()["quotas"]
    assert line["quota"] == "daily tokens" and line["limit"] == 25_000 and line["holder"] == "you"
    assert line["used"] > 0 and line["remaining"] == 25_000 - line["used"]
    assert line["forecast"]

    client = Client()
    client.force_login(dave)
    page = client.get("/queue/").content.decode()
    assert "25,000" in page and f"{line['remaining']:,}" in page
    assert "777,777" not in page
    assert Client().get("/api/v1/quota").status_code == 401


@pytest.mark.django_db
def test_without_redis_the_page_still_works_and_the_api_says_try_again(own_redis: Any) -> None:
    frank = make_user("frank")
    Quota.objects.create(user=frank, tokens_per_day=1_000)
    own_redis.stop()
    client = Client()
    client.force_login(frank)
    page = client.get("/queue/")
    assert page.status_code == 200 and "quota counters are unavailable" in page.content.decode()
    reply = api_client(frank).get("/api/v1/quota")
    assert reply.status_code == 503 and reply.headers["Retry-After"]


def test_passing_80_percent_shows_the_person_a_notice_on_their_page(gateway: Gateway) -> None:
    grace = make_user("grace")
    quota = Quota.objects.create(user=grace, tokens_per_day=1_000_000)
    ask(grace)
    used = sum(r.total_input_tokens + r.output_tokens for r in AuditLog.objects.filter(user=grace))
    # Room for exactly one more call of this size, which then crosses 80% of the limit.
    worst = services.check_submission(
        user=grace, session_id="limits", priority="query", params=body(35, 40)
    ).worst_case_tokens
    Quota.objects.filter(pk=quota.pk).update(tokens_per_day=used + worst + 2)
    ask(grace, output_tokens=35, max_tokens=40)

    (notice,) = selectors.alert_notices(user=grace)
    assert notice.threshold == 80 and "80% of your daily tokens quota used" in notice.text
    client = Client()
    client.force_login(grace)
    assert notice.text in client.get("/queue/").content.decode()
    assert selectors.alert_notices(user=make_user("heidi")) == []


def test_a_users_key_budget_is_one_of_their_limits(gateway: Gateway) -> None:
    ivan = make_user("ivan")
    key, _ = api_token_create(user=ivan, name="notebook", budget_usd_per_day=Decimal("1"))
    row = services.submit_request(
        user=ivan, session_id="limits", api_token=key, **body(output_tokens=40, max_tokens=200)
    )
    services.wait_for_result(request_id=row.pk, timeout_s=30)
    deadline = time.monotonic() + 10
    while quotas.usage_now(holder_kind="key", holder_id=key.pk)["day"]["usd_held"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)

    (line,) = selectors.quota_lines(user=ivan)
    assert line.holder == f"key 'notebook' ({key.prefix}…)" and line.label == "daily USD"
    billed = AuditLog.objects.get(llm_request_id=row.pk)
    assert line.used == billed.cost_usd > 0 and line.remaining == Decimal("1") - billed.cost_usd
    assert line.pace_per_hour == billed.cost_usd
