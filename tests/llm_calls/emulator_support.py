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

# Sonnet 4.6: the old tokenizer and thinking off by default, so counts stay easy to read.
MODEL = "claude-sonnet-4-6"
# A current model with the newer tokenizer, adaptive thinking by default and every rule on.
NEW_MODEL = "claude-opus-5-5"
VERSION = "2023-06-01"


def sdk(emulator: EmulatorProcess, key: str = "sk-ant-test") -> anthropic.Anthropic:
    """The official SDK with strict response validation: a body that does not match its types
    exactly raises instead of parsing leniently."""
    return anthropic.Anthropic(
        api_key=key, base_url=emulator.base_url, max_retries=0, _strict_response_validation=True
    )


# SDK 2.x no longer has keyword arguments for these (only older models accept them): they go
# through ``extra_body``, as a caller of those models sends them.
SAMPLING_FIELDS = ("temperature", "top_p", "top_k")


def sdk_params(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as SDK keyword arguments: sampling fields in ``extra_body``, and an explicit
    timeout so a large ``max_tokens`` may be sent without streaming."""
    kwargs = {k: v for k, v in params.items() if k not in SAMPLING_FIELDS}
    extra = {k: v for k, v in params.items() if k in SAMPLING_FIELDS}
    if extra:
        kwargs["extra_body"] = extra
    kwargs.setdefault("timeout", 60)
    return kwargs


def bad_request(
    emulator: EmulatorProcess, *, endpoint: str = "create", **params: Any
) -> tuple[int, dict[str, Any]]:
    """Send ``params`` through the SDK; returns the error's status and ``error`` object."""
    client = sdk(emulator)
    call = client.messages.create if endpoint == "create" else client.messages.count_tokens
    try:
        call(**sdk_params(params))
    except anthropic.APIStatusError as error:
        assert isinstance(error.body, dict)
        return error.status_code, error.body["error"]
    raise AssertionError(f"expected an error for {params}")


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
