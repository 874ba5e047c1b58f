"""Quota admission against a real redis-server and the test database."""

from __future__ import annotations

import logging
import multiprocessing
import threading
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import count
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.db import connections

from llm_calls.types import Usage
from organizations.models import Organization
from queueing import quotas
from queueing.auth import api_token_create
from queueing.models import ApiToken, LLMRequest, Quota, QuotaAlert
from tests.usage.factories import record
from usage import services as usage_services

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
_ids = count(1)


def rid() -> int:
    return next(_ids)


@pytest.fixture(autouse=True)
def _no_database_loader(settings) -> None:
    """These tests give a loader explicitly where they test rebuilding; elsewhere a counter
    starts at zero (the project default rebuilds from audit_log, tested in the loader test)."""
    settings.GATEWAY_QUOTA_USAGE_LOADER = None


@pytest.fixture
def alice(db) -> User:
    return User.objects.create_user(username="alice")


@pytest.fixture
def acme(db) -> Organization:
    return Organization.objects.create(name="Acme")


def admit(
    user: User,
    *,
    tokens: int = 1_000,
    usd: str = "0.01",
    org: Organization | None = None,
    priority: str = "query",
    request_id: int | None = None,
    now=NOW,
    **kw,
) -> quotas.QuotaCheck:
    return quotas.admit(
        user_id=user.pk,
        org_id=org.pk if org else None,
        request_id=request_id if request_id is not None else rid(),
        tokens=tokens,
        usd=Decimal(usd),
        priority=priority,
        now=now,
        **kw,
    )


def counters(holder_kind: str, holder_id: int, now=NOW) -> dict:
    return quotas.usage_now(holder_kind=holder_kind, holder_id=holder_id, now=now)  # type: ignore[arg-type]


def test_rejection_names_the_quota_the_numbers_and_the_reset(redis_client, alice) -> None:
    Quota.objects.create(user=alice, tokens_per_day=100_000)

    def loader(kind: str, holder_id: int, start: datetime) -> tuple[int, Decimal]:
        return (98_500, Decimal("0")) if (kind, start.day) == ("user", 30) else (0, Decimal("0"))

    check = admit(alice, tokens=4_000, usage_loader=loader)
    assert not check.admitted
    assert check.message == (
        "Daily token quota for user alice exceeded: 98,500 of 100,000 used, this request needs "
        "up to 4,000; resets at 2026-12-01 00:00 UTC."
    )
    assert check.quota == "user daily tokens"
    assert (check.limit, check.used) == (100_000, 98_500)
    assert check.resets_at == datetime(2026, 12, 1, tzinfo=UTC)
    assert admit(alice, tokens=1_500).admitted  # exactly up to the limit is fine


def test_organization_monthly_usd_quota(redis_client, alice, acme) -> None:
    Quota.objects.create(organization=acme, usd_per_month=Decimal("10"))
    assert admit(alice, org=acme, usd="9.50").admitted
    check = admit(alice, org=acme, usd="0.75")
    assert not check.admitted
    assert check.quota == "organization monthly USD"
    assert check.message == (
        "Monthly USD quota for organization Acme exceeded: $9.50 of $10.00 used, this request "
        "needs up to $0.75; resets at 2026-12-01 00:00 UTC."
    )
    assert check.used == Decimal("9.5") and check.limit == Decimal("10")


def test_admission_is_all_or_nothing_across_holders(redis_client, alice, acme) -> None:
    Quota.objects.create(user=alice, tokens_per_day=1_000_000)
    Quota.objects.create(organization=acme, tokens_per_day=5_000)
    assert admit(alice, org=acme, tokens=4_000).admitted
    check = admit(alice, org=acme, tokens=4_000)
    assert not check.admitted and check.quota == "organization daily tokens"
    # the user's own counter was not charged for the refused request
    assert counters("user", alice.pk)["day"]["tokens_held"] == 4_000
    assert counters("organization", acme.pk)["day"]["tokens_held"] == 4_000


