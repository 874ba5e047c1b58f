from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate, post_save


def _reprice_after_migrate(*, apps: Any = None, **_kwargs: Any) -> None:
    """A migration may ship prices (a price sheet): calls recorded while their model had no
    price are re-priced with the app's current code right after it. Cheap when there are none
    (one query). Skipped when the database was migrated to a state older than the code (its
    tables lack columns the code writes)."""
    from usage.models import AuditLog
    from usage.services import reprice_missing_calls

    if apps is not None:
        try:
            migrated = apps.get_model("usage", "AuditLog")
        except LookupError:
            return
        have = {f.name for f in migrated._meta.fields}
        if not {f.name for f in AuditLog._meta.fields} <= have:
            return
    reprice_missing_calls()


class UsageConfig(AppConfig):
    name = "usage"
    verbose_name = "Usage and billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from usage.models import ModelPrice, PriceBand
        from usage.services import price_cache_clear_on_change

        # An admin's price edit takes effect in this process at once (others: within the TTL).
        for sender in (ModelPrice, PriceBand):
            uid = f"usage-price-{sender.__name__}"
            post_save.connect(price_cache_clear_on_change, sender=sender, dispatch_uid=uid)
            post_delete.connect(price_cache_clear_on_change, sender=sender, dispatch_uid=uid)
        post_migrate.connect(_reprice_after_migrate, sender=self, dispatch_uid="usage-reprice")
