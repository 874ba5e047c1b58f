"""``manage.py prices``: export, load (checked whole, atomic), table; and the shipped sheet."""

from __future__ import annotations

import datetime as dt
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from llm_calls.catalog import DEFAULT_MODELS
from llm_calls.types import Usage
from tests.usage.factories import at, make_price, make_user, record
from usage import price_sheets, services
from usage.models import AuditLog, ModelPrice, PriceBand, Speed, UsageDaily

DOCS = Path(settings.BASE_DIR) / "docs" / "pricing.md"


def run(*args: str, stdin: str | None = None, monkeypatch: pytest.MonkeyPatch | None = None) -> str:
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    out = io.StringIO()
    call_command("prices", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def sheet(*rows: dict) -> str:
    return json.dumps({"sheet": "test", "prices": list(rows)})


def row(**overrides) -> dict:
    data: dict[str, Any] = {
        "model": "claude-next-6",
        "speed": "standard",
        "effective_from": "2026-11-01",
        "effective_until": None,
        "input": "2",
        "cache_write_5m": "2.50",
        "cache_write_1h": "4",
        "cache_read": "0.10",
        "output": "10",
        "web_search_per_1k": "10",
        "note": "test",
        "bands": [],
    }
    data.update(overrides)
    return data


def test_docs_pricing_md_is_what_prices_table_prints_for_the_shipped_sheet() -> None:
    assert DOCS.read_text(encoding="utf-8") == run("table"), (
        "docs/pricing.md is stale: run `python manage.py prices table > docs/pricing.md`"
    )


# No price was found for these (fact-check of 2026-12-02): their calls are flagged unpriced and
# staff alerted, never billed at a guess, until an admin adds the price.
UNPRICED_ON_PURPOSE = {"claude-mythos-5-2", "claude-mythos-preview"}


def test_the_shipped_sheet_prices_every_model_of_the_catalog() -> None:
    day = dt.date(2026, 12, 1)
    missing = {
        model for model in DEFAULT_MODELS if price_sheets.shipped_price(model=model, on=day) is None
    }
    assert missing == UNPRICED_ON_PURPOSE
    for model, info in DEFAULT_MODELS.items():
        if info.fast_mode and model not in UNPRICED_ON_PURPOSE:
            assert price_sheets.shipped_price(model=model, on=day, speed="fast") is not None, model
    sonnet = [r for r in price_sheets.shipped_rows() if r.model == "claude-sonnet-5-5"]
    assert [(r.effective_from, r.rates.cache_read) for r in sonnet] == [
        (dt.date(2026, 9, 28), Decimal("0.20")),
        (dt.date(2026, 10, 7), Decimal("0.10")),
    ]
    (haiku,) = [r for r in price_sheets.shipped_rows() if r.model == "claude-haiku-5-5"]
    assert [(b.above_prompt_tokens, b.rates.output) for b in haiku.bands] == [
        (100_000, Decimal("2.50"))
    ]


@pytest.mark.django_db
def test_the_database_holds_the_shipped_sheet() -> None:
    stored = {(r.key, r.rates, r.bands) for r in services.price_rows()}
    shipped = {(r.key, r.rates, r.bands) for r in price_sheets.shipped_rows()}
    assert shipped <= stored


@pytest.mark.django_db
def test_export_then_load_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    call_command("prices", "export", str(path), stdout=io.StringIO(), stderr=io.StringIO())
    exported = json.loads(path.read_text())
    assert len(exported["prices"]) == ModelPrice.objects.count()
    (haiku,) = [p for p in exported["prices"] if p["model"] == "claude-haiku-5-5"]
    assert haiku["bands"][0]["above_prompt_tokens"] == 100_000
    before = services.price_rows()
    bands = PriceBand.objects.count()
    assert bands == 3  # Haiku 5.5's, and the long-context bands of Sonnet 4.5 and 4
    out = run("load", str(path))
    n = ModelPrice.objects.count()
    assert out.startswith(
        f"loaded {n} price row(s) from {path}: 0 created, {n} updated, {bands} band(s)"
    )
    assert services.price_rows() == before
    assert PriceBand.objects.count() == bands


@pytest.mark.django_db
def test_export_to_stdout_and_load_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    assert json.loads(run("export", "-"))["prices"]
    out = run("load", "-", stdin=sheet(row()), monkeypatch=monkeypatch)
    assert out.startswith("loaded 1 price row(s) from stdin: 1 created, 0 updated, 0 band(s)")
    price = services.price_for(model="claude-next-6", on=dt.date(2026, 11, 2))
    assert price is not None and price.rates.cache_read == Decimal("0.10")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [row(), row(model="claude-bad", cache_read="-0.1")],
            "prices[1] (claude-bad): field 'cache_read' must be a non-negative number",
        ),
        ([row(output="0.0001")], "field 'output' = 0.0001 has more than 3 decimal places"),
        ([row(input=None)], "field 'input' must be a decimal string"),
        (
            [{k: v for k, v in row().items() if k != "cache_write_1h"}],
            "field 'cache_write_1h' is missing",
        ),
        ([row(speed="turbo")], "field 'speed' must be one of standard, fast"),
        ([row(effective_until="2026-10-01")], "field 'effective_until' (2026-10-01) must be after"),
        (
            [row(bands=[{"above_prompt_tokens": 0}])],
            "bands[0]: field 'above_prompt_tokens' must be a positive",
        ),
        ([row(colour="red")], "unknown field(s) 'colour'"),
        (
            [row(effective_until="2026-12-01"), row(effective_from="2026-11-15")],
            "prices[0] claude-next-6 (standard) from 2026-11-01 until 2026-12-01: field "
            "'effective_until' overlaps prices[1] claude-next-6 (standard) from 2026-11-15",
        ),
        ([row(), row()], "prices[1] (claude-next-6): field 'effective_from' repeats prices[0]"),
    ],
)
@pytest.mark.django_db
def test_a_bad_file_names_the_row_and_field_and_writes_nothing(
    tmp_path: Path, rows: list[dict], message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(sheet(*rows))
    count = ModelPrice.objects.count()
    with pytest.raises(CommandError) as raised:
        run("load", str(path))
    assert message in str(raised.value)
    assert "Nothing was written." in str(raised.value)
    assert ModelPrice.objects.count() == count
    assert not ModelPrice.objects.filter(model="claude-next-6").exists()


@pytest.mark.django_db
def test_a_file_overlapping_a_stored_row_is_refused_naming_it(tmp_path: Path) -> None:
    stored = make_price("claude-next-6", "2026-10-01", "1", "5", effective_until="2026-12-01")
    path = tmp_path / "overlap.json"
    path.write_text(sheet(row(model="claude-other"), row(effective_from="2026-11-01")))
    with pytest.raises(
        CommandError, match=rf"overlaps .*\(row #{stored.pk}\)|\(row #{stored.pk}\) overlaps"
    ):
        run("load", str(path))
    assert not ModelPrice.objects.filter(model="claude-other").exists()  # all or nothing


@pytest.mark.django_db(transaction=True)
def test_load_reprices_unpriced_calls_and_says_so(tmp_path: Path) -> None:
    services.prices_seed_defaults()
    user = make_user()
    unpriced = record(
        user=user, model="claude-next-6", usage=Usage(1000, 100), occurred_at=at("2026-11-05")
    )
    assert unpriced.price_missing
    path = tmp_path / "next.json"
    path.write_text(
        sheet(
            row(
                bands=[
                    {
                        "above_prompt_tokens": 500,
                        "input": "3",
                        "cache_write_5m": "3.75",
                        "cache_write_1h": "6",
                        "cache_read": "0.3",
                        "output": "15",
                    }
                ]
            )
        )
    )
    out = run("load", str(path))
    assert "1 created, 0 updated, 1 band(s); re-priced 1 unpriced call(s), 0 still unpriced" in out
    unpriced.refresh_from_db()
    # prompt 1,000 > 500: the band on every token: 1000*3 + 100*15 = 4500 per M -> $0.0045
    assert (unpriced.cost_usd, unpriced.price_band, unpriced.price_missing) == (
        Decimal("0.0045"),
        500,
        False,
    )
    assert UsageDaily.objects.get().cost_usd == Decimal("0.0045")
    assert AuditLog.objects.get().speed == Speed.STANDARD


def test_table_of_another_sheet(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(
        sheet(
            row(
                bands=[
                    {
                        "above_prompt_tokens": 200000,
                        "input": "4",
                        "cache_write_5m": "5",
                        "cache_write_1h": "8",
                        "cache_read": "0.4",
                        "output": "20",
                    }
                ]
            )
        )
    )
    table = run("table", str(path))
    assert (
        "| claude-next-6 | standard | 2026-11-01 |  | ≤ 200,000 | 2.00 | 2.50 | 4.00 | 0.10 | 10.00 | 10.00 | test |"
        in table
    )
    assert (
        "| claude-next-6 | standard | 2026-11-01 |  | > 200,000 | 4.00 | 5.00 | 8.00 | 0.40 | 20.00 | 10.00 | test |"
        in table
    )
