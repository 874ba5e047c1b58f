"""Settings accessor for queueing: the rate limiter, the fair scheduler and quotas.

Every value is read from ``django.conf.settings`` at call time (never cached at import), so
``override_settings`` and settings changed at runtime take effect on the next call. A missing
setting falls back to the default here; a malformed one raises ``ImproperlyConfigured`` naming
the setting and what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from llm_calls import catalog

# Anthropic's Start tier (2026: Start / Build / Scale / Custom replaced Tiers 1-4): Fable (and
# its Mythos siblings) 1,000 RPM / 500K ITPM / 100K OTPM, every other model 1,000 / 2M / 400K.
# Per rate-limit bucket of llm_calls.catalog; 0 means "unlimited". Limits learned from
# Anthropic's response headers take over as soon as a response shows them.
START_TIER_LIMITS = {"rpm": 1_000, "itpm": 2_000_000, "otpm": 400_000}
START_TIER_FABLE_LIMITS = {"rpm": 1_000, "itpm": 500_000, "otpm": 100_000}


def default_rate_limits() -> dict[str, dict[str, int]]:
    """The Start tier's limits for every rate-limit bucket of a callable model."""
    return {
        bucket: dict(
            START_TIER_FABLE_LIMITS if bucket.startswith(("fable", "mythos")) else START_TIER_LIMITS
        )
        for bucket in catalog.model_classes()
    }


# Highest priority first, each with the minimum share of dispatched tokens it keeps.
DEFAULT_PRIORITY_CLASSES: list[tuple[str, float]] = [
    ("approval", 0.10),
    ("interactive", 0.10),
    ("query", 0.10),
    ("bulk", 0.10),
]

LIMIT_DIMENSIONS = ("rpm", "itpm", "otpm")


