"""The Redis rate limiter against a real redis-server: admission, refill, reconcile, learning.

Most tests pass an explicit ``now`` so that time is exact; a few use the Redis server clock.
"""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime

import pytest
import redis
from django.test import override_settings

from llm_calls.catalog import model_class
from llm_calls.types import Usage
from queueing.limiter import (
    Limits,
    RedisRateLimiter,
    configured_limits,
    get_limiter,
    itpm_charge,
)
from queueing.models import RateLimitOverride

T0 = 1_800_000_000.0  # a fixed "now" (epoch seconds) for exact arithmetic


@pytest.fixture(autouse=True)
def no_headroom():
    """Exact-capacity arithmetic here; the headroom has its own test."""
    with override_settings(GATEWAY_LIMITER_HEADROOM={"itpm": 0}):
        yield


def make_limiter(rpm: int = 0, itpm: int = 0, otpm: int = 0) -> RedisRateLimiter:
    limits = Limits(rpm=rpm, itpm=itpm, otpm=otpm)
    return RedisRateLimiter(configured=lambda _model_class: limits)


def levels(limiter: RedisRateLimiter, now: float, model_class: str = "sonnet") -> dict:
    return limiter.state(model_class=model_class, now=now)["levels"]


def test_admits_until_the_bucket_is_empty_then_names_the_wait(redis_client) -> None:
    limiter = make_limiter(itpm=600)  # refills 10 tokens per second
    first = limiter.try_reserve(model_class="sonnet", input_tokens=300, output_tokens=0, now=T0)
    second = limiter.try_reserve(model_class="sonnet", input_tokens=300, output_tokens=0, now=T0)
    third = limiter.try_reserve(model_class="sonnet", input_tokens=300, output_tokens=0, now=T0)

    assert first.admitted and second.admitted
    assert first.reservation is not None and first.reservation.input_tokens == 300
    assert first.reservation.id != second.reservation.id  # type: ignore[union-attr]
    assert not third.admitted and third.reservation is None
    assert third.binding == "itpm"
    assert third.wait_s == pytest.approx(30.0)


def test_bucket_refills_continuously_at_limit_per_60_seconds(redis_client) -> None:
    limiter = make_limiter(itpm=600)
    assert limiter.try_reserve(model_class="sonnet", input_tokens=600, output_tokens=0, now=T0)
    assert levels(limiter, T0 + 10)["itpm"] == pytest.approx(100.0)
    assert not limiter.try_reserve(
        model_class="sonnet", input_tokens=101, output_tokens=0, now=T0 + 10
    ).admitted
    assert limiter.try_reserve(
        model_class="sonnet", input_tokens=100, output_tokens=0, now=T0 + 10
    ).admitted
    assert levels(limiter, T0 + 10)["itpm"] == 0
    # never refills beyond capacity
    assert levels(limiter, T0 + 3600)["itpm"] == 600


def test_all_three_buckets_must_fit_and_a_refusal_takes_nothing(redis_client) -> None:
    limiter = make_limiter(rpm=2, itpm=10_000, otpm=1_000)
    for _ in range(2):
        assert limiter.try_reserve(
            model_class="sonnet", input_tokens=100, output_tokens=100, now=T0
        ).admitted
    refused = limiter.try_reserve(model_class="sonnet", input_tokens=100, output_tokens=100, now=T0)
    assert not refused.admitted and refused.binding == "rpm"
    assert refused.wait_s == pytest.approx(30.0)  # 2 per minute: one request every 30 s
    assert levels(limiter, T0) == {"rpm": 0, "itpm": 9_800, "otpm": 800}

    # the longest wait names the binding dimension
    other = make_limiter(rpm=60, itpm=600, otpm=6_000)
    assert other.try_reserve(model_class="haiku", input_tokens=500, output_tokens=5_900, now=T0)
    refused = other.try_reserve(model_class="haiku", input_tokens=200, output_tokens=200, now=T0)
    # itpm lacks 100 tokens (10 s at 10/s); otpm lacks 100 (1 s at 100/s)
    assert refused.binding == "itpm" and refused.wait_s == pytest.approx(10.0)


