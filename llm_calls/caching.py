"""Prompt-cache planner: where ``cache_control`` breakpoints go, and which TTL each one gets.

Where (``plan_cache``)
    The API caches the exact prefix tools → system → messages up to a block marked with
    ``cache_control`` (at most 4 marks, writes only at marks, each mark looks back 20 blocks for
    an earlier entry). The planner marks the *stable* part of a request — what the next request
    will repeat byte for byte:

    * ``tools``: the last tool (the schema block; shared by every call of an application);
    * ``system_block``: a non-final system block that is cacheable on its own (≥ the model's
      minimum), e.g. a reference schema followed by per-user instructions;
    * ``system``: the last system block (the whole shared instructions);
    * ``conversation``: the last block of the message *before the final user turn* (normally the
      last assistant turn). Not the final user turn itself: that is the one part the next request
      may not repeat (a user edits or regenerates their question), a single-turn call would pay
      the 1.25x write for its unique question on every request, and when the conversation ends
      there the write is wasted. The price is that the newest user turn is paid at 1x now and
      written at 1.25x on the next turn (+1x on one short message), instead of written once.

    Never on a prefix shorter than ``catalog.min_cache_tokens`` (the API would cache nothing),
    never more than 4 marks counting the caller's own, never a 1h mark after a 5m one. Caller
    marks are kept as they are (they count toward the 4); a body whose marks the API would reject
    raises ``InvalidRequest``. Extra marks before the last written one are free: the API bills
    the same written tokens however many marks split them; they only add entries to match.

Which TTL (``choose_ttl``)
    Prices per prefix token, in units of the model's input price (``CacheRates``: the caller
    passes the model's own, from its price row): no cache 1, 5-minute write 1.25, 1-hour write 2,
    read 0.1 on most models — but 0.05 on Sonnet 5.5 and Opus 5.5 and 0.025 on Fable 5.1/5.2,
    which makes caching pay sooner there. The figures below use 1.25 / 2 / 0.1. A 5-minute entry expires when the next use
    comes more than 5 minutes later, so every use after such a gap pays a new 1.25 write; a 1-hour
    entry pays 2 and then reads at 0.1 while uses come within the hour. With ``r`` the expected
    reuses of the prefix in the next hour and ``Δ`` the interval between uses, the expected cost of
    one prefix token over the hour (this request included) is::

        none = 1 + r
        5m   = 1.25 + 0.1·r        if Δ ≤ 5 min,   else 1.25·(1 + r)
        1h   = 2    + 0.1·r        if Δ ≤ 60 min,  else 2·(1 + r)

    and the planner takes the cheapest. With ``r = 3600 s / Δ`` this gives: Δ ≤ 5 min → 5m
    (cheaper than 1h by 0.75, and than nothing as soon as r > 0.28); 5 min < Δ < 54 min → 1h
    (5m would rewrite at every use; 1h beats nothing when r > 1.11); Δ ≥ 54 min, or no evidence
    of any reuse (r = 0) → no cache. The one-hour horizon is deliberately conservative: refresh
    on hit makes a steady stream cheaper than this, but we only count savings the evidence shows.

    Evidence comes from ``ReuseTracker`` (Redis: per model and prefix hash, last seen, count and
    an EWMA of the interval). A prefix never seen before:

    * tools / system (a template an application sends on every call) is assumed reused at
      ``PRIOR_INTERVAL_S`` → 5m. Justification from the same prices: caching the first sight
      risks 0.25 × tokens once and saves 0.9 × tokens per reuse within 5 minutes, so it pays as
      soon as the chance of one reuse within 5 minutes is above 0.25 / 0.9 ≈ 28% — true of any
      shared system prompt. The second sighting replaces the prior with the observed interval.
    * a conversation prefix is new on every turn (it ends with the newest assistant reply); it
      gets the same prior when the previous turn's whole prompt was seen (the conversation has
      already continued once, so it likely continues), and no cache otherwise: a one-off request
      that merely carries history has no evidence of reuse (r = 0 → 1.25 > 1).

    Each breakpoint closes a segment (the tokens since the previous mark) billed at its TTL, so
    the planner picks, among the valid TTL sequences (some 1h marks, then 5m marks) and the
    number of leading marks to place, the one with the lowest summed expected cost.

Hot path: ``plan_for_call`` reads and records the reuse statistics of every candidate prefix in
one Redis round trip (one Lua script), then plans in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings

from llm_calls import catalog
from llm_calls.tokens import MESSAGE_OVERHEAD_TOKENS, block_tokens, chars_per_token_for, text_tokens
from llm_calls.types import CLASSIC_CACHE_RATES, CacheRates, Usage
from llm_calls.validation import (
    CONTENT_TYPE,
    EMPTY_CONTENT,
    FIELD_REQUIRED,
    MAX_BREAKPOINTS,
    NO_MESSAGES,
    NOT_A_LIST,
    NOT_AN_OBJECT,
    SYSTEM_TYPE,
    InvalidRequest,
    block_ttl,
    cache_control_ttl,
    counted_breakpoints,
)

log = logging.getLogger(__name__)

TTL_5M = "5m"
TTL_1H = "1h"
TTL_SECONDS = {TTL_5M: 300.0, TTL_1H: 3600.0}

HORIZON_S = 3600.0

# Assumed interval between uses of a never-seen template prefix (see the module docstring).
PRIOR_INTERVAL_S = 120.0
# Weight of the newest gap in the interval EWMA: a few sightings move it, one outlier does not.
EWMA_ALPHA = 0.3
# How long the tracker remembers a candidate prefix: long enough to see that a prefix comes
# back only every few hours (and so is not worth caching) rather than forgetting it.
PREFIX_MEMORY_S = 24 * 3600
# A whole prompt is remembered only to recognise the next turn of its conversation.
PROMPT_MEMORY_S = 2 * 3600

# Which candidates keep a slot when there are more than 4 marks: the shared instructions first,
# then the conversation, then the tools alone, then large system blocks (larger first).
KIND_PRIORITY = {"system": 0, "conversation": 1, "tools": 2, "system_block": 3}

EVIDENCE_OBSERVED = "observed"
EVIDENCE_PRIOR_TEMPLATE = "prior: first sight of a shared template prefix"
EVIDENCE_PRIOR_CONVERSATION = "prior: the conversation continued from a prompt seen before"
EVIDENCE_PRIOR_UNTRACKED = "prior: no reuse tracker"
EVIDENCE_NONE = "no evidence of reuse"


def planner_enabled() -> bool:
    """``CACHE_PLANNER_ENABLED`` (default True), read at call time so override_settings works."""
    return bool(getattr(settings, "CACHE_PLANNER_ENABLED", True))


# --------------------------------------------------------------------------------------------
# The TTL rule (pure)


@dataclass(frozen=True)
class Reuse:
    """What we expect of one prefix: ``reuses_per_hour`` (not counting this request) at a
    typical ``interval_s`` between uses (``math.inf`` when there is no evidence)."""

    reuses_per_hour: float
    interval_s: float
    evidence: str

    @classmethod
    def from_interval(cls, interval_s: float, evidence: str) -> Reuse:
        interval = max(interval_s, 1e-3)
        return cls(reuses_per_hour=HORIZON_S / interval, interval_s=interval, evidence=evidence)

    @classmethod
    def none(cls) -> Reuse:
        return cls(reuses_per_hour=0.0, interval_s=math.inf, evidence=EVIDENCE_NONE)


def hourly_cost(
    *,
    ttl: str | None,
    reuses_per_hour: float,
    interval_s: float,
    rates: CacheRates = CLASSIC_CACHE_RATES,
) -> float:
    """Expected cost of one prefix token over the next hour, in units of the input price.

    ``ttl`` None means "not cached". See the module docstring for the formula.
    """
    r = max(0.0, reuses_per_hour)
    if ttl is None:
        return 1.0 + r
    if ttl not in TTL_SECONDS:
        raise ValueError(f"ttl must be None, {TTL_5M!r} or {TTL_1H!r}, got {ttl!r}")
    write = rates.write(ttl)
    if interval_s <= TTL_SECONDS[ttl]:
        return write + rates.read * r
    return write * (1.0 + r)


def choose_ttl(
    *, reuses_per_hour: float, interval_s: float, rates: CacheRates = CLASSIC_CACHE_RATES
) -> str | None:
    """The cheapest choice for a prefix on its own: None (do not cache), "5m" or "1h".

    Ties go to the cheaper write (none, then 5m): never pay a premium for nothing.
    """
    options: list[str | None] = [None, TTL_5M, TTL_1H]
    return min(
        options,
        key=lambda ttl: hourly_cost(
            ttl=ttl, reuses_per_hour=reuses_per_hour, interval_s=interval_s, rates=rates
        ),
    )


# --------------------------------------------------------------------------------------------
# Reuse statistics


@dataclass(frozen=True)
class PrefixStats:
    """What the tracker knew about a prefix before this request.

    ``count`` sightings, the last at ``last_seen`` (unix seconds); ``interval_s`` is the EWMA of
    the gaps between sightings (None after a single sighting).
    """

    count: int
    last_seen: float
    interval_s: float | None

    def interval_with_gap(self, now: float) -> float:
        """The interval estimate once this request's gap is folded in (what the tracker stores)."""
        gap = max(0.0, now - self.last_seen)
        if self.interval_s is None:
            return gap
        return EWMA_ALPHA * gap + (1.0 - EWMA_ALPHA) * self.interval_s


