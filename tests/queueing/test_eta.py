"""The wait a user is told at submit (``LLMRequest.predicted_wait_s``), on real Redis and DB.

No worker runs here, so nothing is dispatched: each test sets the limiter's ITPM bucket to a
known level and reads the prediction the submit stored.
"""

from __future__ import annotations

import time

import pytest

from llm_calls.catalog import model_class
from llm_calls.tokens import chars_per_token_for
from queueing import eta, services
from queueing.limiter import get_limiter
from tests.usage.factories import make_user

MODEL = "claude-sonnet-5-5"
BUCKET = model_class(MODEL)
# A slow bucket (100 input tokens per second), so the refill while a test sets up is noise.
ITPM = 6_000
REFILL = ITPM / 60
HEADROOM = 0.02 * ITPM  # the limiter keeps this free above a request's amount


@pytest.fixture
def limited(settings, redis_client, db):
    settings.GATEWAY_RATE_LIMITS = {BUCKET: {"rpm": 0, "itpm": ITPM, "otpm": 0}}
    settings.GATEWAY_BATCH_PRIORITY_CLASSES = []
    return settings


def empty_bucket(settings) -> None:
    """Take everything the ITPM bucket holds (the limiter's headroom rule switched off for it)."""
    settings.GATEWAY_LIMITER_HEADROOM = {"itpm": 0.0}
    limiter = get_limiter()
    level = limiter.state(model_class=BUCKET)["levels"]["itpm"]
    assert limiter.try_reserve(model_class=BUCKET, input_tokens=int(level), output_tokens=0)
    del settings.GATEWAY_LIMITER_HEADROOM


def ask(user, input_tokens: int, priority: str = "query"):
    # The local estimate is ceil(chars / chars-per-token of the model's tokenizer) + 4 per message.
    text = "x" * int((input_tokens - 4) * chars_per_token_for(MODEL))
    row = services.submit_request(
        user=user,
        session_id="eta",
        model=MODEL,
        messages=[{"role": "user", "content": text}],
        max_tokens=1,
        priority=priority,
    )
    assert row.estimated_input_tokens == input_tokens
    return row


def test_a_lone_request_waits_for_its_tokens_and_the_limiter_headroom(limited) -> None:
    empty_bucket(limited)
    row = ask(make_user("solo"), 1_000)
    # 1,000 tokens + 120 of headroom at 100 tokens/s; an ETA without the headroom says 10 s.
    assert row.predicted_wait_s == pytest.approx((1_000 + HEADROOM) / REFILL, rel=0.03)


def test_a_full_bucket_means_no_wait(limited) -> None:
    row = ask(make_user("early"), 1_000)
    assert row.predicted_wait_s == 0.0


def test_a_light_user_is_not_told_to_wait_for_a_heavy_users_backlog(limited) -> None:
    empty_bucket(limited)
    heavy, light = make_user("heavy"), make_user("light")
    backlog = [ask(heavy, 1_000) for _ in range(10)]
    mine = ask(light, 1_000)
    # Fair queueing puts the light request right after the heavy user's first one.
    assert backlog[-1].predicted_wait_s == pytest.approx((10 * 1_001 + HEADROOM) / REFILL, rel=0.03)
    assert mine.predicted_wait_s == pytest.approx((2 * 1_001 + HEADROOM) / REFILL, rel=0.03)


def test_a_backlogged_users_wait_counts_other_users_new_traffic(limited) -> None:
    heavy, other = make_user("backlogged"), make_user("steady")
    # Another user has been sending 50 tokens/s for the last minute and has nothing queued:
    # each of its new requests starts at the scheduler's clock, below the heavy user's later
    # requests, so it goes first — up to the tokens the heavy user has ahead of that request.
    now = time.time()
    for n in range(60):
        eta.record_arrival(
            priority="query",
            model_class=BUCKET,
            user_key=f"u{other.pk}",
            weight=1.0,
            input_tokens=49,
            max_tokens=1,
            now=now - 60 + n,
        )
    empty_bucket(limited)
    rows = [ask(heavy, 1_000) for _ in range(5)]
    alone = (5 * 1_001 + HEADROOM) / REFILL  # what the limiter alone would make it wait
    # Its new requests take start tags from the clock up to the last heavy request's start tag
    # (4 * 1,001 tokens): 100 T = 5,125 + min(50 T, 4,004), so it takes all of that room.
    assert rows[-1].predicted_wait_s == pytest.approx(alone + 4 * 1_001 / REFILL, rel=0.03)
    # The first one has nobody's new traffic ahead of it (a tie in start tags goes to the
    # request that is already waiting).
    assert rows[0].predicted_wait_s == pytest.approx((1_001 + HEADROOM) / REFILL, rel=0.03)


@pytest.mark.parametrize(
    ("base", "flows", "expected"),
    [
        (-5.0, [(100.0, 1e9)], 0.0),  # already enough in the bucket
        (1_000.0, [], 1.0),
        (1_000.0, [(500.0, 1e9)], 2.0),  # half the refill goes to the other traffic
        (1_000.0, [(500.0, 250.0)], 1.25),  # ... until its room (250 tokens) is used up
        (1_000.0, [(2_000.0, 1_000.0)], 2.0),  # more traffic than refill, but bounded
    ],
)
def test_solve_wait(base: float, flows: list[tuple[float, float]], expected: float) -> None:
    wait = eta.solve_wait_s(refill_per_s=1_000.0, base=base, fraction=1.0, flows=flows)
    assert wait == pytest.approx(expected)


