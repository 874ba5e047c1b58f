"""Runtime configuration: CLI flags at startup, changeable through POST /_emulator/config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import invalid
from .faults import validate_script

# Tier 1, the limits the project was designed against (requests / input / output per minute).
TIER1_RPM = 50
TIER1_ITPM = 30_000
TIER1_OTPM = 8_000

ADMIN_KEY_PREFIX = "sk-ant-admin"


@dataclass
class EmulatorConfig:
    """Limits are per minute per (API key, model class); 0 means unlimited."""

    rpm: int = TIER1_RPM
    itpm: int = TIER1_ITPM
    otpm: int = TIER1_OTPM
    latency_ms: float = 0.0
    # A streamed reply's pace: the wait before each content delta (the API streams a long
    # answer over seconds; 0 sends every event at once).
    stream_event_ms: float = 0.0
    fault_rate_529: float = 0.0
    fault_rate_500: float = 0.0
    fault_rate_reset: float = 0.0
    fault_rate_slow: float = 0.0
    slow_ms: float = 0.0
    fault_rate_midstream: float = 0.0
    chars_per_token: float = 4.0
    seed: int = 0
    # "reserve": take max_tokens from OTPM at admission and refund the unused part at the end;
    # "actual": admit while OTPM > 0 and charge the produced tokens at the end.
    otpm_mode: str = "reserve"
    batch_latency_ms: float = 1000.0
    script: list[dict[str, Any]] = field(default_factory=list)
    # Keys starting with this are Admin API keys: the only ones the usage and cost reports
    # (/v1/organizations/...) accept. Anthropic's admin keys look like ``sk-ant-admin01-…``.
    admin_key_prefix: str = ADMIN_KEY_PREFIX

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def copy(self) -> EmulatorConfig:
        return EmulatorConfig(**{**self.to_dict(), "script": list(self.script)})

    def updated(self, changes: Any) -> EmulatorConfig:
        """A new config with ``changes`` applied; raises ApiError(400) naming a bad key/value."""
        if not isinstance(changes, dict):
            raise invalid("config must be a JSON object")
        known = {f.name: f for f in dataclasses.fields(self)}
        values = self.to_dict()
        for name, value in changes.items():
            if name not in known:
                raise invalid(f"unknown config key {name!r}; known: {', '.join(sorted(known))}")
            values[name] = _coerce(name, value)
        return EmulatorConfig(**values)


_INT_KEYS = {"rpm", "itpm", "otpm", "seed"}
_RATE_KEYS = {
    "fault_rate_529",
    "fault_rate_500",
    "fault_rate_reset",
    "fault_rate_slow",
    "fault_rate_midstream",
}


def _coerce(name: str, value: Any) -> Any:
    if name == "script":
        return validate_script(value)
    if name == "admin_key_prefix":
        if not isinstance(value, str) or not value.strip():
            raise invalid("admin_key_prefix must be a non-empty string")
        return value
    if name == "otpm_mode":
        if value not in ("reserve", "actual"):
            raise invalid("otpm_mode must be 'reserve' or 'actual'")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(f"{name} must be a number")
    if name in _INT_KEYS:
        if int(value) != value or value < 0:
            raise invalid(f"{name} must be a non-negative integer")
        return int(value)
    if name in _RATE_KEYS and not 0 <= value <= 1:
        raise invalid(f"{name} must be a probability between 0 and 1")
    if name == "chars_per_token" and value <= 0:
        raise invalid("chars_per_token must be positive")
    if value < 0:
        raise invalid(f"{name} must not be negative")
    return float(value)