@dataclass(frozen=True)
class ReuseStats:
    """Statistics for the prefixes of one request, read at ``now``; a prefix hash missing from
    ``prefixes`` has never been seen (or was forgotten)."""

    now: float
    prefixes: Mapping[str, PrefixStats] = field(default_factory=dict)

    def get(self, prefix_hash: str) -> PrefixStats | None:
        return self.prefixes.get(prefix_hash)


@dataclass(frozen=True)
class Observation:
    """One prefix the tracker looks up and records, remembering it ``memory_s`` seconds;
    ``memory_s=None`` looks it up without recording a sighting (a conversation's parent)."""

    prefix_hash: str
    memory_s: int | None


# --------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class Breakpoint:
    """A ``cache_control`` mark in the planned body.

    ``position`` names the block (``tools[2]``, ``system[0]``, ``messages[3].content[0]``; a
    string system prompt or message content becomes a one-block list). ``prefix_tokens`` is the
    estimated length of the prefix it closes; ``source`` is "planner" or "caller".
    """

    position: str
    kind: str
    block_index: int
    prefix_tokens: int
    ttl: str
    source: str
    reason: str
    prefix_hash: str


@dataclass(frozen=True)
class SkippedBreakpoint:
    """A place the planner considered and left unmarked, with why."""

    position: str
    kind: str
    prefix_tokens: int
    reason: str
    prefix_hash: str = ""


@dataclass(frozen=True)
class CachePlan:
    """The body to send (a new dict; the input is never mutated) and what was decided.

    ``breakpoints`` lists every mark in the body in prefix order, the caller's included.
    ``observations`` are the prefixes ``observe_prefixes`` records.
    """

    body: dict[str, Any]
    model: str
    enabled: bool
    breakpoints: tuple[Breakpoint, ...]
    skipped: tuple[SkippedBreakpoint, ...]
    observations: tuple[Observation, ...]
    min_cache_tokens: int | None
    estimated_input_tokens: int

    @property
    def added(self) -> tuple[Breakpoint, ...]:
        return tuple(bp for bp in self.breakpoints if bp.source == "planner")


# --------------------------------------------------------------------------------------------
# Reading a body as blocks in cache order


@dataclass(frozen=True)
class _Piece:
    """One block as read from the body, before prefix sums and hashes."""

    section: str  # "tools" | "system" | "messages"
    index: int  # tool / system block / message index
    sub: int | None  # content block index inside a message (None for tools and system)
    tag: str  # what kind of block, part of its identity (as the API sees it)
    block: Mapping[str, Any]
    tokens: int
    cache_ttl: str | None  # the caller's mark on this block, if any


@dataclass(frozen=True)
class _Block:
    section: str
    index: int
    sub: int | None
    tokens: int
    cumulative: int  # estimated tokens of the prefix up to and including this block
    prefix_hash: str
    cache_ttl: str | None

    @property
    def position(self) -> str:
        if self.section == "messages":
            return f"messages[{self.index}].content[{self.sub}]"
        return f"{self.section}[{self.index}]"


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _without_cc(block: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k != "cache_control"}


