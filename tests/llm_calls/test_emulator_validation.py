"""Bad requests get the API's 400/404/413 bodies, and cost neither rate limit nor money."""

from __future__ import annotations

from typing import Any

# Tests prove the emulator against the unmodified official SDK, so they import it directly.
import anthropic  # noqa: TID251
import pytest

from llm_calls.emulator.process import EmulatorProcess
from tests.bad_bodies import BAD_BODIES, CC, CC_1H, text_block

from .emulator_support import MODEL, body, raw_call, sdk, user


@pytest.mark.parametrize(
    ("payload", "expected"),
    [(case.body, case.api_message) for case in BAD_BODIES],
    ids=[case.name for case in BAD_BODIES],
)
def test_bad_body_is_a_400_naming_the_problem(
    emulator: EmulatorProcess, payload: dict[str, Any], expected: str
) -> None:
    response = raw_call(emulator, "/v1/messages", payload)
    assert response.status == 400
    assert response.json == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": response.json["error"]["message"]},
        "request_id": response.headers["request-id"],
    }
    assert expected in response.json["error"]["message"]


def test_sdk_raises_bad_request_with_the_body(emulator: EmulatorProcess) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk(emulator).messages.create(model=MODEL, max_tokens=-3, messages=user("x"))
    assert caught.value.status_code == 400
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_one_hour_breakpoints_before_five_minute_ones_are_fine(emulator: EmulatorProcess) -> None:
    payload = body(system=[text_block("a", CC_1H), text_block("b", CC)], cache_control=CC)
    assert raw_call(emulator, "/v1/messages", payload).status == 200


def test_final_assistant_prefill_may_be_empty(emulator: EmulatorProcess) -> None:
    payload = body(
        model="claude-haiku-4-5",  # a model that still accepts prefill
        messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}],
    )
    assert raw_call(emulator, "/v1/messages", payload).status == 200


def test_unknown_model_is_404_naming_it(emulator: EmulatorProcess) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        sdk(emulator).messages.create(
            model="claude-nonexistent-9", max_tokens=5, messages=user("x")
        )
    assert caught.value.body["error"] == {  # type: ignore[index]
        "type": "not_found_error",
        "message": "model: claude-nonexistent-9",
    }


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"model": "\xff\xfe"}', "not valid UTF-8"),
        (b"[1, 2]", "must be a JSON object"),
    ],
    ids=["invalid-json", "invalid-utf8", "not-an-object"],
)
def test_unparseable_body_is_400(emulator: EmulatorProcess, data: bytes, expected: str) -> None:
    response = raw_call(emulator, "/v1/messages", data=data)
    assert response.status == 400
    assert expected in response.json["error"]["message"]


def test_body_over_32_mb_is_413(emulator: EmulatorProcess) -> None:
    huge = body("x" * (32 * 1024 * 1024 + 10))
    response = raw_call(emulator, "/v1/messages", huge)
    assert response.status == 413
    assert response.json["error"]["type"] == "request_too_large"


def test_invalid_requests_never_count_against_limits_or_get_billed(
    emulator: EmulatorProcess,
) -> None:
    emulator.configure(rpm=1, itpm=1000, otpm=1000)
    for _ in range(5):
        assert raw_call(emulator, "/v1/messages", body(max_tokens=-1)).status == 400
        assert raw_call(emulator, "/v1/messages", body(model="nope")).status == 404
    assert raw_call(emulator, "/v1/messages", body()).status == 200
    assert raw_call(emulator, "/v1/messages", body()).status == 429
    assert emulator.ledger()["totals"]["requests"] == 1
