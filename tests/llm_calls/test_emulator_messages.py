"""The emulator speaks the Messages API well enough for the unmodified official SDK."""

from __future__ import annotations

import json
from typing import Any

# Tests prove the emulator against the unmodified official SDK, so they import it directly.
import anthropic  # noqa: TID251
import pytest

from llm_calls.emulator.ledger import key_fingerprint
from llm_calls.emulator.process import EmulatorProcess

from .emulator_support import MODEL, body, raw_call, sdk, user


def _text_of(message: anthropic.types.Message) -> str:
    block = message.content[0]
    assert block.type == "text"
    return block.text


def test_plain_message_has_the_real_shape_and_exact_output_tokens(
    emulator: EmulatorProcess,
) -> None:
    message = sdk(emulator).messages.create(
        model=MODEL, max_tokens=100, messages=user("Say hi [[emulator:output_tokens=12]]")
    )
    assert message.id.startswith("msg_")
    assert message.role == "assistant" and message.model == MODEL
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 12
    assert len(_text_of(message)) == 12 * 4  # output_tokens * chars_per_token
    # "Say hi [[emulator:output_tokens=12]]" is 36 chars → 9 tokens, plus 4 per message.
    assert message.usage.input_tokens == 13
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.service_tier == "standard"
    assert message._request_id is not None and message._request_id.startswith("req_")


def test_output_is_capped_by_max_tokens(emulator: EmulatorProcess) -> None:
    message = sdk(emulator).messages.create(
        model=MODEL, max_tokens=5, messages=user("long please [[emulator:output_tokens=80]]")
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5


def test_max_tokens_zero_returns_an_empty_reply(emulator: EmulatorProcess) -> None:
    message = sdk(emulator).messages.create(model=MODEL, max_tokens=0, messages=user("warm up"))
    assert message.content == []
    assert message.usage.output_tokens == 0


def test_default_output_length_is_deterministic_for_a_seed(emulator: EmulatorProcess) -> None:
    client = sdk(emulator)

    def ask() -> tuple[int, str]:
        reply = client.messages.create(
            model=MODEL, max_tokens=1000, messages=user("Tell me a story")
        )
        return reply.usage.output_tokens, _text_of(reply)

    first = ask()
    assert 20 <= first[0] <= 300
    assert ask() == first
    seeds = set()
    for seed in range(2, 7):
        emulator.configure(seed=seed)
        seeds.add(ask())
    assert len(seeds) > 1, "the seed should change the pseudo-random reply length"


def test_sdk_stream_helper_accumulates_the_same_message(emulator: EmulatorProcess) -> None:
    client = sdk(emulator)
    prompt = user("Stream it [[emulator:output_tokens=70]]")
    plain = client.messages.create(model=MODEL, max_tokens=200, messages=prompt)
    with client.messages.stream(model=MODEL, max_tokens=200, messages=prompt) as stream:
        streamed_text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed_text == _text_of(plain)
    assert final.usage.output_tokens == 70
    assert final.usage.input_tokens == plain.usage.input_tokens
    assert final.stop_reason == "end_turn"


def test_stream_true_yields_events_in_the_documented_order(emulator: EmulatorProcess) -> None:
    events = sdk(emulator).messages.create(
        model=MODEL, max_tokens=200, stream=True, messages=user("hi [[emulator:output_tokens=30]]")
    )
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start"
    assert kinds[1] == "content_block_start"
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}


def test_every_sse_frame_carries_its_event_line(emulator: EmulatorProcess) -> None:
    response = raw_call(
        emulator, "/v1/messages", body("frames [[emulator:output_tokens=30]]", stream=True)
    )
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = [frame for frame in response.raw.decode().split("\n\n") if frame.strip()]
    names = []
    for frame in frames:
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        name = event_line.removeprefix("event: ")
        assert json.loads(data_line.removeprefix("data: "))["type"] == name
        names.append(name)
    assert "ping" in names
    start = json.loads(frames[0].split("\n")[1].removeprefix("data: "))
    assert start["message"]["usage"]["output_tokens"] == 1
    delta = json.loads(frames[-2].split("\n")[1].removeprefix("data: "))
    assert delta["usage"]["output_tokens"] == 30


def test_count_tokens_matches_the_billed_input(emulator: EmulatorProcess) -> None:
    client = sdk(emulator)
    kwargs: Any = {
        "model": MODEL,
        "system": "You are terse.",
        "messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": [{"type": "text", "text": "second question"}]},
        ],
    }
    counted = client.messages.count_tokens(**kwargs).input_tokens
    billed = client.messages.create(max_tokens=10, **kwargs).usage.input_tokens
    # 14 chars → 4, "first question" 14 → 4, "an answer" 9 → 3, "second question" 15 → 4, 3 × 4 overhead.
    assert counted == billed == 4 + 4 + 3 + 4 + 12
    assert emulator.ledger()["totals"]["requests"] == 1, "count_tokens is free"


@pytest.mark.parametrize(
    "auth",
    [{"x-api-key": "k-one"}, {"authorization": "Bearer k-one"}],
    ids=["x-api-key", "bearer"],
)
def test_both_auth_styles_bill_the_same_key(
    emulator: EmulatorProcess, auth: dict[str, str]
) -> None:
    response = raw_call(emulator, "/v1/messages", body(), key=None, headers=auth)
    assert response.status == 200
    assert list(emulator.ledger()["keys"]) == [key_fingerprint("k-one")]


