from django.urls import path

from queueing import api, views

app_name = "queueing"
urlpatterns = [
    path("queue/", views.my_queue, name="my_queue"),
    path("queue/requests/<int:pk>/", views.request_page, name="request"),
    path("queue/requests/<int:pk>/cancel/", views.cancel, name="cancel"),
    path("queue/staff/", views.staff_queue, name="staff_queue"),
    path("queue/staff/data", views.staff_queue_data, name="staff_queue_data"),
    path("api/v1/requests", api.requests_collection, name="api_requests"),
    path("api/v1/requests/<int:pk>", api.request_detail, name="api_request"),
    path("api/v1/requests/<int:pk>/result", api.request_result, name="api_result"),
    path("api/v1/requests/<int:pk>/cancel", api.request_cancel, name="api_cancel"),
    path("api/v1/queue/stats", api.queue_stats, name="api_queue_stats"),
    path("api/v1/quota", api.my_quota, name="api_quota"),
]
