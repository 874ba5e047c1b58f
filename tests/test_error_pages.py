"""Pages a person reaches by a wrong link: styled, in the site's frame, saying what happened."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.usage.factories import make_user

pytestmark = pytest.mark.django_db


def test_a_missing_page_is_the_sites_404_not_djangos(settings) -> None:
    settings.DEBUG = False
    client = Client()
    client.force_login(make_user("alice"))
    response = client.get("/queue/requests/999999/")
    page = response.content.decode()
    assert response.status_code == 404
    assert "<h1>Not found</h1>" in page and 'href="/queue/"' in page
    assert "favicon.svg" in page  # the site's own frame


def test_a_forbidden_page_is_the_sites_403_saying_why(settings) -> None:
    settings.DEBUG = False
    client = Client()
    client.force_login(make_user("bob"))
    response = client.get("/usage/users/")  # staff only
    page = response.content.decode()
    assert response.status_code == 403
    assert "<h1>Not allowed</h1>" in page and "Staff only." in page


def test_the_favicon_is_served() -> None:
    assert Client().get("/static/favicon.svg").status_code == 200