@dataclass(frozen=True)
class ConfiguredLimits:
    """Per-minute limits of one model class from settings (0 = unlimited)."""

    rpm: int
    itpm: int
    otpm: int


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def _non_negative_int(setting: str, where: str, raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise ImproperlyConfigured(
            f"{setting}: {where} must be a whole number >= 0 (0 = unlimited), got {raw!r}."
        )
    return raw


def rate_limits() -> dict[str, ConfiguredLimits]:
    """``GATEWAY_RATE_LIMITS``: ``{model_class: {"rpm": n, "itpm": n, "otpm": n}}``.

    Classes missing from the setting keep their Start-tier defaults; a class given with only
    some dimensions keeps the defaults for the others.
    """
    raw = _setting("GATEWAY_RATE_LIMITS", None)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(
            f"GATEWAY_RATE_LIMITS must be a dict of model class -> limits, got {type(raw).__name__}."
        )
    merged = default_rate_limits()
    for model_class, limits in raw.items():
        if not isinstance(limits, Mapping):
            raise ImproperlyConfigured(
                f"GATEWAY_RATE_LIMITS[{model_class!r}] must be a dict like "
                '{"rpm": 50, "itpm": 30000, "otpm": 8000}.'
            )
        unknown = set(limits) - set(LIMIT_DIMENSIONS)
        if unknown:
            raise ImproperlyConfigured(
                f"GATEWAY_RATE_LIMITS[{model_class!r}] has unknown keys {sorted(unknown)}; "
                f"allowed: {', '.join(LIMIT_DIMENSIONS)}."
            )
        # A bucket the catalog does not know (a model added by CLAUDE_MODELS, say) starts from
        # the Start tier too, so a dimension left out is never silently unlimited.
        entry = merged.setdefault(str(model_class), dict(START_TIER_LIMITS))
        for dim, value in limits.items():
            entry[dim] = _non_negative_int(
                "GATEWAY_RATE_LIMITS", f"[{model_class!r}][{dim!r}]", value
            )
    return {name: ConfiguredLimits(**values) for name, values in merged.items()}


def limiter_reservation_ttl_s() -> int:
    """How long an un-reconciled limiter reservation is remembered (reconcile is idempotent)."""
    return int(_setting("GATEWAY_LIMITER_RESERVATION_TTL_S", 24 * 3600))


def limiter_learned_ttl_s() -> int:
    """How long a limit learned from response headers outlives the last response that showed it."""
    return int(_setting("GATEWAY_LIMITER_LEARNED_TTL_S", 24 * 3600))


def limiter_override_cache_s() -> float:
    """Seconds an admin's ``RateLimitOverride`` may take to reach other processes."""
    return float(_setting("GATEWAY_LIMITER_OVERRIDE_CACHE_S", 5.0))


def limiter_headroom() -> dict[str, float]:
    """``GATEWAY_LIMITER_HEADROOM``: per bucket, the fraction of capacity that must stay free
    above a request's amount before it is admitted (see limiter_reserve.lua).

    ITPM is charged on an estimate: 2% of 30,000 is 600 tokens of estimate error absorbed per
    burst. RPM is exact, but the API counts a request when it arrives, a moment after we
    reserved it: while its bucket is full it loses the refill of that moment, which ours
    counted, and the response headers only correct us beyond a second of refill. 2% of the RPM
    limit (one second's refill is 1.7%) covers that drift. Headroom costs no throughput under
    saturation: the bucket refills at the same rate, it is only kept a little above empty.
    OTPM is reserved at ``max_tokens``, above what is charged, and needs none.
    """
    raw = _setting("GATEWAY_LIMITER_HEADROOM", None) or {}
    if not isinstance(raw, Mapping) or set(raw) - set(LIMIT_DIMENSIONS):
        raise ImproperlyConfigured(
            'GATEWAY_LIMITER_HEADROOM must be a dict like {"itpm": 0.02} with keys among '
            f"{', '.join(LIMIT_DIMENSIONS)}; got {raw!r}."
        )
    headroom = {"rpm": 0.02, "itpm": 0.02, "otpm": 0.0}
    for dim, value in raw.items():
        fraction = float(value)
        if not 0 <= fraction < 1:
            raise ImproperlyConfigured(
                f"GATEWAY_LIMITER_HEADROOM[{dim!r}] must be a fraction in [0, 1), got {value!r}."
            )
        headroom[dim] = fraction
    return headroom


def estimate_ewma_alpha() -> float:
    """Weight of the newest sample in the actual/estimated input-token factor (0 < alpha <= 1)."""
    alpha = float(_setting("GATEWAY_ESTIMATE_EWMA_ALPHA", 0.1))
    if not 0 < alpha <= 1:
        raise ImproperlyConfigured(f"GATEWAY_ESTIMATE_EWMA_ALPHA must be in (0, 1], got {alpha}.")
    return alpha


def estimate_margin_deviations() -> float:
    """How many mean absolute deviations the estimate factor adds above the mean ratio."""
    margin = float(_setting("GATEWAY_ESTIMATE_MARGIN_DEVIATIONS", 2.0))
    if margin < 0:
        raise ImproperlyConfigured(
            f"GATEWAY_ESTIMATE_MARGIN_DEVIATIONS must be >= 0, got {margin}."
        )
    return margin


def priority_classes() -> list[tuple[str, float]]:
    """``GATEWAY_PRIORITY_CLASSES``: ``[(name, min_share), ...]`` ordered highest first."""
    raw = _setting("GATEWAY_PRIORITY_CLASSES", None)
    if raw is None:
        return list(DEFAULT_PRIORITY_CLASSES)
    classes: list[tuple[str, float]] = []
    try:
        for name, share in raw:
            classes.append((str(name), float(share)))
    except (TypeError, ValueError):
        raise ImproperlyConfigured(
            "GATEWAY_PRIORITY_CLASSES must be a list of (name, min_share) pairs, highest "
            f"priority first, e.g. {DEFAULT_PRIORITY_CLASSES!r}; got {raw!r}."
        ) from None
    names = [name for name, _ in classes]
    if not classes:
        raise ImproperlyConfigured("GATEWAY_PRIORITY_CLASSES must name at least one class.")
    if len(set(names)) != len(names):
        raise ImproperlyConfigured(f"GATEWAY_PRIORITY_CLASSES repeats a class name: {names}.")
    for name, share in classes:
        if not name or ":" in name:
            raise ImproperlyConfigured(
                f"GATEWAY_PRIORITY_CLASSES: class name {name!r} must be non-empty without ':'."
            )
        if not 0 <= share <= 1:
            raise ImproperlyConfigured(
                f"GATEWAY_PRIORITY_CLASSES: min_share of {name!r} must be in [0, 1], got {share}."
            )
    total = sum(share for _, share in classes)
    if total > 1 + 1e-9:
        raise ImproperlyConfigured(
            f"GATEWAY_PRIORITY_CLASSES: the min_shares add up to {total:.2f}; they must not exceed 1."
        )
    return classes


SCHEDULER_MODES = ("fair", "fifo")


def scheduler_mode() -> str:
    """``GATEWAY_SCHEDULER_MODE``: "fair" (default) or "fifo".

    "fifo" queues every request of a class under one user key, so the scheduler degenerates to
    first come, first served. It exists as the baseline the ``fairness`` benchmark compares to.
    """
    mode = str(_setting("GATEWAY_SCHEDULER_MODE", "fair"))
    if mode not in SCHEDULER_MODES:
        raise ImproperlyConfigured(
            f"GATEWAY_SCHEDULER_MODE must be one of {', '.join(SCHEDULER_MODES)}; got {mode!r}."
        )
    return mode


def scheduler_idle_user_ttl_s() -> int:
    """How long a user's virtual time is kept after their queue empties (see scheduler.py)."""
    return int(_setting("GATEWAY_SCHEDULER_IDLE_USER_TTL_S", 24 * 3600))


def quota_reservation_ttl_s() -> int:
    """How long an admitted-but-unsettled quota reservation holds its tokens, USD and slot."""
    return int(_setting("GATEWAY_QUOTA_RESERVATION_TTL_S", 2 * 24 * 3600))


def quota_alert_thresholds() -> tuple[int, ...]:
    """Percentages of a quota at which an alert is raised once per period."""
    raw = _setting("GATEWAY_QUOTA_ALERT_THRESHOLDS", (80, 100))
    try:
        thresholds = tuple(sorted(int(t) for t in raw))
    except (TypeError, ValueError):
        raise ImproperlyConfigured(
            f"GATEWAY_QUOTA_ALERT_THRESHOLDS must be a list of percentages, got {raw!r}."
        ) from None
    if any(t <= 0 for t in thresholds):
        raise ImproperlyConfigured(
            f"GATEWAY_QUOTA_ALERT_THRESHOLDS must be positive percentages, got {raw!r}."
        )
    return thresholds


UsageLoader = Callable[[str, int, datetime], tuple[int, Decimal]]


def quota_usage_loader() -> UsageLoader | None:
    """``GATEWAY_QUOTA_USAGE_LOADER``: dotted path of ``(holder_kind, holder_id, period_start)
    -> (tokens, usd)``, used to rebuild a missing quota counter from the database."""
    path = _setting("GATEWAY_QUOTA_USAGE_LOADER", None)
    if not path:
        return None
    if callable(path):
        return path  # type: ignore[no-any-return]
    try:
        return import_string(str(path))  # type: ignore[no-any-return]
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"GATEWAY_QUOTA_USAGE_LOADER={path!r} cannot be imported: {exc}"
        ) from exc


