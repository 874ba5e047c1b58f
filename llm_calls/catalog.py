"""The Claude models the gateway knows, and the request rules each one enforces.

One row per model id: its lifecycle (active, legacy, deprecated, retired — with dates and a
replacement), context window and output cap, minimum cacheable prefix, the rate-limit bucket it
shares, its tokenizer (models from Claude 4.7 on count the same text as about 30% more tokens),
and the request rules Anthropic applies to it (sampling parameters, thinking modes, effort,
forced tool use, assistant prefill, US-only inference, fast mode). Facts as of 2026-12-01
(../shared/ANTHROPIC_API.md, checked against platform.claude.com; see docs/models.md).

``settings.CLAUDE_MODELS`` adds models or overrides fields of known ones without a code change:
``{"claude-new-6": {"display_name": ..., "line": "sonnet", "version": "6.0", ...}}`` for a new
model (every field without a default), ``{"claude-sonnet-5-5": {"min_cache_tokens": 1024}}`` to
override. Dates are ISO strings there. Prices are not here: they live in the database
(``usage.ModelPrice``) so admins can edit them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

ACTIVE = "active"
LEGACY = "legacy"
DEPRECATED = "deprecated"
RETIRED = "retired"
STATUSES = (ACTIVE, LEGACY, DEPRECATED, RETIRED)

THINKING_TYPES = ("adaptive", "enabled", "disabled", "between_tools")
EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")

# The newer tokenizer (Claude 4.7 and later) counts about this many tokens for text the older
# one counts as 1; local estimates that feed the limiter and quota reservations scale by it.
NEW_TOKENIZER_FACTOR = 1.3


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    display_name: str
    line: str  # "opus" | "sonnet" | "haiku" | "fable"
    version: tuple[int, int]  # (4, 6) for Claude Opus 4.6: rules start "on 4.6 and later"
    status: str  # one of STATUSES
    # The rate-limit bucket the model's requests are counted in (per API key): Opus 4.x share
    # one, Sonnet 4.x share one, each 5.x model has its own (Fable 5.1 and 5 share one).
    model_class: str
    context_window: int
    max_output_tokens: int
    min_cache_tokens: int  # a breakpoint on a shorter prefix caches nothing
    released_on: dt.date | None = None
    deprecated_on: dt.date | None = None
    retires_on: dt.date | None = None
    replacement: str | None = None
    token_factor: float = 1.0  # tokens of this model per token of the 4.x tokenizer
    cache_reads_count_for_itpm: bool = False  # true only on the (retired) Haiku 3.5
    # Request rules.
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
    limited_availability: bool = False  # by invitation (the Mythos line)

    @property
    def retired(self) -> bool:
        return self.status == RETIRED

    @property
    def deprecated(self) -> bool:
        return self.status == DEPRECATED

    @property
    def inference_geo(self) -> bool:
        """``inference_geo`` is accepted (and US-only inference priced at 1.1x) on 4.6 and later."""
        return self.version >= (4, 6)

    @property
    def version_label(self) -> str:
        major, minor = self.version
        return f"{major}.{minor}" if minor else str(major)

    def lifecycle_note(self) -> str:
        """One line for pages and errors: "deprecated on 2026-11-23, retires 2027-01-22 (use …)"."""
        parts: list[str] = []
        if self.status == RETIRED:
            parts.append(f"retired on {self.retires_on}" if self.retires_on else "retired")
        elif self.status == DEPRECATED:
            parts.append(
                f"deprecated on {self.deprecated_on}" if self.deprecated_on else "deprecated"
            )
            if self.retires_on:
                parts.append(f"retires {self.retires_on}")
        else:
            parts.append(self.status)
        if self.replacement and self.status in (RETIRED, DEPRECATED):
            parts.append(f"use {self.replacement} instead")
        return ", ".join(parts)


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
    ``enabled`` thinking refused), no non-default sampling parameters, no assistant prefill."""
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
    """A retired model: refused before any call, kept so old audit rows keep their facts."""
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

