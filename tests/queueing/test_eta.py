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
