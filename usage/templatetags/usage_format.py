"""How the dashboards print numbers: the same values the JSON carries, formatted for people."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from django import template
from django.utils.html import format_html

from llm_calls import catalog

register = template.Library()


@register.filter
def usd(value: Decimal | str | int | None) -> str:
    """``$1,234.5678``: four decimals (half-even) — the exact amount is in the JSON/CSV and in
    the element's title (``usd_exact``)."""
    try:
        amount = Decimal(str(value if value is not None else 0))
    except InvalidOperation:
        return str(value)
    shown = amount.quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)
    return f"${shown:,.4f}" if shown >= 0 else f"-${-shown:,.4f}"


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
