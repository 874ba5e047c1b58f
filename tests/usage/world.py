"""A small, hand-computed usage history shared by the page, JSON and CSV tests.

Prices (USD per million tokens): sonnet-4-5 $3/$15, haiku-4-5 $1/$5, opus-4-1 $15/$75.

alice (org Acme)
  2026-03-01 09:00 s-a sonnet  in 1000, out 200            6000 per M  -> $0.006  (uncached same)
  2026-03-01 10:00 s-a sonnet  in 100, read 9000, out 100,  2 attempts
                     100*3 + 9000*0.3 + 100*15 = 4500       -> $0.0045
                     uncached (9100*3 + 1500) = 28800       -> $0.0288
  2026-03-02 09:00 s-b sonnet  failed after 6 attempts, no tokens -> $0
  2026-03-03 09:00 s-b haiku   in 10, 1h write 5000, out 10
                     10*1 + 5000*1*2 + 10*5 = 10060         -> $0.01006
                     uncached 5010*1 + 50 = 5060            -> $0.00506
  totals: 4 requests, 1 error, 6 retries; input 1110, write 5000, read 9000, output 310
          hit rate 9000 / 15110 = 59.6%; cost $0.02056; uncached $0.03986; saved $0.0193
bob (org Acme)
  2026-03-02 12:00 s-a opus-4-1 in 100, out 1000: 1500 + 75000 = 76500 -> $0.0765
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User

from llm_calls.types import Usage
from organizations.models import Organization
from tests.usage.factories import at, make_org, make_user, record
from usage.models import Outcome

RANGE = "start=2026-03-01&end=2026-03-03"


@dataclass
class World:
    org: Organization
    alice: User
    bob: User
    staff: User


def build_world() -> World:
    org = make_org("Acme")
    alice = make_user("alice", org=org)
    bob = make_user("bob", org=org)
    staff = make_user("boss", staff=True)
    record(
        user=alice,
        org=org,
        session_id="s-a",
        occurred_at=at("2026-03-01", 9),
        usage=Usage(input_tokens=1000, output_tokens=200),
    )
    record(
        user=alice,
        org=org,
        session_id="s-a",
        occurred_at=at("2026-03-01", 10),
        usage=Usage(input_tokens=100, output_tokens=100, cache_read_input_tokens=9000),
        attempts=2,
        latency_ms=300,
    )
    record(
        user=alice,
        org=org,
        session_id="s-b",
        occurred_at=at("2026-03-02", 9),
        outcome=Outcome.FAILED,
        attempts=6,
    )
    record(
        user=alice,
        org=org,
        session_id="s-b",
        model="claude-haiku-4-5",
        occurred_at=at("2026-03-03", 9),
        usage=Usage(
            input_tokens=10,
            output_tokens=10,
            cache_creation_input_tokens=5000,
            cache_creation_1h=5000,
        ),
    )
    record(
        user=bob,
        org=org,
        session_id="s-a",
        model="claude-opus-4-1",
        occurred_at=at("2026-03-02", 12),
        usage=Usage(input_tokens=100, output_tokens=1000),
    )
    return World(org=org, alice=alice, bob=bob, staff=staff)
