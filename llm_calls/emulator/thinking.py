"""Extended thinking: whether a request thinks, and how many tokens it spends doing so.

Thinking is on for ``adaptive`` (the default on Claude 5.x and Opus 4.7/4.8) and ``enabled``;
off for ``disabled`` and ``between_tools`` (thinking off; the progress notes that type returns
between tool calls are not emulated). The count is deterministic:

- ``[[emulator:thinking_tokens=N]]`` in the last user message asks for exactly N;
- under ``adaptive`` the model decides whether to think: a prompt that fixes its reply length
  (``[[emulator:output_tokens=N]]``) and says nothing of thinking is answered without thinking,
  so a test or workload that sets the reply length gets exactly that many output tokens;
- otherwise 64..512 derived from the prompt hash, scaled by the effort
  (low 0.25, medium 0.5, high 1, xhigh 1.5, max 2; the model's default effort when not given);
- ``enabled`` caps it at ``budget_tokens``; every mode caps it at ``max_tokens``, because
  thinking tokens are output tokens (billed as output, reported again in
  ``usage.output_tokens_details.thinking_tokens``).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from .model_catalog import ModelInfo

THINKING_DIRECTIVE = re.compile(r"\[\[emulator:thinking_tokens=(\d+)\]\]")
# The reply-length directive (generation.py reads its number); its presence also changes what
# adaptive thinking decides.
OUTPUT_DIRECTIVE = re.compile(r"\[\[emulator:output_tokens=(\d+)\]\]")
MIN_DERIVED_THINKING = 64
MAX_DERIVED_THINKING = 512
EFFORT_SCALE = {"low": 0.25, "medium": 0.5, "high": 1.0, "xhigh": 1.5, "max": 2.0}


@dataclass(frozen=True)
class ThinkingPlan:
    on: bool
    adaptive: bool
    display: str  # "summarized" | "omitted"
    budget_tokens: int | None  # only for type "enabled"
    effort: str | None


def thinking_plan(body: dict[str, Any], model: ModelInfo) -> ThinkingPlan:
    """The thinking a validated body asks of ``model`` (its defaults when it asks nothing)."""
    thinking = body.get("thinking") or {"type": model.default_thinking}
    kind = thinking["type"]
    effort = (body.get("output_config") or {}).get("effort") or model.default_effort
    return ThinkingPlan(
        on=kind in ("adaptive", "enabled"),
        adaptive=kind == "adaptive",
        display=thinking.get("display") or model.default_thinking_display,
        budget_tokens=thinking.get("budget_tokens") if kind == "enabled" else None,
        effort=effort,
    )


def thinking_tokens(plan: ThinkingPlan, *, prompt_text: str, prompt_hash: int) -> int:
    """How many thinking tokens the reply spends, before the max_tokens cap."""
    if not plan.on:
        return 0
    match = THINKING_DIRECTIVE.search(prompt_text)
    if match:
        wanted = int(match.group(1))
    elif plan.adaptive and OUTPUT_DIRECTIVE.search(prompt_text):
        return 0
    else:
        span = MAX_DERIVED_THINKING - MIN_DERIVED_THINKING + 1
        # A different slice of the hash than the reply length uses, so the two vary apart.
        base = MIN_DERIVED_THINKING + (prompt_hash >> 20) % span
        wanted = max(1, round(base * EFFORT_SCALE.get(plan.effort or "high", 1.0)))
    if plan.budget_tokens is not None:
        wanted = min(wanted, plan.budget_tokens)
    return wanted


def signature(model_id: str, thinking_text: str, tokens: int, prompt_hash: int) -> str:
    """An opaque, deterministic stand-in for the signature the API attaches to thinking."""
    raw = f"{model_id}|{tokens}|{prompt_hash}|{thinking_text}".encode()
    digest = hashlib.sha256(raw).digest()
    return base64.b64encode(digest + hashlib.sha256(digest).digest()).decode()
