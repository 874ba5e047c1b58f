from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from organizations.views import user_settings
from queueing import api
from ratelimit_project import probes
from usage.metrics import metrics_view

urlpatterns = [
    path("", RedirectView.as_view(url="/usage/", permanent=False)),
    path("admin/rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("usage/", include("usage.urls")),
    path("org/", include("queueing.org_urls")),
    path("settings/", user_settings, name="settings"),
    path("metrics", metrics_view, name="metrics"),
    path("healthz", probes.healthz, name="healthz"),
    path("readyz", probes.readyz, name="readyz"),
    path("", include("queueing.urls")),
    # Last, so every real endpoint matches first: whatever else is asked for under an API
    # prefix answers the API's JSON 404, not Django's HTML page (the HTML pages keep theirs).
    # A bare prefix (no "$"): Django then matches any rest, an encoded newline included, and
    # reverse() can still index the pattern. "/api" without the slash is redirected here by
    # APPEND_SLASH.
    re_path(r"^api/", api.unknown_endpoint, name="api_not_found"),
    re_path(r"^usage/api/", api.unknown_endpoint, name="usage_api_not_found"),
]
