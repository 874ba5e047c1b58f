from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client

from llm_calls.types import Usage
from tests.usage.factories import at, make_user, record
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


def test_editing_a_price_in_the_admin_changes_the_next_call_cost(admin_client_: Client) -> None:
    user = make_user()
    first = record(user=user, model="claude-haiku-4-5", usage=Usage(1_000_000, 0))
    assert first.cost_usd == Decimal(1)
    price = ModelPrice.objects.get(model="claude-haiku-4-5", effective_from=dt.date(2026, 1, 1))
    response = admin_client_.post(
        f"/admin/usage/modelprice/{price.pk}/change/",
        {
            "model": "claude-haiku-4-5",
            "input_usd_per_mtok": "1.5",
            "output_usd_per_mtok": "5",
            "effective_from": "2026-01-01",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    second = record(user=user, model="claude-haiku-4-5", usage=Usage(1_000_000, 0))
    assert second.cost_usd == Decimal("1.5")


def test_a_price_finer_than_a_thousandth_is_refused_by_the_admin(admin_client_: Client) -> None:
    response = admin_client_.post(
        "/admin/usage/modelprice/add/",
        {
            "model": "claude-new",
            "input_usd_per_mtok": "1.0001",
            "output_usd_per_mtok": "5",
            "effective_from": "2026-01-01",
        },
    )
    assert response.status_code == 200
    assert "Ensure that there are no more than 3 decimal places." in response.content.decode()
    assert not ModelPrice.objects.filter(model="claude-new").exists()


def test_calls_without_a_price_are_repriced_once_a_price_exists(admin_client_: Client) -> None:
    user = make_user()
    when = at("2026-04-01")
    row = record(user=user, model="claude-future-1", usage=Usage(1000, 100), occurred_at=when)
    assert row.price_missing and row.cost_pico_usd == 0
    price = ModelPrice.objects.create(
        model="claude-future-1",
        effective_from=dt.date(2026, 3, 1),
        input_usd_per_mtok=Decimal(2),
        output_usd_per_mtok=Decimal(10),
    )
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
