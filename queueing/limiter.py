"""The organization's rate limiter: Anthropic's three per-minute buckets, mirrored in Redis.

Anthropic limits an organization per model class (opus / sonnet / haiku) with three
continuously refilled token buckets: requests (RPM), input tokens (ITPM, cache-aware: cache reads
are free) and output tokens (OTPM). Capacity = the per-minute limit; refill = limit / 60 per
second. This module keeps the same three buckets per model class in Redis, shared by every
process on every machine, and admits a call only when all three hold its amounts — so calls
wait here instead of drawing 429s there.

What is atomic. Each public method is ONE Lua script (``queueing/lua/limiter_*.lua``) run by
Redis as a single step, using the Redis server clock (``TIME``, microseconds) unless the caller
passes ``now``:

- ``try_reserve``: pause check + refill + fit check of all three buckets + deduction + the
  reservation record. Two dispatchers can never both take the last capacity.
- ``reconcile`` / ``release``: delete the reservation record and adjust the three levels; the
  record makes both idempotent (a redelivered job cannot give tokens back twice).
- ``observe_headers``: adopt the server's limits, lower our levels to the server's remaining,
  count a 429 and start a pause.
- ``pause``, ``record_estimate``: one script each. ``state`` is a read-only snapshot.

Levels are integers of micro-tokens (1 token = 10^6), so refilling never drifts.

Zero 429s needs our buckets never to run above the server's. Four things keep them below:
reservations happen before the server charges (ours is ahead in time); a reservation is what
the call will be charged — its prompt minus the part the upstream's prompt cache holds *now*
(``llm_calls.caching.WarmPrefixes``: known per prefix from the responses that wrote or read
it, forgotten when the entry would expire or when a response contradicts it), so nothing
learned while a cache was warm can under-reserve a call on a cold one; ``estimate_factor``
corrects the local token count (the learned mean of the API's total input tokens ÷ our
estimate, plus a margin of its deviation); and ITPM admission keeps a small headroom
(``GATEWAY_LIMITER_HEADROOM``, 2%) free for the estimate errors of calls in flight. Headroom
and over-reservation cost no throughput under saturation: the surplus returns at reconcile and
the level simply hovers a little higher. ``observe_headers`` repairs whatever drift remains.

Limits come from ``GATEWAY_RATE_LIMITS`` (default: Anthropic's Start tier), corrected by an admin's
``RateLimitOverride`` row, corrected in turn by the limits the server reports in its
``anthropic-ratelimit-*-limit`` headers (the server knows our real tier).

The caller's protocol (see ``queueing.services``): ``expected_itpm_charge`` (the local
estimate, minus what the cache holds, × ``estimate_factor``) → ``try_reserve`` → call →
``observe_headers`` for every response → ``reconcile`` with the billed usage (``itpm_charge``)
or ``release`` when the call never reached the API → ``record_estimate`` with the raw
estimate and the API's total input tokens.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import redis

from llm_calls import catalog
from llm_calls import conf as llm_conf
from llm_calls.caching import CachePrefix, WarmPrefixes
from llm_calls.types import Usage
from queueing import conf
from queueing.lua import LuaScript
from ratelimit_project.redis import get_redis

log = logging.getLogger(__name__)

DIMENSIONS = ("rpm", "itpm", "otpm")
_HEADER_NAMES = {"rpm": "requests", "itpm": "input-tokens", "otpm": "output-tokens"}
# Anthropic rounds token "remaining" down to the thousand; a smaller gap means nothing.
_TOKEN_ROUNDING = 1000
_BUCKET_TTL_S = 3600  # a bucket untouched this long is full again: forgetting it is exact
_STATS_TTL_S = 7 * 24 * 3600
# Ratios outside this band are broken estimates (empty prompt, wrong model), not a bias to learn.
_RATIO_BOUNDS = (0.1, 10.0)

_RESERVE = LuaScript("limiter_reserve", prelude=["limiter_lib"])
_ADJUST = LuaScript("limiter_adjust", prelude=["limiter_lib"])
_OBSERVE = LuaScript("limiter_observe", prelude=["limiter_lib"])
_PAUSE = LuaScript("limiter_pause", prelude=["limiter_lib"])
_ESTIMATE = LuaScript("limiter_estimate", prelude=["limiter_lib"])
_STATE = LuaScript("limiter_state", prelude=["limiter_lib"])


@dataclass(frozen=True)
class Limits:
    """Per-minute limits of one model class; 0 means unlimited."""

    rpm: int
    itpm: int
    otpm: int


@dataclass(frozen=True)
class Reservation:
    """What ``try_reserve`` took; hand it back to ``reconcile`` or ``release`` (once is enough).

    Plain fields only, so it survives ``dataclasses.asdict`` → RQ job arguments → ``Reservation(**d)``.
    """

    id: str
    model_class: str
    input_tokens: int
    output_tokens: int
    requests: int = 1


@dataclass(frozen=True)
class Admission:
    """``admitted`` with a reservation, or not, with ``wait_s`` until it would fit.

    ``binding`` names what refused it: "rpm", "itpm", "otpm" or "pause" (after a 429).
    ``wait_s`` assumes nobody else takes capacity meanwhile: retry then, not earlier.
    """

    admitted: bool
    wait_s: float
    reservation: Reservation | None
    binding: str | None

    def __bool__(self) -> bool:
        # ``if limiter.try_reserve(...)`` must read as "was it admitted", not "is there an
        # answer" (a dataclass instance is always truthy).
        return self.admitted


def itpm_charge(usage: Usage, *, model: str | None = None) -> int:
    """Input tokens the ITPM bucket is charged for one response: uncached input + cache writes.

    Cache reads are free, except on models where they count (Haiku 3.5).
    """
    charged = usage.input_tokens + usage.cache_creation_input_tokens
    info = catalog.model_info(model) if model else None
    if info is not None and info.cache_reads_count_for_itpm:
        charged += usage.cache_read_input_tokens
    return charged


def admission_headroom(*, dim: str, limit: float, fraction: float) -> float:
    """What a bucket must keep above a request's amount to admit it (limiter_reserve.lua):
    ``fraction`` of its capacity, RPM's rounded down to whole requests."""
    amount = limit * fraction
    return float(math.floor(amount + 1e-9)) if dim == "rpm" else amount


