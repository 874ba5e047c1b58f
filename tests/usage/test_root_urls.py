"""The real root URLconf routes to the usage app and /metrics (other tests use a trimmed copy)."""

from django.urls import resolve

from usage import metrics, views


def test_root_urlconf_routes_usage_and_metrics() -> None:
    assert resolve("/metrics").func is metrics.metrics_view
    assert resolve("/usage/").func is views.my_usage
    assert resolve("/usage/api/daily.json").func is views.daily_json
    assert resolve("/usage/sessions/a/b/").kwargs == {"session_id": "a/b"}
