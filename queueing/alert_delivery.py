"""Quota alerts reach the people concerned: an email, and the organization's webhook.

``quotas.settle`` writes a ``QuotaAlert`` row the first time a holder passes 80% / 100% of a
quota in a period (and logs it, and mails ``ADMINS``). Delivering it to the person happens here,
from the worker host's reaper loop, never on the path of a call:

- **email** (Django's mail backend, ``EMAIL_*`` settings from the environment) to the user whose
  quota it is, to the owner of a gateway key for a key's budget, and to the organization's admins
  (``Membership.Role.ADMIN``) for the organization's quota or a service account's key;
- **webhook**: the organization's ``alert_webhook_url`` gets a Slack-compatible JSON POST
  (``{"text": …}``) for alerts of the organization, its members and their keys.

Each channel is sent once. A failure (mail server or webhook down) is recorded on the row and
retried with backoff (``RETRY_AFTER_S`` doubling) up to ``MAX_ATTEMPTS`` rounds; claims are
per row and round (a conditional UPDATE), so two reapers never send the same alert twice.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.request
from dataclasses import dataclass

from django.conf import settings
from django.core.mail import send_mail
from django.db.models import F, Q
from django.utils import timezone

from organizations.models import Membership, Organization
from queueing.models import QuotaAlert

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
RETRY_AFTER_S = 30.0
WEBHOOK_TIMEOUT_S = 5.0
BATCH = 50


@dataclass(frozen=True)
class Delivered:
    emails: int
    webhooks: int
    failures: int


def _text(alert: QuotaAlert) -> str:
    return f"{alert}: {alert.amount_text} used."


def _organization(alert: QuotaAlert) -> Organization | None:
    if alert.organization is not None:
        return alert.organization
    owner_id = alert.user_id or (alert.api_token.user_id if alert.api_token else None)
    if owner_id is None:
        return None
    membership = Membership.objects.filter(user_id=owner_id).select_related("organization").first()
    return membership.organization if membership else None


def _recipients(alert: QuotaAlert, org: Organization | None) -> list[str]:
    """The person whose quota or key it is; for the organization's own quota, a service
    account's key, or a person without an address: the organization's admins."""
    personal = ""
    if alert.user is not None:
        personal = alert.user.email
    elif alert.api_token is not None:
        owner = alert.api_token.user
        if not Membership.objects.filter(user=owner, role=Membership.Role.SERVICE).exists():
            personal = owner.email
    if personal:
        return [personal]
    if org is None:
        return []
    admins = Membership.objects.filter(organization=org, role=Membership.Role.ADMIN)
    return sorted({m.user.email for m in admins.select_related("user") if m.user.email})


def _post(url: str, text: str) -> None:
    body = json.dumps({"text": text}).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as reply:
        if not 200 <= reply.status < 300:
            raise OSError(f"webhook answered HTTP {reply.status}")


def _claim(alert: QuotaAlert, now: dt.datetime) -> bool:
    """Take this round of the alert (no other reaper sends it meanwhile)."""
    backoff = dt.timedelta(seconds=RETRY_AFTER_S * 2**alert.delivery_attempts)
    return bool(
        QuotaAlert.objects.filter(pk=alert.pk, delivery_attempts=alert.delivery_attempts).update(
            delivery_attempts=F("delivery_attempts") + 1, next_delivery_at=now + backoff
        )
    )


def deliver_pending(*, now: dt.datetime | None = None) -> Delivered:
    """Send what is due; never raises for a channel that fails (it is retried later)."""
    moment = now or timezone.now()
    due = (
        QuotaAlert.objects.filter(Q(emailed_at__isnull=True) | Q(webhook_sent_at__isnull=True))
        .filter(Q(next_delivery_at__isnull=True) | Q(next_delivery_at__lte=moment))
        .filter(delivery_attempts__lt=MAX_ATTEMPTS)
        .select_related("user", "organization", "api_token__user")
        .order_by("created_at")[:BATCH]
    )
    emails = webhooks = failures = 0
    for alert in due:
        if not _claim(alert, moment):
            continue
        org = _organization(alert)
        text = _text(alert)
        errors: list[str] = []
        done: dict[str, dt.datetime] = {}
        if alert.emailed_at is None:
            people = _recipients(alert, org)
            try:
                if people:
                    subject = f"Quota alert: {alert.threshold}% of {alert.get_metric_display()}"
                    send_mail(subject, text, settings.DEFAULT_FROM_EMAIL, people)
                    emails += 1
                done["emailed_at"] = moment  # nobody to tell by mail is done too
            except Exception as exc:  # the mail backend's errors vary by backend
                errors.append(f"email: {exc}")
        if alert.webhook_sent_at is None:
            url = org.alert_webhook_url if org is not None else ""
            try:
                if url:
                    _post(url, text)
                    webhooks += 1
                done["webhook_sent_at"] = moment
            except OSError as exc:  # urllib's errors, timeouts and refusals
                errors.append(f"webhook: {exc}")
        failures += bool(errors)
        QuotaAlert.objects.filter(pk=alert.pk).update(**done, delivery_error="; ".join(errors))
        if errors:
            log.warning("quota alert %s not delivered yet: %s", alert.pk, "; ".join(errors))
    return Delivered(emails=emails, webhooks=webhooks, failures=failures)