def _pieces(params: Mapping[str, Any]) -> list[_Piece]:
    """The prompt's blocks in cache order. A string system prompt or message content is one
    text block (the API caches both forms the same); the message overhead tokens sit on a
    message's first block, as the emulator counts them."""
    pieces: list[_Piece] = []
    model = params.get("model")
    cpt = chars_per_token_for(model if isinstance(model, str) else None)
    tools = params.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("tools", NOT_A_LIST)
        for i, tool in enumerate(tools):
            if not isinstance(tool, Mapping):
                raise InvalidRequest(f"tools[{i}]", NOT_AN_OBJECT)
            ttl = block_ttl(tool, f"tools[{i}]")
            pieces.append(_Piece("tools", i, None, "tool", tool, block_tokens(tool, cpt), ttl))

    system = params.get("system")
    if isinstance(system, str):
        if system:
            text = {"type": "text", "text": system}
            pieces.append(_Piece("system", 0, None, "system", text, text_tokens(system, cpt), None))
    elif isinstance(system, list):
        for i, block in enumerate(system):
            if not isinstance(block, Mapping):
                raise InvalidRequest(f"system[{i}]", NOT_AN_OBJECT)
            ttl = block_ttl(block, f"system[{i}]")
            pieces.append(_Piece("system", i, None, "system", block, block_tokens(block, cpt), ttl))
    elif system is not None:
        raise InvalidRequest("system", SYSTEM_TYPE)

    messages = params.get("messages")
    if messages is None:
        raise InvalidRequest("messages", FIELD_REQUIRED)
    if not isinstance(messages, list):
        raise InvalidRequest("messages", NOT_A_LIST)
    if not messages:
        raise InvalidRequest("messages", NO_MESSAGES)
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidRequest(f"messages[{i}]", NOT_AN_OBJECT)
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        elif not isinstance(content, list):
            raise InvalidRequest(f"messages[{i}].content", CONTENT_TYPE)
        if not content:
            raise InvalidRequest(f"messages[{i}].content", EMPTY_CONTENT, at=f"messages[{i}]")
        for j, block in enumerate(content):
            field_name = f"messages[{i}].content[{j}]"
            if not isinstance(block, Mapping):
                raise InvalidRequest(field_name, NOT_AN_OBJECT)
            tokens = block_tokens(block, cpt) + (MESSAGE_OVERHEAD_TOKENS if j == 0 else 0)
            tag = f"{message.get('role')}:{j == 0}"
            ttl = block_ttl(block, field_name)
            pieces.append(_Piece("messages", i, j, tag, block, tokens, ttl))
    return pieces


def _read_blocks(params: Mapping[str, Any]) -> list[_Block]:
    """The blocks with prefix token sums and a chained hash identifying each prefix."""
    blocks: list[_Block] = []
    running = 0
    digest = b""
    for piece in _pieces(params):
        running += piece.tokens
        own = hashlib.sha256(_canonical([piece.tag, _without_cc(piece.block)])).digest()
        digest = hashlib.sha256(digest + own).digest()
        blocks.append(
            _Block(
                section=piece.section,
                index=piece.index,
                sub=piece.sub,
                tokens=piece.tokens,
                cumulative=running,
                prefix_hash=digest.hex()[:32],
                cache_ttl=piece.cache_ttl,
            )
        )
    return blocks


@dataclass(frozen=True)
class _Candidate:
    index: int  # position in cache order
    block: _Block
    kind: str
    parent_hash: str | None = None  # conversation: the previous turn's whole prompt


def _last_index_of(blocks: Sequence[_Block], section: str, index: int | None = None) -> int | None:
    found = None
    for i, block in enumerate(blocks):
        if block.section == section and (index is None or block.index == index):
            found = i
    return found


def _candidates(
    params: Mapping[str, Any], blocks: Sequence[_Block], min_tokens: int
) -> list[_Candidate]:
    found: list[_Candidate] = []
    last_tool = _last_index_of(blocks, "tools")
    if last_tool is not None:
        found.append(_Candidate(last_tool, blocks[last_tool], "tools"))
    system = [i for i, b in enumerate(blocks) if b.section == "system"]
    for i in system[:-1]:
        if blocks[i].tokens >= min_tokens:
            found.append(_Candidate(i, blocks[i], "system_block"))
    if system:
        found.append(_Candidate(system[-1], blocks[system[-1]], "system"))
    messages = params["messages"]
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    if last_user >= 1:
        closing = _last_index_of(blocks, "messages", last_user - 1)
        parent = _last_index_of(blocks, "messages", last_user - 2) if last_user >= 2 else None
        if closing is not None:
            parent_hash = blocks[parent].prefix_hash if parent is not None else None
            found.append(_Candidate(closing, blocks[closing], "conversation", parent_hash))
    return found


# --------------------------------------------------------------------------------------------
# Planning


def _validate_caller_marks(params: Mapping[str, Any], blocks: Sequence[_Block]) -> list[str]:
    """The caller's TTLs as the API counts them (a top-level mark last, unless it is the same
    breakpoint as the last block's own); raise what the API would reject."""
    top = params.get("cache_control")
    top_ttl = None if top is None else cache_control_ttl(top, "cache_control")
    return counted_breakpoints([b.cache_ttl for b in blocks], top_ttl)


@dataclass(frozen=True)
class _Analysis:
    """Everything about a body that does not depend on reuse statistics."""

    params: Mapping[str, Any]
    model: str
    blocks: list[_Block]
    caller_count: int  # marks the API counts (a top-level mark included)
    caller_marks: list[Breakpoint]
    min_tokens: int | None
    usable: list[_Candidate]
    skipped: list[SkippedBreakpoint]
    observations: tuple[Observation, ...]

    @property
    def total_tokens(self) -> int:
        return self.blocks[-1].cumulative if self.blocks else 0


