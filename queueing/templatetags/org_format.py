"""How the organization admin's pages print a fair-share weight."""

from __future__ import annotations

from decimal import Decimal

from django import template

from queueing.org_admin import weight_text

register = template.Library()


@register.filter
def weight(value: Decimal | None) -> str:
    """1.500 -> "1.5", 2.000 -> "2": the figure the forms take, without padding zeros."""
    return "" if value is None else weight_text(value)