def test_rpm_keeps_two_percent_of_whole_requests_free(redis_client) -> None:
    # The API counts a request a moment after we reserve it; a full bucket on its side loses
    # that moment's refill. 2% of 200 RPM = 4 requests stay unreserved for that drift.
    limiter = make_limiter(rpm=200)
    admitted = 0
    while limiter.try_reserve(
        model_class="sonnet", input_tokens=0, output_tokens=0, now=T0
    ).admitted:
        admitted += 1
        assert admitted <= 200
    assert admitted == 196
    # Under 50 requests per minute 2% is less than a request: nothing is held back.
    small = make_limiter(rpm=40)
    taken = 0
    while small.try_reserve(model_class="haiku", input_tokens=0, output_tokens=0, now=T0).admitted:
        taken += 1
        assert taken <= 40
    assert taken == 40


def test_headroom_keeps_part_of_the_bucket_free_without_taking_it(redis_client) -> None:
    limiter = make_limiter(itpm=6_000)
    with override_settings(GATEWAY_LIMITER_HEADROOM={"itpm": 0.05}):  # 300 tokens
        assert limiter.try_reserve(
            model_class="sonnet", input_tokens=5_700, output_tokens=0, now=T0
        ).admitted
        refused = limiter.try_reserve(model_class="sonnet", input_tokens=1, output_tokens=0, now=T0)
        assert not refused.admitted and refused.wait_s == pytest.approx(0.01)  # 1 token at 100/s
        assert levels(limiter, T0)["itpm"] == 300  # nothing extra was taken
        # a request as large as the bucket still goes when it is full
        assert limiter.try_reserve(
            model_class="sonnet", input_tokens=6_000, output_tokens=0, now=T0 + 60
        ).admitted


def test_unlimited_dimensions_never_bind(redis_client) -> None:
    limiter = make_limiter(rpm=0, itpm=0, otpm=0)
    for _ in range(100):
        assert limiter.try_reserve(
            model_class="sonnet", input_tokens=10**9, output_tokens=10**9, now=T0
        ).admitted
    assert levels(limiter, T0) == {"rpm": None, "itpm": None, "otpm": None}


def test_request_larger_than_capacity_waits_for_a_full_bucket_then_goes_negative(
    redis_client,
) -> None:
    limiter = make_limiter(itpm=600)
    assert limiter.try_reserve(model_class="sonnet", input_tokens=60, output_tokens=0, now=T0)
    huge = limiter.try_reserve(model_class="sonnet", input_tokens=1_000, output_tokens=0, now=T0)
    assert not huge.admitted
    assert huge.wait_s == pytest.approx(6.0)  # until the bucket is full again, not "never"
    assert limiter.try_reserve(
        model_class="sonnet", input_tokens=1_000, output_tokens=0, now=T0 + 6
    ).admitted
    assert levels(limiter, T0 + 6)["itpm"] == -400
    small = limiter.try_reserve(model_class="sonnet", input_tokens=1, output_tokens=0, now=T0 + 6)
    assert not small.admitted and small.wait_s == pytest.approx(40.1)


def test_reconcile_gives_back_the_difference_once(redis_client) -> None:
    limiter = make_limiter(rpm=10, itpm=6_000, otpm=6_000)
    admission = limiter.try_reserve(
        model_class="sonnet", input_tokens=1_000, output_tokens=4_000, now=T0
    )
    assert admission.reservation is not None
    assert limiter.reconcile(
        reservation=admission.reservation, input_tokens=800, output_tokens=300, now=T0
    )
    assert levels(limiter, T0) == {"rpm": 9, "itpm": 5_200, "otpm": 5_700}
    # a redelivered job reconciling again changes nothing
    assert not limiter.reconcile(
        reservation=admission.reservation, input_tokens=0, output_tokens=0, now=T0
    )
    assert not limiter.release(reservation=admission.reservation, now=T0)
    assert levels(limiter, T0) == {"rpm": 9, "itpm": 5_200, "otpm": 5_700}