def _analyse(params: Mapping[str, Any]) -> _Analysis:
    if not isinstance(params, Mapping):
        raise InvalidRequest("body", "must be a JSON object")
    model = str(params.get("model", ""))
    blocks = _read_blocks(params)
    caller_ttls = _validate_caller_marks(params, blocks)
    info = catalog.model_info(model)
    min_tokens = info.min_cache_tokens if info is not None else None

    caller_marks = [
        Breakpoint(
            position=b.position,
            kind="caller",
            block_index=i,
            prefix_tokens=b.cumulative,
            ttl=b.cache_ttl,
            source="caller",
            reason="marked by the caller",
            prefix_hash=b.prefix_hash,
        )
        for i, b in enumerate(blocks)
        if b.cache_ttl is not None
    ]
    if params.get("cache_control") is not None and blocks[-1].cache_ttl is None:
        last = blocks[-1]
        caller_marks.append(
            Breakpoint(
                position=last.position,
                kind="caller",
                block_index=len(blocks) - 1,
                prefix_tokens=last.cumulative,
                ttl=caller_ttls[-1],
                source="caller",
                reason="top-level cache_control (marks the last block)",
                prefix_hash=last.prefix_hash,
            )
        )
    analysis = _Analysis(
        params=params,
        model=model,
        blocks=blocks,
        caller_count=len(caller_ttls),
        caller_marks=caller_marks,
        min_tokens=min_tokens,
        usable=[],
        skipped=[],
        observations=(),
    )
    if min_tokens is None:
        analysis.skipped.append(
            SkippedBreakpoint(
                "*", "model", analysis.total_tokens, f"model {model!r} is not in the catalog"
            )
        )
        return analysis

    marked = {bp.block_index for bp in caller_marks}
    observations: dict[str, Observation] = {}
    for candidate in _candidates(params, blocks, min_tokens):
        block = candidate.block
        if block.cumulative < min_tokens:
            analysis.skipped.append(
                SkippedBreakpoint(
                    block.position,
                    candidate.kind,
                    block.cumulative,
                    f"prefix of ~{block.cumulative:,} tokens is below {model}'s minimum of "
                    f"{min_tokens:,}",
                    block.prefix_hash,
                )
            )
            continue
        observations.setdefault(block.prefix_hash, Observation(block.prefix_hash, PREFIX_MEMORY_S))
        if candidate.parent_hash is not None:
            observations.setdefault(candidate.parent_hash, Observation(candidate.parent_hash, None))
        if candidate.index in marked:
            analysis.skipped.append(
                SkippedBreakpoint(
                    block.position, candidate.kind, block.cumulative, "already marked by the caller"
                )
            )
            continue
        analysis.usable.append(candidate)
    # The whole prompt too: the next turn of this conversation recognises itself by it.
    whole = blocks[-1].prefix_hash
    observations[whole] = Observation(whole, PROMPT_MEMORY_S)
    return dataclasses.replace(analysis, observations=tuple(observations.values()))


def _reuse_for(
    kind: str, block: _Block, parent_hash: str | None, reuse: ReuseStats | None
) -> Reuse:
    if reuse is None:
        return Reuse.from_interval(PRIOR_INTERVAL_S, EVIDENCE_PRIOR_UNTRACKED)
    stats = reuse.get(block.prefix_hash)
    if stats is not None and stats.count > 0:
        return Reuse.from_interval(stats.interval_with_gap(reuse.now), EVIDENCE_OBSERVED)
    if kind != "conversation":
        return Reuse.from_interval(PRIOR_INTERVAL_S, EVIDENCE_PRIOR_TEMPLATE)
    if parent_hash is not None and reuse.get(parent_hash) is not None:
        return Reuse.from_interval(PRIOR_INTERVAL_S, EVIDENCE_PRIOR_CONVERSATION)
    return Reuse.none()


@dataclass(frozen=True)
class _Slot:
    kind: str
    index: int
    block: _Block
    reuse: Reuse
    fixed_ttl: str | None  # the caller's mark: always placed, TTL fixed


def _best_assignment(slots: Sequence[_Slot], rates: CacheRates) -> tuple[int, list[str]]:
    """How many leading slots to place and their TTLs, minimising the summed hourly cost.

    Valid TTL sequences are some "1h" then "5m" (the API rejects 1h after 5m); caller slots are
    always placed with their own TTL. Each placed slot bills the tokens since the previous slot
    at its TTL; tokens after the last placed slot cost 1 per use. At most 5 x 5 options.
    Ties go to fewer 1h marks, then fewer marks.
    """
    last_fixed = max((i for i, s in enumerate(slots) if s.fixed_ttl is not None), default=-1)
    best: tuple[float, int, int] | None = None
    best_ttls: list[str] = []
    for placed in range(last_fixed + 1, len(slots) + 1):
        for ones in range(placed + 1):
            ttls = [TTL_1H] * ones + [TTL_5M] * (placed - ones)
            if any(s.fixed_ttl not in (None, t) for s, t in zip(slots, ttls, strict=False)):
                continue
            cost = 0.0
            previous = 0
            for i, slot in enumerate(slots):
                segment = slot.block.cumulative - previous
                previous = slot.block.cumulative
                cost += segment * hourly_cost(
                    ttl=ttls[i] if i < placed else None,
                    reuses_per_hour=slot.reuse.reuses_per_hour,
                    interval_s=slot.reuse.interval_s,
                    rates=rates,
                )
            key = (cost, ones, placed)
            if best is None or key < best:
                best, best_ttls = key, ttls
    assert best is not None  # placing every slot with the caller's TTLs is always valid
    return best[2], best_ttls


def _describe(reuse: Reuse, ttl: str) -> str:
    if reuse.evidence == EVIDENCE_OBSERVED:
        return (
            f"{ttl}: reused about every {reuse.interval_s:,.0f} s "
            f"(~{reuse.reuses_per_hour:,.1f} reuses/h)"
        )
    return f"{ttl}: {reuse.evidence}"


