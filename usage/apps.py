from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class UsageConfig(AppConfig):
    name = "usage"
    verbose_name = "Usage and billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from usage.models import ModelPrice
        from usage.services import price_cache_clear_on_change

        # An admin's price edit takes effect in this process at once (others: within the TTL).
        post_save.connect(
            price_cache_clear_on_change, sender=ModelPrice, dispatch_uid="usage-price"
        )
        post_delete.connect(
            price_cache_clear_on_change, sender=ModelPrice, dispatch_uid="usage-price-del"
        )
