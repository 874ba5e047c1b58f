"""Gateway keys: made by ``manage.py gateway_key`` or in the admin, shown once, stored hashed."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client

from organizations.models import Membership
from queueing.auth import token_for_key
from queueing.models import ApiToken, Quota
from tests.usage.factories import make_org, make_user

pytestmark = pytest.mark.django_db


def gateway_key(*args: str) -> str:
    out = StringIO()
    call_command("gateway_key", *args, stdout=out)
    return out.getvalue()


def test_a_key_is_printed_once_on_the_last_line_and_stored_only_as_a_hash() -> None:
    alice = make_user("alice")
    printed = gateway_key("create", "--user", "alice", "--name", "notebook")
    key = printed.strip().splitlines()[-1]

    token, problem = token_for_key(key)
    assert token is not None and token.user == alice and token.name == "notebook", problem
    assert key not in str(ApiToken.objects.values_list().get())  # no column holds the key
    assert token.prefix in printed and key.startswith(token.prefix)


def test_a_service_account_is_made_for_the_organization_and_cannot_log_in() -> None:
    acme = make_org("Acme")
    printed = gateway_key(
        "create",
        "--user",
        "billing-bot",
        "--org",
        "Acme",
        "--models",
        "claude-haiku-4-5",
        "--priority",
        "query",
        "--expires-days",
        "30",
    )
    token, _ = token_for_key(printed.strip().splitlines()[-1])
    assert token is not None
    membership = Membership.objects.get(user=token.user)
    assert membership.organization == acme and membership.role == Membership.Role.SERVICE
    assert not token.user.has_usable_password()
    assert token.allowed_models == ["claude-haiku-4-5"] and token.default_priority == "query"
    assert token.expires_at is not None


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--user", "nobody"], "no user named 'nobody'"),
        (["--user", "alice", "--org", "Nowhere"], "no organization named 'Nowhere'"),
        (["--user", "alice", "--org", "Acme"], "'alice' belongs to no organization"),
        (["--user", "alice", "--models", "claude-nonexistent-9"], "unknown model"),
        (["--user", "alice", "--priority", "urgent"], "unknown class 'urgent'"),
        (["--user", "alice", "--expires-days", "0"], "--expires-days"),
        (["--user", "alice", "--budget-usd-per-day", "0"], "--budget-usd-per-day must be more"),
        (
            ["--user", "alice", "--budget-usd-per-month", "-5"],
            "--budget-usd-per-month must be more",
        ),
        (["--user", "alice", "--budget-usd-per-day", "five"], "an amount in US dollars"),
        (["--user", "alice", "--budget-usd-per-day", "0.0000001"], "at most 6 decimal places"),
        (["--user", "nobody", "--budget-usd-per-day", "5"], "no user named 'nobody'"),
    ],
)
def test_bad_arguments_are_refused_naming_the_problem_and_nothing_is_made(
    args: list[str], named: str
) -> None:
    make_user("alice")
    make_org("Acme")
    with pytest.raises(CommandError, match=named):
        gateway_key("create", *args)
    assert not ApiToken.objects.exists()
    assert not Membership.objects.exists()
    assert not Quota.objects.exists()


def test_a_key_made_with_a_budget_carries_it() -> None:
    make_org("Acme")
    printed = gateway_key(
        "create",
        "--user",
        "billing-bot",
        "--org",
        "Acme",
        "--name",
        "billing bot",
        "--budget-usd-per-day",
        "2.50",
        "--budget-usd-per-month",
        "40",
    )
    token, _ = token_for_key(printed.strip().splitlines()[-1])
    assert token is not None
    assert "budget $2.50 per day, $40 per month" in printed
    budget = Quota.objects.get()
    assert budget.api_token == token and budget.user is None and budget.organization is None
    assert (budget.usd_per_day, budget.usd_per_month) == (Decimal("2.50"), Decimal("40"))
    assert budget.tokens_per_day is None and budget.max_concurrent is None
    # without the flags a key has no budget (only its user's and organization's quotas)
    gateway_key("create", "--user", "billing-bot", "--org", "Acme")
    assert Quota.objects.count() == 1


def test_revoke_by_prefix_and_list_never_shows_a_key() -> None:
    make_user("alice")
    key = gateway_key("create", "--user", "alice").strip().splitlines()[-1]
    token = ApiToken.objects.get()

    listing = gateway_key("list")
    assert token.prefix in listing and key not in listing and "active" in listing
    assert "budget" not in listing
    assert "Revoked" in gateway_key("revoke", token.prefix)
    refused, problem = token_for_key(key)
    assert refused is None and "revoked" in problem
    with pytest.raises(CommandError, match="no active key"):
        gateway_key("revoke", token.prefix)


def test_the_admin_form_refuses_models_and_classes_that_do_not_exist() -> None:
    token = ApiToken(user=make_user(), name="x", allowed_models=["claude-nonexistent-9"])
    with pytest.raises(ValidationError, match="unknown model"):
        token.clean()
    token = ApiToken(user=make_user(), name="y", default_priority="urgent")
    with pytest.raises(ValidationError, match="unknown class"):
        token.clean()
    ApiToken(user=make_user(), name="z", allowed_models=["claude-haiku-4-5"]).clean()


def test_the_admin_gives_a_key_its_budget_on_the_keys_own_page() -> None:
    owner = make_user("alice")
    staff = make_user("boss", staff=True)
    staff.is_superuser = True
    staff.save()
    client = Client()
    client.force_login(staff)
    page = client.get("/admin/queueing/apitoken/add/")
    assert page.status_code == 200 and "Budget" in page.content.decode()
    saved = client.post(
        "/admin/queueing/apitoken/add/",
        {
            "user": owner.pk,
            "name": "billing bot",
            "allowed_models": "[]",
            "quota-TOTAL_FORMS": "1",
            "quota-INITIAL_FORMS": "0",
            "quota-MIN_NUM_FORMS": "0",
            "quota-MAX_NUM_FORMS": "1",
            "quota-0-usd_per_day": "5",
            "quota-0-allowed_priorities": "[]",
        },
    )
    assert saved.status_code == 302, saved.content.decode()[:2000]
    token = ApiToken.objects.get()
    assert token.quota.usd_per_day == Decimal("5")
    assert str(token.quota) == f"Budget of gateway key billing bot ({token.prefix}…)"


def test_list_shows_a_keys_budget() -> None:
    make_user("alice")
    gateway_key(
        "create", "--user", "alice", "--budget-usd-per-day", "5", "--budget-usd-per-month", "50"
    )
    assert "budget $5.00/day, $50.00/month" in gateway_key("list")
