"""How the dashboards print numbers: the same values the JSON carries, formatted for people."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from django import template

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
