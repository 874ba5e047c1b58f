from __future__ import annotations

import datetime as dt
from decimal import Decimal
from html import unescape
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from llm_calls.types import Usage
from tests.usage.factories import at, make_price, make_user, record
from tests.usage.world import World, build_world
from usage import services
from usage.models import AuditLog, ModelPrice, OrganizationUsageDaily, SessionUsage, UsageDaily

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.usage.urls")]


@pytest.fixture
def admin_client_() -> Client:
    admin = User.objects.create_superuser("root", "root@example.com", None)
    client = Client()
    client.force_login(admin)
    return client


def test_audit_log_is_read_only_in_the_admin(admin_client_: Client) -> None:
    world: World = build_world()
    row = AuditLog.objects.filter(user=world.alice).order_by("occurred_at").first()
    assert row is not None
    changelist = admin_client_.get("/admin/usage/auditlog/?outcome__exact=1")
    assert changelist.status_code == 200
    assert "claude-sonnet-4-5" in changelist.content.decode()
    assert admin_client_.get("/admin/usage/auditlog/?q=s-a").status_code == 200
    assert admin_client_.get("/admin/usage/auditlog/?model=claude-haiku-4-5").status_code == 200
    detail = admin_client_.get(f"/admin/usage/auditlog/{row.pk}/change/")
    assert detail.status_code == 200
    assert 'name="_save"' not in detail.content.decode()
    assert admin_client_.get("/admin/usage/auditlog/add/").status_code == 403
    assert admin_client_.post(f"/admin/usage/auditlog/{row.pk}/delete/").status_code == 403
    admin_client_.post(f"/admin/usage/auditlog/{row.pk}/change/", {"input_tokens": 1})
    row.refresh_from_db()
    assert row.input_tokens == 1000
    assert AuditLog.objects.count() == 5


def test_rollup_admin_pages_and_per_user_summary_load(admin_client_: Client) -> None:
    build_world()
    for url in (
        "/admin/usage/usagedaily/",
        "/admin/usage/sessionusage/",
        "/admin/usage/organizationusagedaily/",
        "/admin/usage/modelprice/",
    ):
        assert admin_client_.get(url).status_code == 200, url
    summary = admin_client_.get("/admin/usage/usagedaily/users/?start=2026-03-01&end=2026-03-03")
    html = summary.content.decode()
    assert summary.status_code == 200
    assert "alice" in html and "$0.0206" in html and "$0.0765" in html
    bad = admin_client_.get("/admin/usage/usagedaily/users/?days=nope")
    assert "days=&#x27;nope&#x27; is not a whole number of days." in bad.content.decode()
    assert admin_client_.get("/admin/usage/usagedaily/add/").status_code == 403


def test_non_staff_cannot_open_the_admin_summary() -> None:
    client = Client()
    client.force_login(make_user())
    assert client.get("/admin/usage/usagedaily/users/").status_code == 302


def price_form(**overrides: Any) -> dict[str, Any]:
    """The admin's add/change form for a price row, with an empty band inline."""
    data: dict[str, Any] = {
        "model": "claude-new",
        "speed": "1",
        "effective_from": "2026-01-01",
        "effective_until": "",
        "input_usd_per_mtok": "1",
        "cache_write_5m_usd_per_mtok": "1.25",
        "cache_write_1h_usd_per_mtok": "2",
        "cache_read_usd_per_mtok": "0.1",
        "output_usd_per_mtok": "5",
        "web_search_usd_per_1k": "10",
        "note": "",
        "bands-TOTAL_FORMS": "0",
        "bands-INITIAL_FORMS": "0",
        "bands-MIN_NUM_FORMS": "0",
        "bands-MAX_NUM_FORMS": "1000",
    }
    bands = overrides.pop("bands", [])
    data.update(overrides)
    data["bands-TOTAL_FORMS"] = str(len(bands))
    for i, band in enumerate(bands):
        for key, value in band.items():
            data[f"bands-{i}-{key}"] = value
    return data


def band(threshold: int | str, rate: str = "1") -> dict[str, Any]:
    return {
        "above_prompt_tokens": str(threshold),
        "input_usd_per_mtok": rate,
        "cache_write_5m_usd_per_mtok": rate,
        "cache_write_1h_usd_per_mtok": rate,
        "cache_read_usd_per_mtok": rate,
        "output_usd_per_mtok": rate,
    }


def errors(response) -> str:
    assert response.status_code == 200, "expected the form back with errors"
    return unescape(response.content.decode())


