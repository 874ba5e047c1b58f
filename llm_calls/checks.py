"""System checks (``manage.py check``) for the Claude endpoint and the retry policy.

- ``gateway.E001``: a setting read through ``llm_calls.conf`` does not parse (or, with an
  endpoint configured, ``conf.endpoint()`` refuses it: its message says why).
- ``gateway.E002``: ``ANTHROPIC_BASE_URL`` is not an http(s) URL.
- ``check --deploy``: ``gateway.E003`` no endpoint at all (every call would fail);
  ``gateway.W003`` the API key would travel over plain HTTP to another machine;
  ``gateway.W004`` the real API is selected with a key that is not an Anthropic key.

No check connects anywhere, and no message shows the key. Registered by ``LlmCallsConfig``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from llm_calls import conf

TAG = "gateway"

# (setting, accessor, whether 0 is allowed); none may be negative.
NUMBERS: Sequence[tuple[str, Callable[[], float], bool]] = (
    ("ANTHROPIC_TIMEOUT_S", conf.timeout_s, False),
    ("LLM_RETRY_MAX_RETRIES", conf.retry_max_retries, True),
    ("LLM_RETRY_BASE_S", conf.retry_base_s, True),
    ("LLM_RETRY_CAP_S", conf.retry_cap_s, True),
    ("LLM_RETRY_TOTAL_CAP_S", conf.retry_total_cap_s, True),
)


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@checks.register(TAG)
def check_anthropic_settings(**kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for name, read, zero_ok in NUMBERS:
        try:
            value = read()
        except (TypeError, ValueError) as exc:
            errors.append(
                checks.Error(
                    f"{name}={getattr(settings, name, None)!r} is not a number: {exc}",
                    obj=name,
                    id="gateway.E001",
                )
            )
            continue
        if value < 0 or (value == 0 and not zero_ok):
            bound = ">= 0" if zero_ok else "> 0"
            errors.append(
                checks.Error(f"{name} must be {bound}, got {value!r}.", obj=name, id="gateway.E001")
            )
    url = conf.base_url().strip()
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            errors.append(
                checks.Error(
                    f"ANTHROPIC_BASE_URL={url!r} is not an http(s) URL.",
                    hint="For example https://api.anthropic.com or http://127.0.0.1:8765 (the "
                    "local emulator); leave it empty to use the real API with ANTHROPIC_API_KEY.",
                    obj="ANTHROPIC_BASE_URL",
                    id="gateway.E002",
                )
            )
    if not errors and (url or conf.api_key().strip()):
        try:
            conf.endpoint()
        except ImproperlyConfigured as exc:
            errors.append(checks.Error(str(exc), id="gateway.E001"))
    return errors


@checks.register(TAG, deploy=True)
def check_anthropic_endpoint(**kwargs: Any) -> list[checks.CheckMessage]:
    url = conf.base_url().strip()
    key = conf.api_key().strip()
    if not url and not key:
        return [
            checks.Error(
                "No Claude endpoint is configured: every call would fail.",
                hint="Set ANTHROPIC_API_KEY to the organization's key (the real API), or "
                "ANTHROPIC_BASE_URL to another endpoint.",
                id="gateway.E003",
            )
        ]
    found: list[checks.CheckMessage] = []
    parts = urlsplit(url)
    if url and parts.scheme == "http" and parts.hostname and not _is_loopback(parts.hostname):
        found.append(
            checks.Warning(
                "ANTHROPIC_BASE_URL is plain http to another machine: the API key and every "
                "prompt would travel unencrypted.",
                hint="Use an https:// URL.",
                id="gateway.W003",
            )
        )
    if not url and not key.startswith("sk-ant-"):
        found.append(
            checks.Warning(
                "ANTHROPIC_API_KEY does not look like an Anthropic API key (they start with "
                "'sk-ant-'), and the real API is selected (ANTHROPIC_BASE_URL is empty).",
                hint="Check the key's value (a placeholder or a quoting mistake?).",
                id="gateway.W004",
            )
        )
    return found
