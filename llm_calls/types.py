"""Plain result types that cross the llm_calls boundary.

llm_calls knows nothing of users, quotas or the database; it hands these to the callbacks its
caller passes in (queueing), and usage reads them to record a call. They never carry the API key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The Messages API's error.type values and the HTTP status each comes with (our own failure
# kinds, "connection_error" and "timeout", have none: a caller is told "api_error").
API_ERROR_STATUS: Mapping[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


@dataclass(frozen=True)
class Usage:
    """Token counts exactly as Anthropic billed them for one response.

    Total input = ``input_tokens + cache_creation_input_tokens + cache_read_input_tokens``;
    ``cache_creation_input_tokens == cache_creation_5m + cache_creation_1h``.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_5m: int = 0
    cache_creation_1h: int = 0
    service_tier: str = "standard"
    # Part of output_tokens (billed as output), reported in usage.output_tokens_details.
    thinking_tokens: int = 0
    # Server tool calls (usage.server_tool_use): web search is billed per 1,000 searches.
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    # Where inference ran ("us" for US-only inference, priced 1.1x) and at which speed
    # ("fast" mode has its own rates). Empty when the response did not say.
    inference_geo: str = ""
    speed: str = "standard"

    @property
    def total_input_tokens(self) -> int:
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    @classmethod
    def from_api(cls, usage: Mapping[str, Any] | None) -> Usage:
        """Read the API's ``usage`` object (absent or null counters are 0).

        When a response lacks the ``cache_creation`` split (older API versions), every cache
        write is counted as 5-minute, the TTL the API uses when none is given.
        """
        data = usage or {}

        def count(mapping: Mapping[str, Any], key: str) -> int:
            value = mapping.get(key)
            return int(value) if isinstance(value, int | float) else 0

        creation = count(data, "cache_creation_input_tokens")
        split = data.get("cache_creation")
        if isinstance(split, Mapping):
            creation_5m = count(split, "ephemeral_5m_input_tokens")
            creation_1h = count(split, "ephemeral_1h_input_tokens")
        else:
            creation_5m, creation_1h = creation, 0
        tier = data.get("service_tier")
        details = data.get("output_tokens_details")
        server_tools = data.get("server_tool_use")
        geo = data.get("inference_geo")
        speed = data.get("speed")
        return cls(
            input_tokens=count(data, "input_tokens"),
            output_tokens=count(data, "output_tokens"),
            cache_creation_input_tokens=creation,
            cache_read_input_tokens=count(data, "cache_read_input_tokens"),
            cache_creation_5m=creation_5m,
            cache_creation_1h=creation_1h,
            service_tier=tier if isinstance(tier, str) and tier else "standard",
            thinking_tokens=count(details, "thinking_tokens")
            if isinstance(details, Mapping)
            else 0,
            web_search_requests=(
                count(server_tools, "web_search_requests")
                if isinstance(server_tools, Mapping)
                else 0
            ),
            web_fetch_requests=(
                count(server_tools, "web_fetch_requests")
                if isinstance(server_tools, Mapping)
                else 0
            ),
            inference_geo=geo if isinstance(geo, str) else "",
            speed=speed if isinstance(speed, str) and speed else "standard",
        )


@dataclass(frozen=True)
class Attempt:
    """One HTTP attempt made by the retry loop.

    ``status`` is the HTTP status (200 for a mid-stream error after a 200), ``None`` for a
    network failure. ``wait_s`` is how long we slept after it before the next attempt (0 for
    the last one). ``billed`` says whether Anthropic billed tokens for this attempt.
    """

    number: int
    status: int | None
    error_type: str | None
    request_id: str | None
    duration_ms: float
    wait_s: float = 0.0
    retry_after_s: float | None = None
    billed: bool = False
    # error.details.error_code from the API, e.g. "enforced_spend_limit_reached".
    error_code: str | None = None


@dataclass(frozen=True)
class MessageResult:
    """A successful Messages API response, reduced to what the rest of the project uses."""

    message_id: str
    model: str
    text: str
    stop_reason: str | None
    usage: Usage
    request_id: str | None
    attempts: tuple[Attempt, ...]
    latency_ms: float
    content: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)
    from_response_cache: bool = False
    # The response as the API sent it, minus ``content`` (id, model, stop_reason,
    # stop_sequence, usage with every field the API reported…): what the gateway's
    # Anthropic-compatible endpoint answers with.
    envelope: Mapping[str, Any] = field(default_factory=dict)

    @property
    def attempt_count(self) -> int:
        return len(self.attempts)


@dataclass(frozen=True)
class CacheRates:
    """A model's prompt-cache prices in units of its input price (what the cache planner weighs
    when it picks a TTL; the rest of the price cancels out). The defaults are the classic
    1.25 / 2 / 0.1; Sonnet 5.5 and Opus 5.5 read at 0.05, Fable 5.1/5.2 at 0.025."""

    write_5m: float = 1.25
    write_1h: float = 2.0
    read: float = 0.1

    def write(self, ttl: str) -> float:
        return self.write_5m if ttl == "5m" else self.write_1h


CLASSIC_CACHE_RATES = CacheRates()
