"""What the emulator billed (the ledger) and every /v1 request it received (the log).

Only responses that completed are billed: a 200 non-stream body that was sent, a stream that
reached message_stop, or a succeeded batch request. Tests compare the gateway's audit log with
this ledger exactly. API keys appear only as fingerprints.

Each billed row keeps the response's whole ``usage`` plus, flattened for the comparison, every
other fact a price depends on: the service tier (batch is half price), where inference ran
(``inference_geo`` "us" is 1.1x), the speed (fast mode has its own rates), thinking tokens
(already inside output_tokens) and web searches ($10 per 1,000). Totals add the counts up.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

TOTAL_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
# Totals of usage's nested counts, keyed by their own names.
DETAIL_TOTAL_FIELDS = ("thinking_tokens", "web_search_requests", "web_fetch_requests")


def _detail_counts(usage: dict[str, Any]) -> dict[str, int]:
    details = usage.get("output_tokens_details") or {}
    server_tools = usage.get("server_tool_use") or {}
    return {
        "thinking_tokens": int(details.get("thinking_tokens", 0)),
        "web_search_requests": int(server_tools.get("web_search_requests", 0)),
        "web_fetch_requests": int(server_tools.get("web_fetch_requests", 0)),
    }


def key_fingerprint(api_key: str) -> str:
    return "key_" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


def api_key_id(fingerprint: str) -> str:
    """The Admin API's id of the key with this fingerprint (``apikey_…``, as Anthropic's ids
    look): stable, derived from the key's hash alone, so it reveals nothing of the key."""
    return "apikey_" + fingerprint.removeprefix("key_")


def _empty_totals() -> dict[str, int]:
    return {"requests": 0, **dict.fromkeys(TOTAL_FIELDS + DETAIL_TOTAL_FIELDS, 0)}


@dataclass
class Ledger:
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=_empty_totals)

    def clear(self) -> None:
        self.keys.clear()
        self.totals = _empty_totals()

    def bill(
        self,
        *,
        fingerprint: str,
        request_id: str,
        message_id: str,
        model: str,
        time: float,
        usage: dict[str, Any],
        batch_id: str | None,
        client_request_id: str | None,
        user_profile_id: str | None = None,
    ) -> None:
        account = self.keys.setdefault(fingerprint, {"requests": [], "totals": _empty_totals()})
        details = _detail_counts(usage)
        account["requests"].append(
            {
                "request_id": request_id,
                "message_id": message_id,
                "model": model,
                "time": time,
                "service_tier": usage["service_tier"],
                "inference_geo": usage.get("inference_geo", "global"),
                "speed": usage.get("speed", "standard"),
                **details,
                "batch_id": batch_id,
                "client_request_id": client_request_id,
                "user_profile_id": user_profile_id,
                "usage": usage,
            }
        )
        for totals in (account["totals"], self.totals):
            totals["requests"] += 1
            for name in TOTAL_FIELDS:
                totals[name] += usage[name]
            for name, count in details.items():
                totals[name] += count

    def as_dict(self) -> dict[str, Any]:
        return {"keys": self.keys, "totals": self.totals}


@dataclass
class RequestLog:
    entries: list[dict[str, Any]] = field(default_factory=list)

    def clear(self) -> None:
        self.entries.clear()

    def add(
        self,
        *,
        time: float,
        method: str,
        path: str,
        status: int,
        error_type: str | None,
        request_id: str | None,
        fingerprint: str | None,
        client_request_id: str | None,
        stream: bool,
    ) -> None:
        self.entries.append(
            {
                "time": time,
                "method": method,
                "path": path,
                "status": status,
                "error_type": error_type,
                "request_id": request_id,
                "key_fingerprint": fingerprint,
                "client_request_id": client_request_id,
                "stream": stream,
            }
        )
