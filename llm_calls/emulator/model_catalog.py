"""The models the emulator plays: lifecycle, limits, tokenizer and the request rules of each.

One table, because Anthropic changes it every few months; everything else looks models up here.
The facts are the gateway's own catalog (``llm_calls/catalog.py``) copied, not imported: the
emulator plays Anthropic and depends on none of the apps. The fields keep the catalog's names
and meanings (``status``, ``model_class``, ``context_window``, ``max_output_tokens``,
``min_cache_tokens``, ``token_factor`` and the rule fields), so a test can compare the two
tables field by field. What only the emulator needs is added: the default thinking display and
the Models API's ``capabilities``.

Status is the docs' word (``active | legacy | deprecated | retired``); the Models API has no
"legacy" and shows those models as ``active`` (``lifecycle``). A retired model answers 404 on
every inference route but stays in the Models API when ``lifecycle[]=retired`` is asked for.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

ACTIVE = "active"
LEGACY = "legacy"
DEPRECATED = "deprecated"
RETIRED = "retired"

THINKING_TYPES = ("adaptive", "enabled", "disabled", "between_tools")
EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")

# The newer tokenizer (Claude 4.7 and later) counts about this many tokens for text the older
# one counts as 1 (see ``tokens.effective_chars_per_token``).
NEW_TOKENIZER_FACTOR = 1.3

# The Models API's created_at for a model whose release date we could not establish: the SDK
# documents an epoch value for exactly this case.
UNKNOWN_RELEASE = dt.date(1970, 1, 1)


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    display_name: str
    line: str  # "opus" | "sonnet" | "haiku" | "fable" | "mythos"
    version: tuple[int, int]  # (4, 6) for Claude Opus 4.6: rules start "on 4.6 and later"
    status: str  # active | legacy | deprecated | retired
    # Rate-limit buckets are shared by every model of one class (per API key): Opus 4.x share
    # one, Sonnet 4.x share one, each 5.x model has its own (Fable 5.1 and 5 share one).
    model_class: str
    context_window: int  # max input tokens
    max_output_tokens: int  # the largest max_tokens accepted
    # A cache breakpoint whose prefix is shorter than this many tokens is silently not cached.
    min_cache_tokens: int
    released_on: dt.date | None = None  # None: not published (the Models API shows the epoch)
    deprecated_on: dt.date | None = None
    retires_on: dt.date | None = None
    replacement: str | None = None
    token_factor: float = 1.0  # tokens of this model per token of the 4.x tokenizer
    # Haiku 3.5 (retired) was the one model whose cache reads still counted against ITPM.
    cache_reads_count_for_itpm: bool = False
    # Request rules (the gateway catalog's fields).
    sampling_params: bool = True  # non-default temperature / top_p / top_k accepted
    thinking_types: tuple[str, ...] = ("enabled", "disabled")
    default_thinking: str = "disabled"
    effort_levels: tuple[str, ...] = ()  # empty: output_config.effort is refused
    default_effort: str | None = None
    forced_tool_choice: bool = True  # tool_choice "any" / "tool" accepted
    assistant_prefill: bool = True  # a final assistant message accepted
    fast_mode: bool = False  # speed: "fast" accepted
    # thinking "disabled" is accepted only up to this effort (Opus 5: "high"); None = any.
    thinking_off_max_effort: str | None = None
    # Dated snapshot ids the API also accepts for this model (e.g. claude-haiku-4-5-20251001).
    aliases: tuple[str, ...] = ()
    limited_availability: bool = False  # by invitation (the Mythos line); callable here
    # Emulator only: what ``thinking.display`` defaults to. Claude 4.7 and later return empty
    # thinking text unless "summarized" is asked for (third-party migration notes agree).
    default_thinking_display: str = "summarized"

    @property
    def retired(self) -> bool:
        return self.status == RETIRED

    @property
    def lifecycle(self) -> str:
        """The Models API's stage: legacy models are still ``active`` there."""
        return ACTIVE if self.status == LEGACY else self.status

    @property
    def inference_geo(self) -> bool:
        """``inference_geo`` (data residency) is accepted on Claude 4.6 and later only."""
        return self.version >= (4, 6)

    @property
    def created_on(self) -> dt.date:
        """The Models API's created_at: the release date, or the epoch when it is unknown."""
        return self.released_on or UNKNOWN_RELEASE

    @property
    def thinking_supported(self) -> bool:
        """Extended thinking exists from Claude 3.7 on."""
        return self.version >= (3, 7)

    def capabilities(self) -> dict[str, Any]:
        """The Models API ``capabilities`` object, with every key the SDK's type requires."""
        modern = self.version >= (4, 5)

        def support(flag: bool) -> dict[str, bool]:
            return {"supported": flag}

        types = self.thinking_types if self.thinking_supported else ()
        return {
            "batch": support(not self.retired),
            "citations": support(True),
            "code_execution": support(modern),
            "context_management": {
                "supported": modern,
                "clear_thinking_20251015": support(modern),
                "clear_tool_uses_20250919": support(modern),
                "compact_20260112": support(self.version >= (4, 6)),
            },
            "effort": {
                "supported": bool(self.effort_levels),
                **{level: support(level in self.effort_levels) for level in EFFORT_LEVELS},
            },
            "image_input": support(True),
            "pdf_input": support(True),
            "server_tools": {
                "supported": True,
                "code_execution": support(True),
                "web_search": support(True),
            },
            "structured_outputs": support(modern),
            "thinking": {
                "supported": self.thinking_supported,
                "types": {
                    kind: support(
                        kind in types or (kind == "disabled" and not self.thinking_supported)
                    )
                    for kind in THINKING_TYPES
                },
            },
        }


