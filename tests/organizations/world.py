"""Two organizations, each with an admin, for the organization admin's tests.

Acme Legal (a quota of its own, weight 1.5): ada its admin, alice a member, the service account
acme-helpdesk, alice's gateway key, and alice's usage billed to Acme. Globex Support: gunther
its admin, boris a member with a gateway key and a session whose cost is like no other.
Everything of Globex that a page could show — its names, boris's session id, his cost, his
key's prefix and name — is in ``globex_secrets``: none of it may reach an Acme admin.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth.models import User

from llm_calls.types import Usage
from organizations.models import Membership, Organization
from queueing.auth import api_token_create
from queueing.models import ApiToken, Quota
from tests.usage.factories import make_org, make_user, record
from usage import services as usage_services
from usage.models import AuditLog
from usage.pricing import pico_to_usd
from usage.templatetags.usage_format import usd

ACME_SESSION = "acme-contract-review"
GLOBEX_SESSION = "globex-sess-7q2"
MODEL = "claude-sonnet-4-6"  # $3 / $15 per million tokens, one band


@dataclass
class TwoOrgs:
    acme: Organization
    globex: Organization
    ada: User  # admin of Acme
    alice: User  # member of Acme
    helpdesk: User  # service account of Acme
    gunther: User  # admin of Globex
    boris: User  # member of Globex
    staff: User
    alice_key: ApiToken
    boris_key: ApiToken
    boris_raw_key: str
    globex_cost_usd: Decimal

    @property
    def globex_secrets(self) -> list[str]:
        return [
            self.globex.name,
            self.gunther.username,
            self.boris.username,
            GLOBEX_SESSION,
            usd(self.globex_cost_usd),  # as pages print it: $5.0389
            str(self.globex_cost_usd),  # as the JSON and CSV carry it: 5.038881
            self.boris_key.prefix,
            self.boris_key.name,
        ]


def make_member(username: str, org: Organization, role: str, password: str | None = None) -> User:
    user = make_user(username, password=password)
    Membership.objects.create(user=user, organization=org, role=role)
    return user


def build_two_orgs(*, password: str | None = None) -> TwoOrgs:
    usage_services.prices_seed_defaults()
    usage_services.price_cache_clear()
    acme = make_org("Acme Legal")
    Quota.objects.create(
        organization=acme,
        tokens_per_day=1_000_000,
        usd_per_day=Decimal("50"),
        usd_per_month=Decimal("500"),
        max_concurrent=10,
        weight=Decimal("1.5"),
    )
    globex = make_org("Globex Support")
    ada = make_member("ada", acme, Membership.Role.ADMIN, password=password)
    alice = make_member("alice", acme, Membership.Role.MEMBER)
    helpdesk = make_member("acme-helpdesk", acme, Membership.Role.SERVICE)
    gunther = make_member("gunther", globex, Membership.Role.ADMIN, password=password)
    boris = make_member("boris", globex, Membership.Role.MEMBER)
    staff = make_user("stella", staff=True, password=password)
    alice_key, _ = api_token_create(user=alice, name="alice's notebook")
    boris_key, boris_raw = api_token_create(user=boris, name="globex-ticket-router")
    record(
        user=alice,
        org=acme,
        session_id=ACME_SESSION,
        model=MODEL,
        usage=Usage(input_tokens=10_000, output_tokens=2_000),
    )
    record(
        user=helpdesk,
        org=acme,
        session_id="helpdesk-1",
        model=MODEL,
        usage=Usage(input_tokens=3_000, output_tokens=500),
    )
    record(
        user=boris,
        org=globex,
        session_id=GLOBEX_SESSION,
        model=MODEL,
        usage=Usage(input_tokens=1_234_567, output_tokens=89_012),
    )
    globex_cost = pico_to_usd(
        sum(AuditLog.objects.filter(organization=globex).values_list("cost_pico_usd", flat=True))
    )
    return TwoOrgs(
        acme=acme,
        globex=globex,
        ada=ada,
        alice=alice,
        helpdesk=helpdesk,
        gunther=gunther,
        boris=boris,
        staff=staff,
        alice_key=alice_key,
        boris_key=boris_key,
        boris_raw_key=boris_raw,
        globex_cost_usd=globex_cost,
    )
