"""The organization admin's forms: a member's quota and weight, a new gateway key.

They check what a form can (types, ranges, one owner per key); the rules that need the
organization — "within its own quota", "a member of it" — are the services'
(``queueing.org_admin``), whose ``ValidationError`` the views put back on these forms' fields.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

from django import forms

from llm_calls.catalog import callable_models
from organizations.models import Membership
from queueing import conf
from queueing.models import Quota
from queueing.org_admin import MEMBER_LIMITS, figure, weight_text


def _usd(label: str) -> forms.DecimalField:
    """An optional amount in US dollars, as Quota stores them (to the micro-dollar)."""
    return forms.DecimalField(
        required=False, label=label, max_digits=14, decimal_places=6, min_value=Decimal(0)
    )


class MemberQuotaForm(forms.Form):
    """Blank means "no limit of their own": the organization's limits still apply."""

    tokens_per_day = forms.IntegerField(required=False, min_value=0, label="Tokens per day")
    tokens_per_month = forms.IntegerField(required=False, min_value=0, label="Tokens per month")
    usd_per_day = _usd("US dollars per day")
    usd_per_month = _usd("US dollars per month")
    max_concurrent = forms.IntegerField(
        required=False, min_value=0, label="Requests in progress at once"
    )
    weight = forms.DecimalField(
        max_digits=8,
        decimal_places=3,
        min_value=Decimal("0.001"),
        label="Fair-share weight",
        help_text="Their share of the queue against everyone else's when it is busy.",
    )

    def __init__(self, *args: Any, organization_quota: Quota | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Beside each field, the organization's own figure: the most it may be.
        for field, _label in MEMBER_LIMITS:
            ceiling = getattr(organization_quota, field) if organization_quota else None
            self.fields[field].help_text = (
                f"At most {figure(field, ceiling)} (the organization's)."
                if ceiling is not None
                else "The organization has no limit of this kind."
            )
        org_weight = organization_quota.weight if organization_quota else Decimal(1)
        self.fields[
            "weight"
        ].help_text += f" At most {weight_text(org_weight)} (the organization's)."


class KeyForm(forms.Form):
    """A gateway key for one member, or for a new service account named here."""

    owner = forms.TypedChoiceField(
        choices=(), coerce=int, empty_value=None, required=False, label="For"
    )
    service_account_name = forms.CharField(
        required=False,
        max_length=150,
        label="…or a new service account",
        help_text="A user that stands for an app: it calls with keys and never logs in.",
    )
    name = forms.CharField(max_length=100, label="Key name", help_text="To recognise it by.")
    expires_in_days = forms.IntegerField(
        required=False, min_value=1, max_value=3650, label="Expires after (days)"
    )
    allowed_models = forms.MultipleChoiceField(
        required=False,
        choices=(),
        widget=forms.SelectMultiple(attrs={"size": 5}),
        help_text="None chosen: every model.",
    )
    default_priority = forms.ChoiceField(required=False, choices=(), label="Default priority")
    budget_usd_per_day = _usd("Budget, USD per day")
    budget_usd_per_month = _usd("Budget, USD per month")

    def __init__(self, *args: Any, members: list[Membership], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["owner"]).choices = [
            ("", "— a new service account —")
        ] + [
            (m.user_id, f"{m.user.get_username()} ({m.get_role_display().lower()})")
            for m in members
            if m.user.is_active
        ]
        cast(forms.ChoiceField, self.fields["allowed_models"]).choices = [
            (info.model_id, info.model_id)
            for info in sorted(callable_models().values(), key=lambda i: i.model_id)
            if not info.limited_availability
        ]
        cast(forms.ChoiceField, self.fields["default_priority"]).choices = [
            ("", "interactive (the default)")
        ] + [(p, p) for p in conf.priority_class_names()]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        has_owner = data.get("owner") is not None
        has_account = bool((data.get("service_account_name") or "").strip())
        if has_owner == has_account:
            raise forms.ValidationError(
                "Choose a member, or name a new service account — one of the two."
            )
        return data