def test_reconcile_charges_more_than_reserved_and_may_go_negative(redis_client) -> None:
    limiter = make_limiter(itpm=6_000)
    admission = limiter.try_reserve(
        model_class="sonnet", input_tokens=6_000, output_tokens=0, now=T0
    )
    assert admission.reservation is not None
    limiter.reconcile(
        reservation=admission.reservation, input_tokens=7_500, output_tokens=0, now=T0
    )
    assert levels(limiter, T0)["itpm"] == -1_500
    refused = limiter.try_reserve(model_class="sonnet", input_tokens=100, output_tokens=0, now=T0)
    assert refused.wait_s == pytest.approx(16.0)  # 1,600 tokens at 100 per second


def test_release_returns_everything_but_never_beyond_capacity(redis_client) -> None:
    limiter = make_limiter(rpm=10, itpm=6_000, otpm=600)
    admission = limiter.try_reserve(
        model_class="sonnet", input_tokens=3_000, output_tokens=600, now=T0
    )
    assert admission.reservation is not None
    assert limiter.release(reservation=admission.reservation, now=T0 + 30)
    # 30 s refilled the buckets already; the give-back is capped at capacity
    assert levels(limiter, T0 + 30) == {"rpm": 10, "itpm": 6_000, "otpm": 600}


def test_pause_refuses_every_reservation_until_it_ends(redis_client) -> None:
    limiter = make_limiter(rpm=100)
    limiter.pause(model_class="sonnet", seconds=10, now=T0)
    refused = limiter.try_reserve(model_class="sonnet", input_tokens=1, output_tokens=1, now=T0 + 2)
    assert not refused.admitted and refused.binding == "pause"
    assert refused.wait_s == pytest.approx(8.0)
    limiter.pause(model_class="sonnet", seconds=1, now=T0 + 2)  # never shortens a longer pause
    assert limiter.state(model_class="sonnet", now=T0 + 2)["paused_for_s"] == pytest.approx(8.0)
    assert limiter.try_reserve(
        model_class="sonnet", input_tokens=1, output_tokens=1, now=T0 + 10
    ).admitted
    # other model classes are not paused
    assert limiter.try_reserve(
        model_class="opus", input_tokens=1, output_tokens=1, now=T0 + 2
    ).admitted


