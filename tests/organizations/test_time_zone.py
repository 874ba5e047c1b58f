"""A person's time zone: chosen on Settings, refused when unknown, used on every page."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from organizations.models import UserPreferences
from organizations.selectors import time_zone_of
from tests.usage.factories import make_user, record
from usage import services as usage_services

pytestmark = pytest.mark.django_db

# 14:05:09 UTC on a winter day: 09:05:09 in New York (EST), 15:05:09 in Paris (CET)
CALLED_AT = dt.datetime(2026, 1, 15, 14, 5, 9, tzinfo=dt.UTC)


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def priced() -> None:
    """The shipped price sheet, so the recorded calls are priced (no unpriced-model notice)."""
    usage_services.prices_seed_defaults()


def session_page_for(user: User) -> str:
    record(user=user, session_id="tz-1", occurred_at=CALLED_AT)
    page = client_for(user).get("/usage/sessions/tz-1/")
    assert page.status_code == 200
    return page.content.decode()


def test_a_user_in_new_york_sees_their_calls_in_new_york_time(priced: None) -> None:
    user = make_user("nyc")
    answer = client_for(user).post("/settings/", {"time_zone": "America/New_York"})
    assert answer.status_code == 302

    html = session_page_for(user)
    assert "2026-01-15 09:05:09 EST" in html
    assert "14:05:09" not in html


def test_a_user_who_chose_nothing_sees_utc(priced: None) -> None:
    UserPreferences.objects.create(user=make_user("paris"), time_zone="Europe/Paris")
    html = session_page_for(make_user("default"))
    assert "2026-01-15 14:05:09 UTC" in html
    assert "CET" not in html


def test_the_zone_does_not_leak_into_the_next_request(priced: None) -> None:
    """The middleware deactivates after each response: the thread's next reader gets theirs."""
    paris = make_user("paris")
    UserPreferences.objects.create(user=paris, time_zone="Europe/Paris")
    assert "2026-01-15 15:05:09 CET" in session_page_for(paris)
    assert timezone.get_current_timezone_name() == "UTC"
    assert "2026-01-15 14:05:09 UTC" in session_page_for(make_user("other"))


def test_settings_shows_the_current_choice_and_is_in_the_navigation() -> None:
    user = make_user("chooser")
    UserPreferences.objects.create(user=user, time_zone="Asia/Tokyo")
    html = client_for(user).get("/settings/").content.decode()
    assert 'value="Asia/Tokyo"' in html
    assert 'href="/settings/"' in html
    assert '<option value="America/New_York">' in html


@pytest.mark.parametrize("bad", ["Mars/Olympus_Mons", "EST5EDT; DROP", "utc/", " "])
def test_an_unknown_zone_is_refused_by_name_and_nothing_is_saved(bad: str) -> None:
    user = make_user("typo")
    UserPreferences.objects.create(user=user, time_zone="Europe/Paris")
    answer = client_for(user).post("/settings/", {"time_zone": bad})
    assert answer.status_code == 400
    html = answer.content.decode()
    assert 'data-error-for="time_zone"' in html
    if bad.strip():
        assert "is not a time zone we know" in html
        assert bad.split(";")[0] in html
    assert UserPreferences.objects.get(user=user).time_zone == "Europe/Paris"


def test_an_unknown_zone_creates_no_preferences_row() -> None:
    user = make_user("first-visit")
    client_for(user).post("/settings/", {"time_zone": "Atlantis/Capital"})
    assert not UserPreferences.objects.filter(user=user).exists()
    assert time_zone_of(user=user) == "UTC"


def test_settings_needs_a_login() -> None:
    answer = Client().get("/settings/")
    assert answer.status_code == 302
    assert answer["Location"].startswith("/accounts/login/")


def test_json_keeps_iso_8601_with_its_offset(priced: None) -> None:
    user = make_user("api-reader")
    UserPreferences.objects.create(user=user, time_zone="America/New_York")
    record(user=user, session_id="tz-1", occurred_at=CALLED_AT)
    calls = client_for(user).get("/usage/api/sessions/tz-1/calls.json").json()["calls"]
    assert [c["occurred_at"] for c in calls] == ["2026-01-15T14:05:09+00:00"]