def test_editing_a_price_in_the_admin_changes_the_next_call_cost(admin_client_: Client) -> None:
    user = make_user()
    first = record(user=user, model="claude-haiku-4-5", usage=Usage(1_000_000, 0))
    assert first.cost_usd == Decimal(1)
    price = ModelPrice.objects.get(model="claude-haiku-4-5", effective_from=dt.date(2026, 1, 1))
    response = admin_client_.post(
        f"/admin/usage/modelprice/{price.pk}/change/",
        price_form(model="claude-haiku-4-5", input_usd_per_mtok="1.5"),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    second = record(user=user, model="claude-haiku-4-5", usage=Usage(1_000_000, 0))
    assert second.cost_usd == Decimal("1.5")


def test_a_price_finer_than_a_thousandth_is_refused_by_the_admin(admin_client_: Client) -> None:
    response = admin_client_.post(
        "/admin/usage/modelprice/add/", price_form(cache_read_usd_per_mtok="0.0001")
    )
    assert "Ensure that there are no more than 3 decimal places." in errors(response)
    assert not ModelPrice.objects.filter(model="claude-new").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"output_usd_per_mtok": "-1"}, "Ensure this value is greater than or equal to 0."),
        ({"web_search_usd_per_1k": "-10"}, "Ensure this value is greater than or equal to 0."),
        (
            {"effective_until": "2026-01-01"},
            "Must be after effective from (2026-01-01).",
        ),
        ({"bands": [band(0)]}, "Ensure this value is greater than or equal to 1."),
        ({"bands": [band(1000, "-0.5")]}, "Ensure this value is greater than or equal to 0."),
        (
            {"bands": [band(1000), band(1000, "2")]},
            "Please correct the duplicate data for above_prompt_tokens",
        ),
    ],
)
def test_the_admin_refuses_prices_that_cannot_be(
    admin_client_: Client, overrides: dict[str, Any], message: str
) -> None:
    response = admin_client_.post("/admin/usage/modelprice/add/", price_form(**overrides))
    assert message in errors(response)
    assert not ModelPrice.objects.filter(model="claude-new").exists()


def test_overlapping_date_ranges_are_refused_naming_the_other_row(admin_client_: Client) -> None:
    january = make_price("claude-new", "2026-01-01", "1", "5", effective_until="2026-02-01")
    response = admin_client_.post(
        "/admin/usage/modelprice/add/", price_form(effective_from="2026-01-15")
    )
    assert (
        f"claude-new (standard) from 2026-01-01 until 2026-02-01 (row #{january.pk}) overlaps "
        "this price" in errors(response)
    )
    # starting before it and running into it is an overlap too
    response = admin_client_.post(
        "/admin/usage/modelprice/add/",
        price_form(effective_from="2025-12-01", effective_until="2026-01-10"),
    )
    assert f"(row #{january.pk})" in errors(response)
    # the same dates at the other speed, and a row starting where it ends, are fine
    for overrides in (
        {"effective_from": "2026-01-15", "speed": "2"},
        {"effective_from": "2026-02-01"},
    ):
        response = admin_client_.post("/admin/usage/modelprice/add/", price_form(**overrides))
        assert response.status_code == 302, errors(response)[:3000]
    assert ModelPrice.objects.filter(model="claude-new").count() == 3


def test_adding_a_price_with_a_band_in_the_admin_reprices_unpriced_calls(
    admin_client_: Client, django_capture_on_commit_callbacks
) -> None:
    user = make_user()
    small = record(
        user=user, model="claude-new", usage=Usage(1000, 100), occurred_at=at("2026-04-01")
    )
    big = record(
        user=user, model="claude-new", usage=Usage(3000, 100), occurred_at=at("2026-04-01")
    )
    assert small.price_missing and big.price_missing
    page = admin_client_.get("/admin/usage/modelprice/").content.decode()
    assert "No price on file for claude-new: 2 call(s)" in page
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(
            "/admin/usage/modelprice/add/",
            price_form(effective_from="2026-03-01", bands=[band(2000, "3")]),
        )
    assert response.status_code == 302, errors(response)[:3000]
    small.refresh_from_db()
    big.refresh_from_db()
    # 1000*1 + 100*5 = 1500 per M -> $0.0015 (prompt 1,000: base rates)
    assert (small.cost_usd, small.price_missing, small.price_band) == (Decimal("0.0015"), False, 0)
    # prompt 3,000 > 2,000: every token at $3: 3000*3 + 100*3 = 9300 per M -> $0.0093
    assert (big.cost_usd, big.price_missing, big.price_band) == (Decimal("0.0093"), False, 2000)
    # 0.0015 + 0.0093 = 0.0108
    assert UsageDaily.objects.get(user=user).cost_usd == Decimal("0.0108")
    assert admin_client_.get("/admin/usage/unpricedmodel/").status_code == 200
    assert "No price on file" not in admin_client_.get("/admin/usage/modelprice/").content.decode()


def test_calls_without_a_price_are_repriced_once_a_price_exists(admin_client_: Client) -> None:
    user = make_user()
    when = at("2026-04-01")
    row = record(user=user, model="claude-future-1", usage=Usage(1000, 100), occurred_at=when)
    assert row.price_missing and row.cost_pico_usd == 0
    price = make_price("claude-future-1", "2026-03-01", "2", "10")
    response = admin_client_.post(
        "/admin/usage/modelprice/",
        {"action": "reprice_missing", "_selected_action": [price.pk]},
    )
    assert response.status_code == 302
    row.refresh_from_db()
    # 1000*2 + 100*10 = 3000 per M -> 0.003
    assert (row.cost_usd, row.price_missing) == (Decimal("0.003"), False)
    daily = UsageDaily.objects.get(user=user)
    assert (daily.cost_usd, daily.price_missing, daily.requests) == (Decimal("0.003"), 0, 1)
    assert SessionUsage.objects.get(user=user).cost_usd == Decimal("0.003")
    assert OrganizationUsageDaily.objects.get().uncached_cost_usd == Decimal("0.003")
    again = services.reprice_missing_calls()
    assert (again.repriced, again.still_missing) == (0, 0)
    assert UsageDaily.objects.get(user=user).cost_usd == Decimal("0.003")
