from __future__ import annotations

import pytest
from django.test import Client, override_settings
from prometheus_client.core import GaugeMetricFamily

from tests.usage.factories import make_user
from tests.usage.world import build_world
from usage import metrics

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.usage.urls")]


def test_anonymous_and_non_staff_are_refused() -> None:
    assert Client().get("/metrics").status_code == 403
    client = Client()
    client.force_login(make_user())
    assert client.get("/metrics").status_code == 403


def test_staff_get_prometheus_text_from_the_rollups() -> None:
    world = build_world()
    client = Client()
    client.force_login(world.staff)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    sonnet = 'model="claude-sonnet-4-5"'
    assert f'claude_gateway_requests_total{{{sonnet},outcome="success"}} 2.0' in text
    assert f'claude_gateway_requests_total{{{sonnet},outcome="failed"}} 1.0' in text
    assert f"claude_gateway_retries_total{{{sonnet}}} 6.0" in text
    assert f'claude_gateway_tokens_total{{kind="cache_read",{sonnet}}} 9000.0' in text or (
        f'claude_gateway_tokens_total{{{sonnet},kind="cache_read"}} 9000.0' in text
    )
    assert f"claude_gateway_cost_usd_total{{{sonnet}}} 0.0105" in text
    assert 'claude_gateway_cost_usd_total{model="claude-opus-4-1"} 0.0765' in text
    # 9000 read / (1110 + 5000 + 9000 + 100) input tokens
    assert "claude_gateway_cache_hit_ratio_overall 0.5917" in text


@override_settings(METRICS_TOKEN="s3cret-token")
def test_bearer_token_access() -> None:
    build_world()
    ok = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert ok.status_code == 200
    assert "claude_gateway_requests_total" in ok.content.decode()
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert Client().get("/metrics", HTTP_AUTHORIZATION="s3cret-token").status_code == 403


@override_settings(METRICS_TOKEN="")
def test_empty_token_setting_disables_token_access() -> None:
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403


def test_other_apps_can_register_collectors() -> None:
    class QueueDepth:
        def describe(self):
            return []

        def collect(self):
            yield GaugeMetricFamily("claude_gateway_queue_depth", "Queued requests.", value=7)

    collector = QueueDepth()
    metrics.register_collector(collector)
    metrics.register_collector(collector)  # twice is harmless
    try:
        client = Client()
        client.force_login(make_user(staff=True))
        text = client.get("/metrics").content.decode()
        assert text.count("claude_gateway_queue_depth 7.0") == 1
    finally:
        metrics.unregister_collector(collector)
