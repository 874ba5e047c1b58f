"""The Admin API's usage and cost reports, against what the emulator billed.

Real traffic goes through the official SDK with two API keys — plain, cached (5-minute and
1-hour writes, then reads), web search, US-only inference, fast mode, a dated model alias, a
Message Batch — on two days of the emulator's clock. Then the reports must say exactly what the
ledger says: token kind by token kind, per day and per hour, filtered, paged, and priced in
cents by the price table (the gateway's own pricing code computes the expected amounts, so
the emulator's copy of the prices is checked end to end). Only admin keys may read them; bad
parameters get a 400 naming the parameter. Last, ``llm_calls.client``'s two functions.
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

# Tests prove the emulator against the unmodified official SDK, so they import it directly.
import anthropic  # noqa: TID251
import pytest
from django.core.exceptions import ImproperlyConfigured

from llm_calls import client
from llm_calls.client import AttemptFailure
from llm_calls.emulator.ledger import key_fingerprint
from llm_calls.emulator.model_catalog import model_lookup
from llm_calls.emulator.process import EmulatorProcess
from llm_calls.types import Usage
from usage import pricing
from usage.price_sheets import shipped_price

from .emulator_support import MODEL, RawResponse, raw_call, sdk, user

KEY_A = "sk-ant-api03-reports-key-A-SECRET"
KEY_B = "sk-ant-api03-reports-key-B-SECRET"
ADMIN = "sk-ant-admin01-reports-SECRET"
USAGE = "/v1/organizations/usage_report/messages"
COST = "/v1/organizations/cost_report"
DAY = 86_400
FAST_MODE_BETA = "fast-mode-2026-02-01"

SYSTEM = "s" * 6_000  # 1,500 tokens: above Sonnet 4.6's 1,024-token cache minimum
WEB_SEARCH: Any = {"type": "web_search_20260318", "name": "web_search", "max_uses": 3}
TOKEN_FIELDS = ("uncached", "cache_5m", "cache_1h", "cache_read", "output", "web_search")


def _cached_system(ttl: str | None = None) -> Any:
    control: dict[str, Any] = {"type": "ephemeral"}
    if ttl is not None:
        control["ttl"] = ttl
    return [{"type": "text", "text": SYSTEM, "cache_control": control}]


def _wait_until_ended(sdk_client: anthropic.Anthropic, batch_id: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sdk_client.messages.batches.retrieve(batch_id).processing_status == "ended":
            return
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not end")


def make_traffic(emulator: EmulatorProcess) -> None:
    """Two keys, every kind of billed line, on two days of the emulator's clock."""
    emulator.configure(batch_latency_ms=50)
    a, b = sdk(emulator, KEY_A), sdk(emulator, KEY_B)
    a.messages.create(
        model=MODEL, max_tokens=50, messages=user("plain [[emulator:output_tokens=7]]")
    )
    for text in ("write", "read"):  # the first call writes the 5-minute entry, the second reads it
        a.messages.create(
            model=MODEL,
            max_tokens=50,
            system=_cached_system(),
            messages=user(f"{text} [[emulator:output_tokens=5]]"),
        )
    b.messages.create(
        model=MODEL,
        max_tokens=50,
        system=[
            {
                "type": "text",
                "text": "h" * 6_400,
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            }
        ],
        messages=user("one hour [[emulator:output_tokens=4]]"),
    )
    a.messages.create(
        model=MODEL,
        max_tokens=500,
        tools=[WEB_SEARCH],
        messages=user("look it up [[emulator:web_search=2]] [[emulator:output_tokens=9]]"),
    )
    a.messages.create(
        model=MODEL,
        max_tokens=50,
        inference_geo="us",
        messages=user("us only [[emulator:output_tokens=6]]"),
    )
    b.messages.create(
        model="claude-opus-5-5",
        max_tokens=500,
        speed="fast",
        messages=user("fast [[emulator:thinking_tokens=0]] [[emulator:output_tokens=8]]"),
    )
    b.messages.create(
        model="claude-haiku-4-5-20251001",
        max_tokens=50,
        messages=user("alias [[emulator:output_tokens=3]]"),
    )
    batch = b.messages.batches.create(
        requests=[
            {
                "custom_id": f"item-{i}",
                "params": {  # type: ignore[typeddict-item]
                    "model": MODEL,
                    "max_tokens": 40,
                    "messages": user(f"batch {i} [[emulator:output_tokens={10 + i}]]"),
                },
            }
            for i in range(2)
        ]
    )
    _wait_until_ended(b, batch.id)
    emulator.advance_clock(DAY)  # tomorrow
    a.messages.create(
        model=MODEL, max_tokens=50, messages=user("next day [[emulator:output_tokens=11]]")
    )
    b.messages.create(
        model=MODEL, max_tokens=50, messages=user("next day [[emulator:output_tokens=12]]")
    )