def _plan(
    analysis: _Analysis, reuse: ReuseStats | None, enabled: bool, rates: CacheRates
) -> CachePlan:
    skipped = list(analysis.skipped)
    caller_marks = analysis.caller_marks
    if not enabled or analysis.min_tokens is None:
        return CachePlan(
            body=_copy_body(analysis.params, {}),
            model=analysis.model,
            enabled=enabled,
            breakpoints=tuple(caller_marks),
            skipped=tuple(skipped) if enabled else (),
            observations=(),
            min_cache_tokens=analysis.min_tokens,
            estimated_input_tokens=analysis.total_tokens,
        )

    free = max(0, MAX_BREAKPOINTS - analysis.caller_count)
    ranked = sorted(analysis.usable, key=lambda c: (KIND_PRIORITY[c.kind], -c.block.tokens))
    for candidate in ranked[free:]:
        skipped.append(
            SkippedBreakpoint(
                candidate.block.position,
                candidate.kind,
                candidate.block.cumulative,
                f"no breakpoint left (the API allows {MAX_BREAKPOINTS}; "
                f"{analysis.caller_count} set by the caller)",
                candidate.block.prefix_hash,
            )
        )
    slots = [
        _Slot(c.kind, c.index, c.block, _reuse_for(c.kind, c.block, c.parent_hash, reuse), None)
        for c in ranked[:free]
    ]
    for bp in caller_marks:
        block = analysis.blocks[bp.block_index]
        slots.append(
            _Slot("caller", bp.block_index, block, _reuse_for("caller", block, None, reuse), bp.ttl)
        )
    slots.sort(key=lambda s: s.index)
    placed, ttls = _best_assignment(slots, rates)

    added: list[Breakpoint] = []
    for i, slot in enumerate(slots):
        if slot.fixed_ttl is not None:
            continue
        block = slot.block
        if i < placed:
            added.append(
                Breakpoint(
                    position=block.position,
                    kind=slot.kind,
                    block_index=slot.index,
                    prefix_tokens=block.cumulative,
                    ttl=ttls[i],
                    source="planner",
                    reason=_describe(slot.reuse, ttls[i]),
                    prefix_hash=block.prefix_hash,
                )
            )
        else:
            why = slot.reuse.evidence
            if why == EVIDENCE_OBSERVED:
                why = f"reused only about every {slot.reuse.interval_s:,.0f} s"
            skipped.append(
                SkippedBreakpoint(
                    block.position,
                    slot.kind,
                    block.cumulative,
                    f"not worth a cache write: {why}",
                    block.prefix_hash,
                )
            )

    marks = {
        (b.section, b.index, b.sub): bp.ttl
        for bp in added
        for b in (analysis.blocks[bp.block_index],)
    }
    return CachePlan(
        body=_copy_body(analysis.params, marks),
        model=analysis.model,
        enabled=True,
        breakpoints=tuple(sorted([*caller_marks, *added], key=lambda bp: bp.block_index)),
        skipped=tuple(skipped),
        observations=analysis.observations,
        min_cache_tokens=analysis.min_tokens,
        estimated_input_tokens=analysis.total_tokens,
    )


def plan_cache(
    *,
    params: Mapping[str, Any],
    reuse: ReuseStats | None = None,
    enabled: bool = True,
    rates: CacheRates = CLASSIC_CACHE_RATES,
) -> CachePlan:
    """Plan the ``cache_control`` marks for one Messages body. Pure: no I/O.

    ``reuse`` holds the tracker's statistics for this body's prefixes (``None``: no tracker, so
    every candidate gets the first-sight prior). ``enabled=False`` returns an unchanged copy
    (the caller's own marks are still validated and reported). Raises ``InvalidRequest`` for a
    body the planner cannot read or whose own marks the API would reject. ``rates``: the
    model's cache prices (``CacheRates``).
    """
    return _plan(_analyse(params), reuse, enabled, rates)


def _cache_control(ttl: str) -> dict[str, str]:
    # 5m is the API's default TTL: leave it implicit, the most widely accepted form.
    return {"type": "ephemeral"} if ttl == TTL_5M else {"type": "ephemeral", "ttl": ttl}


def _copy_body(
    params: Mapping[str, Any], marks: Mapping[tuple[str, int, int | None], str]
) -> dict[str, Any]:
    """A new body with ``marks`` applied. Lists and the blocks we mark are new objects; blocks we
    do not touch are shared with ``params`` (neither side mutates them)."""
    body = dict(params)
    if isinstance(body.get("tools"), list):
        body["tools"] = [
            {**tool, "cache_control": _cache_control(marks[("tools", i, None)])}
            if ("tools", i, None) in marks
            else tool
            for i, tool in enumerate(body["tools"])
        ]
    system = body.get("system")
    if isinstance(system, str) and ("system", 0, None) in marks:
        body["system"] = [
            {
                "type": "text",
                "text": system,
                "cache_control": _cache_control(marks[("system", 0, None)]),
            }
        ]
    elif isinstance(system, list):
        body["system"] = [
            {**block, "cache_control": _cache_control(marks[("system", i, None)])}
            if ("system", i, None) in marks
            else block
            for i, block in enumerate(system)
        ]
    messages = []
    for i, message in enumerate(body["messages"]):
        content = message.get("content")
        if isinstance(content, str):
            if ("messages", i, 0) in marks:
                message = {
                    **message,
                    "content": [
                        {
                            "type": "text",
                            "text": content,
                            "cache_control": _cache_control(marks[("messages", i, 0)]),
                        }
                    ],
                }
        elif any(("messages", i, j) in marks for j in range(len(content))):
            message = {
                **message,
                "content": [
                    {**block, "cache_control": _cache_control(marks[("messages", i, j)])}
                    if ("messages", i, j) in marks
                    else block
                    for j, block in enumerate(content)
                ],
            }
        messages.append(message)
    body["messages"] = messages
    return body


# --------------------------------------------------------------------------------------------
# The reuse tracker (Redis)