def priority_class_names() -> list[str]:
    """The configured priority class names, highest priority first."""
    return [name for name, _ in priority_classes()]


# --- orchestration settings read by services.py / dispatcher.py (defaults chosen by the lead) ---


def dispatch_backlog() -> int:
    """``GATEWAY_DISPATCH_BACKLOG``: stop releasing work while the RQ queue holds this many jobs."""
    return int(_setting("GATEWAY_DISPATCH_BACKLOG", 16))


WORKER_ENGINES = ("loop", "threads")


def worker_engine() -> str:
    """``GATEWAY_WORKER_ENGINE``: how a worker host holds its calls — ``loop`` (one event loop
    holds them all, ``queueing.engine``) or ``threads`` (an RQ thread each)."""
    raw = _setting("GATEWAY_WORKER_ENGINE", "loop")
    if raw not in WORKER_ENGINES:
        raise ImproperlyConfigured(
            f"GATEWAY_WORKER_ENGINE must be one of {', '.join(WORKER_ENGINES)}, got {raw!r}."
        )
    return str(raw)


def worker_intake_threads() -> int:
    """``GATEWAY_WORKER_INTAKE_THREADS``: RQ threads feeding a host's call engine. Each takes a
    job, starts its request and hands the call over in a few milliseconds."""
    return _positive_int("GATEWAY_WORKER_INTAKE_THREADS", 4)