def ledger_rows(emulator: EmulatorProcess) -> list[tuple[str, dict[str, Any]]]:
    """(api_key_id, ledger row) of every billed response."""
    ids = {key_fingerprint(key): emulator.api_key_id(key) for key in (KEY_A, KEY_B)}
    return [
        (ids[fingerprint], row)
        for fingerprint, account in emulator.ledger()["keys"].items()
        for row in account["requests"]
    ]


def bucket(moment: float, width: int) -> str:
    start = int(moment // width * width)
    return dt.datetime.fromtimestamp(start, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ledger_counts(usage: dict[str, Any], row: dict[str, Any]) -> tuple[int, ...]:
    split = usage["cache_creation"]
    return (
        usage["input_tokens"],
        split["ephemeral_5m_input_tokens"],
        split["ephemeral_1h_input_tokens"],
        usage["cache_read_input_tokens"],
        usage["output_tokens"],
        row["web_search_requests"],
    )


def report_counts(result: dict[str, Any]) -> tuple[int, ...]:
    return (
        result["uncached_input_tokens"],
        result["cache_creation"]["ephemeral_5m_input_tokens"],
        result["cache_creation"]["ephemeral_1h_input_tokens"],
        result["cache_read_input_tokens"],
        result["output_tokens"],
        result["server_tool_use"]["web_search_requests"],
    )


def add(total: tuple[int, ...] | None, more: tuple[int, ...]) -> tuple[int, ...]:
    return more if total is None else tuple(x + y for x, y in zip(total, more, strict=True))


def get(
    emulator: EmulatorProcess,
    path: str,
    query: dict[str, Any],
    *,
    key: str | None = ADMIN,
    headers: dict[str, str] | None = None,
) -> RawResponse:
    return raw_call(
        emulator,
        path + "?" + urllib.parse.urlencode(query, doseq=True),
        method="GET",
        key=key,
        headers=headers,
    )


def ok(response: RawResponse) -> dict[str, Any]:
    assert response.status == 200, response.json
    body: dict[str, Any] = response.json
    return body


@pytest.fixture
def traffic(emulator: EmulatorProcess) -> Iterator[dict[str, Any]]:
    """The traffic, and a query range: from the first billed day's midnight, three days (the
    second day has traffic, the third is empty)."""
    make_traffic(emulator)
    rows = ledger_rows(emulator)
    first = int(min(row["time"] for _id, row in rows) // DAY * DAY)
    yield {
        "rows": rows,
        "starting_at": bucket(first, DAY),
        "ending_at": bucket(first + 3 * DAY, DAY),
        "days": [bucket(first + i * DAY, DAY) for i in range(3)],
    }


def test_the_traffic_covers_every_kind_of_line(traffic: dict[str, Any]) -> None:
    rows = [row for _id, row in traffic["rows"]]
    totals = [
        sum(values) for values in zip(*(ledger_counts(r["usage"], r) for r in rows), strict=True)
    ]
    assert all(totals), dict(zip(TOKEN_FIELDS, totals, strict=True))
    assert {r["service_tier"] for r in rows} == {"standard", "batch"}
    assert {r["inference_geo"] for r in rows} == {"global", "us"}
    assert {r["speed"] for r in rows} == {"standard", "fast"}
    assert len({bucket(r["time"], DAY) for r in rows}) == 2


# -- usage report ------------------------------------------------------------------------------


def test_daily_usage_by_key_and_model_is_exactly_the_ledger(
    emulator: EmulatorProcess, traffic: dict[str, Any]
) -> None:
    page = ok(
        get(
            emulator,
            USAGE,
            {
                "starting_at": traffic["starting_at"],
                "ending_at": traffic["ending_at"],
                "bucket_width": "1d",
                "group_by[]": ["api_key_id", "model"],
            },
        )
    )

    expected: dict[tuple[str, str, str], tuple[int, ...]] = {}
    for key_id, row in traffic["rows"]:
        where = (bucket(row["time"], DAY), key_id, row["model"])
        expected[where] = add(expected.get(where), ledger_counts(row["usage"], row))
    got = {
        (day["starting_at"], result["api_key_id"], result["model"]): report_counts(result)
        for day in page["data"]
        for result in day["results"]
    }
    assert got == expected
    assert [day["starting_at"] for day in page["data"]] == traffic["days"]
    assert page["data"][2]["results"] == []  # an empty day is still a bucket
    assert page["has_more"] is False and page["next_page"] is None
    for day in page["data"]:
        start = dt.datetime.fromisoformat(day["starting_at"])
        assert dt.datetime.fromisoformat(day["ending_at"]) - start == dt.timedelta(days=1)
        for result in day["results"]:
            # Not grouped by these: null, as the API has them.
            assert result["service_tier"] is None and result["workspace_id"] is None
            assert result["context_window"] is None and result["inference_geo"] is None
            assert result["account_id"] is None and result["service_account_id"] is None
            assert "speed" not in result  # only with the fast-mode beta


def test_ungrouped_days_hold_one_row_with_the_days_totals(
    emulator: EmulatorProcess, traffic: dict[str, Any]
) -> None:
    page = ok(
        get(
            emulator,
            USAGE,
            {"starting_at": traffic["starting_at"], "ending_at": traffic["ending_at"], "limit": 3},
        )
    )
    expected: dict[str, tuple[int, ...]] = {}
    for _id, row in traffic["rows"]:
        day = bucket(row["time"], DAY)
        expected[day] = add(expected.get(day), ledger_counts(row["usage"], row))
    got = {day["starting_at"]: [report_counts(r) for r in day["results"]] for day in page["data"]}
    assert got == {day: [expected[day]] if day in expected else [] for day in traffic["days"]}


def test_hourly_buckets_add_up_to_the_daily_ones(
    emulator: EmulatorProcess, traffic: dict[str, Any]
) -> None:
    query = {
        "starting_at": traffic["starting_at"],
        "ending_at": traffic["ending_at"],
        "group_by[]": ["api_key_id", "model", "service_tier"],
    }
    daily = ok(get(emulator, USAGE, {**query, "bucket_width": "1d"}))
    hourly = ok(get(emulator, USAGE, {**query, "bucket_width": "1h", "limit": 72}))
    assert len(hourly["data"]) == 72 and hourly["has_more"] is False

    def keyed(page: dict[str, Any]) -> dict[tuple[Any, ...], tuple[int, ...]]:
        totals: dict[tuple[Any, ...], tuple[int, ...]] = {}
        for slot in page["data"]:
            day = bucket(dt.datetime.fromisoformat(slot["starting_at"]).timestamp(), DAY)
            for r in slot["results"]:
                where = (day, r["api_key_id"], r["model"], r["service_tier"])
                totals[where] = add(totals.get(where), report_counts(r))
        return totals

    assert keyed(hourly) == keyed(daily)
    assert {r["service_tier"] for d in daily["data"] for r in d["results"]} == {"standard", "batch"}


def test_a_filter_by_api_key_gives_only_that_key(
    emulator: EmulatorProcess, traffic: dict[str, Any]
) -> None:
    key_a = emulator.api_key_id(KEY_A)
    page = ok(
        get(
            emulator,
            USAGE,
            {
                "starting_at": traffic["starting_at"],
                "ending_at": traffic["ending_at"],
                "api_key_ids[]": [key_a],
                "group_by[]": ["api_key_id"],
            },
        )
    )
    results = [r for day in page["data"] for r in day["results"]]
    assert results and {r["api_key_id"] for r in results} == {key_a}
    expected: tuple[int, ...] | None = None
    for key_id, row in traffic["rows"]:
        if key_id == key_a:
            expected = add(expected, ledger_counts(row["usage"], row))
    got: tuple[int, ...] | None = None
    for r in results:
        got = add(got, report_counts(r))
    assert got == expected
    nobody = ok(
        get(
            emulator,
            USAGE,
            {"starting_at": traffic["starting_at"], "api_key_ids[]": "apikey_unknown"},
        )
    )
    assert all(day["results"] == [] for day in nobody["data"])


def test_a_model_filter_matches_a_dated_alias_by_its_model(
    emulator: EmulatorProcess, traffic: dict[str, Any]
) -> None:
    page = ok(
        get(
            emulator,
            USAGE,
            {
                "starting_at": traffic["starting_at"],
                "models[]": "claude-haiku-4-5",
                "group_by[]": "model",
            },
        )
    )
    results = [r for day in page["data"] for r in day["results"]]
    assert [r["model"] for r in results] == ["claude-haiku-4-5-20251001"]


def test_service_tier_geo_window_and_speed_groups(
    emulator: EmulatorProcess, traffic: dict[str, Any]
) -> None:
    query = {
        "starting_at": traffic["starting_at"],
        "ending_at": traffic["ending_at"],
        "group_by[]": ["model", "service_tier", "inference_geo", "context_window", "speed"],
    }
    refused = get(emulator, USAGE, query)
    assert refused.status == 400 and refused.json["error"]["message"].startswith("speed")
    page = ok(get(emulator, USAGE, query, headers={"anthropic-beta": FAST_MODE_BETA}))
    groups = {
        (r["model"], r["service_tier"], r["inference_geo"], r["context_window"], r["speed"])
        for day in page["data"]
        for r in day["results"]
    }
    assert groups == {
        (MODEL, "standard", "global", "0-200k", "standard"),
        (MODEL, "standard", "us", "0-200k", "standard"),
        (MODEL, "batch", "global", "0-200k", "standard"),
        ("claude-opus-5-5", "standard", "global", "0-200k", "fast"),
        # Haiku 4.5 predates inference_geo: the API reports "not_available" for it.
        ("claude-haiku-4-5-20251001", "standard", "not_available", "0-200k", "standard"),
    }
    fast_only = ok(
        get(
            emulator,
            USAGE,
            {**query, "speeds[]": "fast", "service_tiers[]": "standard"},
            headers={"anthropic-beta": FAST_MODE_BETA},
        )
    )
    assert {r["model"] for d in fast_only["data"] for r in d["results"]} == {"claude-opus-5-5"}


def test_paging_with_a_small_limit_returns_every_bucket_once(
    emulator: EmulatorProcess, traffic: dict[str, Any]
) -> None:
    query: dict[str, Any] = {
        "starting_at": traffic["starting_at"],
        "ending_at": traffic["ending_at"],
        "bucket_width": "1h",
        "group_by[]": ["api_key_id", "model"],
    }
    whole = ok(get(emulator, USAGE, {**query, "limit": 168}))["data"]
    pages: list[list[dict[str, Any]]] = []
    page_token: str | None = None
    while True:
        page = ok(
            get(
                emulator,
                USAGE,
                {**query, "limit": 5, **({"page": page_token} if page_token else {})},
            )
        )
        pages.append(page["data"])
        assert len(page["data"]) <= 5
        if not page["has_more"]:
            assert page["next_page"] is None
            break
        page_token = page["next_page"]
        assert isinstance(page_token, str) and page_token.startswith("page_")
    assert len(pages) == 15  # 72 hourly buckets, 5 a page
    assert [slot for data in pages for slot in data] == whole
    starts = [slot["starting_at"] for slot in whole]
    assert len(starts) == len(set(starts)) == 72


# -- cost report -------------------------------------------------------------------------------


def _expected_costs(rows: list[tuple[str, dict[str, Any]]]) -> dict[tuple[Any, ...], int]:
    """Picodollars per (day, line) by the GATEWAY's pricing code and shipped price sheet."""
    costs: dict[tuple[Any, ...], int] = defaultdict(int)
    for _id, row in rows:
        moment = dt.datetime.fromtimestamp(row["time"], dt.UTC)
        info = model_lookup(row["model"])
        assert info is not None
        price = shipped_price(model=info.model_id, on=moment.date(), speed=row["speed"])
        assert price is not None, row["model"]
        usage = Usage.from_api(row["usage"])
        card = pricing.usage_rate_card(usage=usage, price=price)
        geo = row["inference_geo"] if info.inference_geo else "not_available"
        day = bucket(row["time"], DAY)
        line = (row["model"], row["service_tier"], geo, row["speed"] == "fast")
        for token_type, count, rate in (
            ("uncached_input_tokens", usage.input_tokens, card.input),
            (
                "cache_creation.ephemeral_5m_input_tokens",
                usage.cache_creation_5m,
                card.cache_write_5m,
            ),
            (
                "cache_creation.ephemeral_1h_input_tokens",
                usage.cache_creation_1h,
                card.cache_write_1h,
            ),
            ("cache_read_input_tokens", usage.cache_read_input_tokens, card.cache_read),
            ("output_tokens", usage.output_tokens, card.output),
        ):
            if count:
                costs[(day, "tokens", token_type, *line)] += count * rate
        if usage.web_search_requests:
            costs[(day, "web_search", None, None, None, None, False)] += (
                usage.web_search_requests * card.web_search
            )
    return dict(costs)


def cents(picodollars: int) -> Decimal:
    return Decimal(picodollars).scaleb(-10)  # 1 cent = 10**10 picodollars


def test_cost_report_lines_are_the_price_table_applied_in_cents(
    emulator: EmulatorProcess, traffic: dict[str, Any]
) -> None:
    page = ok(
        get(
            emulator,
            COST,
            {
                "starting_at": traffic["starting_at"],
                "ending_at": traffic["ending_at"],
                "group_by[]": ["description"],
            },
        )
    )
    got: dict[tuple[Any, ...], Decimal] = {}
    for day in page["data"]:
        for r in day["results"]:
            assert r["currency"] == "USD" and r["workspace_id"] is None
            assert r["context_window"] in ("0-200k", None)
            assert isinstance(r["amount"], str) and "e" not in r["amount"].lower()
            fast = "Fast mode" in r["description"]
            where = (
                day["starting_at"],
                r["cost_type"],
                r["token_type"],
                r["model"],
                r["service_tier"],
                r["inference_geo"],
                fast,
            )
            assert where not in got, f"two lines for {where}"
            got[where] = Decimal(r["amount"])
    expected = {where: cents(pico) for where, pico in _expected_costs(traffic["rows"]).items()}
    assert got == expected
    descriptions = [r["description"] for d in page["data"] for r in d["results"]]
    assert "Claude Sonnet 4.6 Usage - Input Tokens" in descriptions
    assert "Claude Sonnet 4.6 Usage - Output Tokens (Batch)" in descriptions
    assert "Web Search" in descriptions
    assert page["data"][2]["results"] == []


def test_ungrouped_cost_is_one_total_a_day(
    emulator: EmulatorProcess, traffic: dict[str, Any]
) -> None:
    # No ending_at: up to the end of the emulator's current day (the second one), not the
    # default limit of 7 days.
    page = ok(
        get(emulator, COST, {"starting_at": traffic["starting_at"], "group_by[]": "workspace_id"})
    )
    per_day: dict[str, int] = defaultdict(int)
    for (day, *_line), pico in _expected_costs(traffic["rows"]).items():
        per_day[day] += pico
    got = {d["starting_at"]: [Decimal(r["amount"]) for r in d["results"]] for d in page["data"]}
    assert got == {day: [cents(per_day[day])] for day in traffic["days"][:2]}
    for d in page["data"]:
        for r in d["results"]:
            assert r["description"] is None and r["model"] is None and r["token_type"] is None


def test_cost_report_pages_by_day(emulator: EmulatorProcess, traffic: dict[str, Any]) -> None:
    query = {"starting_at": traffic["starting_at"], "ending_at": traffic["ending_at"], "limit": 1}
    first = ok(get(emulator, COST, query))
    assert len(first["data"]) == 1 and first["has_more"] is True
    second = ok(get(emulator, COST, {**query, "page": first["next_page"]}))
    assert second["data"][0]["starting_at"] == traffic["days"][1]


# -- who may read them, and bad parameters -----------------------------------------------------


@pytest.mark.parametrize("path", [USAGE, COST])
@pytest.mark.parametrize("key", [KEY_A, "sk-bad-key", None])
def test_only_an_admin_key_may_read_the_reports(
    emulator: EmulatorProcess, path: str, key: str | None
) -> None:
    response = get(emulator, path, {"starting_at": "2026-12-01T00:00:00Z"}, key=key)
    assert response.status == 401
    assert response.json["type"] == "error"
    assert response.json["error"]["type"] == "authentication_error"
    assert response.json["request_id"].startswith("req_")
    if key is not None:
        assert response.json["error"]["message"] == "invalid x-api-key"


def test_a_standard_key_is_refused_through_the_sdk(emulator: EmulatorProcess) -> None:
    with pytest.raises(anthropic.AuthenticationError):
        sdk(emulator, KEY_A).get(
            USAGE, cast_to=dict, options={"params": {"starting_at": "2026-12-01T00:00:00Z"}}
        )


def test_the_admin_key_prefix_is_a_setting(emulator: EmulatorProcess) -> None:
    emulator.configure(admin_key_prefix="sk-our-admin")
    query = {"starting_at": "2026-12-01T00:00:00Z"}
    assert get(emulator, USAGE, query).status == 401
    assert get(emulator, USAGE, query, key="sk-our-admin-1").status == 200
    emulator.reset()
    assert get(emulator, USAGE, query).status == 200


BAD_QUERIES = [
    (USAGE, {}, "starting_at"),
    (USAGE, {"starting_at": "yesterday"}, "starting_at"),
    (USAGE, {"starting_at": "2026-12-01T00:00:00"}, "starting_at"),  # no time zone
    (USAGE, {"ending_at": "2026-11-30T00:00:00Z"}, "ending_at"),
    (USAGE, {"bucket_width": "1w"}, "bucket_width"),
    (USAGE, {"limit": "0"}, "limit"),
    (USAGE, {"limit": "32"}, "limit"),  # 1d allows 31
    (USAGE, {"bucket_width": "1h", "limit": "169"}, "limit"),
    (USAGE, {"bucket_width": "1m", "limit": "many"}, "limit"),
    (USAGE, {"group_by[]": "colour"}, "group_by"),
    (USAGE, {"service_tiers[]": "gold"}, "service_tiers"),
    (USAGE, {"context_window[]": "1M"}, "context_window"),
    (USAGE, {"inference_geos[]": "eu"}, "inference_geos"),
    (USAGE, {"speeds[]": "fast"}, "speed"),  # without the fast-mode beta
    (USAGE, {"page": "page_bm90IGEgZGF0ZQ=="}, "page"),
    (USAGE, {"page": "2026-12-01T00:00:00Z"}, "page"),
    (USAGE, {"colour": "blue"}, "colour"),
    (COST, {}, "starting_at"),
    (COST, {"bucket_width": "1h"}, "bucket_width"),
    (COST, {"group_by[]": "model"}, "group_by"),
    (COST, {"limit": "32"}, "limit"),
    (COST, {"api_key_ids[]": "apikey_x"}, "api_key_ids"),
]


@pytest.mark.parametrize(("path", "query", "parameter"), BAD_QUERIES)
def test_bad_parameters_get_a_400_naming_the_parameter(
    emulator: EmulatorProcess, path: str, query: dict[str, Any], parameter: str
) -> None:
    if "starting_at" not in query and parameter != "starting_at":
        query = {"starting_at": "2026-12-01T00:00:00Z", **query}
    response = get(emulator, path, query)
    assert response.status == 400, response.json
    assert response.json["error"]["type"] == "invalid_request_error"
    assert response.json["error"]["message"].startswith(f"{parameter}:"), response.json


# -- llm_calls.client: usage_report / cost_report --------------------------------------------------


@pytest.fixture
def admin_settings(emulator: EmulatorProcess, settings) -> Iterator[EmulatorProcess]:
    settings.ANTHROPIC_BASE_URL = emulator.base_url
    settings.ANTHROPIC_API_KEY = KEY_A
    settings.ANTHROPIC_ADMIN_API_KEY = ADMIN
    yield emulator
    client.close_clients()


def test_the_client_reads_both_reports_with_the_admin_key(admin_settings: EmulatorProcess) -> None:
    emulator = admin_settings
    sdk(emulator, KEY_A).messages.create(
        model=MODEL, max_tokens=50, messages=user("hi [[emulator:output_tokens=7]]")
    )
    (row,) = emulator.ledger()["keys"][key_fingerprint(KEY_A)]["requests"]
    today = bucket(row["time"], DAY)

    usage = client.usage_report(
        query={"starting_at": today, "limit": 1, "group_by": ["api_key_id", "model"]}
    )
    assert usage.status == 200 and usage.billed is False
    assert usage.request_id is not None and usage.request_id.startswith("req_")
    (result,) = usage.value["data"][0]["results"]
    assert result["api_key_id"] == emulator.api_key_id(KEY_A)
    assert (result["model"], result["output_tokens"]) == (MODEL, 7)
    assert result["uncached_input_tokens"] == row["usage"]["input_tokens"]

    cost = client.cost_report(
        query={"starting_at": today, "limit": 1, "group_by[]": ["workspace_id"]}
    )
    (line,) = cost.value["data"][0]["results"]
    price = shipped_price(model=MODEL, on=dt.date.fromisoformat(today[:10]))
    assert price is not None
    card = pricing.usage_rate_card(usage=Usage.from_api(row["usage"]), price=price)
    assert Decimal(line["amount"]) == cents(card.cost_pico(usage=Usage.from_api(row["usage"])))

    # The admin client is apart: Claude calls still use the Claude key.
    assert client.get_client().api_key == KEY_A
    assert client.get_admin_client().api_key == ADMIN
    # The admin key is never hit by the Admin API's own ledger: reading reports bills nothing.
    assert key_fingerprint(ADMIN) not in emulator.ledger()["keys"]


def test_the_client_translates_a_refusal_and_redacts_the_admin_key(
    admin_settings: EmulatorProcess, settings
) -> None:
    settings.ANTHROPIC_ADMIN_API_KEY = KEY_B  # a standard key where the admin key belongs
    with pytest.raises(AttemptFailure) as caught:
        client.usage_report(query={"starting_at": "2026-12-01T00:00:00Z"})
    assert (caught.value.status, caught.value.error_type) == (401, "authentication_error")
    settings.ANTHROPIC_ADMIN_API_KEY = ADMIN
    with pytest.raises(AttemptFailure) as bad:
        client.cost_report(query={"starting_at": "2026-12-01T00:00:00Z", "bucket_width": "1h"})
    assert (bad.value.status, bad.value.error_type) == (400, "invalid_request_error")
    assert bad.value.message.startswith("bucket_width:")
    assert client.redact_secrets(f"oops {ADMIN} and {KEY_B}") == (
        "oops [redacted API key] and [redacted API key]"
    )


def test_without_an_admin_key_the_reports_are_improperly_configured(
    admin_settings: EmulatorProcess, settings
) -> None:
    settings.ANTHROPIC_ADMIN_API_KEY = ""
    with pytest.raises(ImproperlyConfigured, match="ANTHROPIC_ADMIN_API_KEY"):
        client.usage_report(query={"starting_at": "2026-12-01T00:00:00Z"})