def rfc3339(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def headers(
    *,
    requests: tuple[int, int] | None = None,
    input_tokens: tuple[int, int] | None = None,
    output_tokens: tuple[int, int] | None = None,
    reset_at: float | None = None,
) -> dict[str, str]:
    """(limit, remaining) per bucket, the way Anthropic sends them."""
    out: dict[str, str] = {}
    for name, pair in (
        ("requests", requests),
        ("input-tokens", input_tokens),
        ("output-tokens", output_tokens),
    ):
        if pair is None:
            continue
        out[f"Anthropic-RateLimit-{name.title()}-Limit"] = str(pair[0])
        out[f"anthropic-ratelimit-{name}-remaining"] = str(pair[1])
        if reset_at is not None:
            out[f"anthropic-ratelimit-{name}-reset"] = rfc3339(reset_at)
    return out


def test_adopts_the_servers_limits_when_the_configured_tier_is_wrong(redis_client) -> None:
    limiter = make_limiter(rpm=50, itpm=30_000, otpm=8_000)
    limiter.observe_headers(
        model_class="sonnet",
        status=200,
        headers=headers(
            requests=(1_000, 999), input_tokens=(450_000, 450_000), output_tokens=(90_000, 90_000)
        ),
        now=T0,
    )
    state = limiter.state(model_class="sonnet", now=T0)
    assert state["limits"]["effective"] == {"rpm": 1_000, "itpm": 450_000, "otpm": 90_000}
    assert state["limits"]["configured"] == {"rpm": 50, "itpm": 30_000, "otpm": 8_000}
    assert state["limits"]["learned"] == {"rpm": 1_000, "itpm": 450_000, "otpm": 90_000}
    # the bucket grows to the new capacity as it refills at the new rate
    assert levels(limiter, T0 + 60)["itpm"] == 450_000
    assert limiter.try_reserve(
        model_class="sonnet", input_tokens=100_000, output_tokens=0, now=T0 + 60
    ).admitted


def test_lowers_its_level_when_another_app_spends_the_same_key(redis_client) -> None:
    limiter = make_limiter(rpm=50, itpm=30_000, otpm=8_000)
    # within the server's rounding (down to the thousand): nothing to learn
    limiter.observe_headers(
        model_class="sonnet",
        status=200,
        headers=headers(input_tokens=(30_000, 29_000)),
        now=T0,
    )
    assert levels(limiter, T0)["itpm"] == 30_000
    assert limiter.state(model_class="sonnet", now=T0)["levels_lowered"] == 0
    # clearly lower: someone else took 18,000
    limiter.observe_headers(
        model_class="sonnet",
        status=200,
        headers=headers(requests=(50, 40), input_tokens=(30_000, 12_000)),
        now=T0,
    )
    assert levels(limiter, T0)["itpm"] == 12_000
    assert levels(limiter, T0)["rpm"] == 40
    refused = limiter.try_reserve(
        model_class="sonnet", input_tokens=13_000, output_tokens=0, now=T0
    )
    assert not refused.admitted and refused.binding == "itpm"
    # never raised by the server's view: our in-flight reservations explain a lower level
    limiter.try_reserve(model_class="sonnet", input_tokens=12_000, output_tokens=0, now=T0)
    limiter.observe_headers(
        model_class="sonnet", status=200, headers=headers(input_tokens=(30_000, 20_000)), now=T0
    )
    assert levels(limiter, T0)["itpm"] == 0


def test_stale_remaining_is_discounted_by_the_reset_time(redis_client) -> None:
    """Headers computed when a long request started show less than the server holds now."""
    limiter = make_limiter(itpm=30_000)
    # At T0+10 the server reports 10,000 left as of T0 (full again at T0+40); by T0+10 it has
    # refilled 5,000 (500/s), so it holds 15,000. Our level is 30,000 - nothing in flight.
    limiter.observe_headers(
        model_class="sonnet",
        status=200,
        headers=headers(input_tokens=(30_000, 10_000), reset_at=T0 + 40),
        now=T0 + 10,
    )
    assert levels(limiter, T0 + 10)["itpm"] == 15_000


def test_a_429_pauses_every_worker_for_retry_after_and_is_counted(redis_client) -> None:
    limiter = make_limiter(rpm=50, itpm=30_000, otpm=8_000)
    limiter.observe_headers(
        model_class="sonnet",
        status=429,
        headers={"retry-after": "7", **headers(input_tokens=(30_000, 0))},
        now=T0,
    )
    state = limiter.state(model_class="sonnet", now=T0)
    assert state["rate_limit_errors"] == 1
    assert state["paused_for_s"] == pytest.approx(7.0)
    other_worker = make_limiter(rpm=50, itpm=30_000, otpm=8_000)
    refused = other_worker.try_reserve(
        model_class="sonnet", input_tokens=1, output_tokens=1, now=T0 + 1
    )
    assert not refused.admitted and refused.binding == "pause"
    assert refused.wait_s == pytest.approx(6.0)
    # a spend-limit 429 has no retry-after: counted, no pause
    limiter.observe_headers(model_class="opus", status=429, headers={}, now=T0)
    assert limiter.state(model_class="opus", now=T0)["rate_limit_errors"] == 1
    assert limiter.state(model_class="opus", now=T0)["paused_for_s"] == 0


def test_estimate_factor_corrects_a_client_that_underestimates_by_30_percent(
    redis_client,
) -> None:
    limiter = make_limiter()
    assert limiter.estimate_factor("sonnet") == 1.0
    for n in range(40):
        actual = 1_300 + (n % 5) * 10 - 20  # noisy around 1.3x
        limiter.record_estimate("sonnet", 1_000, actual)
    state = limiter.state(model_class="sonnet")
    assert state["estimate_mean"] == pytest.approx(1.3, abs=0.01)
    # the factor covers the noisy samples (up to 1.32x), with a small margin, not a big one
    assert 1.32 <= limiter.estimate_factor("sonnet") <= 1.36
    assert state["estimate_factor"] == limiter.estimate_factor("sonnet")
    assert limiter.estimate_factor(model_class="haiku") == 1.0  # per model class
    # now overestimating by 30%: it follows (erring high while it adapts)
    for _ in range(100):
        limiter.record_estimate(model_class="sonnet", estimated=1_000, actual=700)
    assert 0.7 <= limiter.estimate_factor("sonnet") <= 0.72
    # a broken sample (empty estimate) is ignored
    assert limiter.record_estimate("sonnet", 0, 500) == limiter.estimate_factor("sonnet")


def test_a_charge_factor_learned_on_a_warm_cache_is_not_used_against_another_upstream(
    redis_client, settings
) -> None:
    # Learned while the emulator's cache served most of every prompt: a request is charged a
    # tenth of its estimate. A new emulator (another address) starts with a cold cache, so its
    # first requests are charged in full and must be reserved in full, or the limit is overrun.
    limiter = make_limiter()
    settings.ANTHROPIC_BASE_URL = "http://127.0.0.1:8001"
    for _ in range(20):
        limiter.record_estimate("sonnet", 10_000, 1_000)
    assert limiter.estimate_factor("sonnet") < 0.2
    settings.ANTHROPIC_BASE_URL = "http://127.0.0.1:8002"
    assert limiter.estimate_factor("sonnet") == 1.0
    settings.ANTHROPIC_API_KEY = "sk-ant-another-organization"
    settings.ANTHROPIC_BASE_URL = "http://127.0.0.1:8001"
    assert limiter.estimate_factor("sonnet") == 1.0  # another key: another account's cache
    assert limiter.state(model_class="sonnet")["estimate_factor"] == 1.0


def test_server_clock_is_used_without_an_explicit_now(redis_client) -> None:
    limiter = make_limiter(itpm=60_000)  # 1,000 tokens per second
    assert limiter.try_reserve(model_class="sonnet", input_tokens=60_000, output_tokens=0).admitted
    refused = limiter.try_reserve(model_class="sonnet", input_tokens=500, output_tokens=0)
    assert not refused.admitted
    assert 0.3 < refused.wait_s <= 0.5


def test_scripts_reload_after_redis_forgets_them(redis_client) -> None:
    limiter = make_limiter(itpm=600)
    assert limiter.try_reserve(model_class="sonnet", input_tokens=1, output_tokens=0, now=T0)
    redis_client.script_flush()
    assert limiter.try_reserve(model_class="sonnet", input_tokens=1, output_tokens=0, now=T0)


def test_bad_amounts_are_refused_with_a_clear_error(redis_client) -> None:
    limiter = make_limiter(itpm=600)
    with pytest.raises(ValueError, match="input_tokens must be a whole number >= 0"):
        limiter.try_reserve(model_class="sonnet", input_tokens=-1, output_tokens=0)
    with pytest.raises(ValueError, match="Unknown model class 'gpt'"):
        get_limiter().try_reserve(model_class="gpt", input_tokens=1, output_tokens=0)


def test_keys_are_namespaced_and_expire(redis_client) -> None:
    limiter = make_limiter(rpm=10, itpm=600, otpm=600)
    admission = limiter.try_reserve(model_class="sonnet", input_tokens=1, output_tokens=1, now=T0)
    limiter.observe_headers(model_class="sonnet", status=429, headers={"retry-after": "3"}, now=T0)
    limiter.record_estimate("sonnet", 10, 11)
    keys = [key.decode() for key in redis_client.keys("*")]
    assert keys and all(key.startswith("gw:rl:") for key in keys)
    assert all(redis_client.ttl(key) > 0 for key in keys)
    assert admission.reservation is not None


def test_rate_limit_buckets_and_itpm_charge() -> None:
    # Opus 4.x share one bucket and Sonnet 4.x another; each 5.x model has its own, except
    # that every Fable 5.x shares one.
    assert model_class("claude-opus-4-8") == model_class("claude-opus-4-6") == "opus-4"
    assert model_class("claude-sonnet-4-6") == "sonnet-4"
    assert model_class("claude-haiku-4-5") == "haiku-4-5"
    assert model_class("claude-sonnet-5-5") == "sonnet-5-5"
    assert model_class("claude-sonnet-5") == "sonnet-5"
    assert model_class("claude-opus-5-5") != model_class("claude-opus-5")
    assert model_class("claude-fable-5-2") == model_class("claude-fable-5-1") == "fable-5"
    assert model_class("claude-haiku-4-5-20251001") == "haiku-4-5"  # a dated alias
    usage = Usage(input_tokens=100, cache_creation_input_tokens=50, cache_read_input_tokens=1_000)
    assert itpm_charge(usage) == 150  # cache reads are free
    assert itpm_charge(usage, model="claude-3-5-haiku-latest") == 1_150  # except on Haiku 3.5


@pytest.mark.django_db
def test_limits_settings_then_admin_override_then_learned(redis_client) -> None:
    with override_settings(GATEWAY_RATE_LIMITS={"sonnet": {"rpm": 7, "itpm": 700}}):
        # Dimensions left out keep the Start tier's.
        assert configured_limits("sonnet") == Limits(rpm=7, itpm=700, otpm=400_000)
        RateLimitOverride.objects.create(model_class="sonnet", itpm=900)
        assert configured_limits("sonnet") == Limits(rpm=7, itpm=900, otpm=400_000)
        limiter = RedisRateLimiter()
        assert limiter.state(model_class="sonnet", now=T0)["levels"]["itpm"] == 900
        limiter.observe_headers(
            model_class="sonnet",
            status=200,
            headers=headers(input_tokens=(1_200, 1_200)),
            now=T0,
        )
        assert limiter.state(model_class="sonnet", now=T0)["limits"]["effective"]["itpm"] == 1_200
        RateLimitOverride.objects.all().delete()
        assert configured_limits("sonnet").itpm == 700  # back to the setting
    assert configured_limits("sonnet-5-5").itpm == 2_000_000  # the Start tier by default


def _reserve_many(url: str, count: int, start, out) -> None:  # type: ignore[no-untyped-def]
    limiter = RedisRateLimiter(
        client=redis.Redis.from_url(url),
        configured=lambda _mc: Limits(rpm=0, itpm=30_000, otpm=0),
    )
    start.wait()
    admitted = 0
    for _ in range(count):
        admission = limiter.try_reserve(
            model_class="sonnet", input_tokens=30, output_tokens=0, now=T0
        )
        admitted += admission.admitted
    out.put(admitted)


def test_many_processes_never_over_admit(redis_client, redis_server) -> None:
    """8 processes x 200 reservations of 30 tokens race for 30,000 tokens at a frozen clock."""
    context = multiprocessing.get_context("fork")
    start = context.Event()
    out = context.Queue()
    workers = [
        context.Process(target=_reserve_many, args=(redis_server.url, 200, start, out))
        for _ in range(8)
    ]
    for worker in workers:
        worker.start()
    start.set()
    admitted = [out.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert sum(admitted) == 1_000  # 30,000 / 30: not one more, not one less
    assert min(admitted) > 0  # they really raced
    assert make_limiter(itpm=30_000).state(model_class="sonnet", now=T0)["levels"]["itpm"] == 0