# One round trip per request: for every prefix key, return what was stored and record this
# sighting (count + 1, last = now, interval EWMA with this gap), then refresh the key's TTL.
# Values are returned as strings: Redis would truncate Lua numbers to integers.
_OBSERVE_LUA = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local alpha = tonumber(ARGV[2])
local out = {string.format('%.6f', now)}
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'n', 'last', 'ewma')
  out[#out + 1] = v[1] or ''
  out[#out + 1] = v[2] or ''
  out[#out + 1] = v[3] or ''
  if ARGV[2 + i] ~= '-' then
    local n = tonumber(v[1]) or 0
    local last = tonumber(v[2])
    local ewma = tonumber(v[3])
    if last then
      local gap = now - last
      if gap < 0 then gap = 0 end
      if ewma then ewma = alpha * gap + (1 - alpha) * ewma else ewma = gap end
      redis.call('HSET', key, 'n', n + 1, 'last', string.format('%.6f', now), 'ewma', string.format('%.6f', ewma))
    else
      redis.call('HSET', key, 'n', n + 1, 'last', string.format('%.6f', now))
    end
    redis.call('EXPIRE', key, tonumber(ARGV[2 + i]))
  end
end
return out
"""


class ReuseTracker:
    """Per (model, prefix hash): how often a prompt prefix comes back, in Redis.

    Keys ``gw:cache:prefix:<model>:<hash>`` are hashes {n, last, ewma} with a TTL (24 h for
    candidate prefixes, 2 h for whole prompts). Every read-and-record is one Lua script, so
    concurrent requests never lose a sighting; times come from the Redis server clock unless
    ``now`` is given.
    """

    KEY_PREFIX = "gw:cache:prefix"

    def __init__(self, client: redis.Redis | None = None) -> None:
        self._client = client
        self._script: Any = None
        self._script_client: redis.Redis | None = None

    def _redis(self) -> redis.Redis:
        if self._client is not None:
            return self._client
        from ratelimit_project.redis import get_redis  # late: tests repoint REDIS_URL

        return get_redis()

    def _run(
        self, *, model: str, hashes: Sequence[str], memories: Sequence[str], now: float | None
    ) -> ReuseStats:
        client = self._redis()
        if self._script is None or self._script_client is not client:
            self._script = client.register_script(_OBSERVE_LUA)
            self._script_client = client
        keys = [f"{self.KEY_PREFIX}:{model}:{h}" for h in hashes]
        args = ["" if now is None else repr(float(now)), repr(EWMA_ALPHA), *memories]
        raw = self._script(keys=keys, args=args)
        values = [v.decode() if isinstance(v, bytes) else str(v) for v in raw]
        read_at = float(values[0])
        prefixes: dict[str, PrefixStats] = {}
        for i, prefix_hash in enumerate(hashes):
            count, last, ewma = values[1 + 3 * i : 4 + 3 * i]
            if count and last:
                prefixes[prefix_hash] = PrefixStats(
                    count=int(count),
                    last_seen=float(last),
                    interval_s=float(ewma) if ewma else None,
                )
        return ReuseStats(now=read_at, prefixes=prefixes)

    def lookup_and_observe(
        self, *, model: str, observations: Sequence[Observation], now: float | None = None
    ) -> ReuseStats:
        """Return the statistics as they were before this request, and record this sighting."""
        unique: dict[str, Observation] = {}
        for observation in observations:
            if unique.get(observation.prefix_hash, observation).memory_s is None:
                unique[observation.prefix_hash] = observation  # recording wins over reading
            else:
                unique.setdefault(observation.prefix_hash, observation)
        return self._run(
            model=model,
            hashes=list(unique),
            memories=["-" if o.memory_s is None else str(o.memory_s) for o in unique.values()],
            now=now,
        )

    def lookup(
        self, *, model: str, prefix_hashes: Sequence[str], now: float | None = None
    ) -> ReuseStats:
        """Read only (nothing recorded)."""
        unique = list(dict.fromkeys(prefix_hashes))
        return self._run(model=model, hashes=unique, memories=["-"] * len(unique), now=now)


_default_tracker = ReuseTracker()


def observe_prefixes(
    plan: CachePlan, *, tracker: ReuseTracker | None = None, now: float | None = None
) -> None:
    """Record the plan's prefixes as seen now (one round trip; read-only ones are only read).

    Not needed after ``plan_for_call``, which reads and records in the same round trip.
    """
    if plan.observations:
        (tracker or _default_tracker).lookup_and_observe(
            model=plan.model, observations=plan.observations, now=now
        )


def plan_for_call(
    *,
    params: Mapping[str, Any],
    enabled: bool | None = None,
    tracker: ReuseTracker | None = None,
    now: float | None = None,
    rates: CacheRates = CLASSIC_CACHE_RATES,
) -> CachePlan:
    """The hot-path entry point: read and record reuse statistics (one Redis round trip), plan.

    ``enabled`` defaults to ``CACHE_PLANNER_ENABLED``; when off nothing touches Redis. If Redis
    is unreachable the call is still planned, with first-sight priors, and a warning is logged:
    caching is an optimisation and must never fail a call.
    """
    if enabled is None:
        enabled = planner_enabled()
    analysis = _analyse(params)
    if not enabled or not analysis.observations:
        return _plan(analysis, None, enabled, rates)
    try:
        stats = (tracker or _default_tracker).lookup_and_observe(
            model=analysis.model, observations=analysis.observations, now=now
        )
    except redis.RedisError as error:
        log.warning("prompt-cache reuse tracker unavailable (%s); planning on priors", error)
        stats = None
    return _plan(analysis, stats, True, rates)


# --------------------------------------------------------------------------------------------
# What to cache next: prefixes sent at full price, largest first

UNCACHED_KEY = "gw:cache:uncached"
UNCACHED_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class UncachedPrefix:
    """A prompt prefix the planner left uncached, and how many input tokens that cost so far."""

    model: str
    kind: str
    position: str
    prefix_tokens: int
    times_sent: int
    uncached_tokens: int
    reason: str
    last_seen: float


def record_uncached(plan: CachePlan, *, now: float | None = None) -> None:
    """Count the prefixes this call sends uncached (skipped breakpoints that no placed
    breakpoint covers), for the "what to cache next" report. One pipelined round trip; a Redis
    failure is logged, never raised — it is a statistic."""
    covered = max((bp.prefix_tokens for bp in plan.breakpoints), default=0)
    rows = [s for s in plan.skipped if s.prefix_hash and s.prefix_tokens > covered]
    if not rows:
        return
    from ratelimit_project.redis import get_redis  # late: tests repoint REDIS_URL

    stamp = time.time() if now is None else now
    try:
        pipe = get_redis().pipeline(transaction=False)
        for row in rows:
            member = f"{plan.model}|{row.prefix_hash}"
            pipe.zincrby(UNCACHED_KEY, row.prefix_tokens - covered, member)
            meta = f"{UNCACHED_KEY}:{member}"
            pipe.hset(
                meta,
                mapping={
                    "model": plan.model,
                    "kind": row.kind,
                    "position": row.position,
                    "prefix_tokens": row.prefix_tokens,
                    "reason": row.reason,
                    "last_seen": repr(stamp),
                },
            )
            pipe.hincrby(meta, "times_sent", 1)
            pipe.expire(meta, UNCACHED_TTL_S)
        pipe.expire(UNCACHED_KEY, UNCACHED_TTL_S)
        pipe.execute()
    except redis.RedisError as error:
        log.warning("could not record uncached prefixes (%s)", error)


def uncached_prefixes(*, limit: int = 50) -> list[UncachedPrefix]:
    """The prefixes that cost the most uncached input tokens in the last week, largest first."""
    from ratelimit_project.redis import get_redis  # late: tests repoint REDIS_URL

    client = get_redis()
    top: list[tuple[bytes, float]] = list(
        client.zrevrange(UNCACHED_KEY, 0, max(0, limit - 1), withscores=True)  # type: ignore[arg-type]
    )
    pipe = client.pipeline(transaction=False)
    for member, _score in top:
        pipe.hgetall(f"{UNCACHED_KEY}:{member.decode()}")
    metas = pipe.execute()
    report = []
    for (_member, score), meta in zip(top, metas, strict=True):
        if not meta:
            continue
        values = {k.decode(): v.decode() for k, v in meta.items()}
        report.append(
            UncachedPrefix(
                model=values["model"],
                kind=values["kind"],
                position=values["position"],
                prefix_tokens=int(values["prefix_tokens"]),
                times_sent=int(values.get("times_sent", 0)),
                uncached_tokens=int(score),
                reason=values["reason"],
                last_seen=float(values["last_seen"]),
            )
        )
    return report


# --------------------------------------------------------------------------------------------
# Which prefixes the upstream's prompt cache holds now (Redis)
#
# The ITPM limit charges uncached input and cache writes; cache reads are free. So what a call
# will be charged depends on whether its prefix is in the upstream's cache *now* — a fact that
# expires (5 minutes or 1 hour after the entry's last use) and that a restarted upstream or an
# eviction can take away. The limiter and the ETA ask ``WarmPrefixes`` instead of learning an
# average "how much the cache serves" figure, which stayed true only while the cache did.
#
# Keys ``gw:cache:warm:<upstream>:<model>:<generation>:<hash>`` exist while the entry does: each
# response that wrote or read a prefix (its usage says so) sets them to expire with the entry,
# counted from when the call was sent (the upstream counts from when the response started, so
# we forget first). Any surprise — a response that wrote a prefix we held as warm — bumps the
# generation: every warm record of that upstream and model is forgotten at once, and calls
# reserve their full prompt until responses show what the cache holds again.

WARM_KEY = "gw:cache:warm:{upstream}:{model}"
# Forget an entry this long before we expect the upstream to drop it (clock skew, rounding).
WARM_MARGIN_S = 5.0
# A prefix is taken as served when the read covers this much of its estimated length (our
# token estimate of a prefix and the API's count differ by a few percent).
_SERVED_FRACTION = 0.9

# ARGV: sent_at, now, then per mark (hash, 1 if this response did not read it, ttl ms or 0).
# A record holds the time it was set: only a record older than the call's send is a surprise
# (two calls sent together before the first write both pay the write, and that is expected).
_WARM_RECORD_LUA = """
local base = KEYS[1]
local sent_at, now = tonumber(ARGV[1]), ARGV[2]
local gen = redis.call('GET', base .. ':gen') or '0'
local surprise = 0
local n = (#ARGV - 2) / 3
for i = 0, n - 1 do
  local h = ARGV[3 + 3 * i]
  if ARGV[4 + 3 * i] == '1' then
    local held = redis.call('GET', base .. ':' .. gen .. ':' .. h)
    if held and tonumber(held) < sent_at then
      surprise = 1
    end
  end
end
if surprise == 1 then
  gen = tostring(redis.call('INCR', base .. ':gen'))
  redis.call('EXPIRE', base .. ':gen', 7 * 24 * 3600)
end
for i = 0, n - 1 do
  local h, ttl_ms = ARGV[3 + 3 * i], tonumber(ARGV[5 + 3 * i])
  if ttl_ms > 0 then
    redis.call('SET', base .. ':' .. gen .. ':' .. h, now, 'PX', ttl_ms)
  end
end
return surprise
"""

# ARGV[1]: "reserve" — answer 1 for a prefix in the cache and confirmed by a response within
# ARGV[3] seconds of now (ARGV[4]), and mark every other one as being written (the call about
# to be sent writes it); "forecast" — answer 1 for a prefix in the cache or being written (what
# a queued request will find by the time it is sent). ARGV[5..] are the prefix hashes.
_WARM_LOOKUP_LUA = """
local base = KEYS[1]
local mode, pending_ms = ARGV[1], tonumber(ARGV[2])
local confirm_s, now = tonumber(ARGV[3]), tonumber(ARGV[4])
local gen = redis.call('GET', base .. ':gen') or '0'
local out = {}
for i = 5, #ARGV do
  local key = base .. ':' .. gen .. ':' .. ARGV[i]
  local held = redis.call('GET', key)
  local warm = 0
  if mode == 'reserve' then
    if held and now - tonumber(held) <= confirm_s then
      warm = 1
    else
      redis.call('SET', key .. ':writing', '1', 'PX', pending_ms)
    end
  elseif held or redis.call('EXISTS', key .. ':writing') == 1 then
    warm = 1
  end
  out[#out + 1] = warm
end
return out
"""
# The limiter trusts a warm record only this long after a response confirmed it. In steady
# traffic every response confirms it again; after an idle gap (or an upstream restarted behind
# the same address, which no response has shown yet) calls reserve their whole prompt until a
# response shows what the cache holds: an over-reservation comes back at reconcile, an
# under-reservation would be a 429.
WARM_CONFIRMED_S = 30.0
# How long a prefix counts as "being written" after a call that writes it was reserved.
WRITING_MS = 120_000


@dataclass(frozen=True)
class CachePrefix:
    """A prefix of a body that a prompt-cache entry could serve: its hash and estimated tokens."""

    prefix_hash: str
    tokens: int


def cacheable_prefixes(params: Mapping[str, Any]) -> tuple[CachePrefix, ...]:
    """The prefixes of ``params`` the planner (or the caller) may mark, shortest first.

    These are the prefixes a cache entry written by an earlier call can serve: stored with a
    queued request so the dispatcher can tell, when it reserves, how much of the prompt will
    be a free cache read. Empty for a model outside the catalog or a body the planner cannot
    read (it is then reserved in full).
    """
    try:
        analysis = _analyse(params)
    except InvalidRequest:
        return ()
    if analysis.min_tokens is None:
        return ()
    found = {
        c.block.prefix_hash: c.block.cumulative
        for c in analysis.usable
        if c.block.cumulative >= analysis.min_tokens
    }
    for mark in analysis.caller_marks:
        if mark.prefix_tokens >= analysis.min_tokens:
            found[mark.prefix_hash] = mark.prefix_tokens
    return tuple(
        CachePrefix(prefix_hash=h, tokens=t) for h, t in sorted(found.items(), key=lambda i: i[1])
    )


def prefixes_to_json(prefixes: Sequence[CachePrefix]) -> list[list[Any]]:
    """As stored with a queued request: ``[[hash, tokens], ...]``."""
    return [[p.prefix_hash, p.tokens] for p in prefixes]


def prefixes_from_json(value: Any) -> tuple[CachePrefix, ...]:
    """The inverse of ``prefixes_to_json``; anything else reads as no prefixes."""
    if not isinstance(value, list):
        return ()
    return tuple(
        CachePrefix(prefix_hash=str(item[0]), tokens=int(item[1]))
        for item in value
        if isinstance(item, list) and len(item) == 2
    )


class WarmPrefixes:
    """Which prefixes the current upstream's prompt cache holds, per model (see above).

    ``forecast=False`` (the limiter): only what the cache holds now, as a response confirmed
    within ``WARM_CONFIRMED_S``, counts; each other prefix is noted as being written by the
    call about to be reserved. ``forecast=True``
    (the ETA): a prefix being written counts too — by the time a queued request is sent, the
    call ahead of it will have written it.

    A lookup object remembers its answers, so a dispatcher step that reserves many requests
    sharing one system prompt asks Redis once. Create one per step; never keep it longer.
    """

    def __init__(
        self, *, forecast: bool = False, client: redis.Redis | None = None, now: float | None = None
    ) -> None:
        self._client = client
        self._mode = "forecast" if forecast else "reserve"
        self._now = now
        self._known: dict[tuple[str, str], bool] = {}

    def _redis(self) -> redis.Redis:
        return self._client if self._client is not None else _default_redis()

    def tokens(self, *, model: str, prefixes: Sequence[CachePrefix]) -> int:
        """Estimated tokens of the longest of ``prefixes`` in the cache (0: none)."""
        unknown = [p.prefix_hash for p in prefixes if (model, p.prefix_hash) not in self._known]
        if unknown:
            flags = _script(self._redis(), _WARM_LOOKUP_LUA)(
                keys=[_warm_base(model)],
                args=[
                    self._mode,
                    WRITING_MS,
                    repr(WARM_CONFIRMED_S),
                    repr(time.time() if self._now is None else self._now),
                    *unknown,
                ],
            )
            for prefix_hash, flag in zip(unknown, flags, strict=True):
                self._known[(model, prefix_hash)] = int(flag) == 1
        return max((p.tokens for p in prefixes if self._known[(model, p.prefix_hash)]), default=0)


def record_warm_prefixes(
    plan: CachePlan, *, usage: Usage, sent_at: float, now: float | None = None
) -> bool:
    """After a response: remember the prefixes it wrote or read as cached until they expire.

    ``sent_at`` is when the call was first sent (epoch seconds): entries expire counted from
    the response, so counting from the send forgets them first. Returns True when the response
    contradicted what we held (a prefix we took as cached was written again): every warm
    record of this upstream and model is then forgotten (see above). A Redis failure is logged,
    never raised: this is a forecast, and the call it follows has succeeded.
    """
    cached = usage.cache_read_input_tokens + usage.cache_creation_input_tokens
    if not plan.breakpoints or cached <= 0 or usage.total_input_tokens <= 0:
        return False
    # The API's counts, in the scale of our estimates (breakpoints carry estimated tokens).
    scale = plan.estimated_input_tokens / usage.total_input_tokens
    read_est = usage.cache_read_input_tokens * scale
    covered_est = cached * scale
    clock = time.time() if now is None else now
    args: list[Any] = [repr(float(sent_at)), repr(clock)]
    for bp in plan.breakpoints:
        # Written or read by this response: the entry at this mark now lives for its TTL.
        # A mark inside the read part (not the longest match) was not refreshed: leave it.
        served = bp.prefix_tokens * _SERVED_FRACTION <= covered_est
        refreshed = served and bp.prefix_tokens >= read_est * _SERVED_FRACTION
        expires_in = sent_at + TTL_SECONDS[bp.ttl] - WARM_MARGIN_S - clock
        ttl_ms = round(expires_in * 1000) if refreshed and expires_in > 0 else 0
        not_read = bp.prefix_tokens * _SERVED_FRACTION > read_est
        args += [bp.prefix_hash, 1 if not_read else 0, ttl_ms]
    try:
        surprise = _script(_default_redis(), _WARM_RECORD_LUA)(
            keys=[_warm_base(plan.model)], args=args
        )
    except redis.RedisError as error:
        log.warning("could not record prompt-cache warmth (%s)", error)
        return False
    if int(surprise):
        log.info(
            "%s: a prefix held as cached was written again; forgetting what the upstream's "
            "cache holds until responses show it",
            plan.model,
        )
    return bool(int(surprise))


def _warm_base(model: str) -> str:
    from llm_calls import conf  # late: conf reads settings at call time

    return WARM_KEY.format(upstream=conf.upstream_id(), model=model)


def _default_redis() -> redis.Redis:
    from ratelimit_project.redis import get_redis  # late: tests repoint REDIS_URL

    return get_redis()


_scripts: dict[tuple[int, str], Any] = {}


def _script(client: redis.Redis, source: str) -> Any:
    """``register_script`` once per client and script (it only hashes; Redis loads on use)."""
    key = (id(client), source)
    script = _scripts.get(key)
    if script is None or script.registered_client is not client:
        script = _scripts[key] = client.register_script(source)
    return script
