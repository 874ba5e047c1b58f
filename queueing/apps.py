from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


def _rate_limit_override_changed(**_kwargs: Any) -> None:
    """This process sees an admin's change at once; others within the override cache time."""
    from queueing.limiter import forget_overrides

    forget_overrides()


class QueueingConfig(AppConfig):
    name = "queueing"
    verbose_name = "Queue, quotas and rate limits"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        import queueing.checks  # noqa: F401  (registers the gateway's system checks)
        from queueing import metrics  # noqa: F401  (registers the queue gauges on /metrics)
        from queueing.models import RateLimitOverride

        for signal in (post_save, post_delete):
            signal.connect(
                _rate_limit_override_changed,
                sender=RateLimitOverride,
                dispatch_uid="queueing-forget-rate-limit-overrides",
            )
