"""The transport over real HTTP against the emulator: endpoint rules, the shared client,
streaming, usage, batches, bad input, and the API key never leaking."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from llm_calls import client, conf
from llm_calls.client import AttemptFailure
from llm_calls.emulator.process import EmulatorProcess
from llm_calls.retry import ClaudeCallError, RetryPolicy
from llm_calls.services import message_result_from_api, send_message

MODEL = "claude-sonnet-5-5"
KEY = "sk-ant-api03-client-tests-SECRET-0123456789"
FAST = RetryPolicy(max_retries=5, base_s=0.01, cap_s=0.05, total_cap_s=30.0)


@pytest.fixture
def claude(emulator: EmulatorProcess, settings) -> EmulatorProcess:
    settings.ANTHROPIC_BASE_URL = emulator.base_url
    settings.ANTHROPIC_API_KEY = KEY
    return emulator


def body(text: str = "hello", output_tokens: int = 5, **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 64,
        "messages": [
            {"role": "user", "content": f"{text} [[emulator:output_tokens={output_tokens}]]"}
        ],
        **extra,
    }


def fingerprint(key: str) -> str:
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:12]


def ledger_requests(emulator: EmulatorProcess) -> list[dict[str, Any]]:
    return [r for entry in emulator.ledger()["keys"].values() for r in entry["requests"]]


# -- endpoint selection -----------------------------------------------------------------------


def test_base_url_without_key_uses_the_emulator_placeholder_key(
    emulator: EmulatorProcess, settings
) -> None:
    settings.ANTHROPIC_BASE_URL = emulator.base_url
    settings.ANTHROPIC_API_KEY = ""

    result = send_message(params=body(), policy=FAST)

    assert result.text
    assert list(emulator.ledger()["keys"]) == [fingerprint(conf.EMULATOR_DEFAULT_API_KEY)]


def test_key_without_base_url_targets_the_real_api(settings) -> None:
    settings.ANTHROPIC_BASE_URL = ""
    settings.ANTHROPIC_API_KEY = KEY

    endpoint = conf.endpoint()

    assert endpoint.is_real_api
    assert endpoint.base_url == "https://api.anthropic.com"
    assert str(client.get_client().base_url).rstrip("/") == "https://api.anthropic.com"
    assert KEY not in repr(endpoint)


def test_base_url_wins_over_a_key(emulator: EmulatorProcess, settings) -> None:
    settings.ANTHROPIC_BASE_URL = emulator.base_url
    settings.ANTHROPIC_API_KEY = KEY

    send_message(params=body(), policy=FAST)

    assert list(emulator.ledger()["keys"]) == [fingerprint(KEY)]


def test_no_endpoint_is_improperly_configured_before_anything_runs(settings) -> None:
    settings.ANTHROPIC_BASE_URL = ""
    settings.ANTHROPIC_API_KEY = ""
    admitted: list[int] = []

    with pytest.raises(ImproperlyConfigured) as caught:
        send_message(params=body(), policy=FAST, before_attempt=admitted.append)

    assert "ANTHROPIC_BASE_URL" in str(caught.value)
    assert "ANTHROPIC_API_KEY" in str(caught.value)
    assert admitted == []


def test_one_client_per_endpoint_shared_by_all_callers(claude: EmulatorProcess, settings) -> None:
    first = client.get_client()
    assert client.get_client() is first
    assert first.max_retries == 0  # the SDK never retries behind our policy's back

    settings.ANTHROPIC_TIMEOUT_S = 30.0
    assert client.get_client() is not first


def test_256_concurrent_calls_share_the_pool_without_queueing(claude: EmulatorProcess) -> None:
    claude.configure(latency_ms=500)
    results: list[str] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(send_message(params=body(), policy=FAST).message_id)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(256)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    elapsed = time.monotonic() - started

    assert errors == []
    assert len(set(results)) == 256
    # 500 ms of server latency each: a pool that queued them would take several seconds more.
    assert elapsed < 4.0


# -- messages ---------------------------------------------------------------------------------


def test_plain_message_result(claude: EmulatorProcess) -> None:
    result = send_message(params=body(output_tokens=7), policy=FAST)

    billed = ledger_requests(claude)
    assert len(billed) == 1
    assert result.message_id == billed[0]["message_id"]
    assert result.request_id == billed[0]["request_id"]
    assert result.model == MODEL
    assert result.stop_reason == "end_turn"
    assert result.usage.output_tokens == 7
    assert result.usage.input_tokens == billed[0]["usage"]["input_tokens"] > 0
    assert result.text == "".join(b["text"] for b in result.content if b["type"] == "text")
    assert result.attempt_count == 1
    assert result.latency_ms > 0


def test_streaming_gives_the_same_message_as_non_streaming(claude: EmulatorProcess) -> None:
    plain = send_message(params=body("same prompt"), policy=FAST)
    streamed = send_message(params=body("same prompt"), stream=True, policy=FAST)

    assert streamed.text == plain.text
    assert streamed.usage == plain.usage
    assert streamed.stop_reason == plain.stop_reason
    assert [e["stream"] for e in claude.log()] == [False, True]
    assert len(ledger_requests(claude)) == 2


def test_max_tokens_stop_reason_is_reported(claude: EmulatorProcess) -> None:
    result = send_message(params={**body(output_tokens=50), "max_tokens": 10}, policy=FAST)

    assert result.stop_reason == "max_tokens"
    assert result.usage.output_tokens == 10


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_cache_write_split_by_ttl_then_read(claude: EmulatorProcess, stream: bool) -> None:
    system = [
        {
            "type": "text",
            "text": "policy " * 1000,
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ]
    params = body(system=system)

    written = send_message(params=params, stream=stream, policy=FAST)
    read = send_message(params=params, stream=stream, policy=FAST)

    first, second = (r["usage"] for r in ledger_requests(claude))
    assert written.usage.cache_creation_1h == first["cache_creation"]["ephemeral_1h_input_tokens"]
    assert written.usage.cache_creation_1h > 1000
    assert written.usage.cache_creation_5m == 0
    assert written.usage.cache_creation_input_tokens == written.usage.cache_creation_1h
    assert read.usage.cache_read_input_tokens == second["cache_read_input_tokens"]
    assert read.usage.cache_read_input_tokens == written.usage.cache_creation_1h
    assert read.usage.cache_creation_input_tokens == 0


def test_body_fields_unknown_to_the_sdk_reach_the_api_verbatim(claude: EmulatorProcess) -> None:
    # The body goes to the API as given, so the API's own verdict on a field reaches the
    # caller (temperature: Claude 4.7 and later refuse it; Haiku 4.5 takes 0..1).
    legacy = "claude-haiku-4-5"
    with pytest.raises(ClaudeCallError) as caught:
        send_message(params=body(temperature=7, model=legacy), policy=FAST)

    assert caught.value.last_status == 400
    assert "temperature" in str(caught.value)
    assert len(claude.log()) == 1
    assert send_message(params=body(temperature=0.5, model=legacy), policy=FAST).text


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({**body(), "max_tokens": "10"}, "max_tokens"),
        ({**body(), "max_tokens": -1}, "max_tokens"),
        ({**body(), "messages": []}, "messages"),
        ({**body(), "metadata": {"when": object()}}, "JSON"),
        (["not", "a", "mapping"], "mapping"),
    ],
    ids=[
        "no-model",
        "str-max-tokens",
        "negative-max-tokens",
        "no-messages",
        "unserialisable",
        "list",
    ],
)
def test_malformed_params_are_refused_before_any_attempt(
    claude: EmulatorProcess, params: Any, named: str
) -> None:
    admitted: list[int] = []

    with pytest.raises(ClaudeCallError) as caught:
        send_message(params=params, policy=FAST, before_attempt=admitted.append)

    assert caught.value.attempts == 0
    assert caught.value.retryable is False
    assert named in str(caught.value)
    assert str(caught.value).startswith("Claude call not sent:")
    assert admitted == []
    assert claude.log() == []


# -- the API key never leaks --------------------------------------------------------------------


def test_api_key_never_appears_in_errors_or_logs(
    claude: EmulatorProcess, settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    claude.configure(script=[{"status": 529}, {"reset": True}, {"status": 529}, {"status": 400}])
    policy = RetryPolicy(max_retries=2, base_s=0.01, cap_s=0.05, total_cap_s=30.0)
    texts: list[str] = []

    with pytest.raises(ClaudeCallError) as gave_up:
        send_message(params=body(), policy=policy)
    with pytest.raises(ClaudeCallError) as refused:
        send_message(params=body(), policy=policy)
    settings.ANTHROPIC_API_KEY = "sk-bad-" + KEY
    with pytest.raises(ClaudeCallError) as unauthorised:
        send_message(params=body(), policy=policy)

    assert unauthorised.value.last_status == 401
    for error in (gave_up.value, refused.value, unauthorised.value):
        texts += [str(error), repr(error), repr(error.attempt_log), repr(error.__cause__)]
        if isinstance(error.__cause__, AttemptFailure):
            texts.append(repr(dict(error.__cause__.headers)))
    texts += [repr(conf.endpoint()), caplog.text]
    assert gave_up.value.attempts == 3
    assert "Overloaded" in caplog.text  # the logs did capture the failures
    for text in texts:
        assert KEY not in text


def test_redaction_removes_a_key_from_any_message(claude: EmulatorProcess) -> None:
    failure = AttemptFailure(status=500, error_type="api_error", message=f"echo {KEY} echo")

    assert KEY not in str(failure)
    assert "[redacted API key]" in failure.message


# -- Message Batches ----------------------------------------------------------------------------


def wait_for_batch_end(batch_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.retrieve_batch(batch_id=batch_id).value
        if batch["processing_status"] == "ended" or time.monotonic() > deadline:
            return batch
        time.sleep(0.05)


def test_batch_round_trip(claude: EmulatorProcess) -> None:
    claude.configure(batch_latency_ms=50)
    created = client.create_batch(
        requests=[
            {"custom_id": "ok-1", "params": body("first", output_tokens=3)},
            {"custom_id": "bad-1", "params": {**body(), "max_tokens": -5}},
        ],
        extra_headers={"x-client-request-id": "batch-7"},
    )
    assert created.value["id"].startswith("msgbatch_")
    assert created.request_id and not created.billed

    ended = wait_for_batch_end(created.value["id"])
    results = {
        line["custom_id"]: line["result"]
        for line in client.iter_batch_results(batch_id=created.value["id"])
    }

    assert ended["processing_status"] == "ended"
    assert ended["request_counts"]["succeeded"] == 1
    assert results["bad-1"]["type"] == "errored"
    assert results["ok-1"]["type"] == "succeeded"
    message = message_result_from_api(
        message=results["ok-1"]["message"], request_id=None, attempts=(), latency_ms=0.0
    )
    assert message.usage.service_tier == "batch"
    assert message.usage.output_tokens == 3
    assert message.text


def test_batch_cancel_and_unknown_batch(claude: EmulatorProcess) -> None:
    claude.configure(batch_latency_ms=60_000)
    created = client.create_batch(requests=[{"custom_id": "slow-1", "params": body()}])

    cancelled = client.cancel_batch(batch_id=created.value["id"])

    assert cancelled.value["processing_status"] in ("canceling", "ended")
    with pytest.raises(AttemptFailure) as caught:
        client.retrieve_batch(batch_id="msgbatch_does_not_exist")
    assert caught.value.status == 404
    assert caught.value.error_type == "not_found_error"
