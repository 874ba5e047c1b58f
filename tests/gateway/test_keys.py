"""Gateway keys: made by ``manage.py gateway_key`` or in the admin, shown once, stored hashed."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from organizations.models import Membership
from queueing.auth import token_for_key
from queueing.models import ApiToken
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


def test_revoke_by_prefix_and_list_never_shows_a_key() -> None:
    make_user("alice")
    key = gateway_key("create", "--user", "alice").strip().splitlines()[-1]
    token = ApiToken.objects.get()

    listing = gateway_key("list")
    assert token.prefix in listing and key not in listing and "active" in listing
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