def test_missing_key_is_401_with_request_id(emulator: EmulatorProcess) -> None:
    response = raw_call(emulator, "/v1/messages", body(), key=None)
    assert response.status == 401
    assert response.json["error"]["type"] == "authentication_error"
    assert response.headers["request-id"] == response.json["request_id"]


def test_bad_key_raises_the_sdk_authentication_error(emulator: EmulatorProcess) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        sdk(emulator, key="sk-bad-key").messages.create(
            model=MODEL, max_tokens=5, messages=user("x")
        )
    assert caught.value.status_code == 401
    assert caught.value.request_id is not None


@pytest.mark.parametrize("version", [None, "2020-01-01"])
def test_missing_or_unknown_version_is_400(emulator: EmulatorProcess, version: str | None) -> None:
    response = raw_call(emulator, "/v1/messages", body(), version=version)
    assert response.status == 400
    assert response.json["error"]["type"] == "invalid_request_error"
    assert "anthropic-version" in response.json["error"]["message"]


def test_both_api_versions_are_accepted(emulator: EmulatorProcess) -> None:
    for version in ("2023-06-01", "2026-10-21"):
        assert raw_call(emulator, "/v1/messages", body(), version=version).status == 200


def test_unknown_route_is_an_api_shaped_404(emulator: EmulatorProcess) -> None:
    response = raw_call(emulator, "/v1/nothing-here", {})
    assert response.status == 404
    assert response.json["type"] == "error"
    assert response.headers["request-id"].startswith("req_")


# --- stop sequences ----------------------------------------------------------------------------
# The filler text at seed 1 for this prompt contains "lazy" well inside 100 tokens.
STOP_PROMPT = user("Tell me [[emulator:output_tokens=100]]")


def test_a_stop_sequence_ends_the_text_just_before_it(emulator: EmulatorProcess) -> None:
    client = sdk(emulator)
    full = _text_of(client.messages.create(model=MODEL, max_tokens=200, messages=STOP_PROMPT))
    assert "lazy" in full
    message = client.messages.create(
        model=MODEL, max_tokens=200, stop_sequences=["never-there", "lazy"], messages=STOP_PROMPT
    )
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "lazy"
    assert _text_of(message) == full[: full.index("lazy")]
    assert message.usage.output_tokens == -(-len(_text_of(message)) // 4)


def test_a_streamed_stop_sequence_gives_the_same_message(emulator: EmulatorProcess) -> None:
    client = sdk(emulator)
    params: Any = {
        "model": MODEL,
        "max_tokens": 200,
        "stop_sequences": ["lazy"],
        "messages": STOP_PROMPT,
    }
    plain = client.messages.create(**params)
    with client.messages.stream(**params) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == _text_of(plain)
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "lazy")
    assert final.usage.output_tokens == plain.usage.output_tokens


def test_a_stop_sequence_that_never_occurs_changes_nothing(emulator: EmulatorProcess) -> None:
    message = sdk(emulator).messages.create(
        model=MODEL, max_tokens=200, stop_sequences=["zebra"], messages=STOP_PROMPT
    )
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.output_tokens == 100


# --- billing-relevant usage fields ---------------------------------------------------------------


def test_usage_reports_geo_tier_and_server_tools_on_every_message(
    emulator: EmulatorProcess,
) -> None:
    usage = sdk(emulator).messages.create(model=MODEL, max_tokens=10, messages=user("x")).usage
    assert usage.inference_geo == "global"
    assert usage.service_tier == "standard"
    assert usage.server_tool_use is not None
    assert usage.server_tool_use.web_search_requests == 0
    assert usage.server_tool_use.web_fetch_requests == 0
    assert usage.output_tokens_details is not None
    assert usage.speed is None


def test_us_inference_and_fast_mode_show_in_usage_and_the_ledger(
    emulator: EmulatorProcess,
) -> None:
    message = sdk(emulator).messages.create(
        model="claude-opus-5-5",
        max_tokens=500,
        inference_geo="us",
        speed="fast",
        thinking={"type": "adaptive"},
        messages=user("x [[emulator:thinking_tokens=0]]"),
    )
    assert message.usage.inference_geo == "us"
    assert message.usage.speed == "fast"
    (account,) = emulator.ledger()["keys"].values()
    row = account["requests"][0]
    assert (row["inference_geo"], row["speed"], row["service_tier"]) == ("us", "fast", "standard")
    assert row["thinking_tokens"] == 0
    assert row["usage"]["output_tokens"] == message.usage.output_tokens


def test_a_streamed_reply_bills_the_same_usage(emulator: EmulatorProcess) -> None:
    client = sdk(emulator)
    with client.messages.stream(
        model="claude-opus-5-5",
        max_tokens=500,
        inference_geo="us",
        messages=user("[[emulator:thinking_tokens=33]] [[emulator:output_tokens=7]]"),
    ) as stream:
        final = stream.get_final_message()
    assert final.usage.inference_geo == "us"
    assert final.usage.output_tokens == 40
    (account,) = emulator.ledger()["keys"].values()
    row = account["requests"][0]
    assert row["inference_geo"] == "us" and row["thinking_tokens"] == 33
    assert emulator.ledger()["totals"]["output_tokens"] == 40
