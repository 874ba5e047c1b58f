"""The staff queue numbers are on /metrics too."""

from __future__ import annotations

import pytest
from django.test import Client

from queueing import services
from tests.usage.factories import make_user


@pytest.mark.django_db
def test_metrics_show_queue_depth_in_flight_and_limiter_state(redis_client) -> None:
    user = make_user("queued-up")
    for _ in range(3):
        services.submit_request(
            user=user,
            session_id="m",
            model="claude-sonnet-5-5",
            messages=[{"role": "user", "content": "wait for me"}],
            max_tokens=100,
            priority="interactive",
        )
    staff = make_user("ops", staff=True)
    client = Client()
    client.force_login(staff)

    body = client.get("/metrics").content.decode()

    assert 'claude_gateway_queue_depth_requests{priority="interactive"} 3.0' in body
    assert 'claude_gateway_queue_depth_user_requests{user="queued-up"} 3.0' in body
    assert 'claude_gateway_llm_requests{status="queued"} 3.0' in body
    assert "claude_gateway_in_flight 0.0" in body
    assert 'claude_gateway_limiter_level{bucket="requests",model_class="sonnet-5-5"} 1000.0' in body
    assert 'claude_gateway_rate_limit_errors_total{model_class="sonnet-5-5"} 0.0' in body


@pytest.mark.django_db
def test_staff_queue_page_and_users_positions_show_the_same_queue(redis_client) -> None:
    user = make_user("waiter")
    rows = [
        services.submit_request(
            user=user,
            session_id="q",
            model="claude-sonnet-5-5",
            messages=[{"role": "user", "content": f"question {i}"}],
            max_tokens=100,
        )
        for i in range(2)
    ]
    staff = make_user("ops2", staff=True)
    client = Client()
    client.force_login(staff)
    page = client.get("/queue/staff/").content.decode()
    assert (
        f'<tr data-user-key="u{user.pk}"><td class="user">waiter</td><td class="num requests">2</td>'
        in page
    )
    head = f'<tr data-request-id="{rows[0].pk}" data-class="query"><td>query</td>'
    assert head + '<td class="num class-position">1</td><td class="num position">1</td>' in page

    client.force_login(user)
    listing = client.get("/api/v1/requests?status=pending").json()["requests"]
    positions = {r["id"]: r["position"] for r in listing}
    assert positions == {rows[0].pk: 1, rows[1].pk: 2}
    assert all(r["eta_s"] is not None for r in listing)
