"""The one permission rule of the organization pages: who administers which organization."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.http import Http404

from organizations.models import Membership
from organizations.selectors import (
    administered_organizations,
    administers_any,
    organization_for_admin,
    organization_member,
)
from tests.organizations.world import TwoOrgs, build_two_orgs

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> TwoOrgs:
    return build_two_orgs()


def test_an_admin_administers_their_organization_and_no_other(world: TwoOrgs) -> None:
    assert list(administered_organizations(user=world.ada)) == [world.acme]
    assert list(administered_organizations(user=world.gunther)) == [world.globex]
    assert organization_for_admin(user=world.ada, organization_id=world.acme.pk) == world.acme
    with pytest.raises(Http404):
        organization_for_admin(user=world.ada, organization_id=world.globex.pk)


def test_staff_administer_every_organization(world: TwoOrgs) -> None:
    assert set(administered_organizations(user=world.staff)) == {world.acme, world.globex}
    assert organization_for_admin(user=world.staff, organization_id=world.globex.pk)


@pytest.mark.parametrize("who", ["alice", "helpdesk"])
def test_a_member_or_service_account_is_refused_their_own_organization(
    world: TwoOrgs, who: str
) -> None:
    user = getattr(world, who)
    assert not administers_any(user=user)
    with pytest.raises(PermissionDenied, match="Only the organization's admins"):
        organization_for_admin(user=user, organization_id=world.acme.pk)
    # ...and another organization does not exist for them at all
    with pytest.raises(Http404):
        organization_for_admin(user=user, organization_id=world.globex.pk)


def test_no_role_no_login_no_activity_no_organization(world: TwoOrgs) -> None:
    loner = User.objects.create_user("loner")
    assert not administers_any(user=loner)
    assert not administers_any(user=AnonymousUser())
    with pytest.raises(Http404):
        organization_for_admin(user=AnonymousUser(), organization_id=world.acme.pk)
    User.objects.filter(pk=world.ada.pk).update(is_active=False)
    world.ada.refresh_from_db()
    assert not administers_any(user=world.ada)


def test_demoting_an_admin_takes_the_pages_away_at_once(world: TwoOrgs) -> None:
    Membership.objects.filter(user=world.ada).update(role=Membership.Role.MEMBER)
    with pytest.raises(PermissionDenied):
        organization_for_admin(user=world.ada, organization_id=world.acme.pk)


def test_a_member_of_another_organization_is_not_found(world: TwoOrgs) -> None:
    assert organization_member(organization=world.acme, user_id=world.alice.pk).user == world.alice
    with pytest.raises(Http404):
        organization_member(organization=world.acme, user_id=world.boris.pk)