def expected_itpm_charge(
    *, model: str, estimated_input_tokens: int, cached_tokens: int, factor: float
) -> int:
    """What the ITPM bucket will charge a prompt of ``estimated_input_tokens`` (our estimate)
    of which ``cached_tokens`` (same scale) are in the upstream's prompt cache, in the API's
    tokens (``factor``: ``estimate_factor``). Cache reads are free, except on models where
    they count (Haiku 3.5)."""
    cached = max(0, min(cached_tokens, estimated_input_tokens))
    info = catalog.model_info(model)
    if info is not None and info.cache_reads_count_for_itpm:
        cached = 0
    return math.ceil((estimated_input_tokens - cached) * factor)


def input_reservation(
    *,
    model: str,
    estimated_input_tokens: int,
    prefixes: Sequence[CachePrefix],
    warm: WarmPrefixes,
    factor: float,
) -> int:
    """The ITPM amount to reserve for a queued request: ``expected_itpm_charge`` with the
    part of its prompt the upstream's cache holds now (``prefixes``: its cacheable prefixes,
    stored at submit)."""
    return expected_itpm_charge(
        model=model,
        estimated_input_tokens=estimated_input_tokens,
        cached_tokens=warm.tokens(model=model, prefixes=prefixes) if prefixes else 0,
        factor=factor,
    )


# --- configured limits: settings < admin override ------------------------------------------

_override_lock = threading.Lock()
_override_cache: tuple[float, dict[str, dict[str, int | None]]] | None = None


def forget_overrides() -> None:
    """Drop this process's cached admin overrides (called when one is saved or deleted)."""
    global _override_cache
    with _override_lock:
        _override_cache = None


def _overrides() -> dict[str, dict[str, int | None]]:
    global _override_cache
    cached = _override_cache
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    from queueing.models import RateLimitOverride  # late: models load after apps are ready

    rows = {
        row["model_class"]: {dim: row[dim] for dim in DIMENSIONS}
        for row in RateLimitOverride.objects.values("model_class", *DIMENSIONS)
    }
    with _override_lock:
        _override_cache = (time.monotonic() + conf.limiter_override_cache_s(), rows)
    return rows


def configured_limits(model_class: str) -> Limits:
    """Limits from settings, with an admin's ``RateLimitOverride`` applied (not learned ones)."""
    configured = conf.rate_limits().get(model_class)
    if configured is None:
        raise ValueError(
            f"Unknown model class {model_class!r}: GATEWAY_RATE_LIMITS defines "
            f"{', '.join(sorted(conf.rate_limits()))}."
        )
    values = {dim: getattr(configured, dim) for dim in DIMENSIONS}
    for dim, value in _overrides().get(model_class, {}).items():
        if value is not None:
            values[dim] = value
    return Limits(**values)


