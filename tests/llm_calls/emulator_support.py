"""Helpers shared by the emulator tests: an SDK client and raw HTTP calls (stdlib only)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

# Tests prove the emulator against the unmodified official SDK, so they import it directly.
import anthropic  # noqa: TID251

from llm_calls.emulator.process import EmulatorProcess

MODEL = "claude-sonnet-4-6"
VERSION = "2023-06-01"


def sdk(emulator: EmulatorProcess, key: str = "sk-ant-test") -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key, base_url=emulator.base_url, max_retries=0)


def user(text: str) -> Any:
    return [{"role": "user", "content": text}]


def body(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 50, "messages": user(text), **extra}


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


def raw_call(
    emulator: EmulatorProcess,
    path: str,
    payload: Any = None,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
    key: str | None = "sk-ant-test",
    version: str | None = VERSION,
) -> RawResponse:
    """One HTTP request with exactly the headers given (x-api-key auth unless ``headers`` say)."""
    sent = {"content-type": "application/json"}
    if key is not None:
        sent["x-api-key"] = key
    if version is not None:
        sent["anthropic-version"] = version
    sent.update(headers or {})
    if data is None and payload is not None:
        data = json.dumps(payload).encode()
    request = urllib.request.Request(emulator.url(path), data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return RawResponse(
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        return RawResponse(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())
