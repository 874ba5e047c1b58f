"""The demo's organization admin: seeded with a login that works, printed in the banner, and
shown Acme Legal's figures only although the demo has three organizations."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client

from llm_calls.types import Usage
from organizations.models import Membership, Organization
from ratelimit_project import demo
from tests.usage.factories import record

pytestmark = pytest.mark.django_db


@pytest.fixture
def logins(settings, tmp_path: Path) -> demo.Logins:
    settings.VAR_DIR = tmp_path  # the demo keeps its generated passwords under VAR_DIR/demo
    return demo.demo_data_ensure()


def test_the_demo_seeds_an_org_admin_who_sees_only_their_organization(logins) -> None:
    membership = Membership.objects.select_related("organization").get(user__username="kim")
    assert membership.role == Membership.Role.ADMIN
    assert membership.organization.name == "Acme Legal"
    assert not membership.user.is_staff
    assert Organization.objects.count() == 3  # the others exist, so "nowhere" means something
    for spec in demo.ORGANIZATIONS[1:]:
        org = Organization.objects.get(name=spec.name)
        for user in spec.users[:2]:
            record(
                user=User.objects.get(username=user.username),
                org=org,
                session_id=f"{user.username}-secret-session",
                usage=Usage(input_tokens=50_000, output_tokens=5_000),
            )
    acme = membership.organization
    record(user=User.objects.get(username="alice"), org=acme)

    client = Client()
    assert client.login(username="kim", password=logins.user_password)
    landing = client.get("/org/")
    assert landing["Location"] == f"/org/{acme.pk}/"
    pages = [f"/org/{acme.pk}/", f"/org/{acme.pk}/members/", f"/org/{acme.pk}/keys/"]
    html = "".join(client.get(path).content.decode() for path in pages)
    assert "alice" in html and "carol" in html
    others = [u.username for spec in demo.ORGANIZATIONS[1:] for u in spec.users]
    others += [spec.name for spec in demo.ORGANIZATIONS[1:]]
    assert not [name for name in others if name in html]
    assert (
        client.get(f"/org/{Organization.objects.get(name='Globex Support').pk}/").status_code == 404
    )


def test_seeding_again_keeps_the_admin_an_admin(logins) -> None:
    Membership.objects.filter(user__username="kim").update(role=Membership.Role.MEMBER)
    again = demo.demo_data_ensure()
    assert again.user_password == logins.user_password
    assert Membership.objects.get(user__username="kim").role == Membership.Role.ADMIN


def test_the_banner_prints_the_org_admins_login(logins) -> None:
    out = io.StringIO()
    demo._print_urls(out=out, base="http://127.0.0.1:8000", logins=logins)
    text = out.getvalue()
    assert f"org admin kim / {logins.user_password}  (admin of Acme Legal only" in text
    assert "http://127.0.0.1:8000/org/" in text