def test_settle_replaces_the_worst_case_by_the_actual_cost_once(redis_client, alice, acme) -> None:
    Quota.objects.create(user=alice, tokens_per_day=10_000)
    request_id = rid()
    assert admit(alice, org=acme, tokens=4_000, usd="0.05", request_id=request_id).admitted
    assert counters("user", alice.pk)["day"]["tokens_held"] == 4_000
    quotas.settle(
        user_id=alice.pk,
        org_id=acme.pk,
        request_id=request_id,
        tokens=1_500,
        usd=Decimal("0.0123455"),
        now=NOW,
    )
    for kind, holder in (("user", alice.pk), ("organization", acme.pk)):
        for period in ("day", "month"):
            row = counters(kind, holder)[period]
            assert row["tokens_used"] == 1_500 and row["tokens_held"] == 0
            assert row["usd_used"] == Decimal("0.012346") and row["usd_held"] == 0
    # a redelivered job settles again, or releases: nothing changes
    quotas.settle(
        user_id=alice.pk,
        org_id=acme.pk,
        request_id=request_id,
        tokens=1_500,
        usd=Decimal("0.02"),
        now=NOW,
    )
    quotas.release(user_id=alice.pk, org_id=acme.pk, request_id=request_id, now=NOW)
    assert counters("user", alice.pk)["day"]["tokens_used"] == 1_500
    assert counters("user", alice.pk)["in_flight"] == 0
    # admitting the settled request again does not reserve anything
    assert admit(alice, org=acme, tokens=4_000, request_id=request_id).admitted
    assert counters("user", alice.pk)["day"]["tokens_held"] == 0


def test_release_gives_everything_back_once(redis_client, alice) -> None:
    Quota.objects.create(user=alice, tokens_per_day=5_000)
    request_id = rid()
    assert admit(alice, tokens=5_000, request_id=request_id).admitted
    assert not admit(alice, tokens=1).admitted
    quotas.release(user_id=alice.pk, org_id=None, request_id=request_id, now=NOW)
    quotas.release(user_id=alice.pk, org_id=None, request_id=request_id, now=NOW)
    assert counters("user", alice.pk)["day"]["tokens_held"] == 0
    assert admit(alice, tokens=5_000).admitted
    # billed after all (a cancel raced the call): a later settle still counts it
    quotas.settle(
        user_id=alice.pk, org_id=None, request_id=request_id, tokens=300, usd=Decimal("0"), now=NOW
    )
    assert counters("user", alice.pk)["day"]["tokens_used"] == 300


def test_admitting_the_same_request_twice_reserves_once(redis_client, alice) -> None:
    Quota.objects.create(user=alice, tokens_per_day=5_000)
    assert admit(alice, tokens=3_000, request_id=4242).admitted
    assert admit(alice, tokens=3_000, request_id=4242).admitted
    assert counters("user", alice.pk)["day"]["tokens_held"] == 3_000


def test_max_concurrent_counts_admitted_unsettled_requests(redis_client, alice) -> None:
    Quota.objects.create(user=alice, max_concurrent=2)
    first, second = rid(), rid()
    assert admit(alice, request_id=first).admitted
    assert admit(alice, request_id=second).admitted
    check = admit(alice)
    assert not check.admitted
    assert check.quota == "user concurrent requests"
    assert check.message == (
        "Concurrent request limit for user alice reached: 2 of 2 requests in progress; try "
        "again when one finishes."
    )
    quotas.settle(
        user_id=alice.pk, org_id=None, request_id=first, tokens=10, usd=Decimal("0"), now=NOW
    )
    assert admit(alice).admitted


def test_allowed_priorities(redis_client, alice, acme) -> None:
    Quota.objects.create(organization=acme, allowed_priorities=["query", "bulk"])
    assert admit(alice, org=acme, priority="bulk").admitted
    check = admit(alice, org=acme, priority="approval")
    assert not check.admitted
    assert check.quota == "organization allowed priorities"
    assert check.message == (
        "Priority 'approval' is not allowed for organization Acme (allowed: query, bulk)."
    )
    assert counters("organization", acme.pk)["in_flight"] == 1  # the refused one took nothing


