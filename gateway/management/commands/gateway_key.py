"""``manage.py gateway_key create|list|revoke``: gateway keys from the command line.

A key belongs to a user. With ``--org``, the user is that organization's *service account*:
created if it does not exist yet (it cannot log in to the pages), and its spend lands on the
organization's dashboards and quotas like a member's. ``--budget-usd-per-day`` /
``--budget-usd-per-month`` give the key a budget of its own (its ``Quota`` row, made with it),
on top of its user's and organization's quotas.
"""

from argparse import ArgumentParser
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from llm_calls import catalog
from organizations.models import Membership, Organization
from queueing import conf
from queueing.auth import api_token_create
from queueing.models import ApiToken


class Command(BaseCommand):
    help = "Create, list or revoke gateway keys (the key is printed once, on the last line)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="Create a key and print it.")
        create.add_argument("--user", required=True, help="The user (or service account) name.")
        create.add_argument("--org", help="The organization of a service account.")
        create.add_argument("--name", default="", help="A label to recognise the key by.")
        create.add_argument("--expires-days", type=float, help="Expire after this many days.")
        create.add_argument(
            "--models", default="", help="Comma-separated model ids the key may use (default: all)."
        )
        create.add_argument("--priority", default="", help="The key's default priority class.")
        create.add_argument(
            "--budget-usd-per-day", help="The most the key may spend per UTC day, in US dollars."
        )
        create.add_argument(
            "--budget-usd-per-month",
            help="The most the key may spend per UTC month, in US dollars.",
        )
        listing = actions.add_parser("list", help="List keys (never the keys themselves).")
        listing.add_argument("--user", help="Only this user's keys.")
        revoke = actions.add_parser("revoke", help="Revoke a key by its prefix.")
        revoke.add_argument("prefix", help="The key's first characters, as `list` shows them.")

    def handle(self, *args: Any, **options: Any) -> None:
        {"create": self._create, "list": self._list, "revoke": self._revoke}[options["action"]](
            options
        )

    def _create(self, options: dict[str, Any]) -> None:
        models = [m.strip() for m in options["models"].split(",") if m.strip()]
        unknown = [m for m in models if catalog.model_info(m) is None]
        if unknown:
            raise CommandError(
                f"--models: unknown model {unknown[0]!r}; known: {', '.join(sorted(catalog.known_models()))}"
            )
        priority = options["priority"]
        if priority and priority not in conf.priority_class_names():
            raise CommandError(
                f"--priority: unknown class {priority!r}; choose one of: "
                + ", ".join(conf.priority_class_names())
            )
        days = options["expires_days"]
        if days is not None and not days > 0:
            raise CommandError(f"--expires-days must be more than 0, got {days}")
        per_day = _budget("--budget-usd-per-day", options["budget_usd_per_day"])
        per_month = _budget("--budget-usd-per-month", options["budget_usd_per_month"])
        with transaction.atomic():
            user = self._owner(name=options["user"], org_name=options["org"])
            token, raw = api_token_create(
                user=user,
                name=options["name"] or f"{user.get_username()} key",
                expires_at=None if days is None else timezone.now() + timedelta(days=days),
                allowed_models=models,
                default_priority=priority,
                budget_usd_per_day=per_day,
                budget_usd_per_month=per_month,
            )
        budget = ", ".join(
            f"${amount:,} per {period}"
            for amount, period in ((per_day, "day"), (per_month, "month"))
            if amount is not None
        )
        self.stdout.write(
            f"Created key {token.prefix}… for {user.get_username()}"
            + (f" (budget {budget})" if budget else "")
            + "; it is shown once:"
        )
        self.stdout.write(raw)

    def _owner(self, *, name: str, org_name: str | None) -> Any:
        users = get_user_model()
        user = users.objects.filter(username=name).first()
        if org_name is None:
            if user is None:
                raise CommandError(
                    f"--user: no user named {name!r} (add --org to make a service account)"
                )
            return user
        org = Organization.objects.filter(name=org_name).first()
        if org is None:
            raise CommandError(f"--org: no organization named {org_name!r}")
        if user is None:
            user = users.objects.create_user(username=name)
            user.set_unusable_password()  # a service account calls the API; it never logs in
            user.save(update_fields=["password"])
            Membership.objects.create(user=user, organization=org, role=Membership.Role.SERVICE)
            return user
        membership = Membership.objects.filter(user=user).select_related("organization").first()
        if membership is None or membership.organization_id != org.pk:
            where = "no organization" if membership is None else membership.organization.name
            raise CommandError(f"--org: {name!r} belongs to {where}, not to {org_name!r}")
        return user

    def _list(self, options: dict[str, Any]) -> None:
        keys = ApiToken.objects.select_related("user", "quota").order_by(
            "user__username", "created_at"
        )
        if options["user"]:
            keys = keys.filter(user__username=options["user"])
        for key in keys:
            state = (
                "revoked"
                if key.revoked
                else ("expires " + f"{key.expires_at:%Y-%m-%d}" if key.expires_at else "active")
            )
            self.stdout.write(
                f"{key.prefix}…  {key.user.get_username():<20} {key.name:<30} {state}"
                + _budget_text(key)
            )

    def _revoke(self, options: dict[str, Any]) -> None:
        prefix = options["prefix"].rstrip("…")
        matches = list(ApiToken.objects.filter(prefix__startswith=prefix, revoked=False))
        if len(matches) != 1:
            raise CommandError(
                f"{len(matches)} active keys start with {prefix!r}; give more of the prefix"
                if matches
                else f"no active key starts with {prefix!r}"
            )
        ApiToken.objects.filter(pk=matches[0].pk).update(revoked=True)
        self.stdout.write(f"Revoked {matches[0].prefix}… ({matches[0].name})")


# The budget columns: 14 digits, 6 after the point (micro-dollars, as quotas count money).
_BUDGET_PLACES = Decimal("0.000001")
_BUDGET_MAX = Decimal("99999999.999999")


def _budget(flag: str, given: str | None) -> Decimal | None:
    """A budget in US dollars, more than 0, at most to the micro-dollar; None if not given."""
    if given is None:
        return None
    try:
        amount = Decimal(given.strip())
    except InvalidOperation:
        raise CommandError(
            f"{flag} must be an amount in US dollars, e.g. 5 or 2.50; got {given!r}"
        ) from None
    if not amount.is_finite() or not amount > 0:
        raise CommandError(f"{flag} must be more than 0 US dollars, got {given!r}")
    if amount > _BUDGET_MAX or amount != amount.quantize(_BUDGET_PLACES):
        raise CommandError(
            f"{flag} must be at most ${_BUDGET_MAX:,} with at most 6 decimal places, got {given!r}"
        )
    return amount


def _budget_text(key: ApiToken) -> str:
    """``  budget $5/day, $50/month`` for a key with a budget, else nothing."""
    quota = getattr(key, "quota", None)
    if quota is None:
        return ""
    parts = [
        f"${amount:,.2f}/{period}"
        for amount, period in ((quota.usd_per_day, "day"), (quota.usd_per_month, "month"))
        if amount is not None
    ]
    parts += [
        f"{tokens:,} tokens/{period}"
        for tokens, period in ((quota.tokens_per_day, "day"), (quota.tokens_per_month, "month"))
        if tokens is not None
    ]
    return f"  budget {', '.join(parts)}" if parts else ""
