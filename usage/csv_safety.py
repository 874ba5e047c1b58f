"""The one rule for what goes into a CSV cell, for every CSV this project writes.

Spreadsheets (Excel, LibreOffice, Google Sheets) run a cell that begins with ``=``, ``+``, ``-``
or ``@`` as a formula — and some strip a leading tab or carriage return first and then do the
same. Session ids, model names, usernames, organization names and error types are chosen by
users (or come back from upstream), so a session id like ``=HYPERLINK("http://evil","x")``
would become a live link (or worse) in whoever opens the billing export. OWASP's "CSV
Injection" rule: prefix such a cell with a single quote, which makes the spreadsheet show it as
the text it is.

Only text is touched. Numbers we write (token counts, costs, negative savings) are ints,
floats and Decimals and stay numbers a spreadsheet can add up.
"""

from __future__ import annotations

from decimal import Decimal

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a text cell as a formula (OWASP)."""


def csv_cell(value: object) -> object:
    """``value`` as it is safe to hand to ``csv.writer``: text that would start a formula gets
    a leading ``'``; a Decimal is written in plain notation (``str()`` would give ``1E-7`` for
    a tiny cost, which is not the exact amount the JSON shows); anything else is unchanged."""
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_TRIGGERS) else value
    if isinstance(value, Decimal):
        return format(value, "f")
    return value
