"""An organization's admin: members' quotas and weights within the organization's own, and
gateway keys for members and service accounts — the services, then the pages over them."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.http import Http404
from django.test import Client

from organizations.models import Membership
from queueing import org_admin, quotas
from queueing.auth import api_token_create, token_for_key
from queueing.models import ApiToken, Quota
from queueing.services import fair_share_weight
from tests.organizations.world import TwoOrgs, build_two_orgs

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
LIMITS = {
    "tokens_per_day": None,
    "tokens_per_month": None,
    "usd_per_day": None,
    "usd_per_month": None,
    "max_concurrent": None,
}


@pytest.fixture
def world() -> TwoOrgs:
    return build_two_orgs()


def set_quota(world: TwoOrgs, user: User, *, weight: str = "1", by: User | None = None, **limits):
    return org_admin.member_quota_set(
        organization=world.acme,
        user_id=user.pk,
        by_user=by or world.ada,
        weight=Decimal(weight),
        **{**LIMITS, **limits},
    )


def messages_of(error: ValidationError) -> dict[str, list[str]]:
    return {field: list(msgs) for field, msgs in error.message_dict.items()}


# --- quotas and weights ----------------------------------------------------------------------


def test_a_limit_above_the_organizations_is_refused_naming_both_figures(world: TwoOrgs) -> None:
    with pytest.raises(ValidationError) as refused:
        set_quota(world, world.alice, tokens_per_day=2_000_000, usd_per_day=Decimal("60"))
    errors = messages_of(refused.value)
    assert errors["tokens_per_day"] == [
        "A daily token limit of 2,000,000 for alice is above Acme Legal's own daily token "
        "limit of 1,000,000."
    ]
    assert errors["usd_per_day"] == [
        "A daily USD limit of $60.0000 for alice is above Acme Legal's own daily USD limit "
        "of $50.0000."
    ]
    assert not Quota.objects.filter(user=world.alice).exists()  # nothing half-written
    assert not LogEntry.objects.exists()


def test_a_limit_within_applies_to_the_members_next_request(world: TwoOrgs, redis_client) -> None:
    quota = set_quota(world, world.alice, tokens_per_day=5_000, weight="1.2")
    assert (quota.tokens_per_day, quota.weight) == (5_000, Decimal("1.2"))
    # the scheduler's weight and quota admission read it from now on
    assert fair_share_weight(user_id=world.alice.pk, organization_id=world.acme.pk) == 1.2
    check = quotas.admit(
        user_id=world.alice.pk,
        org_id=world.acme.pk,
        request_id=9001,
        tokens=6_000,
        usd=Decimal("0.01"),
        priority="query",
        now=NOW,
        usage_loader=lambda *_: (0, Decimal(0)),
    )
    assert not check.admitted
    assert "Daily token quota for user alice exceeded" in check.message
    entry = LogEntry.objects.get()
    assert entry.user_id == world.ada.pk and entry.object_id == str(quota.pk)
    assert "daily token limit 5,000" in entry.change_message


def test_a_member_without_a_quota_weighs_what_the_organization_weighs(world: TwoOrgs) -> None:
    assert fair_share_weight(user_id=world.alice.pk, organization_id=world.acme.pk) == 1.5
    assert org_admin.organization_weight(organization=world.acme) == Decimal("1.5")
    assert org_admin.organization_weight(organization=world.globex) == Decimal(1)


def test_a_weight_above_the_organizations_is_refused_but_a_staff_weight_is_kept(
    world: TwoOrgs,
) -> None:
    with pytest.raises(ValidationError) as refused:
        set_quota(world, world.alice, weight="2")
    assert messages_of(refused.value)["weight"] == [
        "A weight of 2 for alice is above Acme Legal's weight of 1.5; only staff can give a "
        "member more than the organization's weight."
    ]
    Quota.objects.create(user=world.alice, weight=Decimal(3))  # staff's, in the admin
    kept = set_quota(world, world.alice, weight="3", usd_per_day=Decimal("5"))
    assert (kept.weight, kept.usd_per_day) == (Decimal(3), Decimal(5))
    with pytest.raises(ValidationError):
        set_quota(world, world.alice, weight="2.5")  # a change: the cap applies again
    assert set_quota(world, world.alice, weight="0.5").weight == Decimal("0.5")


def test_blank_limits_leave_the_organizations_in_charge(world: TwoOrgs) -> None:
    Quota.objects.create(user=world.alice, tokens_per_day=10, allowed_priorities=["bulk"])
    quota = set_quota(world, world.alice)
    assert quota.tokens_per_day is None
    assert quota.allowed_priorities == ["bulk"]  # staff's rule, not the admin's to change


def test_an_admin_cannot_touch_another_organizations_member(world: TwoOrgs) -> None:
    with pytest.raises(Http404):
        set_quota(world, world.boris, tokens_per_day=1)
    assert not Quota.objects.filter(user=world.boris).exists()


# --- gateway keys ----------------------------------------------------------------------------


def test_a_key_for_a_member_works_and_is_stored_only_hashed(world: TwoOrgs) -> None:
    token, raw = org_admin.organization_key_create(
        organization=world.acme,
        by_user=world.ada,
        name="contracts bot",
        owner_id=world.alice.pk,
        allowed_models=["claude-haiku-4-5"],
        default_priority="bulk",
        budget_usd_per_day=Decimal("2"),
    )
    found, problem = token_for_key(raw)
    assert found == token and problem == ""
    assert token.user == world.alice and token.allowed_models == ["claude-haiku-4-5"]
    assert Quota.objects.get(api_token=token).usd_per_day == Decimal(2)
    assert raw not in str(ApiToken.objects.filter(pk=token.pk).values().get())
    assert LogEntry.objects.get().user_id == world.ada.pk


def test_no_key_for_anyone_outside_the_organization(world: TwoOrgs) -> None:
    before = ApiToken.objects.count()
    with pytest.raises(Http404):
        org_admin.organization_key_create(
            organization=world.acme, by_user=world.ada, name="x", owner_id=world.boris.pk
        )
    outsider = User.objects.create_user("no-org")
    with pytest.raises(Http404):
        org_admin.organization_key_create(
            organization=world.acme, by_user=world.ada, name="x", owner_id=outsider.pk
        )
    assert ApiToken.objects.count() == before


def test_a_key_for_a_new_service_account(world: TwoOrgs) -> None:
    token, raw = org_admin.organization_key_create(
        organization=world.acme,
        by_user=world.ada,
        name="intake",
        service_account_name="acme-intake",
    )
    account = token.user
    assert account.username == "acme-intake" and not account.has_usable_password()
    assert account.membership.organization == world.acme
    assert account.membership.role == Membership.Role.SERVICE
    assert token_for_key(raw)[0] == token


def test_a_taken_service_account_name_makes_nothing(world: TwoOrgs) -> None:
    before = (User.objects.count(), ApiToken.objects.count())
    with pytest.raises(ValidationError) as refused:
        org_admin.organization_key_create(
            organization=world.acme,
            by_user=world.ada,
            name="steal",
            service_account_name=world.boris.username,  # another organization's user
        )
    assert "already exists" in messages_of(refused.value)["service_account_name"][0]
    assert (User.objects.count(), ApiToken.objects.count()) == before
    assert world.boris.api_tokens.count() == 1


def test_a_key_budget_above_the_organizations_limit_is_refused(world: TwoOrgs) -> None:
    with pytest.raises(ValidationError) as refused:
        org_admin.organization_key_create(
            organization=world.acme,
            by_user=world.ada,
            name="big",
            owner_id=world.alice.pk,
            budget_usd_per_month=Decimal("501"),
        )
    assert messages_of(refused.value)["budget_usd_per_month"] == [
        "A monthly budget of $501.0000 is above Acme Legal's own monthly USD limit of $500.0000."
    ]
    assert world.alice.api_tokens.count() == 1


def test_revoking_a_key_refuses_it_at_once(world: TwoOrgs) -> None:
    token, raw = api_token_create(user=world.helpdesk, name="helpdesk")
    org_admin.organization_key_revoke(organization=world.acme, key_id=token.pk, by_user=world.ada)
    found, problem = token_for_key(raw)
    assert found is None and "revoked" in problem
    # again: nothing more happens (one log row, from the first time)
    org_admin.organization_key_revoke(organization=world.acme, key_id=token.pk, by_user=world.ada)
    assert LogEntry.objects.count() == 1


def test_another_organizations_key_cannot_be_revoked(world: TwoOrgs) -> None:
    with pytest.raises(Http404):
        org_admin.organization_key_revoke(
            organization=world.acme, key_id=world.boris_key.pk, by_user=world.ada
        )
    assert token_for_key(world.boris_raw_key)[0] == world.boris_key


# --- the pages -------------------------------------------------------------------------------


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


NAV = '<a href="/org/">Organization</a>'


def test_the_organization_entry_shows_for_admins_and_staff_only(world: TwoOrgs) -> None:
    assert NAV in client_for(world.ada).get("/usage/").content.decode()
    assert NAV in client_for(world.staff).get("/usage/").content.decode()
    assert NAV not in client_for(world.alice).get("/usage/").content.decode()
    assert client_for(world.alice).get("/org/").status_code == 403
    assert client_for(world.ada).get("/org/")["Location"] == f"/org/{world.acme.pk}/"
    listing = client_for(world.staff).get("/org/").content.decode()
    assert "Acme Legal" in listing and "Globex Support" in listing


def test_the_members_page_lists_the_organization_with_its_limits(world: TwoOrgs) -> None:
    set_quota(world, world.alice, tokens_per_day=250_000, weight="1.25")
    page = client_for(world.ada).get(f"/org/{world.acme.pk}/members/")
    html = page.content.decode()
    assert page.status_code == 200
    rows = dict(re.findall(r'<tr data-member="(\d+)">(.*?)</tr>', html, re.S))
    assert set(rows) == {str(u.pk) for u in (world.ada, world.alice, world.helpdesk)}
    alice = rows[str(world.alice.pk)]
    assert "250,000" in alice and "1.25" in alice
    assert "$0.0600" in alice  # what alice spent today, billed to Acme
    assert "(org)" in rows[str(world.ada.pk)]  # ada weighs what Acme weighs
    assert "1,000,000" in html  # Acme's own daily token limit, shown above
    assert "boris" not in html


def test_the_quota_form_refuses_above_the_organization_and_saves_within(world: TwoOrgs) -> None:
    client = client_for(world.ada)
    url = f"/org/{world.acme.pk}/members/{world.alice.pk}/quota/"
    form = client.get(url).content.decode()
    assert "At most 1,000,000 (the organization&#x27;s)." in form
    too_much = client.post(url, {"tokens_per_day": "1000001", "weight": "1"})
    assert too_much.status_code == 200
    assert (
        "A daily token limit of 1,000,001 for alice is above Acme Legal&#x27;s own daily "
        "token limit of 1,000,000." in too_much.content.decode()
    )
    assert not Quota.objects.filter(user=world.alice).exists()
    saved = client.post(url, {"tokens_per_day": "1000000", "usd_per_day": "12.5", "weight": "1"})
    assert saved.status_code == 302 and saved["Location"] == f"/org/{world.acme.pk}/members/"
    quota = Quota.objects.get(user=world.alice)
    assert (quota.tokens_per_day, quota.usd_per_day) == (1_000_000, Decimal("12.5"))


def test_the_key_is_shown_once_and_listed_by_its_prefix_after(world: TwoOrgs) -> None:
    client = client_for(world.ada)
    url = f"/org/{world.acme.pk}/keys/"
    made = client.post(url, {"owner": str(world.alice.pk), "name": "review bot"})
    assert made.status_code == 200
    assert "no-store" in made["Cache-Control"]
    shown = re.search(r'id="new-key-value">(gwt_[^<]+)<', made.content.decode())
    assert shown is not None, "the new key is not on the page"
    raw = shown.group(1)
    token = token_for_key(raw)[0]
    assert token is not None and token.user == world.alice
    again = client.get(url).content.decode()
    assert raw not in again and f"{token.prefix}…" in again
    assert world.boris_key.prefix not in again  # Globex's keys are not Acme's to see

    client.post(f"/org/{world.acme.pk}/keys/{token.pk}/revoke/")
    assert token_for_key(raw)[0] is None


def test_the_key_form_names_the_problem(world: TwoOrgs) -> None:
    client = client_for(world.ada)
    url = f"/org/{world.acme.pk}/keys/"
    neither = client.post(url, {"name": "orphan"}).content.decode()
    assert "Choose a member, or name a new service account" in neither
    outsider = client.post(url, {"owner": str(world.boris.pk), "name": "x"}).content.decode()
    assert "Select a valid choice" in outsider  # boris is not among the choices
    assert ApiToken.objects.filter(name__in=["orphan", "x"]).count() == 0


HUGE = 2**70  # no database integer holds it


def test_ids_too_big_for_the_database_are_not_found_not_errors(world: TwoOrgs) -> None:
    client = Client(raise_request_exception=False)
    client.force_login(world.staff)  # staff pass every access check, so these reach the queries
    acme = world.acme.pk
    for path in (
        f"/org/{HUGE}/",
        f"/org/{HUGE}/keys/",
        f"/org/{acme}/users/{HUGE}/",
        f"/org/{acme}/users/{HUGE}/sessions/s/",
        f"/org/{acme}/members/{HUGE}/quota/",
        f"/usage/api/summary.json?org={HUGE}",
        f"/usage/api/summary.json?org={acme}&user={HUGE}",
    ):
        assert client.get(path).status_code == 404, path
    assert client.post(f"/org/{acme}/keys/{HUGE}/revoke/").status_code == 404
