"""Settings accessor for llm_calls.

Every read goes through ``django.conf.settings`` at call time (never cached at import), so
``override_settings`` in tests and settings changed at runtime take effect on the next call.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

# The real API's address, used when ANTHROPIC_BASE_URL is empty. Passed explicitly so the SDK
# never falls back to reading ANTHROPIC_BASE_URL from the process environment on its own.
REAL_API_BASE_URL = "https://api.anthropic.com"

# Any non-empty key is accepted by the local emulator; this one makes a log or a ledger entry
# recognisable as "no real key was configured".
EMULATOR_DEFAULT_API_KEY = "sk-emulator-local"


@dataclass(frozen=True)
class Endpoint:
    """Where Claude calls go. ``api_key`` is excluded from repr so it cannot leak via logs."""

    base_url: str
    api_key: str = field(repr=False)
    timeout_s: float
    is_real_api: bool


def api_key() -> str:
    return str(getattr(settings, "ANTHROPIC_API_KEY", "") or "")


def base_url() -> str:
    return str(getattr(settings, "ANTHROPIC_BASE_URL", "") or "")


def admin_api_key() -> str:
    """The Admin API key (``sk-ant-admin…``) that reads Anthropic's usage and cost reports."""
    return str(getattr(settings, "ANTHROPIC_ADMIN_API_KEY", "") or "")


def upstream_id() -> str:
    """A short name for the server and account calls go to, that reveals nothing of the key.

    What the gateway learns from responses that depends on them — how much of a prompt the
    upstream's prompt cache serves — is kept per upstream: a new emulator or another key starts
    from a cold cache, and must not inherit figures learned while another one was warm.
    """
    raw = f"{base_url().strip() or REAL_API_BASE_URL}|{api_key().strip()}"
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


def timeout_s() -> float:
    return float(getattr(settings, "ANTHROPIC_TIMEOUT_S", 600.0))


def retry_max_retries() -> int:
    return int(getattr(settings, "LLM_RETRY_MAX_RETRIES", 5))


def retry_base_s() -> float:
    return float(getattr(settings, "LLM_RETRY_BASE_S", 1.0))


def retry_cap_s() -> float:
    return float(getattr(settings, "LLM_RETRY_CAP_S", 16.0))


def retry_total_cap_s() -> float:
    return float(getattr(settings, "LLM_RETRY_TOTAL_CAP_S", 120.0))


def endpoint() -> Endpoint:
    """Apply the endpoint rule.

    Base URL set → use it (key defaults to the emulator's placeholder); no base URL but a key →
    the real API; neither → ``ImproperlyConfigured`` saying what to set.
    """
    url = base_url().strip()
    key = api_key().strip()
    timeout = timeout_s()
    if timeout <= 0:
        raise ImproperlyConfigured(
            f"ANTHROPIC_TIMEOUT_S must be a positive number of seconds, got {timeout!r}."
        )
    if url:
        return Endpoint(
            base_url=url,
            api_key=key or EMULATOR_DEFAULT_API_KEY,
            timeout_s=timeout,
            is_real_api=False,
        )
    if key:
        return Endpoint(
            base_url=REAL_API_BASE_URL, api_key=key, timeout_s=timeout, is_real_api=True
        )
    raise ImproperlyConfigured(
        "No Claude endpoint is configured: set ANTHROPIC_BASE_URL to the local emulator's address "
        "(start one with `python manage.py anthropic_emulator --port 8765` and set "
        "ANTHROPIC_BASE_URL=http://127.0.0.1:8765), or set ANTHROPIC_API_KEY to call the real "
        "Anthropic API."
    )


def admin_endpoint() -> Endpoint:
    """Where the Admin API's usage and cost reports are read: the same base URL as every call
    (``ANTHROPIC_BASE_URL``, else the real API) with ``ANTHROPIC_ADMIN_API_KEY``. There is no
    placeholder admin key: without one ``ImproperlyConfigured`` says what to set."""
    key = admin_api_key().strip()
    timeout = timeout_s()
    if timeout <= 0:
        raise ImproperlyConfigured(
            f"ANTHROPIC_TIMEOUT_S must be a positive number of seconds, got {timeout!r}."
        )
    if not key:
        raise ImproperlyConfigured(
            "No Admin API key is configured: set ANTHROPIC_ADMIN_API_KEY to an admin key "
            "(sk-ant-admin…, created in the Claude Console) to read the usage and cost reports."
        )
    url = base_url().strip()
    return Endpoint(
        base_url=url or REAL_API_BASE_URL, api_key=key, timeout_s=timeout, is_real_api=not url
    )
