"""Reading the ``Summary:`` line ``manage.py demo`` prints, for the tests that check its figures."""

from __future__ import annotations

import re
from dataclasses import dataclass

SUMMARY_LINE = re.compile(
    r"^Summary: (?P<submitted>\d+) submitted"
    r"(?: \((?P<by_traffic>\d+) by the demo's traffic, (?P<others>\d+) from the web page or API\))?"
    r" \| (?P<figures>.*)$",
    re.M,
)
# Where a submitted request can be; every one is in exactly one of these.
STATES = ("queued", "in flight", "done", "failed", "rejected", "cancelled")
FINAL_STATES = ("done", "failed", "rejected", "cancelled")


@dataclass(frozen=True)
class Summary:
    submitted: int
    from_others: int  # submitted from the web page or the API, not by the demo's traffic
    figures: dict[str, str]  # "done" -> "30", "cache hits" -> "83%", "cost" -> "$0.1157"

    def count(self, name: str) -> int:
        return int(self.figures[name].rstrip("%"))

    def in_states(self, states: tuple[str, ...] = STATES) -> int:
        return sum(self.count(state) for state in states)


def parse_summary(output: str) -> Summary | None:
    """The last ``Summary:`` line of ``output``, or None when there is none."""
    matches = list(SUMMARY_LINE.finditer(output))
    if not matches:
        return None
    match = matches[-1]
    figures = dict(part.rsplit(" ", 1) for part in match["figures"].split(" | "))
    return Summary(
        submitted=int(match["submitted"]),
        from_others=int(match["others"] or 0),
        figures=figures,
    )
