"""The cache planner's rules, pure (no Redis, no HTTP): where marks go and which TTL they get."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from llm_calls.caching import (
    PRIOR_INTERVAL_S,
    PrefixStats,
    ReuseStats,
    choose_ttl,
    hourly_cost,
    plan_cache,
)
from llm_calls.types import CacheRates
from llm_calls.validation import InvalidRequest, check_message_params

MODEL = "claude-sonnet-4-6"  # minimum cacheable prefix 1,024 tokens
NOW = 1_000_000.0


def tool(name: str, chars: int) -> dict[str, Any]:
    return {
        "name": name,
        "description": "d" * chars,
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
    }


def body(
    *,
    system: Any = "S" * 24_000,  # 6,000 tokens at 4 chars/token
    tools: list[dict[str, Any]] | None = None,
    messages: list[dict[str, Any]] | None = None,
    model: str = MODEL,
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model": model,
        "max_tokens": 200,
        "messages": messages or [{"role": "user", "content": "What is our refund policy?"}],
        **extra,
    }
    if system is not None:
        data["system"] = system
    if tools is not None:
        data["tools"] = tools
    return data


def marks(plan_body: dict[str, Any]) -> list[tuple[str, str]]:
    """(position, ttl) of every cache_control in a body, in API order."""
    found = []
    for i, t in enumerate(plan_body.get("tools") or []):
        if "cache_control" in t:
            found.append((f"tools[{i}]", t["cache_control"].get("ttl", "5m")))
    system = plan_body.get("system")
    if isinstance(system, list):
        for i, b in enumerate(system):
            if "cache_control" in b:
                found.append((f"system[{i}]", b["cache_control"].get("ttl", "5m")))
    for i, m in enumerate(plan_body["messages"]):
        if isinstance(m["content"], list):
            for j, b in enumerate(m["content"]):
                if "cache_control" in b:
                    found.append(
                        (f"messages[{i}].content[{j}]", b["cache_control"].get("ttl", "5m"))
                    )
    return found


def seen(plan_hashes: dict[str, str], **intervals: float | None) -> ReuseStats:
    """ReuseStats where each named breakpoint kind was last seen one interval ago."""
    prefixes = {}
    for kind, interval in intervals.items():
        if interval is None:
            continue
        prefixes[plan_hashes[kind]] = PrefixStats(
            count=5, last_seen=NOW - interval, interval_s=interval
        )
    return ReuseStats(now=NOW, prefixes=prefixes)


def hashes_of(params: dict[str, Any]) -> dict[str, str]:
    plan = plan_cache(params=params, reuse=None)
    return {bp.kind: bp.prefix_hash for bp in plan.breakpoints} | {s.kind: "" for s in plan.skipped}


# --- the TTL rule, hand-computed ---------------------------------------------------------------
# cost per prefix token over an hour, in input-price units, r = reuses/hour = 3600 / interval:
#   none = 1 + r;  5m = 1.25 + 0.1 r if interval <= 300 else 1.25 (1 + r);
#   1h = 2 + 0.1 r if interval <= 3600 else 2 (1 + r)


@pytest.mark.parametrize(
    ("interval_s", "none", "five", "hour", "choice"),
    [
        # every minute: r = 60 -> none 61, 5m 1.25 + 6 = 7.25, 1h 2 + 6 = 8
        (60, 61.0, 7.25, 8.0, "5m"),
        # every 10 minutes: r = 6 -> none 7, 5m 1.25 * 7 = 8.75 (rewritten each use), 1h 2 + 0.6 = 2.6
        (600, 7.0, 8.75, 2.6, "1h"),
        # every 30 minutes: r = 2 -> none 3, 5m 3.75, 1h 2.2
        (1800, 3.0, 3.75, 2.2, "1h"),
        # every 50 minutes: r = 1.2 -> none 2.2, 5m 2.75, 1h 2.12
        (3000, 2.2, 2.75, 2.12, "1h"),
        # every hour: r = 1 -> none 2, 5m 2.5, 1h 2.1: caching costs more than it saves
        (3600, 2.0, 2.5, 2.1, None),
        # every two hours: r = 0.5 -> none 1.5, 5m 1.875, 1h 2 * 1.5 = 3
        (7200, 1.5, 1.875, 3.0, None),
    ],
)
def test_ttl_rule_matches_the_price_formula(
    interval_s: float, none: float, five: float, hour: float, choice: str | None
) -> None:
    r = 3600 / interval_s
    assert hourly_cost(ttl=None, reuses_per_hour=r, interval_s=interval_s) == pytest.approx(none)
    assert hourly_cost(ttl="5m", reuses_per_hour=r, interval_s=interval_s) == pytest.approx(five)
    assert hourly_cost(ttl="1h", reuses_per_hour=r, interval_s=interval_s) == pytest.approx(hour)
    assert choose_ttl(reuses_per_hour=r, interval_s=interval_s) == choice


def test_one_off_prompt_is_not_cached() -> None:
    # Seen once, never again: none 1 < 5m 1.25 < 1h 2.
    assert hourly_cost(ttl=None, reuses_per_hour=0, interval_s=math.inf) == 1.0
    assert hourly_cost(ttl="5m", reuses_per_hour=0, interval_s=math.inf) == 1.25
    assert hourly_cost(ttl="1h", reuses_per_hour=0, interval_s=math.inf) == 2.0
    assert choose_ttl(reuses_per_hour=0, interval_s=math.inf) is None


def test_first_sight_prior_pays_off_at_a_28_percent_chance_of_one_reuse() -> None:
    # The prior for a never-seen template is a reuse every PRIOR_INTERVAL_S (under 5 min): 5m.
    assert PRIOR_INTERVAL_S <= 300
    assert choose_ttl(reuses_per_hour=3600 / PRIOR_INTERVAL_S, interval_s=PRIOR_INTERVAL_S) == "5m"
    # Writing costs 0.25 extra now; one reuse within 5 min saves 0.9: break-even p = 0.25/0.9.
    assert pytest.approx(0.2778, abs=1e-4) == 0.25 / 0.9


# --- where the marks go -----------------------------------------------------------------------


def test_marks_end_of_tools_and_end_of_system_and_never_mutates_the_input() -> None:
    params = body(tools=[tool("search", 2000), tool("lookup", 4000)])
    before = copy.deepcopy(params)
    plan = plan_cache(params=params, reuse=None)
    assert params == before
    assert marks(plan.body) == [("tools[1]", "5m"), ("system[0]", "5m")]
    # the string system prompt became one text block with the same text
    assert plan.body["system"][0]["text"] == params["system"]
    assert [bp.kind for bp in plan.added] == ["tools", "system"]
    assert plan.added[1].prefix_tokens > plan.added[0].prefix_tokens >= 1024
    check_message_params(plan.body)
    # the user's question is left unmarked: it is the part that varies
    assert plan.body["messages"] == params["messages"]


def test_below_the_model_minimum_nothing_is_marked() -> None:
    params = body(system="S" * 2000)  # 500 tokens < 1,024
    plan = plan_cache(params=params, reuse=None)
    assert marks(plan.body) == []
    assert plan.body == params
    (skip,) = plan.skipped
    assert skip.kind == "system" and "below claude-sonnet-4-6's minimum of 1,024" in skip.reason


def test_minimum_is_per_model() -> None:
    params = body(system="S" * 12_000)  # 3,000 tokens: enough for Sonnet, not for Haiku 4.5 (4,096)
    assert marks(plan_cache(params=params, reuse=None).body) == [("system[0]", "5m")]
    haiku = plan_cache(params={**params, "model": "claude-haiku-4-5"}, reuse=None)
    assert marks(haiku.body) == []
    assert "4,096" in haiku.skipped[0].reason


def test_small_tools_alone_are_skipped_but_covered_by_the_system_mark() -> None:
    plan = plan_cache(params=body(tools=[tool("t", 400)]), reuse=None)
    assert marks(plan.body) == [("system[0]", "5m")]
    assert [s.kind for s in plan.skipped] == ["tools"]


def test_large_reference_block_in_system_gets_its_own_mark() -> None:
    schema = {"type": "text", "text": "SCHEMA " * 1200}  # ~2,100 tokens, cacheable on its own
    personal = {"type": "text", "text": "You are helping Alice. " * 20}
    plan = plan_cache(params=body(system=[schema, personal]), reuse=None)
    assert marks(plan.body) == [("system[0]", "5m"), ("system[1]", "5m")]
    assert [bp.kind for bp in plan.added] == ["system_block", "system"]
    check_message_params(plan.body)


CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": "Summarise chapter one."},
    {"role": "assistant", "content": "Chapter one introduces the narrator."},
    {"role": "user", "content": [{"type": "text", "text": "And chapter two?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "It moves to the city."}]},
    {"role": "user", "content": "Who is the antagonist?"},
]


def test_conversation_mark_sits_on_the_last_assistant_turn_when_the_conversation_continues() -> (
    None
):
    params = body(messages=CONVERSATION)
    # The previous turn's whole prompt (through messages[2]) was seen: the conversation is live.
    previous = plan_cache(params=body(messages=CONVERSATION[:3]), reuse=None)
    whole_previous = previous.observations[-1].prefix_hash
    reuse = ReuseStats(now=NOW, prefixes={whole_previous: PrefixStats(1, NOW - 40, None)})
    plan = plan_cache(params=params, reuse=reuse)
    assert marks(plan.body) == [("system[0]", "5m"), ("messages[3].content[0]", "5m")]
    conversation = plan.added[-1]
    assert conversation.kind == "conversation" and "continued" in conversation.reason
    check_message_params(plan.body)


def test_one_off_request_with_history_is_not_cached_beyond_its_template() -> None:
    # History the tracker never saw (a one-off request carrying a transcript): no evidence the
    # conversation prefix will come back, so no 1.25x write for it.
    plan = plan_cache(params=body(messages=CONVERSATION), reuse=ReuseStats(now=NOW))
    assert marks(plan.body) == [("system[0]", "5m")]
    skipped = {s.kind: s.reason for s in plan.skipped}
    assert "no evidence of reuse" in skipped["conversation"]


def test_one_off_prompt_without_template_is_not_cached() -> None:
    # A single large pasted document with no system prompt: nothing stable to mark.
    params = body(system=None, messages=[{"role": "user", "content": "D" * 40_000}])
    plan = plan_cache(params=params, reuse=ReuseStats(now=NOW))
    assert plan.breakpoints == () and plan.body == params


# --- TTL choice from observed reuse -----------------------------------------------------------


def test_prefix_reused_every_ten_minutes_gets_one_hour() -> None:
    params = body()
    h = hashes_of(params)
    plan = plan_cache(params=params, reuse=seen(h, system=600))
    assert marks(plan.body) == [("system[0]", "1h")]
    assert plan.body["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert "600 s" in plan.added[0].reason


def test_prefix_reused_every_minute_keeps_five_minutes() -> None:
    params = body()
    plan = plan_cache(params=params, reuse=seen(hashes_of(params), system=60))
    assert marks(plan.body) == [("system[0]", "5m")]
    assert plan.body["system"][0]["cache_control"] == {"type": "ephemeral"}


def test_prefix_reused_every_two_hours_is_not_cached() -> None:
    params = body()
    plan = plan_cache(params=params, reuse=seen(hashes_of(params), system=7200))
    assert marks(plan.body) == []
    assert "not worth a cache write" in plan.skipped[-1].reason


def test_ttl_mix_never_puts_one_hour_after_five_minutes() -> None:
    # tools (~1,050 tokens, T) reused every minute -> 5m alone; the system segment (6,000
    # tokens) every 10 minutes -> 1h alone. "5m then 1h" is invalid, so compare valid sequences:
    #   [1h, 1h]   = T*(2 + 6)    + 6000*(2 + 0.6) = 8T + 15600   (~24,000)
    #   [5m, 5m]   = T*(1.25 + 6) + 6000*(1.25*7)  = 7.25T + 52500 (~60,000)
    #   [5m, none] = 7.25T + 6000*7 = 7.25T + 42000;  [1h, 5m] = 8T + 52500
    params = body(tools=[tool("t", 4100)])
    h = hashes_of(params)
    plan = plan_cache(params=params, reuse=seen(h, tools=60, system=600))
    assert marks(plan.body) == [("tools[0]", "1h"), ("system[0]", "1h")]
    check_message_params(plan.body)


def test_disabled_planner_changes_nothing() -> None:
    params = body(tools=[tool("t", 5000)])
    plan = plan_cache(params=params, reuse=None, enabled=False)
    assert plan.body == params and plan.body is not params
    assert plan.breakpoints == () and plan.observations == ()


# --- caller marks -----------------------------------------------------------------------------


def test_caller_marks_count_toward_four() -> None:
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": f"q{i}", "cache_control": {"type": "ephemeral"}}],
        }
        if i % 2 == 0
        else {"role": "assistant", "content": f"a{i}"}
        for i in range(5)
    ]  # three caller marks on user turns
    params = body(tools=[tool("t", 5000)], messages=messages)
    plan = plan_cache(params=params, reuse=None)
    assert len(marks(plan.body)) == 4
    assert [bp.kind for bp in plan.added] == ["system"]  # the most valuable free slot
    assert any("no breakpoint left" in s.reason for s in plan.skipped if s.kind == "tools")
    check_message_params(plan.body)


def test_caller_using_all_four_gets_nothing_added() -> None:
    cc = {"type": "ephemeral"}
    tools = [{**tool(f"t{i}", 100), "cache_control": cc} for i in range(4)]
    plan = plan_cache(params=body(tools=tools), reuse=None)
    assert plan.added == ()
    assert len(plan.breakpoints) == 4
    check_message_params(plan.body)


def test_top_level_cache_control_counts_as_a_caller_mark() -> None:
    cc = {"type": "ephemeral"}
    tools = [{**tool(f"t{i}", 100), "cache_control": cc} for i in range(3)]
    plan = plan_cache(params=body(tools=tools, cache_control=cc), reuse=None)
    assert plan.added == ()
    assert plan.body["cache_control"] == cc
    check_message_params(plan.body)


def test_caller_five_minute_mark_forces_later_marks_to_five_minutes() -> None:
    # The caller marks the system prompt 5m; the conversation is reused every 10 minutes
    # (1h alone), but a 1h after a 5m would be rejected by the API.
    system = [{"type": "text", "text": "S" * 24_000, "cache_control": {"type": "ephemeral"}}]
    params = body(system=system, messages=CONVERSATION)
    conversation_hash = hashes_of({**params, "system": "S" * 24_000})["conversation"]
    reuse = ReuseStats(now=NOW, prefixes={conversation_hash: PrefixStats(3, NOW - 600, 600.0)})
    plan = plan_cache(params=params, reuse=reuse)
    # 1h is out; 5m at a 10-minute interval costs 1.25 * 7 = 8.75 per token vs 7 uncached: skip.
    assert marks(plan.body) == [("system[0]", "5m")]
    assert "not worth a cache write" in {s.kind: s.reason for s in plan.skipped}["conversation"]
    check_message_params(plan.body)


def test_caller_one_hour_mark_is_kept_and_earlier_marks_may_be_one_hour() -> None:
    convo = copy.deepcopy(CONVERSATION)
    convo[3]["content"][0]["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    plan = plan_cache(params=body(messages=convo), reuse=None)
    # the system mark before a caller 1h may not be 5m-then-1h: it must be 1h too
    assert marks(plan.body) == [("system[0]", "1h"), ("messages[3].content[0]", "1h")]
    check_message_params(plan.body)


def test_more_than_four_caller_marks_is_rejected_like_the_api() -> None:
    cc = {"type": "ephemeral"}
    tools = [{**tool(f"t{i}", 100), "cache_control": cc} for i in range(5)]
    with pytest.raises(
        InvalidRequest, match="A maximum of 4 blocks with cache_control may be provided. Found 5."
    ):
        plan_cache(params=body(tools=tools), reuse=None)


def test_caller_one_hour_after_five_minutes_is_rejected() -> None:
    tools = [
        {**tool("a", 100), "cache_control": {"type": "ephemeral", "ttl": "5m"}},
        {**tool("b", 100), "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    ]
    with pytest.raises(
        InvalidRequest, match="a ttl='1h' cache breakpoint cannot come after a ttl='5m' one"
    ):
        plan_cache(params=body(tools=tools), reuse=None)


def test_bad_caller_ttl_is_rejected_naming_the_block() -> None:
    system = [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "10m"}}]
    with pytest.raises(InvalidRequest, match=r"^system\.0\.cache_control\.ttl: ") as error:
        plan_cache(params=body(system=system), reuse=None)
    assert error.value.field == "system[0].cache_control.ttl"


def test_unknown_model_is_left_alone() -> None:
    plan = plan_cache(params=body(model="claude-unknown-9"), reuse=None)
    assert marks(plan.body) == [] and "not in the catalog" in plan.skipped[0].reason


def test_same_prefix_hash_for_string_and_block_forms() -> None:
    as_string = plan_cache(params=body(), reuse=None)
    as_block = plan_cache(params=body(system=[{"type": "text", "text": "S" * 24_000}]), reuse=None)
    assert as_string.added[0].prefix_hash == as_block.added[0].prefix_hash
    different = plan_cache(params=body(system="T" * 24_000), reuse=None)
    assert different.added[0].prefix_hash != as_string.added[0].prefix_hash


def test_cheaper_cache_reads_make_caching_pay_at_longer_intervals() -> None:
    # Reused every 56 minutes (r = 1.07 uses/hour): at the classic read price of 0.1x a 1-hour
    # write (2 + 0.107 = 2.107) costs more than not caching (2.071); at Fable 5.1/5.2's 0.025x
    # it costs 2.027 and wins.
    interval = 56 * 60
    r = 3600 / interval
    assert choose_ttl(reuses_per_hour=r, interval_s=interval) is None
    fable = CacheRates(write_5m=1.25, write_1h=2.0, read=0.025)
    assert hourly_cost(ttl="1h", reuses_per_hour=r, interval_s=interval, rates=fable) == (
        pytest.approx(2 + 0.025 * r)
    )
    assert choose_ttl(reuses_per_hour=r, interval_s=interval, rates=fable) == "1h"


def test_the_planner_weighs_the_models_own_rates() -> None:
    params = body()  # a 6,000-token system prompt
    hashes = hashes_of(params)
    classic = plan_cache(params=params, reuse=seen(hashes, system=56 * 60))
    assert marks(classic.body) == []
    fable = plan_cache(
        params=params,
        reuse=seen(hashes, system=56 * 60),
        rates=CacheRates(write_5m=1.25, write_1h=2.0, read=0.025),
    )
    assert marks(fable.body) == [("system[0]", "1h")]


def test_five_x_models_cache_from_512_tokens_on_their_own_tokenizer() -> None:
    # 2,000 characters: 500 tokens on Sonnet 4.6 (below its 1,024), 650 on Sonnet 5.5's newer
    # tokenizer (above its 512).
    params = body(system="S" * 2_000)
    assert marks(plan_cache(params=params, reuse=None).body) == []
    newer = plan_cache(params={**params, "model": "claude-sonnet-5-5"}, reuse=None)
    assert marks(newer.body) == [("system[0]", "5m")]
    assert newer.breakpoints[0].prefix_tokens == math.ceil(2_000 / (4 / 1.3))
