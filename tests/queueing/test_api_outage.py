"""What the JSON API and the pages answer while Redis is down: the truth, and nothing half-done.

A submission is saved without Redis (the reaper queues it when Redis answers), so it gets its
202, saying its position is unknown; a request's saved state is shown the same way; what cannot
be served without Redis answers 503 JSON with Retry-After; a cancel either completes with its
quota given back or changes nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from queueing import quotas, services
from queueing.models import LLMRequest
from queueing.scheduler import get_scheduler
from ratelimit_project import redis as project_redis
from tests.usage.factories import api_client, make_user

BODY = {
    "session_id": "outage-api",
    "model": "claude-sonnet-5-5",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "are you there?"}],
}


def held_tokens(user: Any) -> int:
    return int(quotas.usage_now(holder_kind="user", holder_id=user.pk)["day"]["tokens_held"])


@pytest.mark.django_db
def test_during_an_outage_a_submission_is_saved_and_answered_202(own_redis) -> None:
    user = make_user("steady")
    api = api_client(user)
    own_redis.stop()

    response = api.post("/api/v1/requests", data=BODY, content_type="application/json")

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and body["position"] is None
    assert "unreachable" in body["queue_unavailable"]
    assert LLMRequest.objects.get(pk=body["id"]).status == LLMRequest.Status.QUEUED

    detail = api.get(f"/api/v1/requests/{body['id']}")
    assert detail.status_code == 200
    assert detail.json()["status"] == "queued" and "queue_unavailable" in detail.json()
    listing = api.get("/api/v1/requests?status=pending")
    assert listing.status_code == 200
    assert [r["id"] for r in listing.json()["requests"]] == [body["id"]]


@pytest.mark.django_db
def test_during_an_outage_reads_that_need_redis_answer_503_json(own_redis) -> None:
    staff = make_user("oncall", staff=True)
    api = api_client(staff)
    own_redis.stop()

    stats = api.get("/api/v1/queue/stats")
    assert stats.status_code == 503
    assert stats["Content-Type"].startswith("application/json")
    assert stats["Retry-After"] == "5"
    assert stats.json()["error"]["type"] == "service_unavailable"

    browser = Client()
    browser.force_login(staff)
    page = browser.get("/queue/staff/")
    assert page.status_code == 503 and b"unreachable" in page.content
    metrics = browser.get("/metrics")
    assert metrics.status_code == 200
    assert "claude_gateway_redis_up 0.0" in metrics.content.decode()


@pytest.mark.django_db
def test_a_cancel_during_an_outage_changes_nothing_then_completes_with_its_quota(
    own_redis,
) -> None:
    user = make_user("changed-mind")
    row = services.submit_request(
        user=user,
        session_id="cancel",
        model="claude-sonnet-5-5",
        messages=[{"role": "user", "content": "never mind"}],
        max_tokens=50,
    )
    assert held_tokens(user) > 0
    api = api_client(user)
    own_redis.stop()

    refused = api.post(f"/api/v1/requests/{row.pk}/cancel")

    assert refused.status_code == 503
    assert "nothing was changed" in refused.json()["error"]["message"]
    assert LLMRequest.objects.get(pk=row.pk).status == LLMRequest.Status.QUEUED
    own_redis.start()
    project_redis.reset_clients()
    assert get_scheduler().contains(request_id=row.pk)  # (this Redis keeps its data on restart)
    assert held_tokens(user) > 0

    done = api.post(f"/api/v1/requests/{row.pk}/cancel")

    assert done.status_code == 200 and done.json()["status"] == "cancelled"
    assert held_tokens(user) == 0
    assert not get_scheduler().contains(request_id=row.pk)