def worker_bookkeeping_threads() -> int:
    """``GATEWAY_WORKER_BOOKKEEPING_THREADS``: threads doing the call engine's database and
    Redis work (recording answers, journaling, limiter hooks)."""
    return _positive_int("GATEWAY_WORKER_BOOKKEEPING_THREADS", 8)


def _positive_int(name: str, default: int) -> int:
    raw = _setting(name, default)
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise ImproperlyConfigured(f"{name} must be a whole number >= 1, got {raw!r}.")
    return raw


def worker_cpu_slots() -> int:
    """``GATEWAY_WORKER_CPU_SLOTS``: threads of a worker host that run Python code at once
    (``queueing.cpu_gate``); 0 turns the gate off."""
    raw = _setting("GATEWAY_WORKER_CPU_SLOTS", 2)
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise ImproperlyConfigured(
            f"GATEWAY_WORKER_CPU_SLOTS must be a whole number >= 0 (0 = no gate), got {raw!r}."
        )
    return raw


def batch_priority_classes() -> tuple[str, ...]:
    """``GATEWAY_BATCH_PRIORITY_CLASSES``: priority classes sent through the Message Batches API."""
    return tuple(str(name) for name in _setting("GATEWAY_BATCH_PRIORITY_CLASSES", ("bulk",)))


def record_retry_seconds() -> float:
    """``GATEWAY_RECORD_RETRY_S``: how long recording a finished call retries a busy database."""
    return float(_setting("GATEWAY_RECORD_RETRY_S", 30.0))


# --- recovery after a worker dies (queueing.leases, services.recover_orphans) ---


def _positive_seconds(name: str, default: float) -> float:
    value = float(_setting(name, default))
    if not value > 0:
        raise ImproperlyConfigured(f"{name} must be a number of seconds > 0, got {value!r}.")
    return value


def lease_ttl_s() -> int:
    """``GATEWAY_LEASE_TTL_S``: a running call's lease lives this long unless renewed (every
    third of it), so a dead worker's requests are re-queued about this long after it died."""
    return max(3, int(_positive_seconds("GATEWAY_LEASE_TTL_S", 30)))


def dispatch_lease_ttl_s() -> int:
    """``GATEWAY_DISPATCH_LEASE_TTL_S``: the lease a request gets when handed to RQ; it must
    cover its wait in the RQ queue (a job that starts after it expired is dropped and the
    request runs from a fresh dispatch, never twice)."""
    return max(3, int(_positive_seconds("GATEWAY_DISPATCH_LEASE_TTL_S", 120)))


def orphan_grace_s() -> float:
    """``GATEWAY_ORPHAN_GRACE_S``: the reaper leaves a request alone for this long after its
    dispatch (or creation), covering the steps between writing the row and taking its lease
    (or scheduling it)."""
    return _positive_seconds("GATEWAY_ORPHAN_GRACE_S", 30.0)
