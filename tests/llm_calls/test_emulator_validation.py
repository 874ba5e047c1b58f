"""Bad requests get the API's 400/404/413 bodies, and cost neither rate limit nor money."""

from __future__ import annotations

from typing import Any

# Tests prove the emulator against the unmodified official SDK, so they import it directly.
import anthropic  # noqa: TID251
import pytest

from llm_calls.emulator.process import EmulatorProcess

from .emulator_support import MODEL, body, raw_call, sdk, user

CC = {"type": "ephemeral"}
CC_1H = {"type": "ephemeral", "ttl": "1h"}


def _text(text: str, cache_control: dict[str, Any] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if cache_control:
        block["cache_control"] = cache_control
    return block


BAD_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("no model", {"max_tokens": 5, "messages": user("x")}, "model: Field required"),
    ("model not a string", body(model=7), "model: Input should be a valid string"),
    ("no max_tokens", {"model": MODEL, "messages": user("x")}, "max_tokens: Field required"),
    ("negative max_tokens", body(max_tokens=-1), "max_tokens"),
    ("float max_tokens", body(max_tokens=2.5), "max_tokens"),
    ("no messages", {"model": MODEL, "max_tokens": 5}, "messages: Field required"),
    ("empty messages", body(messages=[]), "at least one message"),
    ("messages not a list", body(messages="hi"), "messages: Input should be a valid list"),
    ("bad role", body(messages=[{"role": "system", "content": "x"}]), "messages.0.role"),
    (
        "assistant first",
        body(messages=[{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]),
        'first message must use the "user" role',
    ),
    ("content missing", body(messages=[{"role": "user"}]), "messages.0.content: Field required"),
    ("content a number", body(messages=[{"role": "user", "content": 3}]), "messages.0.content"),
    ("empty user content", body(messages=[{"role": "user", "content": ""}]), "non-empty content"),
    (
        "block without type",
        body(messages=[{"role": "user", "content": [{"text": "x"}]}]),
        "messages.0.content.0",
    ),
    (
        "empty text block",
        body(messages=[{"role": "user", "content": [_text("")]}]),
        "text content blocks must be non-empty",
    ),
    ("system a number", body(system=5), "system: Input should be"),
    ("system block not text", body(system=[{"type": "image"}]), "system.0.type"),
    ("tools not a list", body(tools={"name": "x"}), "tools: Input should be a valid list"),
    ("tool without name", body(tools=[{"input_schema": {}}]), "tools.0.name"),
    ("tool without schema", body(tools=[{"name": "t"}]), "tools.0.input_schema"),
    ("temperature too high", body(temperature=1.5), "temperature"),
    ("temperature a string", body(temperature="hot"), "temperature"),
    ("stop_sequences not strings", body(stop_sequences=[1]), "stop_sequences"),
    ("metadata not an object", body(metadata="m"), "metadata: Input should be"),
    ("metadata unknown key", body(metadata={"team": "x"}), "metadata.team"),
    ("stream not a bool", body(stream="yes"), "stream: Input should be a valid boolean"),
    ("unknown field", body(colour="blue"), "colour: Extra inputs are not permitted"),
    (
        "cache_control wrong type",
        body(system=[_text("s", {"type": "persistent"})]),
        "cache_control.type",
    ),
    ("bad ttl", body(system=[_text("s", {"type": "ephemeral", "ttl": "2h"})]), "ttl"),
    (
        "five breakpoints",
        body(
            system=[_text("a", CC), _text("b", CC), _text("c", CC)],
            messages=[{"role": "user", "content": [_text("d", CC), _text("e", CC)]}],
        ),
        "A maximum of 4 blocks with cache_control may be provided. Found 5.",
    ),
    (
        "five breakpoints counting the top-level one",
        body(
            system=[_text("a", CC), _text("b", CC), _text("c", CC), _text("d", CC)],
            cache_control=CC,
        ),
        "A maximum of 4 blocks with cache_control may be provided. Found 5.",
    ),
    (
        "1h after 5m",
        body(system=[_text("a", CC), _text("b", CC_1H)]),
        "ttl='1h' cache breakpoint cannot come after a ttl='5m'",
    ),
]


@pytest.mark.parametrize(
    ("payload", "expected"), [(b, e) for _, b, e in BAD_BODIES], ids=[n for n, _, _ in BAD_BODIES]
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
    payload = body(system=[_text("a", CC_1H), _text("b", CC)], cache_control=CC)
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