DEFAULT_MODELS: dict[str, ModelInfo] = {
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

# What the gateway uses when nobody says: the current models (never a retired one).
DEFAULT_MODEL = "claude-sonnet-5-5"
DEFAULT_SMALL_MODEL = "claude-haiku-5-5"


def _parse_override(model_id: str, raw: Any, base: ModelInfo | None) -> ModelInfo:
    if isinstance(raw, ModelInfo):
        return raw
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(
            f"CLAUDE_MODELS[{model_id!r}] must be a dict of ModelInfo fields, got {raw!r}."
        )
    names = {f.name for f in dataclasses.fields(ModelInfo)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ImproperlyConfigured(
            f"CLAUDE_MODELS[{model_id!r}] has unknown fields {unknown}; known: {sorted(names)}."
        )
    values: dict[str, Any] = dict(raw)
    for name in ("released_on", "deprecated_on", "retires_on"):
        if isinstance(values.get(name), str):
            values[name] = dt.date.fromisoformat(values[name])
    if isinstance(values.get("version"), str):
        major, _, minor = values["version"].partition(".")
        values["version"] = (int(major), int(minor or 0))
    for name in ("thinking_types", "effort_levels", "aliases"):
        if name in values:
            values[name] = tuple(values[name])
    values.setdefault("model_id", model_id)
    try:
        info = dataclasses.replace(base, **values) if base else ModelInfo(**values)
    except TypeError as exc:
        raise ImproperlyConfigured(f"CLAUDE_MODELS[{model_id!r}]: {exc}") from None
    if info.status not in STATUSES:
        raise ImproperlyConfigured(
            f"CLAUDE_MODELS[{model_id!r}].status must be one of {', '.join(STATUSES)}, "
            f"got {info.status!r}."
        )
    return info


_NO_OVERRIDES: Mapping[str, Any] = {}
# (the settings object it was built from, the catalog): holding the object keeps its id unique.
_cache: tuple[Mapping[str, Any], dict[str, ModelInfo]] | None = None


def known_models() -> dict[str, ModelInfo]:
    """Every model the gateway knows (retired ones included), settings' additions applied.

    Built once per value of ``settings.CLAUDE_MODELS`` (``override_settings`` swaps the object,
    which rebuilds it); callers must not mutate the dict they get.
    """
    global _cache
    raw = getattr(settings, "CLAUDE_MODELS", None) or _NO_OVERRIDES
    cached = _cache
    if cached is not None and cached[0] is raw:
        return cached[1]
    models = dict(DEFAULT_MODELS)
    for model_id, entry in raw.items():
        models[model_id] = _parse_override(model_id, entry, models.get(model_id))
    _cache = (raw, models)
    return models


def model_info(model: str) -> ModelInfo | None:
    """The catalog entry of a model id or one of its dated aliases."""
    models = known_models()
    found = models.get(model)
    if found is None:
        found = _aliases(models).get(model)
    return found


def canonical_id(model: str) -> str:
    """The catalog's id for ``model`` (a dated alias maps to its model; unknown ids stay)."""
    info = model_info(model)
    return info.model_id if info is not None else model


_alias_cache: tuple[dict[str, ModelInfo], dict[str, ModelInfo]] | None = None


def _aliases(models: dict[str, ModelInfo]) -> dict[str, ModelInfo]:
    global _alias_cache
    cached = _alias_cache
    if cached is not None and cached[0] is models:
        return cached[1]
    table = {alias: info for info in models.values() for alias in info.aliases}
    _alias_cache = (models, table)
    return table


def callable_models() -> dict[str, ModelInfo]:
    """The models a request may name: everything but the retired ones."""
    return {name: info for name, info in known_models().items() if not info.retired}


def model_class(model: str) -> str:
    """The rate-limit bucket a model shares; an unknown model counts in its own bucket."""
    info = model_info(model)
    return info.model_class if info is not None else model


def model_classes() -> list[str]:
    """Every rate-limit bucket of a model a request may name, sorted."""
    return sorted({info.model_class for info in callable_models().values()})


def token_factor(model: str) -> float:
    info = model_info(model)
    return info.token_factor if info is not None else 1.0


def markdown_table() -> str:
    """The catalog as docs/models.md shows it (``manage.py claude_models`` prints it)."""

    def tokens(n: int) -> str:
        return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}K"

    def rules(info: ModelInfo) -> str:
        notes = [f"thinking: {', '.join(info.thinking_types)}"]
        notes.append(
            f"effort: {', '.join(info.effort_levels)}" if info.effort_levels else "no effort"
        )
        if not info.sampling_params:
            notes.append("no sampling params")
        if not info.forced_tool_choice:
            notes.append("no forced tool use")
        if not info.assistant_prefill:
            notes.append("no prefill")
        if info.inference_geo:
            notes.append("inference_geo")
        if info.fast_mode:
            notes.append("fast mode")
        return "; ".join(notes)

    order = {ACTIVE: 0, LEGACY: 1, DEPRECATED: 2, RETIRED: 3}
    rows = [
        "| model | status | context / max output | min cache | bucket | tokenizer | rules |",
        "|---|---|---|---|---|---|---|",
    ]
    for info in sorted(known_models().values(), key=lambda i: (order[i.status], i.model_id)):
        status = info.lifecycle_note() if info.status in (RETIRED, DEPRECATED) else info.status
        if info.limited_availability:
            status += " (limited availability)"
        rows.append(
            f"| `{info.model_id}` | {status} | "
            f"{tokens(info.context_window)} / {tokens(info.max_output_tokens)} | "
            f"{info.min_cache_tokens:,} | {info.model_class} | "
            f"{'new (x1.3)' if info.token_factor != 1.0 else '4.x'} | "
            f"{'—' if info.retired else rules(info)} |"
        )
    return "\n".join(rows) + "\n"
