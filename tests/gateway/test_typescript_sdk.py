"""The Anthropic-compatible endpoint, driven by the official TypeScript SDK over HTTP.

``js/client.mjs`` is an app written for Anthropic's API with ``@anthropic-ai/sdk`` (pinned in
``js/package.json``, installed by ``make js-deps``, which ``make test`` runs): it makes a plain call, a stream, a token
count, lists and retrieves models, and tries a made-up key, then prints what it saw as one JSON
object. This test checks that against what the gateway recorded, as the Python SDK tests do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway import services as gateway_services
from queueing.models import LLMRequest
from tests.gateway.conftest import MODEL, Served

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "tests" / "gateway" / "js"
CLIENT = JS / "client.mjs"
SDK = JS / "node_modules" / "@anthropic-ai" / "sdk" / "package.json"
HELLO = [{"role": "user", "content": "Say hello to the gateway."}]


def text_of(content: list[dict[str, Any]]) -> str:
    return "".join(block["text"] for block in content if block["type"] == "text")


def run_client(served: Served) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the TypeScript SDK test needs Node.js and npm")
    if not SDK.exists():
        pytest.fail(f"{SDK.relative_to(ROOT)} is missing: run `make js-deps`")
    pinned = json.loads((JS / "package.json").read_text())["dependencies"]["@anthropic-ai/sdk"]
    installed = json.loads(SDK.read_text())["version"]
    if installed != pinned:
        pytest.fail(
            f"@anthropic-ai/sdk {installed} is installed, {pinned} pinned: run `make js-deps`"
        )
    env = {**os.environ, "GATEWAY_URL": served.url, "GATEWAY_KEY": served.key, "MODEL": MODEL}
    done = subprocess.run(
        [node, str(CLIENT)],
        env=env,
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"client.mjs exited {done.returncode}:\n{done.stderr}"
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    seen: dict[str, Any] = json.loads(lines[0])
    return seen


def test_the_typescript_sdk_is_answered_as_the_api_would_answer_it(served: Served) -> None:
    seen = run_client(served)

    # Exactly two billed calls: the plain one and the stream (count, models and the refused
    # key make none).
    rows = list(LLMRequest.objects.order_by("pk"))
    assert len(rows) == 2, rows
    plain_row, stream_row = rows
    for row in (plain_row, stream_row):
        assert row.status == LLMRequest.Status.SUCCEEDED, row.status
        assert row.api_token_id == served.token.pk
        assert row.model == MODEL

    # The plain call: what the app got is what the gateway stored for that request.
    plain = seen["plain"]
    stored = gateway_services.message_body(plain_row)
    assert plain_row.result is not None
    assert plain["gateway_request_id"] == str(plain_row.pk)
    assert plain["type"] == "message" and plain["role"] == "assistant"
    assert plain["text"]
    assert plain["text"] == plain_row.result["text"] == text_of(stored["content"])
    assert plain["content"] == stored["content"]
    assert plain["id"] == stored["id"] == plain_row.result["message_id"]
    assert plain["request_id"] == plain_row.result["request_id"]
    assert plain["usage"]["output_tokens"] == stored["usage"]["output_tokens"] > 0
    assert plain["usage"]["input_tokens"] == stored["usage"]["input_tokens"] > 0

    # The stream: the deltas add up to the final message, and both to the stored answer.
    stream = seen["stream"]
    final = stream["final"]
    stored = gateway_services.message_body(stream_row)
    assert stream_row.result is not None
    assert stream["gateway_request_id"] == str(stream_row.pk)
    assert stream["events"][0] == "message_start" and stream["events"][-1] == "message_stop"
    assert stream["text"]
    assert stream["text"] == text_of(final["content"]) == text_of(stored["content"])
    assert stream["text"] == stream_row.result["text"]
    assert final["content"] == stored["content"]
    assert final["id"] == stored["id"]
    assert final["stop_reason"] == stored["stop_reason"]
    assert final["usage"]["output_tokens"] == stored["usage"]["output_tokens"] > 0
    assert final["usage"]["input_tokens"] == stored["usage"]["input_tokens"]

    # Token counting gives the upstream's own count.
    direct = httpx.post(
        f"{served.emulator.base_url}/v1/messages/count_tokens",
        headers={"x-api-key": "anything", "anthropic-version": "2023-06-01"},
        json={"model": MODEL, "messages": HELLO},
        timeout=30,
    )
    assert direct.status_code == 200, direct.text
    assert seen["count"] == direct.json()["input_tokens"] > 0

    # Models: the whole list, paged by the SDK, and one retrieved by id.
    upstream = httpx.get(
        f"{served.emulator.base_url}/v1/models",
        params={"limit": 1000},
        headers={"x-api-key": "anything", "anthropic-version": "2023-06-01"},
        timeout=30,
    ).json()
    assert not upstream["has_more"]
    assert seen["models"] == [model["id"] for model in upstream["data"]]
    assert seen["model_pages"] == -(-len(seen["models"]) // 5)  # pages of 5, all followed
    assert MODEL in seen["models"]
    assert seen["retrieved"] == {"id": MODEL, "type": "model"}

    # A made-up key is the SDK's AuthenticationError, as the API's 401 is.
    assert seen["bogus"]["status"] == 401
    assert seen["bogus"]["type"] == "authentication_error"
    assert "invalid x-api-key" in seen["bogus"]["message"]
    assert LLMRequest.objects.count() == 2
