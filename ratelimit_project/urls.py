from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from usage.metrics import metrics_view

urlpatterns = [
    path("", RedirectView.as_view(url="/usage/", permanent=False)),
    path("admin/rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("usage/", include("usage.urls")),
    path("metrics", metrics_view, name="metrics"),
    path("", include("queueing.urls")),
]
