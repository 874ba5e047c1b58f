"""Quota alerts reach the people concerned — by email and on the organization's webhook —
once each, retried when a channel is down, never on the path of a call."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from organizations.models import Membership
from queueing import alert_delivery
from queueing.auth import api_token_create
from queueing.models import QuotaAlert
from tests.usage.factories import make_org, make_user

pytestmark = pytest.mark.django_db


class Hook:
    """A webhook receiver on loopback: records every JSON body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook()
    yield receiver
    receiver.close()


@pytest.fixture(autouse=True)
def outbox(settings: Any) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"


def alert(**holder: Any) -> QuotaAlert:
    return QuotaAlert.objects.create(
        **holder,
        metric=QuotaAlert.Metric.DAILY_TOKENS,
        threshold=80,
        used=Decimal(20_000),
        limit=Decimal(25_000),
        period_start=timezone.now().date(),
    )


def test_a_users_alert_is_mailed_to_them_and_posted_to_their_orgs_webhook(hook: Hook) -> None:
    acme = make_org("Acme")
    acme.alert_webhook_url = hook.url
    acme.save()
    dave = make_user("dave", org=acme)
    dave.email = "dave@acme.test"
    dave.save()
    row = alert(user=dave)

    sent = alert_delivery.deliver_pending()

    assert (sent.emails, sent.webhooks, sent.failures) == (1, 1, 0)
    (message,) = mail.outbox
    assert message.to == ["dave@acme.test"] and "80%" in message.subject
    assert "20,000 of 25,000 tokens" in message.body
    assert hook.bodies == [{"text": message.body}]
    row.refresh_from_db()
    assert row.emailed_at and row.webhook_sent_at and not row.delivery_error
    # Sent once: the next rounds find nothing to do.
    assert alert_delivery.deliver_pending() == alert_delivery.Delivered(0, 0, 0)
    assert len(mail.outbox) == 1 and len(hook.bodies) == 1


def test_an_organizations_alert_and_a_service_keys_go_to_its_admins(hook: Hook) -> None:
    acme = make_org("Acme")
    boss = make_user("boss", org=None)
    boss.email = "boss@acme.test"
    boss.save()
    Membership.objects.create(user=boss, organization=acme, role=Membership.Role.ADMIN)
    make_user("plain-member", org=acme)  # a member who is not told
    bot = make_user("billing-bot")
    Membership.objects.create(user=bot, organization=acme, role=Membership.Role.SERVICE)
    key, _ = api_token_create(user=bot, name="billing bot")
    alert(organization=acme)
    alert(api_token=key)

    alert_delivery.deliver_pending()

    assert [m.to for m in mail.outbox] == [["boss@acme.test"], ["boss@acme.test"]]
    assert "billing bot" in mail.outbox[1].body


def test_a_webhook_that_is_down_is_retried_later_and_the_email_is_not_sent_twice(
    hook: Hook,
) -> None:
    acme = make_org("Acme")
    acme.alert_webhook_url = "http://127.0.0.1:9/down"  # nothing listens on the discard port
    acme.save()
    erin = make_user("erin", org=acme)
    erin.email = "erin@acme.test"
    erin.save()
    row = alert(user=erin)

    first = alert_delivery.deliver_pending()
    assert (first.emails, first.webhooks, first.failures) == (1, 0, 1)
    row.refresh_from_db()
    assert row.emailed_at and row.webhook_sent_at is None and "webhook" in row.delivery_error
    assert row.next_delivery_at and row.next_delivery_at > timezone.now()
    assert alert_delivery.deliver_pending() == alert_delivery.Delivered(0, 0, 0)  # not yet due

    acme.alert_webhook_url = hook.url
    acme.save()
    later = timezone.now() + dt.timedelta(minutes=5)
    again = alert_delivery.deliver_pending(now=later)
    assert (again.emails, again.webhooks, again.failures) == (0, 1, 0)
    assert len(mail.outbox) == 1 and len(hook.bodies) == 1
    row.refresh_from_db()
    assert row.webhook_sent_at and not row.delivery_error


def test_it_gives_up_after_max_attempts() -> None:
    acme = make_org("Acme")
    acme.alert_webhook_url = "http://127.0.0.1:9/down"
    acme.save()
    row = alert(organization=acme)
    moment = timezone.now()
    for _ in range(alert_delivery.MAX_ATTEMPTS + 2):
        alert_delivery.deliver_pending(now=moment)
        moment += dt.timedelta(days=1)
    row.refresh_from_db()
    assert row.delivery_attempts == alert_delivery.MAX_ATTEMPTS
    assert row.webhook_sent_at is None and row.delivery_error
