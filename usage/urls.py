from django.urls import path

from usage import views

app_name = "usage"
urlpatterns = [
    path("", views.my_usage, name="mine"),
    path("caching/", views.caching, name="caching"),
    path("caching/uncached-prefixes/", views.uncached_prefixes, name="uncached-prefixes"),
    path("sessions/<path:session_id>/", views.session_detail, name="session"),
    path("users/", views.users_list, name="users"),
    path("users/<int:user_id>/", views.user_usage, name="user"),
    path(
        "users/<int:user_id>/sessions/<path:session_id>/",
        views.user_session_detail,
        name="user-session",
    ),
    path("orgs/", views.orgs_list, name="orgs"),
    path("reconciliation/", views.reconciliation, name="reconciliation"),
    path("api/summary.json", views.summary_json, name="api-summary"),
    path("api/daily.json", views.daily_json, name="api-daily"),
    path("api/models.json", views.models_json, name="api-models"),
    path("api/sessions.json", views.sessions_json, name="api-sessions"),
    path(
        "api/sessions/<path:session_id>/calls.json",
        views.session_calls_json,
        name="api-session-calls",
    ),
    path("api/users.json", views.users_json, name="api-users"),
    path("api/orgs.json", views.orgs_json, name="api-orgs"),
    path("export/audit.csv", views.audit_csv, name="export-audit"),
]
