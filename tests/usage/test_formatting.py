"""How every page and admin list prints money, counts and moments."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.template import Context, Template
from django.test import Client
from django.utils import timezone

from llm_calls.types import Usage
from tests.usage.factories import make_user, record
from usage.templatetags.usage_format import num, usd, when


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        (0, "$0.0000"),
        (None, "$0.0000"),
        (Decimal("0.00001234"), "$0.0000"),  # never "1.234E-5" nor twelve decimals
        (Decimal("0.000000000001"), "$0.0000"),
        (Decimal("0.00005"), "$0.0000"),  # half-even: exactly halfway rounds to the even digit
        (Decimal("0.00015"), "$0.0002"),
        ("0.006", "$0.0060"),
        (Decimal("1234.56785"), "$1,234.5678"),
        (Decimal("1234567.891"), "$1,234,567.8910"),
        (Decimal("-1234.5"), "-$1,234.5000"),
        (Decimal("-0.00001"), "$0.0000"),  # rounds to zero: no "-$0.0000"
        (3, "$3.0000"),
        (0.1 + 0.2, "$0.3000"),
    ],
)
def test_money_is_four_decimals_with_thousands_separators(
    amount: Decimal | str | int | float | None, shown: str
) -> None:
    assert usd(amount) == shown


@pytest.mark.parametrize(("count", "shown"), [(0, "0"), (999, "999"), (1234567, "1,234,567")])
def test_counts_have_thousands_separators(count: int, shown: str) -> None:
    assert num(count) == shown


MOMENT = dt.datetime(2026, 12, 6, 14, 5, 9, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("zone", "minutes", "seconds"),
    [
        ("UTC", "2026-12-06 14:05 UTC", "2026-12-06 14:05:09 UTC"),
        ("Europe/Paris", "2026-12-06 15:05 CET", "2026-12-06 15:05:09 CET"),
        ("America/New_York", "2026-12-06 09:05 EST", "2026-12-06 09:05:09 EST"),
    ],
)
def test_a_moment_is_shown_in_the_active_zone_with_its_abbreviation(
    zone: str, minutes: str, seconds: str
) -> None:
    with timezone.override(zoneinfo.ZoneInfo(zone)):
        assert when(MOMENT) == minutes
        assert when(MOMENT, "seconds") == seconds
        assert when(MOMENT.isoformat()) == minutes  # the string a JSON payload carries
        # a bare {{ value }} and the admin use DATETIME_FORMAT too: one format everywhere
        assert Template("{{ v }}").render(Context({"v": MOMENT})) == minutes


def test_no_moment_prints_nothing() -> None:
    assert when(None) == ""


@pytest.mark.django_db
@pytest.mark.urls("tests.usage.urls")
def test_admin_changelists_show_money_to_four_decimals_and_counts_grouped() -> None:
    admin = User.objects.create_superuser("root", "root@example.com", None)
    client = Client()
    client.force_login(admin)
    record(
        user=make_user(),
        occurred_at=MOMENT,
        # claude-sonnet-4-5 above 200k prompt tokens: $6/MTok in, $22.50 out -> $7.452402
        usage=Usage(1_234_567, 2_000),
    )
    html = client.get("/admin/usage/auditlog/").content.decode()
    cells = re.findall(r'<td class="field-(\w+)">([^<]*)</td>', html)
    shown = dict(cells)
    assert shown["cost"] == "$7.4524"
    assert shown["input_tokens"] == "1,234,567"
    assert shown["output_tokens"] == "2,000"
    assert "2026-12-06 14:05 UTC" in html

    prices = client.get("/admin/usage/modelprice/?q=claude-sonnet-4-5").content.decode()
    rates = re.findall(r'<td class="field-input_usd_per_mtok">([^<]*)</td>', prices)
    assert rates and all(re.fullmatch(r"\$[\d,]+\.\d{4}", r) for r in rates), rates
    assert "$3.0000" in rates

    daily = client.get("/admin/usage/usagedaily/").content.decode()
    assert '<td class="field-input_tokens">1,234,567</td>' in daily
    assert '<td class="field-cost">$7.4524</td>' in daily
