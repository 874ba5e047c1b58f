"""The Claude models the gateway knows: rate-limit class, minimum cacheable prefix, output cap.

Defaults follow ../shared/ANTHROPIC_API.md; ``settings.CLAUDE_MODELS`` may add or override
entries (these numbers change as Anthropic ships models). Prices are not here: they live in the
database (``usage.ModelPrice``) so admins can edit them.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class ModelInfo:
    model_class: str  # "opus" | "sonnet" | "haiku": the rate-limit bucket it shares
    min_cache_tokens: int  # below this a breakpoint caches nothing
    max_output_tokens: int
    cache_reads_free_for_itpm: bool = True  # false only on Haiku 3.5


DEFAULT_MODELS: dict[str, ModelInfo] = {
    "claude-opus-4-8": ModelInfo("opus", 1024, 64000),
    "claude-opus-4-7": ModelInfo("opus", 2048, 64000),
    "claude-opus-4-6": ModelInfo("opus", 4096, 64000),
    "claude-opus-4-5": ModelInfo("opus", 4096, 64000),
    "claude-opus-4-1": ModelInfo("opus", 1024, 32000),
    "claude-opus-4-0": ModelInfo("opus", 1024, 32000),
    "claude-sonnet-4-6": ModelInfo("sonnet", 1024, 64000),
    "claude-sonnet-4-5": ModelInfo("sonnet", 1024, 64000),
    "claude-sonnet-4-0": ModelInfo("sonnet", 1024, 64000),
    "claude-haiku-4-5": ModelInfo("haiku", 4096, 64000),
    "claude-3-5-haiku-latest": ModelInfo("haiku", 2048, 8192, cache_reads_free_for_itpm=False),
}

DEFAULT_MODEL = "claude-sonnet-4-6"


def known_models() -> dict[str, ModelInfo]:
    models = dict(DEFAULT_MODELS)
    for name, raw in getattr(settings, "CLAUDE_MODELS", {}).items():
        models[name] = raw if isinstance(raw, ModelInfo) else ModelInfo(**raw)
    return models


def model_info(model: str) -> ModelInfo | None:
    return known_models().get(model)


def model_class(model: str) -> str:
    """The rate-limit bucket a model shares; unknown models fall back to their family name."""
    info = model_info(model)
    if info is not None:
        return info.model_class
    for family in ("opus", "sonnet", "haiku"):
        if family in model:
            return family
    return "sonnet"
