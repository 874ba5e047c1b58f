"""How the pages print numbers, money and date-times: the same values the JSON carries,
formatted for people. One home for each: ``usd`` for money, ``num`` for counts and tokens,
``when`` for a moment."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from django import template
from django.utils import formats, timezone
from django.utils.html import format_html

from llm_calls import catalog

register = template.Library()


@register.filter
def usd(value: Decimal | str | int | float | None) -> str:
    """``$1,234.5678``: four decimals (half-even) — the exact amount is in the JSON/CSV and in
    the element's title (``usd_exact``)."""
    try:
        amount = Decimal(str(value if value is not None else 0))
    except InvalidOperation:
        return str(value)
    shown = amount.quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)
    if shown.is_zero():
        shown = abs(shown)  # a refund of a few picodollars is "$0.0000", not "$-0.0000"
    return f"${shown:,.4f}" if shown >= 0 else f"-${-shown:,.4f}"


@register.filter
def when(value: dt.datetime | str | None, precision: str = "") -> str:
    """``2026-12-06 14:05 CET``: the moment in the reader's zone (``organizations.middleware``)
    with its abbreviation, in the project's DATETIME_FORMAT (``ratelimit_project/formats``);
    ``|when:"seconds"`` adds the seconds, for rows that happen seconds apart. Empty for None."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        # the ISO 8601 string a JSON payload carries (the staff overview renders from one)
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    else:
        moment = value
    if not isinstance(moment, dt.datetime):
        return str(moment)
    shown = timezone.localtime(moment) if timezone.is_aware(moment) else moment
    if precision == "seconds":
        # DATETIME_FORMAT with seconds; kept beside it so the two cannot drift apart
        return formats.date_format(
            shown, formats.get_format("DATETIME_FORMAT").replace("H:i", "H:i:s")
        )
    return formats.date_format(shown, "DATETIME_FORMAT")


@register.filter
def usd_exact(value: Decimal | str | None) -> str:
    try:
        amount = Decimal(str(value if value is not None else 0))
    except InvalidOperation:
        return str(value)
    return "0" if amount == 0 else format(amount.normalize(), "f")


@register.filter
def num(value: int | float | None) -> str:
    """Thousands separators: 1234567 -> 1,234,567."""
    if value is None:
        return "0"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


@register.filter
def pct(value: float | None) -> str:
    """A 0..1 ratio as a percentage with one decimal: 0.8264 -> 82.6%."""
    return f"{(value or 0) * 100:.1f}%"


@register.filter
def unpriced(count: int | None) -> str:
    """What goes beside every cost total: `` + 12 unpriced calls`` when some of the calls in
    it had no price on file (they are in the total at $0), else nothing."""
    n = int(count or 0)
    if not n:
        return ""
    return format_html(
        ' <span class="unpriced" data-unpriced="{}" title="calls on a model with no price on '
        'file, counted at $0 until a price is added">+ {} unpriced call{}</span>',
        n,
        f"{n:,}",
        "" if n == 1 else "s",
    )


@register.filter
def lifecycle(model: str) -> str:
    """Beside a model's name: `` deprecated on …, retires …, use … instead`` for a deprecated or
    retired model (so staff see what to move off), nothing for a current or legacy one."""
    info = catalog.model_info(model)
    if info is None or info.status not in (catalog.DEPRECATED, catalog.RETIRED):
        return ""
    return format_html(
        ' <span class="lifecycle" data-lifecycle="{}">{}</span>', info.status, info.lifecycle_note()
    )