def test_settling_after_midnight_frees_yesterday_and_charges_today(redis_client, alice) -> None:
    Quota.objects.create(user=alice, tokens_per_day=10_000)
    late = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)
    after = datetime(2026, 12, 1, 0, 1, tzinfo=UTC)
    request_id = rid()
    assert admit(alice, tokens=8_000, request_id=request_id, now=late).admitted
    quotas.settle(
        user_id=alice.pk,
        org_id=None,
        request_id=request_id,
        tokens=2_000,
        usd=Decimal("0"),
        now=after,
    )
    assert counters("user", alice.pk, now=late)["day"]["tokens_held"] == 0
    assert counters("user", alice.pk, now=late)["day"]["tokens_used"] == 0
    assert counters("user", alice.pk, now=after)["day"]["tokens_used"] == 2_000
    assert counters("user", alice.pk, now=after)["month"]["tokens_used"] == 2_000
    assert counters("user", alice.pk, now=late)["month"]["tokens_held"] == 0


def test_missing_counters_are_rebuilt_from_the_database(redis_client, alice, acme) -> None:
    Quota.objects.create(user=alice, tokens_per_month=50_000)
    calls: list[tuple[str, int, datetime]] = []

    def loader(kind: str, holder_id: int, start: datetime) -> tuple[int, Decimal]:
        calls.append((kind, holder_id, start))
        return 45_000, Decimal("1.25")

    assert admit(alice, org=acme, tokens=5_000, usage_loader=loader).admitted
    assert set(calls) == {
        ("user", alice.pk, datetime(2026, 11, 30, tzinfo=UTC)),
        ("user", alice.pk, datetime(2026, 11, 1, tzinfo=UTC)),
        ("organization", acme.pk, datetime(2026, 11, 30, tzinfo=UTC)),
        ("organization", acme.pk, datetime(2026, 11, 1, tzinfo=UTC)),
    }
    assert not admit(alice, org=acme, tokens=1, usage_loader=loader).admitted
    assert len(calls) == 4  # loaded once; Redis holds the counters from then on
    assert counters("user", alice.pk)["month"]["usd_used"] == Decimal("1.25")

    # Redis lost everything: the loader's figures (which include recorded calls) come back
    redis_client.flushall()
    assert not admit(alice, tokens=5_001, usage_loader=loader).admitted
    assert admit(alice, tokens=5_000, usage_loader=loader).admitted


def test_a_counter_rebuilt_at_settle_already_includes_the_recorded_call(redis_client, alice):
    def loader(kind: str, holder_id: int, start: datetime) -> tuple[int, Decimal]:
        return 7_000, Decimal("0")  # the audit log, which already holds this call's 700 tokens

    request_id = rid()
    assert admit(alice, tokens=1_000, request_id=request_id, usage_loader=loader).admitted
    redis_client.flushall()
    quotas.settle(
        user_id=alice.pk,
        org_id=None,
        request_id=request_id,
        tokens=700,
        usd=Decimal("0"),
        now=NOW,
        usage_loader=loader,
    )
    assert counters("user", alice.pk)["day"]["tokens_used"] == 7_000


def test_alerts_at_80_and_100_percent_once_per_period(redis_client, alice, acme, settings, caplog):
    settings.ADMINS = [("Ops", "ops@example.com")]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    Quota.objects.create(user=alice, tokens_per_day=10_000)
    Quota.objects.create(organization=acme, usd_per_month=Decimal("100"))

    def settle(tokens: int, usd: str, now=NOW) -> list[quotas.QuotaAlertEvent]:
        request_id = rid()
        assert admit(
            alice, org=acme, tokens=tokens, usd=usd, request_id=request_id, now=now
        ).admitted
        return quotas.settle(
            user_id=alice.pk,
            org_id=acme.pk,
            request_id=request_id,
            tokens=tokens,
            usd=Decimal(usd),
            now=now,
        )

    assert settle(7_000, "1") == []
    with caplog.at_level(logging.WARNING, logger="queueing.quotas"):
        events = settle(1_000, "1")
    assert [(e.quota, e.threshold, e.used, e.limit) for e in events] == [
        ("user daily tokens", 80, 8_000, 10_000)
    ]
    assert "user alice has used 80% of its daily tokens quota: 8,000 of 10,000" in caplog.text
    assert len(mail.outbox) == 1 and "alice" in mail.outbox[0].subject
    assert settle(500, "1") == []  # 85%: the 80% alert was already sent
    events = settle(1_500, "79")  # 100% of tokens, 82% of the org's monthly USD
    assert sorted((e.quota, e.threshold) for e in events) == [
        ("organization monthly USD", 80),
        ("user daily tokens", 100),
    ]
    alert = QuotaAlert.objects.get(organization=acme)
    assert (alert.metric, alert.threshold, alert.used, alert.limit) == (
        QuotaAlert.Metric.MONTHLY_USD,
        80,
        Decimal("82"),
        Decimal("100"),
    )
    assert alert.period_start == date(2026, 11, 1)
    assert QuotaAlert.objects.filter(user=alice).count() == 2
    # Redis forgets its markers (restart): the database still prevents a second alert
    for key in redis_client.keys("*:alert:*"):
        redis_client.delete(key)
    assert settle(0, "0") == []
    assert QuotaAlert.objects.count() == 3
    # a new day: the daily quota may alert again
    tomorrow = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    events = settle(8_000, "0", now=tomorrow)
    assert [(e.quota, e.threshold, e.period_start) for e in events] == [
        ("user daily tokens", 80, date(2026, 12, 1))
    ]