def _five(
    model_id: str,
    display_name: str,
    line: str,
    version: tuple[int, int],
    status: str,
    model_class: str,
    **rules: Any,
) -> ModelInfo:
    """A model of the Claude 4.7+ generation (all 5.x, Haiku 5.5): 1M context, 128K output,
    512-token cache minimum, the new tokenizer, adaptive thinking by default (manual
    ``enabled`` thinking refused), no non-default sampling parameters, no assistant prefill,
    thinking text omitted unless asked for."""
    defaults: dict[str, Any] = {
        "context_window": 1_000_000,
        "max_output_tokens": 128_000,
        "min_cache_tokens": 512,
        "token_factor": NEW_TOKENIZER_FACTOR,
        "sampling_params": False,
        "thinking_types": ("adaptive", "disabled"),
        "default_thinking": "adaptive",
        "effort_levels": EFFORT_LEVELS,
        "default_effort": "high",
        "assistant_prefill": False,
        "default_thinking_display": "omitted",
    }
    defaults.update(rules)
    return ModelInfo(model_id, display_name, line, version, status, model_class, **defaults)


def _retired(
    model_id: str,
    display_name: str,
    line: str,
    version: tuple[int, int],
    model_class: str,
    retired_on: dt.date | None,
    replacement: str,
    **facts: Any,
) -> ModelInfo:
    """A retired model: 404 on every inference route, still in the Models API's catalogue."""
    values: dict[str, Any] = {
        "context_window": 200_000,
        "max_output_tokens": 64_000,
        "min_cache_tokens": 1024,
    }
    values.update(facts)
    return ModelInfo(
        model_id,
        display_name,
        line,
        version,
        RETIRED,
        model_class,
        retires_on=retired_on,
        replacement=replacement,
        **values,
    )


_D = dt.date
_ADAPTIVE_ONLY = ("adaptive",)

