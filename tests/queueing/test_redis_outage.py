"""Nothing a user submitted is lost when Redis is down at the moment they submit."""

from __future__ import annotations

from pathlib import Path

import pytest

from queueing import quotas, services
from queueing.models import LLMRequest, Quota
from queueing.scheduler import get_scheduler
from ratelimit_project import redis as project_redis
from tests.usage.factories import make_user


@pytest.fixture
def own_redis(settings, tmp_path: Path):
    """A Redis of this test's own, so stopping it disturbs no other test."""
    server = project_redis.PrivateRedis(tmp_path / "redis").start()
    settings.REDIS_URL = server.url
    project_redis.reset_clients()
    yield server
    server.stop()
    project_redis.reset_clients()


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
