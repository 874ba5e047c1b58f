"""The project's URLs that the usage tests need, without the other apps' (so these tests do not
depend on code other helpers are changing). ``test_root_urls`` checks the real root URLconf."""

from django.contrib import admin
from django.urls import include, path

from usage.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("usage/", include("usage.urls")),
    path("metrics", metrics_view, name="metrics"),
]
