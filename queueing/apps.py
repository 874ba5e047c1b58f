from django.apps import AppConfig


class QueueingConfig(AppConfig):
    name = "queueing"
    verbose_name = "Queue, quotas and rate limits"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from queueing import metrics  # noqa: F401  (registers the queue gauges on /metrics)
