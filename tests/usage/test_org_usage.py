"""An organization's usage as its admin reads it: the staff selectors, scoped to the rows billed
to the organization, behind ``?org=<id>`` on the JSON and CSV and the pages under /org/<id>/."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client

from llm_calls.types import Usage
from organizations.models import Membership
from tests.organizations.world import ACME_SESSION, GLOBEX_SESSION, MODEL, TwoOrgs, build_two_orgs
from tests.usage.factories import at, record
from usage import selectors
from usage.forms import DateRange
from usage.models import AuditLog
from usage.pricing import pico_to_usd
from usage.templatetags.usage_format import usd

pytestmark = pytest.mark.django_db

EARLY = DateRange(at("2026-01-01").date(), at("2026-01-31").date())


@pytest.fixture
def world() -> TwoOrgs:
    return build_two_orgs()


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def cost_of(**filters) -> Decimal:
    rows = AuditLog.objects.filter(**filters).values_list("cost_pico_usd", flat=True)
    return pico_to_usd(sum(rows))


def csv_rows(response) -> list[dict[str, str]]:
    assert response["Content-Type"].startswith("text/csv"), response.content[:200]
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.fixture
def moved(world: TwoOrgs):
    """carla worked for Globex in January (billed to it), then joined Acme."""
    carla = Membership.objects.create(
        user=User.objects.create_user("carla"), organization=world.globex
    ).user
    record(
        user=carla,
        org=world.globex,
        session_id="carla-at-globex",
        model=MODEL,
        occurred_at=at("2026-01-10"),
        usage=Usage(input_tokens=700_000, output_tokens=1_000),
    )
    Membership.objects.filter(user=carla).update(organization=world.acme)
    record(
        user=carla,
        org=world.acme,
        session_id="carla-at-acme",
        model=MODEL,
        occurred_at=at("2026-01-20"),
        usage=Usage(input_tokens=1_000, output_tokens=100),
    )
    return carla


# --- the selectors, scoped --------------------------------------------------------------------


def test_scoped_selectors_count_only_the_organizations_rows(world: TwoOrgs, moved) -> None:
    acme = world.acme.pk
    totals = selectors.usage_summary(user_id=None, date_range=EARLY, organization_id=acme)
    assert totals.cost_usd == cost_of(organization=world.acme, occurred_at__lt=at("2026-02-01"))
    # carla's own figures within Acme leave out what Globex was billed for her
    mine = selectors.usage_summary(user_id=moved.pk, date_range=EARLY, organization_id=acme)
    assert mine.cost_usd == cost_of(user=moved, organization=world.acme)
    assert mine.cost_usd < selectors.usage_summary(user_id=moved.pk, date_range=EARLY).cost_usd
    sessions = selectors.sessions_for_user(user_id=moved.pk, date_range=EARLY, organization_id=acme)
    assert [s.session_id for s in sessions.items] == ["carla-at-acme"]
    assert (
        selectors.session_for_user(
            user_id=moved.pk, session_id="carla-at-globex", organization_id=acme
        )
        is None
    )
    users = selectors.users_page(date_range=EARLY, organization_id=world.globex.pk)
    assert [u.username for u in users.items] == ["carla"]
    audit = list(selectors.iter_audit_rows(user_id=None, date_range=EARLY, organization_id=acme))
    assert [row["session_id"] for row in audit] == ["carla-at-acme"]


# --- JSON and CSV with ?org= ----------------------------------------------------------------------


def test_an_admin_reads_their_organization_as_json(world: TwoOrgs) -> None:
    client = client_for(world.ada)
    acme = world.acme.pk
    summary = client.get(f"/usage/api/summary.json?org={acme}").json()
    assert summary["organization_id"] == acme and summary["user_id"] is None
    assert Decimal(summary["totals"]["cost_usd"]) == cost_of(organization=world.acme)
    users = client.get(f"/usage/api/users.json?org={acme}").json()["users"]
    assert {u["username"] for u in users} == {"alice", "acme-helpdesk"}
    one = client.get(f"/usage/api/sessions.json?org={acme}&user={world.alice.pk}").json()
    assert [s["session_id"] for s in one["sessions"]] == [ACME_SESSION]
    calls = client.get(
        f"/usage/api/sessions/{ACME_SESSION}/calls.json?org={acme}&user={world.alice.pk}"
    ).json()
    assert len(calls["calls"]) == 1


def test_the_organizations_exports_hold_its_rows_only(world: TwoOrgs) -> None:
    client = client_for(world.ada)
    acme = world.acme.pk
    audit = csv_rows(client.get(f"/usage/export/audit.csv?org={acme}"))
    assert {r["organization_id"] for r in audit} == {str(acme)}
    assert GLOBEX_SESSION not in {r["session_id"] for r in audit}
    users = csv_rows(client.get(f"/usage/api/users.json?org={acme}&format=csv"))
    assert {r["username"] for r in users} == {"alice", "acme-helpdesk"}
    days = csv_rows(client.get(f"/usage/api/daily.json?org={acme}&format=csv"))
    assert sum(Decimal(d["cost_usd"]) for d in days) == cost_of(organization=world.acme)


@pytest.mark.parametrize(
    "path",
    [
        "/usage/api/summary.json?org={globex}",
        "/usage/api/daily.json?org={globex}&format=csv",
        "/usage/api/users.json?org={globex}",
        "/usage/api/sessions.json?org={acme}&user={boris}",
        "/usage/api/sessions/" + GLOBEX_SESSION + "/calls.json?org={acme}&user={boris}",
    ],
)
def test_another_organization_answers_404_in_json(world: TwoOrgs, path: str) -> None:
    url = path.format(globex=world.globex.pk, acme=world.acme.pk, boris=world.boris.pk)
    response = client_for(world.ada).get(url)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


def test_another_organizations_audit_export_is_404(world: TwoOrgs) -> None:
    client = client_for(world.ada)
    assert client.get(f"/usage/export/audit.csv?org={world.globex.pk}").status_code == 404
    named = client.get(f"/usage/export/audit.csv?org={world.acme.pk}&user={world.boris.pk}")
    assert named.status_code == 404


def test_a_member_is_refused_their_organizations_figures(world: TwoOrgs) -> None:
    client = client_for(world.alice)
    refused = client.get(f"/usage/api/summary.json?org={world.acme.pk}")
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "permission_error"
    assert client.get(f"/usage/export/audit.csv?org={world.acme.pk}").status_code == 403
    # their own figures are as before
    assert client.get("/usage/api/summary.json").json()["user_id"] == world.alice.pk


def test_the_org_admins_gateway_key_reads_the_organization_too(world: TwoOrgs) -> None:
    from queueing.auth import api_token_create

    _, raw = api_token_create(user=world.ada, name="ada's reports")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    body = client.get(f"/usage/api/summary.json?org={world.acme.pk}").json()
    assert Decimal(body["totals"]["cost_usd"]) == cost_of(organization=world.acme)
    globex = client.get(f"/usage/api/summary.json?org={world.globex.pk}")
    assert globex.status_code == 404


# --- the pages ------------------------------------------------------------------------------------


def test_the_organization_usage_page(world: TwoOrgs) -> None:
    page = client_for(world.ada).get(f"/org/{world.acme.pk}/")
    html = page.content.decode()
    assert page.status_code == 200
    assert (
        f'data-stat="cost_usd" title="{cost_of(organization=world.acme).normalize():f} USD"' in html
    )
    assert f'data-user="{world.alice.pk}"' in html and f'data-user="{world.helpdesk.pk}"' in html
    assert "/usage/api/daily.json?" in html and f"org={world.acme.pk}" in html
    assert "/usage/export/audit.csv?" in html
    for secret in world.globex_secrets:
        assert secret not in html, secret


def test_a_members_page_and_session_as_the_admin_sees_them(world: TwoOrgs, moved) -> None:
    client = client_for(world.ada)
    acme = world.acme.pk
    page = client.get(f"/org/{acme}/users/{moved.pk}/?start=2026-01-01&end=2026-01-31")
    html = page.content.decode()
    assert page.status_code == 200
    assert 'data-session="carla-at-acme"' in html and "carla-at-globex" not in html
    assert usd(cost_of(user=moved, organization=world.acme)) in html
    assert f"/org/{acme}/users/{moved.pk}/sessions/carla-at-acme/" in html
    session = client.get(f"/org/{acme}/users/{moved.pk}/sessions/carla-at-acme/")
    assert session.status_code == 200
    assert client.get(f"/org/{acme}/users/{moved.pk}/sessions/carla-at-globex/").status_code == 404
    assert client.get(f"/org/{acme}/users/{world.boris.pk}/").status_code == 404


def test_a_former_member_stays_in_the_organizations_history(world: TwoOrgs, moved) -> None:
    """carla left Globex: Globex's admin still sees what Globex was billed for her."""
    client = client_for(world.gunther)
    page = client.get(f"/org/{world.globex.pk}/users/{moved.pk}/?start=2026-01-01&end=2026-01-31")
    assert page.status_code == 200
    html = page.content.decode()
    assert "carla-at-globex" in html and "carla-at-acme" not in html