# Row for row llm_calls/catalog.py as of 2026-12-01 (same ids, order, classes, limits, dates
# and rules); keep the two in step when Anthropic changes something.
MODELS: dict[str, ModelInfo] = {
    info.model_id: info
    for info in (
        # --- Claude 5.x (all Fable 5.x share one rate-limit bucket) -----------------------
        _five("claude-fable-5-2", "Claude Fable 5.2", "fable", (5, 2), ACTIVE, "fable-5",
              released_on=_D(2026, 11, 9), thinking_types=_ADAPTIVE_ONLY,
              forced_tool_choice=False, fast_mode=True),
        _five("claude-fable-5-1", "Claude Fable 5.1", "fable", (5, 1), ACTIVE, "fable-5",
              released_on=_D(2026, 9, 1), thinking_types=_ADAPTIVE_ONLY,
              forced_tool_choice=False),
        _five("claude-fable-5", "Claude Fable 5", "fable", (5, 0), LEGACY, "fable-5",
              released_on=_D(2026, 6, 9), thinking_types=_ADAPTIVE_ONLY),
        _five("claude-opus-5-5", "Claude Opus 5.5", "opus", (5, 5), ACTIVE, "opus-5-5",
              released_on=_D(2026, 9, 22), thinking_types=_ADAPTIVE_ONLY,
              default_effort="medium", forced_tool_choice=False, fast_mode=True),
        _five("claude-opus-5", "Claude Opus 5", "opus", (5, 0), LEGACY, "opus-5",
              released_on=_D(2026, 7, 24), fast_mode=True, thinking_off_max_effort="high"),
        _five("claude-sonnet-5-5", "Claude Sonnet 5.5", "sonnet", (5, 5), ACTIVE, "sonnet-5-5",
              released_on=_D(2026, 9, 28), thinking_types=("adaptive", "between_tools"),
              forced_tool_choice=False),
        _five("claude-sonnet-5", "Claude Sonnet 5", "sonnet", (5, 0), LEGACY, "sonnet-5",
              released_on=_D(2026, 6, 30), min_cache_tokens=1024),
        _five("claude-haiku-5-5", "Claude Haiku 5.5", "haiku", (5, 5), ACTIVE, "haiku-5-5",
              released_on=_D(2026, 10, 7), default_effort="medium"),
        # --- Mythos: Fable's siblings, by invitation -------------------------------------
        _five("claude-mythos-5-2", "Claude Mythos 5.2", "mythos", (5, 2), ACTIVE, "mythos-5",
              thinking_types=_ADAPTIVE_ONLY, forced_tool_choice=False, fast_mode=True,
              limited_availability=True),
        _five("claude-mythos-5-1", "Claude Mythos 5.1", "mythos", (5, 1), ACTIVE, "mythos-5",
              thinking_types=_ADAPTIVE_ONLY, forced_tool_choice=False,
              limited_availability=True),
        _five("claude-mythos-5", "Claude Mythos 5", "mythos", (5, 0), LEGACY, "mythos-5",
              thinking_types=_ADAPTIVE_ONLY, limited_availability=True),
        _five("claude-mythos-preview", "Claude Mythos Preview", "mythos", (4, 7), LEGACY,
              "mythos-5", min_cache_tokens=2048, thinking_types=_ADAPTIVE_ONLY,
              limited_availability=True),
        # --- Claude 4.x (Opus 4.x share one bucket, Sonnet 4.x another) ---------------------
        _five("claude-opus-4-8", "Claude Opus 4.8", "opus", (4, 8), LEGACY, "opus-4",
              released_on=_D(2026, 5, 28), min_cache_tokens=1024),
        _five("claude-opus-4-7", "Claude Opus 4.7", "opus", (4, 7), LEGACY, "opus-4",
              released_on=_D(2026, 4, 16), min_cache_tokens=2048),
        ModelInfo("claude-opus-4-6", "Claude Opus 4.6", "opus", (4, 6), LEGACY, "opus-4",
                  released_on=_D(2026, 2, 5),
                  context_window=1_000_000, max_output_tokens=128_000, min_cache_tokens=4096,
                  thinking_types=("adaptive", "enabled", "disabled"),
                  effort_levels=("low", "medium", "high", "max"), default_effort="high",
                  assistant_prefill=False),
        ModelInfo("claude-opus-4-5", "Claude Opus 4.5", "opus", (4, 5), DEPRECATED, "opus-4",
                  released_on=_D(2025, 11, 24),
                  context_window=200_000, max_output_tokens=64_000, min_cache_tokens=4096,
                  deprecated_on=_D(2026, 11, 23), retires_on=_D(2027, 1, 22),
                  replacement="claude-opus-5-5",
                  effort_levels=("low", "medium", "high"), default_effort="high",
                  aliases=("claude-opus-4-5-20251101",)),
        ModelInfo("claude-sonnet-4-6", "Claude Sonnet 4.6", "sonnet", (4, 6), LEGACY, "sonnet-4",
                  released_on=_D(2026, 2, 17),
                  context_window=1_000_000, max_output_tokens=128_000, min_cache_tokens=1024,
                  thinking_types=("adaptive", "enabled", "disabled"),
                  effort_levels=("low", "medium", "high", "max"), default_effort="high",
                  assistant_prefill=False),
        ModelInfo("claude-haiku-4-5", "Claude Haiku 4.5", "haiku", (4, 5), LEGACY, "haiku-4-5",
                  released_on=_D(2025, 10, 15),
                  context_window=200_000, max_output_tokens=64_000, min_cache_tokens=4096,
                  aliases=("claude-haiku-4-5-20251001",)),
        # --- retired --------------------------------------------------------------------
        _retired("claude-sonnet-4-5", "Claude Sonnet 4.5", "sonnet", (4, 5), "sonnet-4",
                 _D(2026, 11, 30), "claude-sonnet-5-5",
                 aliases=("claude-sonnet-4-5-20250929",)),
        _retired("claude-opus-4-1", "Claude Opus 4.1", "opus", (4, 1), "opus-4",
                 _D(2026, 8, 5), "claude-opus-5-5", max_output_tokens=32_000,
                 aliases=("claude-opus-4-1-20250805",)),
        _retired("claude-opus-4-0", "Claude Opus 4", "opus", (4, 0), "opus-4",
                 _D(2026, 6, 15), "claude-opus-5-5", max_output_tokens=32_000,
                 aliases=("claude-opus-4-20250514",)),
        _retired("claude-sonnet-4-0", "Claude Sonnet 4", "sonnet", (4, 0), "sonnet-4",
                 _D(2026, 6, 15), "claude-sonnet-5-5", aliases=("claude-sonnet-4-20250514",)),
        _retired("claude-3-7-sonnet", "Claude Sonnet 3.7", "sonnet", (3, 7), "sonnet-3",
                 _D(2026, 2, 19), "claude-sonnet-5-5", aliases=("claude-3-7-sonnet-20250219",)),
        _retired("claude-3-5-haiku", "Claude Haiku 3.5", "haiku", (3, 5), "haiku-3",
                 _D(2026, 2, 19), "claude-haiku-5-5", max_output_tokens=8_192,
                 min_cache_tokens=2048, cache_reads_count_for_itpm=True,
                 aliases=("claude-3-5-haiku-20241022", "claude-3-5-haiku-latest")),
        _retired("claude-3-opus", "Claude Opus 3", "opus", (3, 0), "opus-3",
                 _D(2026, 1, 5), "claude-opus-5-5", max_output_tokens=4_096,
                 aliases=("claude-3-opus-20240229",)),
        # Retired during 2026; the exact day is not published where we could read it.
        _retired("claude-3-haiku", "Claude Haiku 3", "haiku", (3, 0), "haiku-3",
                 None, "claude-haiku-5-5", max_output_tokens=4_096, min_cache_tokens=2048,
                 aliases=("claude-3-haiku-20240307",)),
    )
}  # fmt: skip

# A dated snapshot id names the same model (and shares its cache and buckets).
_BY_ALIAS: dict[str, ModelInfo] = {
    alias: info for info in MODELS.values() for alias in info.aliases
}


def model_lookup(model_id: str) -> ModelInfo | None:
    """Any model the emulator knows by id or dated alias, retired ones included (the Models
    API keeps those)."""
    return MODELS.get(model_id) or _BY_ALIAS.get(model_id)


def callable_model(model_id: str) -> ModelInfo | None:
    """The model a request may name: None for unknown and for retired ids (both answer 404)."""
    info = model_lookup(model_id)
    return None if info is None or info.retired else info
