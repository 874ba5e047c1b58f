"""Per-minute token buckets per (API key, model class), with the real API's 429s and headers."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

# Tests prove the emulator against the unmodified official SDK, so they import it directly.
import anthropic  # noqa: TID251
import pytest

from llm_calls.emulator.process import EmulatorProcess

from .emulator_support import MODEL, body, raw_call, sdk, user

HEADER_NAMES = [
    f"anthropic-ratelimit-{dimension}-{part}"
    for dimension in ("requests", "input-tokens", "output-tokens", "tokens")
    for part in ("limit", "remaining", "reset")
]


def _reset_in(headers: dict[str, str], name: str) -> float:
    moment = datetime.fromisoformat(headers[name].replace("Z", "+00:00"))
    return (moment - datetime.now(UTC)).total_seconds()


def test_rpm_429_has_retry_after_message_and_every_header(emulator: EmulatorProcess) -> None:
    emulator.configure(rpm=2, itpm=30_000, otpm=8_000)
    for _ in range(2):
        assert raw_call(emulator, "/v1/messages", body()).status == 200
    refused = raw_call(emulator, "/v1/messages", body())
    assert refused.status == 429
    assert refused.json["error"]["type"] == "rate_limit_error"
    assert (
        "rate limit for your organization of 2 requests per minute"
        in refused.json["error"]["message"]
    )
    # 1 request at 2/60 per second refills in 30 s (a little has refilled already).
    assert 29 <= int(refused.headers["retry-after"]) <= 30
    assert all(name in refused.headers for name in HEADER_NAMES)
    assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert refused.headers["anthropic-ratelimit-requests-limit"] == "2"
    assert 50 <= _reset_in(refused.headers, "anthropic-ratelimit-requests-reset") <= 62


def test_sdk_raises_rate_limit_error_with_headers(emulator: EmulatorProcess) -> None:
    emulator.configure(rpm=1, itpm=0, otpm=0)
    client = sdk(emulator)
    client.messages.create(model=MODEL, max_tokens=5, messages=user("x"))
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model=MODEL, max_tokens=5, messages=user("x"))
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_success_headers_round_token_remaining_down_to_the_thousand(
    emulator: EmulatorProcess,
) -> None:
    emulator.configure(rpm=50, itpm=30_000, otpm=8_000)
    # 6,000 chars → 1,500 tokens + 4 overhead; max_tokens 100 reserved then 10 produced.
    response = raw_call(
        emulator,
        "/v1/messages",
        body("y" * 6_000 + " [[emulator:output_tokens=10]]", max_tokens=100),
    )
    assert response.status == 200
    headers = response.headers
    assert all(name in headers for name in HEADER_NAMES)
    assert headers["anthropic-ratelimit-requests-remaining"] == "49"
    assert headers["anthropic-ratelimit-input-tokens-limit"] == "30000"
    assert headers["anthropic-ratelimit-input-tokens-remaining"] == "28000"  # 28,488 rounded down
    assert headers["anthropic-ratelimit-output-tokens-remaining"] == "7000"  # 7,990 rounded down
    # tokens-* mirrors the more restrictive of input and output.
    assert headers["anthropic-ratelimit-tokens-limit"] == "8000"
    assert headers["anthropic-ratelimit-tokens-remaining"] == "7000"
    assert 0 < _reset_in(headers, "anthropic-ratelimit-input-tokens-reset") <= 5


def test_itpm_429_names_input_tokens_and_waits_for_the_refill(emulator: EmulatorProcess) -> None:
    emulator.configure(rpm=0, itpm=600, otpm=0)
    # 1,600 chars = 400 tokens + 4 overhead; the second needs 404 with 196 left.
    assert raw_call(emulator, "/v1/messages", body("z" * 1_600)).status == 200
    refused = raw_call(emulator, "/v1/messages", body("z" * 1_600))
    assert refused.status == 429
    assert "600 input tokens per minute" in refused.json["error"]["message"]
    # (404 - 196) / (600 / 60) = 20.8 → 21 s.
    assert 20 <= int(refused.headers["retry-after"]) <= 21
    emulator.advance_clock(21)
    assert raw_call(emulator, "/v1/messages", body("z" * 1_600)).status == 200


def test_a_request_bigger_than_the_bucket_waits_for_a_full_bucket_then_leaves_debt(
    emulator: EmulatorProcess,
) -> None:
    emulator.configure(rpm=0, itpm=1_000, otpm=0)
    big = body("q" * 6_000)  # 1,504 tokens > 1,000 capacity
    assert raw_call(emulator, "/v1/messages", big).status == 200, "admitted on a full bucket"
    refused = raw_call(emulator, "/v1/messages", body("small"))
    assert refused.status == 429, "the bucket is in debt (-504)"
    # Back to 6 tokens needed: (6 + 504) / (1000 / 60) = 30.6 s.
    assert 30 <= int(refused.headers["retry-after"]) <= 31
    assert refused.headers["anthropic-ratelimit-input-tokens-remaining"] == "0"


def test_buckets_are_per_key_and_per_model_class(emulator: EmulatorProcess) -> None:
    emulator.configure(rpm=1, itpm=0, otpm=0)
    assert raw_call(emulator, "/v1/messages", body(model="claude-opus-4-8")).status == 200
    assert raw_call(emulator, "/v1/messages", body(model="claude-opus-4-8")).status == 429
    assert raw_call(emulator, "/v1/messages", body(model="claude-opus-4-6")).status == 429, (
        "Opus 4.x share one bucket"
    )
    assert raw_call(emulator, "/v1/messages", body(model="claude-opus-5")).status == 200, (
        "each 5.x model has its own"
    )
    assert raw_call(emulator, "/v1/messages", body()).status == 200
    assert raw_call(emulator, "/v1/messages", body(model="claude-haiku-4-5")).status == 200
    assert raw_call(emulator, "/v1/messages", body(), key="another-org").status == 200


def test_every_fable_model_shares_one_bucket(emulator: EmulatorProcess) -> None:
    emulator.configure(rpm=1, itpm=0, otpm=0)
    assert raw_call(emulator, "/v1/messages", body(model="claude-fable-5")).status == 200
    assert raw_call(emulator, "/v1/messages", body(model="claude-fable-5-1")).status == 429
    assert raw_call(emulator, "/v1/messages", body(model="claude-fable-5-2")).status == 429
    assert raw_call(emulator, "/v1/messages", body(model="claude-mythos-5")).status == 200


def test_count_tokens_has_its_own_rpm_bucket(emulator: EmulatorProcess) -> None:
    emulator.configure(rpm=1, itpm=0, otpm=0)
    count_body = {"model": MODEL, "messages": user("count me")}
    assert raw_call(emulator, "/v1/messages", body()).status == 200
    assert raw_call(emulator, "/v1/messages", body()).status == 429
    assert raw_call(emulator, "/v1/messages/count_tokens", count_body).status == 200
    refused = raw_call(emulator, "/v1/messages/count_tokens", count_body)
    assert refused.status == 429
    assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"


def _cached_system(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]


@pytest.mark.parametrize(
    ("model", "cached", "expected_ok"),
    [
        ("claude-sonnet-4-6", False, 1),
        ("claude-sonnet-4-6", True, 5),
    ],
    ids=["uncached", "cached"],
)
def test_itpm_is_cache_aware(
    emulator: EmulatorProcess, model: str, cached: bool, expected_ok: int
) -> None:
    emulator.configure(rpm=0, itpm=4_000, otpm=0)
    system_text = "S" * 10_000  # 2,500 tokens: above every minimum used here
    ok = 0
    for number in range(5):
        system: Any = _cached_system(system_text) if cached else system_text
        payload = body(f"question {number}", model=model, system=system)
        status = raw_call(emulator, "/v1/messages", payload).status
        assert status in (200, 429)
        ok += status == 200
    assert ok == expected_ok


def _send_concurrently(emulator: EmulatorProcess, payloads: list[dict[str, Any]]) -> list[int]:
    statuses: list[int] = [0] * len(payloads)

    def send(index: int) -> None:
        statuses[index] = raw_call(emulator, "/v1/messages", payloads[index]).status

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(payloads))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(statuses)


def test_otpm_reserve_mode_holds_max_tokens_while_in_flight(emulator: EmulatorProcess) -> None:
    emulator.configure(rpm=0, itpm=0, otpm=1_000, latency_ms=400, otpm_mode="reserve")
    payload = body("[[emulator:output_tokens=10]]", max_tokens=800)
    assert _send_concurrently(emulator, [payload, payload]) == [200, 429]
    # Afterwards the unused 790 of the first reservation came back.
    assert raw_call(emulator, "/v1/messages", payload).status == 200


def test_otpm_actual_mode_charges_only_produced_tokens(emulator: EmulatorProcess) -> None:
    emulator.configure(rpm=0, itpm=0, otpm=1_000, latency_ms=400, otpm_mode="actual")
    payload = body("[[emulator:output_tokens=10]]", max_tokens=800)
    assert _send_concurrently(emulator, [payload, payload]) == [200, 200]
    # Produce more than the whole bucket: the next request waits for the debt to refill.
    emulator.configure(latency_ms=0)
    assert (
        raw_call(
            emulator, "/v1/messages", body("[[emulator:output_tokens=1500]]", max_tokens=2_000)
        ).status
        == 200
    )
    refused = raw_call(emulator, "/v1/messages", body(max_tokens=5))
    assert refused.status == 429
    assert "1,000 output tokens per minute" in refused.json["error"]["message"]


def test_configure_refills_buckets_and_reset_restores_startup_limits(
    emulator: EmulatorProcess,
) -> None:
    emulator.configure(rpm=1, itpm=0, otpm=0)
    assert raw_call(emulator, "/v1/messages", body()).status == 200
    assert raw_call(emulator, "/v1/messages", body()).status == 429
    emulator.configure(rpm=1)
    assert raw_call(emulator, "/v1/messages", body()).status == 200
    emulator.reset()
    assert emulator.config()["rpm"] == 0
    statuses = {raw_call(emulator, "/v1/messages", body()).status for _ in range(3)}
    assert statuses == {200}