# --- header parsing -------------------------------------------------------------------------


def _header_int(headers: Mapping[str, str], name: str) -> int:
    raw = headers.get(name)
    if raw is None:
        return -1
    try:
        return max(0, int(float(raw)))
    except ValueError:
        return -1


def _header_time_us(headers: Mapping[str, str], name: str) -> int:
    """An RFC 3339 time as epoch microseconds (-1 when absent or unparsable)."""
    raw = headers.get(name)
    if not raw:
        return -1
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return -1
    if moment.tzinfo is None:
        return -1
    return int(moment.timestamp() * 1_000_000)


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date) as seconds, else None."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _factor(mean: float, deviation: float) -> float:
    return mean + conf.estimate_margin_deviations() * deviation


def _now_arg(now: float | None) -> str:
    return "" if now is None else str(round(now * 1_000_000))


def _whole(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return value


class RedisRateLimiter:
    """Org-wide RPM / ITPM / OTPM buckets per model class, shared through Redis.

    ``configured`` returns the settings/admin limits of a model class (default:
    ``configured_limits``); tests pass their own to avoid the database.
    """

    def __init__(
        self,
        *,
        client: redis.Redis | None = None,
        configured: Callable[[str], Limits] | None = None,
    ) -> None:
        self._client = client
        self._configured = configured or configured_limits

    @property
    def redis(self) -> redis.Redis:
        return self._client if self._client is not None else get_redis()

    def _keys(self, model_class: str, reservation_id: str | None = None) -> list[str]:
        base = f"gw:rl:{model_class}"
        return [
            f"{base}:bucket",
            f"{base}:learned",
            f"{base}:pause",
            f"{base}:stats",
            self._estimate_key(model_class),
            f"gw:rl:res:{reservation_id or '-'}",
        ]

    @staticmethod
    def _estimate_key(model_class: str) -> str:
        # Per upstream: the factor corrects our token count to the upstream's tokenizer
        # (an emulator may count differently from the API).
        return f"gw:rl:{model_class}:tokenizer:{llm_conf.upstream_id()}"

    def _head_args(self, model_class: str, now: float | None) -> list[Any]:
        limits = self._configured(model_class)
        return [_now_arg(now), limits.rpm, limits.itpm, limits.otpm]

    def try_reserve(
        self,
        *,
        model_class: str,
        input_tokens: int,
        output_tokens: int,
        now: float | None = None,
    ) -> Admission:
        """Reserve 1 request, ``input_tokens`` and ``output_tokens`` (max_tokens) if all fit.

        ``input_tokens`` is the ITPM charge you expect (estimate × ``estimate_factor``; cache
        reads excluded). A bucket must also keep its headroom (``GATEWAY_LIMITER_HEADROOM``,
        default 2% of ITPM) above the amount. Not admitted: nothing is taken; retry after
        ``wait_s``.
        """
        _whole("input_tokens", input_tokens)
        _whole("output_tokens", output_tokens)
        reservation_id = uuid.uuid4().hex
        headroom = conf.limiter_headroom()
        admitted, wait_us, binding = _RESERVE(
            self.redis,
            keys=self._keys(model_class, reservation_id),
            args=[
                *self._head_args(model_class, now),
                1,
                input_tokens,
                output_tokens,
                conf.limiter_reservation_ttl_s(),
                _BUCKET_TTL_S,
                *(repr(headroom[dim]) for dim in DIMENSIONS),
            ],
        )
        if int(admitted) != 1:
            return Admission(
                admitted=False,
                wait_s=int(wait_us) / 1_000_000,
                reservation=None,
                binding=binding.decode() if isinstance(binding, bytes) else str(binding),
            )
        return Admission(
            admitted=True,
            wait_s=0.0,
            reservation=Reservation(
                id=reservation_id,
                model_class=model_class,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                requests=1,
            ),
            binding=None,
        )

    def reconcile(
        self,
        *,
        reservation: Reservation,
        input_tokens: int,
        output_tokens: int,
        now: float | None = None,
    ) -> bool:
        """Replace the reservation by what the API actually charged.

        ``input_tokens`` = the ITPM charge (``itpm_charge(usage)``: input + cache creation, cache
        reads free); ``output_tokens`` = tokens produced. The request itself stays spent. The
        difference is given back, or taken when the actual charge was larger (levels may then go
        negative, exactly like the server's). Returns False if this reservation was already
        reconciled or released (nothing changes).
        """
        _whole("input_tokens", input_tokens)
        _whole("output_tokens", output_tokens)
        return self._adjust(
            reservation,
            requests=0,
            input_tokens=reservation.input_tokens - input_tokens,
            output_tokens=reservation.output_tokens - output_tokens,
            now=now,
        )

    def release(self, *, reservation: Reservation, now: float | None = None) -> bool:
        """Give the whole reservation back, request included: the call never reached the API."""
        return self._adjust(
            reservation,
            requests=reservation.requests,
            input_tokens=reservation.input_tokens,
            output_tokens=reservation.output_tokens,
            now=now,
        )

    def _adjust(
        self,
        reservation: Reservation,
        *,
        requests: int,
        input_tokens: int,
        output_tokens: int,
        now: float | None,
    ) -> bool:
        applied = _ADJUST(
            self.redis,
            keys=self._keys(reservation.model_class, reservation.id),
            args=[
                *self._head_args(reservation.model_class, now),
                requests,
                input_tokens,
                output_tokens,
                _BUCKET_TTL_S,
            ],
        )
        return int(applied) == 1

    def observe_headers(
        self,
        *,
        model_class: str,
        status: int | None,
        headers: Mapping[str, str],
        now: float | None = None,
    ) -> None:
        """Learn from one HTTP response (any status) of this model class.

        Adopts the server's ``-limit`` values, lowers our levels when the server's ``-remaining``
        is clearly lower (another app spends the same key, or our estimates ran low), and on a
        429 with ``retry-after`` pauses every dispatcher of the class until then.
        """
        lowered = {str(k).lower(): str(v) for k, v in headers.items()}
        server_limits: list[int] = []
        remaining: list[int] = []
        resets: list[int] = []
        tolerances: list[int] = []
        for dim in DIMENSIONS:
            prefix = f"anthropic-ratelimit-{_HEADER_NAMES[dim]}"
            limit = _header_int(lowered, f"{prefix}-limit")
            server_limits.append(limit)
            remaining.append(_header_int(lowered, f"{prefix}-remaining"))
            resets.append(_header_time_us(lowered, f"{prefix}-reset"))
            # One second of refill absorbs the whole-second rounding of the reset time.
            per_second = math.ceil(max(limit, 0) / 60)
            rounding = 1 if dim == "rpm" else _TOKEN_ROUNDING
            tolerances.append(max(rounding, per_second))
        is_429 = status == 429
        retry_after = retry_after_s(lowered) if is_429 else None
        relimited, lowered_count, _paused_until = _OBSERVE(
            self.redis,
            keys=self._keys(model_class),
            args=[
                *self._head_args(model_class, now),
                *server_limits,
                *remaining,
                *resets,
                *tolerances,
                1 if is_429 else 0,
                -1 if retry_after is None else round(retry_after * 1_000_000),
                conf.limiter_learned_ttl_s(),
                _BUCKET_TTL_S,
                _STATS_TTL_S,
            ],
        )
        if int(relimited):
            log.info(
                "rate limits for %s differ from ours; adopting the server's: %s",
                model_class,
                ", ".join(
                    f"{dim}={value}"
                    for dim, value in zip(DIMENSIONS, server_limits, strict=True)
                    if value >= 0
                ),
            )
        if is_429:
            log.warning(
                "429 from Anthropic for %s; dispatch paused for %s s",
                model_class,
                "0" if retry_after is None else f"{retry_after:g}",
            )
        elif int(lowered_count):
            log.info(
                "server reports less capacity left for %s than we hold; lowered %s bucket(s)",
                model_class,
                lowered_count,
            )

    def pause(self, *, model_class: str, seconds: float, now: float | None = None) -> None:
        """Refuse every reservation of this model class for ``seconds`` (never shortens one)."""
        if not seconds >= 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        _PAUSE(
            self.redis,
            keys=self._keys(model_class),
            args=[*self._head_args(model_class, now), round(seconds * 1_000_000)],
        )

    def estimate_factor(self, model_class: str) -> float:
        """Multiply a local input-token estimate by this to get the API's count (1.0 until
        learned).

        It is the running mean of the API's total input tokens ÷ our estimate plus
        ``GATEWAY_ESTIMATE_MARGIN_DEVIATIONS`` mean absolute deviations: a reservation should
        cover the request's real charge, not its average one, or the server's bucket runs
        below ours while requests are in flight (a 429). The surplus comes back at reconcile.
        What the prompt cache serves is not in it (``expected_itpm_charge`` subtracts it).
        """
        mean, deviation = self.redis.hmget(self._estimate_key(model_class), ["m", "d"])
        if mean is None:
            return 1.0
        return _factor(float(mean), float(deviation or 0))

    def estimate_mean(self, model_class: str) -> float:
        """The learned mean of the API's count ÷ our estimate, without the margin (1.0 until
        learned): what a call is expected to be charged, where ``estimate_factor`` is what it
        is reserved."""
        mean = self.redis.hget(self._estimate_key(model_class), "m")
        return 1.0 if mean is None else float(mean)

    def record_estimate(self, model_class: str, estimated: int, actual: int) -> float:
        """Fold one response into the factor: ``estimated`` is the RAW local estimate of the
        whole prompt, ``actual`` the API's count of it (``Usage.total_input_tokens``: uncached,
        cache writes and cache reads alike), so the factor learns only how our token count
        differs from the API's — a property of the tokenizer, which a cold or warm cache does
        not change. Returns the new factor. Ignored (current factor returned) for empty
        estimates."""
        if estimated <= 0 or actual < 0:
            return self.estimate_factor(model_class)
        low, high = _RATIO_BOUNDS
        ratio = min(high, max(low, actual / estimated))
        mean, deviation = _ESTIMATE(
            self.redis,
            keys=self._keys(model_class),
            args=[
                *self._head_args(model_class, None),
                repr(ratio),
                repr(conf.estimate_ewma_alpha()),
                _STATS_TTL_S,
            ],
        )
        return _factor(float(mean), float(deviation))

    def state(self, *, model_class: str, now: float | None = None) -> dict[str, Any]:
        """A snapshot for dashboards and ETA: levels, limits, pause, estimate factor, 429s.

        Levels are in tokens (floats; None for unlimited dimensions) and may be negative.
        """
        configured = self._configured(model_class)
        raw = _STATE(
            self.redis,
            keys=self._keys(model_class),
            args=[_now_arg(now), configured.rpm, configured.itpm, configured.otpm],
        )
        values = [v.decode() if isinstance(v, bytes) else v for v in raw]
        now_us = int(values[0])

        def number(value: Any) -> float | None:
            return None if value is None else float(value)

        levels = {
            dim: (None if values[1 + n] is None else int(values[1 + n]) / 1_000_000)
            for n, dim in enumerate(DIMENSIONS)
        }
        effective = {dim: int(values[4 + n]) for n, dim in enumerate(DIMENSIONS)}
        learned = {
            dim: (None if values[7 + n] is None else int(float(values[7 + n])))
            for n, dim in enumerate(DIMENSIONS)
        }
        pause_until = number(values[10])
        paused_for = max(0.0, (pause_until - now_us) / 1_000_000) if pause_until else 0.0
        n429, last429, lowered, relimited = (number(v) for v in values[11:15])
        mean, deviation, samples = (number(v) for v in values[15:18])
        return {
            "model_class": model_class,
            "now": now_us / 1_000_000,
            "levels": levels,
            "limits": {
                "configured": {dim: getattr(configured, dim) for dim in DIMENSIONS},
                "learned": learned,
                "effective": effective,
            },
            "paused_for_s": paused_for,
            "estimate_factor": 1.0 if mean is None else _factor(mean, deviation or 0.0),
            "estimate_mean": 1.0 if mean is None else mean,
            "estimate_deviation": deviation or 0.0,
            "estimate_samples": int(samples or 0),
            "rate_limit_errors": int(n429 or 0),
            "last_429_at": last429 / 1_000_000 if last429 else None,
            "levels_lowered": int(lowered or 0),
            "limit_changes": int(relimited or 0),
        }

    def effective_limits(self, *, model_class: str) -> Limits:
        """The limits in force: configured, unless the server told us otherwise."""
        effective = self.state(model_class=model_class)["limits"]["effective"]
        return Limits(**effective)


_limiter: RedisRateLimiter | None = None


def get_limiter() -> RedisRateLimiter:
    """The process-wide limiter (it reads settings and the Redis client on every call)."""
    global _limiter
    if _limiter is None:
        _limiter = RedisRateLimiter()
    return _limiter