def test_bad_amounts_are_refused_before_anything_is_written(redis_client, alice) -> None:
    with pytest.raises(ValueError, match="tokens must be a whole number >= 0"):
        admit(alice, tokens=-5)
    with pytest.raises(ValueError, match="usd must be a Decimal >= 0"):
        quotas.admit(
            user_id=alice.pk,
            org_id=None,
            request_id=1,
            tokens=1,
            usd=Decimal("-1"),
            priority="query",
            now=NOW,
        )
    assert redis_client.keys("*") == []


def test_keys_are_namespaced_and_expire(redis_client, alice, acme) -> None:
    Quota.objects.create(user=alice, tokens_per_day=10_000, max_concurrent=5)
    request_id = rid()
    admit(alice, org=acme, request_id=request_id)
    admit(alice, org=acme)
    quotas.settle(
        user_id=alice.pk,
        org_id=acme.pk,
        request_id=request_id,
        tokens=10,
        usd=Decimal("0"),
        now=NOW,
    )
    keys = [key.decode() for key in redis_client.keys("*")]
    assert keys and all(key.startswith("gw:q:") for key in keys)
    assert all(redis_client.ttl(key) > 0 for key in keys)


# --- THE test: concurrent submissions never overspend -------------------------------------


ROOM_FOR = 10
CONTENDERS = 50


def _admit_in_child(user_id: int, org_id: int, request_id: int, start, out) -> None:
    from ratelimit_project import redis as project_redis

    project_redis.reset_clients()  # never share the parent's sockets after fork
    start.wait()
    check = quotas.admit(
        user_id=user_id,
        org_id=org_id,
        request_id=request_id,
        tokens=1_000,
        usd=Decimal("0.10"),
        priority="query",
        now=NOW,
    )
    out.put(check.admitted)
    connections.close_all()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("quota_kind", ["user tokens", "org usd", "concurrency"])
