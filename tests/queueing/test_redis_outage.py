"""Nothing a user submitted is lost when Redis is down at the moment they submit."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.utils import timezone

from llm_calls.types import Usage
from queueing import quotas, services
from queueing.models import LLMRequest, Quota
from queueing.scheduler import get_scheduler
from ratelimit_project import redis as project_redis
from tests.usage.factories import make_user, record


def ask(user):
    return services.submit_request(
        user=user,
        session_id="outage",
        model="claude-sonnet-5-5",
        messages=[{"role": "user", "content": "still there?"}],
        max_tokens=50,
    )


@pytest.mark.django_db
def test_a_submission_during_a_redis_outage_is_kept_and_queued_when_redis_returns(
    own_redis,
) -> None:
    user = make_user("patient")
    own_redis.stop()

    row = ask(user)

    assert LLMRequest.objects.get(pk=row.pk).status == LLMRequest.Status.QUEUED
    own_redis.start()
    project_redis.reset_clients()
    assert not get_scheduler().contains(request_id=row.pk)
    assert services.recover_orphans(grace_s=0) == 1
    assert get_scheduler().contains(request_id=row.pk)
    assert quotas.usage_now(holder_kind="user", holder_id=user.pk)["day"]["tokens_held"] > 0


@pytest.mark.django_db
def test_a_kept_submission_over_its_quota_is_rejected_clearly_by_the_reaper(own_redis) -> None:
    user = make_user("frugal")
    Quota.objects.create(user=user, tokens_per_day=10)
    own_redis.stop()

    row = ask(user)

    own_redis.start()
    project_redis.reset_clients()
    services.recover_orphans(grace_s=0)
    row.refresh_from_db()
    assert row.status == LLMRequest.Status.REJECTED
    assert "quota" in row.error_message.lower()
    assert not get_scheduler().contains(request_id=row.pk)


@pytest.mark.django_db
def test_after_redis_restarts_the_reaper_waits_a_lease_lifetime_before_trusting_missing_leases(
    own_redis, settings
) -> None:
    # A call was running when Redis restarted empty: its lease is gone until its keeper renews
    # it. Re-queueing it at once would have the API bill it twice.
    settings.GATEWAY_LEASE_TTL_S = 3  # the shortest lease there is
    user = make_user("mid-call")
    row = ask(user)
    LLMRequest.objects.filter(pk=row.pk).update(
        status=LLMRequest.Status.RUNNING,
        dispatched_at=timezone.now() - dt.timedelta(minutes=5),
        dispatch_count=1,
    )
    own_redis.stop()
    for path in own_redis.directory.iterdir():  # came back without its data
        if path.is_file():
            path.unlink()
    own_redis.start()
    project_redis.reset_clients()

    assert services.recover_orphans(grace_s=0) == 0
    assert LLMRequest.objects.get(pk=row.pk).status == LLMRequest.Status.RUNNING
    time.sleep(3.1)  # no keeper renewed it within a lease's lifetime: its worker is gone
    assert services.recover_orphans(grace_s=0) == 1
    assert LLMRequest.objects.get(pk=row.pk).status == LLMRequest.Status.QUEUED


@pytest.mark.django_db
def test_the_quota_of_a_call_that_finished_during_an_outage_is_settled_by_the_reaper(
    own_redis,
) -> None:
    # The worker recorded the answer in the database, but Redis was away for the settlement:
    # the reservation is still held there once Redis is back with its data.
    user = make_user("finished-offline")
    row = ask(user)
    held = quotas.usage_now(holder_kind="user", holder_id=user.pk)["day"]
    assert held["tokens_held"] > 0 and held["tokens_used"] == 0
    record(
        user=user,
        model="claude-sonnet-5-5",
        usage=Usage(input_tokens=120, output_tokens=30),
        llm_request=row,
    )
    LLMRequest.objects.filter(pk=row.pk).update(
        status=LLMRequest.Status.SUCCEEDED, finished_at=timezone.now() - dt.timedelta(minutes=2)
    )
    failed = ask(user)
    LLMRequest.objects.filter(pk=failed.pk).update(
        status=LLMRequest.Status.FAILED, finished_at=timezone.now() - dt.timedelta(minutes=2)
    )

    services.recover_orphans(grace_s=0)

    day = quotas.usage_now(holder_kind="user", holder_id=user.pk)["day"]
    assert day["tokens_held"] == 0
    assert day["tokens_used"] == 150  # what audit_log billed, counted once
    services.recover_orphans(grace_s=0)
    assert quotas.usage_now(holder_kind="user", holder_id=user.pk)["day"]["tokens_used"] == 150
