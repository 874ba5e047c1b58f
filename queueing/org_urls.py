"""``/org/``: an organization's pages, for its admins and staff (namespace ``org``).

Its usage pages are usage's views scoped to the organization; its members, quotas and keys
are queueing's (``queueing.org_views``). Exports are usage's JSON and CSV endpoints with
``?org=<id>``, linked from the usage page.
"""

from django.urls import path

from queueing import org_views
from usage import views as usage_views

app_name = "org"
urlpatterns = [
    path("", org_views.org_index, name="index"),
    path("<int:org_id>/", usage_views.org_usage, name="usage"),
    path("<int:org_id>/users/<int:user_id>/", usage_views.org_user_usage, name="user"),
    path(
        "<int:org_id>/users/<int:user_id>/sessions/<path:session_id>/",
        usage_views.org_user_session,
        name="user-session",
    ),
    path("<int:org_id>/members/", org_views.members, name="members"),
    path("<int:org_id>/members/<int:user_id>/quota/", org_views.member_quota, name="member-quota"),
    path("<int:org_id>/keys/", org_views.keys, name="keys"),
    path("<int:org_id>/keys/<int:key_id>/revoke/", org_views.key_revoke, name="key-revoke"),
]