def test_fifty_concurrent_threads_against_room_for_ten_admit_exactly_ten(redis_client, quota_kind):
    user = User.objects.create_user(username="racer")
    org = Organization.objects.create(name="Racers")
    if quota_kind == "user tokens":
        Quota.objects.create(user=user, tokens_per_day=ROOM_FOR * 1_000)
    elif quota_kind == "org usd":
        Quota.objects.create(organization=org, usd_per_day=Decimal("1.00"))
    else:
        Quota.objects.create(user=user, max_concurrent=ROOM_FOR)
    barrier = threading.Barrier(CONTENDERS)
    results: list[bool] = []
    lock = threading.Lock()

    def contender(request_id: int) -> None:
        try:
            barrier.wait()
            check = quotas.admit(
                user_id=user.pk,
                org_id=org.pk,
                request_id=request_id,
                tokens=1_000,
                usd=Decimal("0.10"),
                priority="query",
                now=NOW,
            )
            with lock:
                results.append(check.admitted)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=contender, args=(10_000 + n,)) for n in range(CONTENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == CONTENDERS
    assert results.count(True) == ROOM_FOR


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_processes_against_room_for_ten_admit_exactly_ten(redis_client):
    user = User.objects.create_user(username="forker")
    org = Organization.objects.create(name="Forkers")
    Quota.objects.create(user=user, tokens_per_day=ROOM_FOR * 1_000)
    Quota.objects.create(organization=org, max_concurrent=40)
    connections.close_all()  # each child opens its own: a forked PostgreSQL socket is shared
    context = multiprocessing.get_context("fork")
    start, out = context.Event(), context.Queue()
    children = [
        context.Process(target=_admit_in_child, args=(user.pk, org.pk, 20_000 + n, start, out))
        for n in range(CONTENDERS)
    ]
    for child in children:
        child.start()
    start.set()
    results = [out.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    assert results.count(True) == ROOM_FOR
    assert counters("user", user.pk)["day"]["tokens_held"] == ROOM_FOR * 1_000
    assert counters("organization", org.pk)["in_flight"] == ROOM_FOR


def test_the_default_loader_rebuilds_counters_from_audit_log(redis_client, alice, settings) -> None:
    """After Redis lost the counters, today's billed usage still counts against the quota."""
    from llm_calls.types import Usage
    from usage import services as usage_services

    settings.GATEWAY_QUOTA_USAGE_LOADER = "queueing.quotas.audit_log_usage_loader"
    usage_services.prices_seed_defaults()
    usage_services.record_call(
        user=alice,
        organization=None,
        session_id="s",
        model="claude-sonnet-5-5",
        priority="query",
        outcome=1,
        attempts=1,
        final_status=200,
        error_type="",
        usage=Usage(input_tokens=6_000, output_tokens=3_000),
        latency_ms=10,
        queue_wait_ms=0,
        request_id="req_1",
    )
    Quota.objects.create(user=alice, tokens_per_day=10_000)
    check = quotas.admit(
        user_id=alice.pk,
        org_id=None,
        request_id=rid(),
        tokens=1_001,
        usd=Decimal("0"),
        priority="query",
    )
    assert not check.admitted
    assert "9,000" in check.message
    assert quotas.admit(
        user_id=alice.pk,
        org_id=None,
        request_id=rid(),
        tokens=1_000,
        usd=Decimal("0"),
        priority="query",
    ).admitted


# --- gateway keys: a budget is one more holder ---------------------------------------------


@pytest.fixture
def bot_key(alice) -> ApiToken:
    token, _ = api_token_create(user=alice, name="billing bot")
    return token


def key_name(token: ApiToken) -> str:
    return f"gateway key 'billing bot' ({token.prefix}…)"


def test_a_key_budget_admits_until_it_is_spent_then_refuses_naming_the_key(
    redis_client, alice, bot_key
) -> None:
    Quota.objects.create(api_token=bot_key, usd_per_day=Decimal("0.05"))
    for _ in range(5):
        assert admit(alice, usd="0.01", key_id=bot_key.pk).admitted
    check = admit(alice, usd="0.01", key_id=bot_key.pk)
    assert not check.admitted
    assert check.quota == "key daily USD"
    assert check.message == (
        f"Daily USD budget of {key_name(bot_key)} exceeded: $0.05 of $0.05 used, this request "
        "needs up to $0.01; resets at 2026-12-01 00:00 UTC."
    )
    # the budget is the key's: the same user without it, or with another key, still admits
    other, _ = api_token_create(user=alice, name="notebook")
    assert admit(alice, usd="0.01").admitted
    assert admit(alice, usd="0.01", key_id=other.pk).admitted


def test_a_key_refusal_reads_like_the_other_quotas(redis_client, alice, bot_key) -> None:
    Quota.objects.create(api_token=bot_key, usd_per_month=Decimal("5"))

    def loader(kind: str, holder_id: int, start: datetime) -> tuple[int, Decimal]:
        spent = (kind, holder_id, start.day) == ("key", bot_key.pk, 1)
        return 0, Decimal("4.98") if spent else Decimal("0")

    check = admit(alice, usd="0.04", key_id=bot_key.pk, usage_loader=loader)
    assert not check.admitted
    assert check.message == (
        f"Monthly USD budget of {key_name(bot_key)} exceeded: $4.98 of $5.00 used, this "
        "request needs up to $0.04; resets at 2026-12-01 00:00 UTC."
    )
    assert (check.quota, check.used, check.limit) == (
        "key monthly USD",
        Decimal("4.98"),
        Decimal("5"),
    )


@pytest.mark.parametrize("tightest", ["user", "organization", "key"])
def test_the_users_and_organizations_quotas_still_apply_to_a_keys_requests(
    redis_client, alice, acme, bot_key, tightest
) -> None:
    """A budget never lifts its user's or organization's quota: whichever is tightest refuses,
    and the refused request charges none of the three."""
    owners: dict[str, dict[str, Any]] = {
        "user": {"user": alice},
        "organization": {"organization": acme},
        "key": {"api_token": bot_key},
    }
    for holder, owner in owners.items():
        limit = Decimal("0.03") if holder == tightest else Decimal("1")
        Quota.objects.create(**owner, usd_per_day=limit)
    for _ in range(3):
        assert admit(alice, org=acme, usd="0.01", key_id=bot_key.pk).admitted
    check = admit(alice, org=acme, usd="0.01", key_id=bot_key.pk)
    assert not check.admitted
    assert check.quota == f"{tightest} daily USD"
    for kind, holder_id in (("user", alice.pk), ("organization", acme.pk), ("key", bot_key.pk)):
        assert counters(kind, holder_id)["day"]["usd_held"] == Decimal("0.03"), kind


def test_settle_moves_the_keys_counter_to_the_actual_cost(redis_client, alice, bot_key) -> None:
    Quota.objects.create(api_token=bot_key, usd_per_day=Decimal("1"))
    request_id = rid()
    assert admit(alice, tokens=4_000, usd="0.05", request_id=request_id, key_id=bot_key.pk).admitted
    assert counters("key", bot_key.pk)["day"]["usd_held"] == Decimal("0.05")
    assert counters("key", bot_key.pk)["in_flight"] == 1
    for _ in range(2):  # a redelivered job settles again: nothing changes
        quotas.settle(
            user_id=alice.pk,
            org_id=None,
            key_id=bot_key.pk,
            request_id=request_id,
            tokens=1_500,
            usd=Decimal("0.0123455"),
            now=NOW,
        )
    for period in ("day", "month"):
        row = counters("key", bot_key.pk)[period]
        assert (row["tokens_used"], row["tokens_held"]) == (1_500, 0)
        assert (row["usd_used"], row["usd_held"]) == (Decimal("0.012346"), 0)
    assert counters("key", bot_key.pk)["in_flight"] == 0


def test_release_gives_the_keys_reservation_back(redis_client, alice, bot_key) -> None:
    Quota.objects.create(api_token=bot_key, usd_per_day=Decimal("0.05"), max_concurrent=1)
    request_id = rid()
    assert admit(alice, usd="0.05", request_id=request_id, key_id=bot_key.pk).admitted
    refused = admit(alice, usd="0.01", key_id=bot_key.pk)
    assert not refused.admitted and refused.quota == "key daily USD"
    quotas.release(user_id=alice.pk, org_id=None, key_id=bot_key.pk, request_id=request_id)
    assert counters("key", bot_key.pk)["day"]["usd_held"] == 0
    assert counters("key", bot_key.pk)["in_flight"] == 0
    assert admit(alice, usd="0.05", key_id=bot_key.pk).admitted


def test_a_key_budget_alerts_at_80_and_100_percent_once_per_period(
    redis_client, alice, bot_key, caplog
) -> None:
    Quota.objects.create(api_token=bot_key, usd_per_day=Decimal("1"))

    def settle(usd: str) -> list[quotas.QuotaAlertEvent]:
        request_id = rid()
        assert admit(alice, usd=usd, request_id=request_id, key_id=bot_key.pk).admitted
        return quotas.settle(
            user_id=alice.pk,
            org_id=None,
            key_id=bot_key.pk,
            request_id=request_id,
            tokens=10,
            usd=Decimal(usd),
            now=NOW,
        )

    with caplog.at_level(logging.WARNING, logger="queueing.quotas"):
        events = settle("0.85")
    assert [(e.holder_kind, e.quota, e.threshold) for e in events] == [("key", "key daily USD", 80)]
    assert (
        f"{key_name(bot_key)} has used 80% of its daily USD budget: $0.85 of $1.00" in caplog.text
    )
    assert [e.threshold for e in settle("0.15")] == [100]
    alerts = QuotaAlert.objects.filter(api_token=bot_key).order_by("threshold")
    assert [(a.metric, a.threshold) for a in alerts] == [
        (QuotaAlert.Metric.DAILY_USD, 80),
        (QuotaAlert.Metric.DAILY_USD, 100),
    ]
    assert str(alerts[0]).startswith(f"gateway key {bot_key} passed 80% of its daily USD budget")
    for key in redis_client.keys("*:alert:*"):  # Redis forgot: the database still says once
        redis_client.delete(key)
    assert settle("0") == []
    assert QuotaAlert.objects.count() == 2


def test_a_key_counter_rebuilt_after_redis_lost_it_counts_the_keys_earlier_spend(
    redis_client, alice, bot_key, settings
) -> None:
    """The default loader sums audit_log over the key's requests: only those, not the user's
    other calls."""
    settings.GATEWAY_QUOTA_USAGE_LOADER = "queueing.quotas.audit_log_usage_loader"
    usage_services.prices_seed_defaults()
    Quota.objects.create(api_token=bot_key, tokens_per_day=10_000)
    assert admit(alice, tokens=1, key_id=bot_key.pk, now=None).admitted  # counters exist...
    with_key = LLMRequest.objects.create(
        user=alice,
        session_id="s",
        model="claude-sonnet-5-5",
        params={},
        max_tokens=3_000,
        status=LLMRequest.Status.SUCCEEDED,
        api_token=bot_key,
    )
    billed = record(
        user=alice,
        model="claude-sonnet-5-5",
        usage=Usage(input_tokens=6_000, output_tokens=3_000),
        llm_request=with_key,
    )
    record(user=alice, model="claude-sonnet-5-5", usage=Usage(input_tokens=50_000))  # no key
    redis_client.flushall()  # ...and are lost (a Redis restart without its data)

    check = admit(alice, tokens=1_001, key_id=bot_key.pk, now=None)
    assert not check.admitted
    assert check.quota == "key daily tokens"
    assert f"Daily token budget of {key_name(bot_key)} exceeded: 9,000 of 10,000" in check.message
    assert admit(alice, tokens=1_000, key_id=bot_key.pk, now=None).admitted
    assert counters("key", bot_key.pk, now=None)["day"]["usd_used"] == billed.cost_usd > 0


# --- THE test for keys: concurrent submissions never overspend a budget --------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("budget", ["usd", "concurrency"])
def test_thirty_concurrent_threads_against_a_key_budget_for_five_admit_exactly_five(
    redis_client, budget
) -> None:
    user = User.objects.create_user(username="key-racer")
    org = Organization.objects.create(name="Key racers")
    token, _ = api_token_create(user=user, name="racing key")
    if budget == "usd":
        Quota.objects.create(api_token=token, usd_per_day=Decimal("0.50"))
    else:
        Quota.objects.create(api_token=token, max_concurrent=5)
    barrier = threading.Barrier(30)
    results: list[bool] = []
    lock = threading.Lock()

    def contender(request_id: int) -> None:
        try:
            barrier.wait()
            check = quotas.admit(
                user_id=user.pk,
                org_id=org.pk,
                key_id=token.pk,
                request_id=request_id,
                tokens=1_000,
                usd=Decimal("0.10"),
                priority="query",
                now=NOW,
            )
            with lock:
                results.append(check.admitted)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=contender, args=(30_000 + n,)) for n in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 30
    assert results.count(True) == 5
    assert counters("key", token.pk)["in_flight"] == 5
    assert counters("key", token.pk)["day"]["usd_held"] == Decimal("0.50")
    # all or nothing: the user and organization were charged for exactly the same five
    assert counters("user", user.pk)["day"]["usd_held"] == Decimal("0.50")
    assert counters("organization", org.pk)["in_flight"] == 5
