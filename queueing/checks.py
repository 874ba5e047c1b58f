"""System checks (``manage.py check``) for the queue, the limiter and where their state lives.

- ``gateway.E001``: a setting read through ``queueing.conf`` does not parse, or ``REDIS_URL``
  is neither a Redis URL nor a ``redis+sentinel://`` URL; the message is the accessor's own
  ``ImproperlyConfigured`` (it names the setting and what is wrong).
- ``gateway.W001`` / ``gateway.W002`` (``check --deploy``): the embedded Redis / SQLite without
  ``GATEWAY_ALLOW_EMBEDDED_REDIS`` / ``GATEWAY_ALLOW_SQLITE``. With ``DJANGO_DEBUG=0`` the
  settings already refuse to start so; the deploy check says it on a machine still in DEBUG.

Registered by ``QueueingConfig.ready``. Nothing here connects to Redis or the database.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from queueing import conf
from ratelimit_project.redis import check_url as check_redis_url
from ratelimit_project.redis import redis_url

TAG = "gateway"

# Every setting queueing.conf reads, with the accessor that parses it.
SETTINGS: Sequence[tuple[str, Callable[[], Any]]] = (
    ("GATEWAY_RATE_LIMITS", conf.rate_limits),
    ("GATEWAY_LIMITER_RESERVATION_TTL_S", conf.limiter_reservation_ttl_s),
    ("GATEWAY_LIMITER_LEARNED_TTL_S", conf.limiter_learned_ttl_s),
    ("GATEWAY_LIMITER_OVERRIDE_CACHE_S", conf.limiter_override_cache_s),
    ("GATEWAY_LIMITER_HEADROOM", conf.limiter_headroom),
    ("GATEWAY_ESTIMATE_EWMA_ALPHA", conf.estimate_ewma_alpha),
    ("GATEWAY_ESTIMATE_MARGIN_DEVIATIONS", conf.estimate_margin_deviations),
    ("GATEWAY_PRIORITY_CLASSES", conf.priority_classes),
    ("GATEWAY_SCHEDULER_MODE", conf.scheduler_mode),
    ("GATEWAY_SCHEDULER_IDLE_USER_TTL_S", conf.scheduler_idle_user_ttl_s),
    ("GATEWAY_QUOTA_RESERVATION_TTL_S", conf.quota_reservation_ttl_s),
    ("GATEWAY_QUOTA_ALERT_THRESHOLDS", conf.quota_alert_thresholds),
    ("GATEWAY_QUOTA_USAGE_LOADER", conf.quota_usage_loader),
    ("GATEWAY_DISPATCH_BACKLOG", conf.dispatch_backlog),
    ("GATEWAY_WORKER_CPU_SLOTS", conf.worker_cpu_slots),
    ("GATEWAY_BATCH_PRIORITY_CLASSES", conf.batch_priority_classes),
    ("GATEWAY_RECORD_RETRY_S", conf.record_retry_seconds),
    ("GATEWAY_LEASE_TTL_S", conf.lease_ttl_s),
    ("GATEWAY_DISPATCH_LEASE_TTL_S", conf.dispatch_lease_ttl_s),
    ("GATEWAY_ORPHAN_GRACE_S", conf.orphan_grace_s),
    # Either form (redis:// …, redis+sentinel:// …); parsed, never connected to.
    ("REDIS_URL", lambda: check_redis_url(redis_url())),
)


@checks.register(TAG)
def check_queueing_settings(**kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for name, read in SETTINGS:
        try:
            read()
        except ImproperlyConfigured as exc:
            errors.append(checks.Error(str(exc), obj=name, id="gateway.E001"))
        except (TypeError, ValueError) as exc:
            # The plain int()/float() accessors: the setting is not a number at all.
            errors.append(
                checks.Error(
                    f"{name}={getattr(settings, name, None)!r} does not parse: {exc}",
                    obj=name,
                    id="gateway.E001",
                )
            )
    return errors


def _database_engine() -> str:
    return str(settings.DATABASES.get("default", {}).get("ENGINE", ""))


@checks.register(TAG, deploy=True)
def check_shared_state(**kwargs: Any) -> list[checks.CheckMessage]:
    """Several machines must share one Redis and one database: say so when they cannot."""
    warnings: list[checks.CheckMessage] = []
    if getattr(settings, "EMBEDDED_REDIS", False) and not getattr(
        settings, "GATEWAY_ALLOW_EMBEDDED_REDIS", False
    ):
        warnings.append(
            checks.Warning(
                "REDIS_URL is not set: this machine runs an embedded Redis of its own, so its "
                "rate limiter and queue are not shared with any other machine.",
                hint="Set REDIS_URL to the Redis every machine shares, or "
                "GATEWAY_ALLOW_EMBEDDED_REDIS=1 on a single-machine install.",
                id="gateway.W001",
            )
        )
    if _database_engine() == "django.db.backends.sqlite3" and not getattr(
        settings, "GATEWAY_ALLOW_SQLITE", False
    ):
        warnings.append(
            checks.Warning(
                "The database is a SQLite file, which only this machine can use.",
                hint="Set DATABASE_URL to the PostgreSQL database every machine shares, or "
                "GATEWAY_ALLOW_SQLITE=1 on a single-machine install.",
                id="gateway.W002",
            )
        )
    return warnings
