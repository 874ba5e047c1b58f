"""The control endpoints: ledger, request log, config, reset — and that keys never leak."""

from __future__ import annotations

import hashlib
import json

from llm_calls.emulator.process import EmulatorProcess

from .emulator_support import body, raw_call


def test_ledger_records_each_billed_response_and_totals_them(emulator: EmulatorProcess) -> None:
    outputs = [7, 11]
    for tokens in outputs:
        response = raw_call(
            emulator,
            "/v1/messages",
            body(f"hi [[emulator:output_tokens={tokens}]]"),
            key="sk-secret-one",
            headers={"x-client-request-id": f"client-{tokens}"},
        )
        assert response.status == 200
    raw_call(emulator, "/v1/messages", body("x [[emulator:output_tokens=3]]"), key="sk-secret-two")

    ledger = emulator.ledger()
    fingerprint = "key_" + hashlib.sha256(b"sk-secret-one").hexdigest()[:12]
    account = ledger["keys"][fingerprint]
    rows = account["requests"]
    assert [row["usage"]["output_tokens"] for row in rows] == outputs
    assert [row["client_request_id"] for row in rows] == ["client-7", "client-11"]
    assert all(
        row["request_id"].startswith("req_") and row["message_id"].startswith("msg_")
        for row in rows
    )
    assert rows[0]["service_tier"] == "standard" and rows[0]["batch_id"] is None
    assert account["totals"]["requests"] == 2
    assert account["totals"]["output_tokens"] == 18
    assert account["totals"]["input_tokens"] == sum(row["usage"]["input_tokens"] for row in rows)
    assert ledger["totals"]["requests"] == 3
    assert ledger["totals"]["output_tokens"] == 21


def test_log_lists_every_api_request_in_order(emulator: EmulatorProcess) -> None:
    raw_call(emulator, "/v1/messages", body(), headers={"x-client-request-id": "abc"})
    raw_call(emulator, "/v1/messages", body(stream=True))
    raw_call(emulator, "/v1/messages", body(max_tokens=-1))
    raw_call(emulator, "/v1/messages", body(), key=None)
    emulator.health()  # control calls are not logged
    log = emulator.log()
    assert [(e["status"], e["error_type"]) for e in log] == [
        (200, None),
        (200, None),
        (400, "invalid_request_error"),
        (401, "authentication_error"),
    ]
    assert log[0]["client_request_id"] == "abc"
    assert [e["stream"] for e in log] == [False, True, False, False]
    assert log[0]["method"] == "POST" and log[0]["path"] == "/v1/messages"
    assert log[3]["key_fingerprint"] is None


def test_raw_key_appears_nowhere(emulator: EmulatorProcess) -> None:
    raw_call(emulator, "/v1/messages", body(), key="sk-ant-super-secret-123")
    raw_call(emulator, "/v1/messages", body(max_tokens=-1), key="sk-ant-super-secret-123")
    for dump in (emulator.ledger(), emulator.log(), emulator.config()):
        assert "super-secret" not in json.dumps(dump)


def test_reset_clears_ledger_log_and_script(emulator: EmulatorProcess) -> None:
    emulator.configure(script=[{"status": 500}, {"status": 500}], latency_ms=5)
    raw_call(emulator, "/v1/messages", body())
    emulator.configure(script=[{"status": 529}])
    assert raw_call(emulator, "/v1/messages", body()).status == 529
    assert raw_call(emulator, "/v1/messages", body()).status == 200
    emulator.reset()
    assert emulator.ledger() == {
        "keys": {},
        "totals": {
            "requests": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "thinking_tokens": 0,
            "web_search_requests": 0,
            "web_fetch_requests": 0,
        },
    }
    assert emulator.log() == []
    assert emulator.config()["script"] == [] and emulator.config()["latency_ms"] == 0


def test_unknown_or_bad_config_is_refused(emulator: EmulatorProcess) -> None:
    unknown = raw_call(emulator, "/_emulator/config", {"rpmm": 5})
    assert unknown.status == 400
    assert "unknown config key 'rpmm'" in unknown.json["error"]["message"]
    for bad in ({"rpm": -1}, {"fault_rate_529": 2}, {"otpm_mode": "later"}, {"chars_per_token": 0}):
        assert raw_call(emulator, "/_emulator/config", bad).status == 400, bad
    assert emulator.config()["rpm"] == 0, "nothing half-applied"


def test_chars_per_token_changes_the_count(emulator: EmulatorProcess) -> None:
    payload = {"model": body()["model"], "messages": [{"role": "user", "content": "x" * 120}]}
    assert raw_call(emulator, "/v1/messages/count_tokens", payload).json["input_tokens"] == 34
    emulator.configure(chars_per_token=3)
    assert raw_call(emulator, "/v1/messages/count_tokens", payload).json["input_tokens"] == 44


def test_health(emulator: EmulatorProcess) -> None:
    assert emulator.health() is True
