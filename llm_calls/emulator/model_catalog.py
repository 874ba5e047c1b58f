"""The models the emulator knows: their rate-limit class and minimum cacheable prefix.

Kept as one table because Anthropic changes it; everything else looks models up here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    # Rate-limit buckets are shared by every model of one class (per API key).
    model_class: str
    # A cache breakpoint whose prefix is shorter than this many tokens is silently not cached.
    min_cacheable_tokens: int
    # Haiku 3.5 is the one model whose cache reads still count against ITPM.
    cache_reads_count_for_itpm: bool = False


MODELS: dict[str, ModelInfo] = {
    info.model_id: info
    for info in (
        ModelInfo("claude-opus-4-8", "opus", 1024),
        ModelInfo("claude-opus-4-7", "opus", 2048),
        ModelInfo("claude-opus-4-6", "opus", 4096),
        ModelInfo("claude-opus-4-5", "opus", 4096),
        ModelInfo("claude-opus-4-1", "opus", 1024),
        ModelInfo("claude-opus-4-0", "opus", 1024),
        ModelInfo("claude-sonnet-4-6", "sonnet", 1024),
        ModelInfo("claude-sonnet-4-5", "sonnet", 1024),
        ModelInfo("claude-sonnet-4-0", "sonnet", 1024),
        ModelInfo("claude-haiku-4-5", "haiku", 4096),
        ModelInfo("claude-3-5-haiku-latest", "haiku", 2048, cache_reads_count_for_itpm=True),
    )
}


def model_lookup(model_id: str) -> ModelInfo | None:
    return MODELS.get(model_id)