SHARED = " ".join(f"Policy {n}: be brief." for n in range(200))  # ~1,000 tokens: cacheable


def ask_with_shared_prompt(user, n: int):
    return services.submit_request(
        user=user,
        session_id="eta-cached",
        model=MODEL,
        system=SHARED,
        messages=[{"role": "user", "content": f"Question {n}: " + "why " * 60}],
        max_tokens=1,
        priority="query",
    )


def test_a_queue_sharing_a_cached_prompt_waits_only_for_its_uncached_part(limited) -> None:
    """The demo's shape: what the limiter charges is the questions, not the shared prompt."""
    from llm_calls import caching
    from llm_calls.types import Usage

    user = make_user("cached-queue")
    probe = ask_with_shared_prompt(user, 0)
    plan = caching.plan_cache(params={"model": MODEL, **probe.params, "max_tokens": 1})
    shared = plan.breakpoints[-1].prefix_tokens
    caching.record_warm_prefixes(
        plan, usage=Usage(cache_creation_input_tokens=shared), sent_at=time.time()
    )
    services.cancel_request(request=probe, by_user=probe.user)
    empty_bucket(limited)
    rows = [ask_with_shared_prompt(user, n) for n in range(1, 6)]
    uncached = rows[-1].estimated_input_tokens - shared
    assert 0 < uncached < shared / 3
    # Five questions' worth of tokens ahead of and including the last one, not five prompts.
    assert rows[-1].predicted_wait_s == pytest.approx((5 * uncached + HEADROOM) / REFILL, rel=0.08)
    cold = rows[-1].estimated_input_tokens * 5 / REFILL
    assert rows[-1].predicted_wait_s < cold / 3


def waits(priority: str, model_s: float, actual_s: float, count: int) -> list[eta.DispatchWait]:
    return [eta.DispatchWait(priority=priority, model_s=model_s, actual_s=actual_s)] * count


def test_the_range_shown_is_learned_from_how_estimates_landed(redis_client) -> None:
    prior = eta.calibration(priority="query")
    assert prior.samples == 0
    low, high = prior.range_s(100.0)
    assert low < 100 < high  # a modest prior before any evidence
    # The model's waits have been landing within 10% of what happened.
    for n in range(20):
        spread = 1.1 if n % 2 else 0.9
        eta.record_dispatch_waits(waits=waits("query", 10.0, 10.0 * spread, 10))
    learned = eta.calibration(priority="query")
    assert learned.samples == 200
    low, high = learned.range_s(100.0)
    assert 80 < low < 100 < high < 125  # narrower than the prior's
    assert (high - low) < (prior.range_s(100.0)[1] - prior.range_s(100.0)[0]) / 2
    # Short waits tell nothing about relative error and are not counted.
    eta.record_dispatch_waits(
        waits=[*waits("query", 0.1, 0.3, 1), eta.DispatchWait("query", None, 5.0)]
    )
    assert eta.calibration(priority="query").samples == 200


def test_a_class_whose_waits_run_long_is_told_longer_and_the_others_are_not(limited) -> None:
    # Query waits have run twice the model's figure; interactive ones as predicted.
    for _ in range(20):
        eta.record_dispatch_waits(waits=waits("query", 10.0, 20.0, 10))
        eta.record_dispatch_waits(waits=waits("interactive", 10.0, 10.0, 10))
    empty_bucket(limited)
    query = ask(make_user("long"), 1_000)
    # The model's own figure is kept beside what the user was told, and learning reads it.
    assert query.model_wait_s == pytest.approx((1_000 + HEADROOM) / REFILL, rel=0.05)
    share = 200 / (200 + 20)  # the prior still weighs 20 samples
    assert query.predicted_wait_s == pytest.approx(query.model_wait_s * 2**share, rel=0.02)
    status = eta.queue_status(query)  # what the request's page shows, corrected the same way
    assert status["eta_s"] == pytest.approx(query.predicted_wait_s, rel=0.1)  # refilled since
    low, high = status["eta_range_s"]
    assert low < status["eta_s"] < high
    interactive = ask(make_user("short"), 1_000, priority="interactive")
    assert interactive.predicted_wait_s == pytest.approx(interactive.model_wait_s, rel=0.02)


def test_a_correction_is_bounded_so_a_broken_model_stays_visible(redis_client) -> None:
    for _ in range(50):
        eta.record_dispatch_waits(waits=waits("query", 1.0, 500.0, 10))
    assert eta.calibration(priority="query").corrected_s(10.0) == pytest.approx(40.0, rel=0.01)


def test_people_read_the_wait_in_words(limited) -> None:
    empty_bucket(limited)
    row = ask(make_user("words"), 1_000)
    status = eta.queue_status(row)
    assert status["eta_s"] == pytest.approx(row.predicted_wait_s, abs=0.5)  # refilled since
    low, high = status["eta_range_s"]
    assert low < status["eta_s"] < high
    assert status["eta_text"].startswith("about 10 s")  # (1,000 + 120) / 100 tokens/s
    assert status["waited_s"] is None
    assert eta.describe_wait(4) == "under 10 s"
    assert eta.describe_wait(185) == "about 3 min"
    assert eta.describe_wait_range(180, 120, 260) == "about 3 min (2–4 min)"
    assert eta.describe_wait_range(30, 5, 60) == "about 30 s (up to 1 min)"
    assert eta.describe_waited(34.4) == "34 s" and eta.describe_waited(185) == "3 min 5 s"
