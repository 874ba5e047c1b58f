"""Parsing the dashboards' query parameters into checked values, with errors a person can act on."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_DAYS = 30
MAX_DAYS = 3660  # ten years: a longer range is almost certainly a typo
# Far past any listing's last page; a larger number would overflow the database's OFFSET.
MAX_PAGE = 1_000_000


class FilterError(ValueError):
    """A query parameter the dashboards cannot use; the message says which and why."""


@dataclass(frozen=True)
class DateRange:
    """Whole UTC days, both ends included."""

    start: dt.date
    end: dt.date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def each_day(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=i) for i in range(self.days)]

    def start_datetime(self) -> dt.datetime:
        return dt.datetime.combine(self.start, dt.time.min, tzinfo=dt.UTC)

    def end_datetime_exclusive(self) -> dt.datetime:
        return dt.datetime.combine(self.end + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)

    def as_query(self) -> str:
        return f"start={self.start.isoformat()}&end={self.end.isoformat()}"


def _parse_day(name: str, raw: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise FilterError(
            f"{name}={raw!r} is not a date; use YYYY-MM-DD, e.g. 2026-03-01."
        ) from None


def parse_date_range(*, params: Mapping[str, str], today: dt.date) -> DateRange:
    """``?days=N`` (the last N days, today included), or ``?start=&end=`` (both, inclusive),
    or nothing (the last 30 days). Mixing the two forms is refused, not guessed at."""
    days_raw = (params.get("days") or "").strip()
    start_raw = (params.get("start") or "").strip()
    end_raw = (params.get("end") or "").strip()
    if days_raw and (start_raw or end_raw):
        raise FilterError("Use either days=N or start=…&end=…, not both.")
    if start_raw or end_raw:
        if not (start_raw and end_raw):
            missing = "end" if start_raw else "start"
            raise FilterError(f"A custom range needs both start and end; {missing} is missing.")
        start = _parse_day("start", start_raw)
        end = _parse_day("end", end_raw)
        if start > end:
            raise FilterError(f"start ({start}) is after end ({end}).")
        if (end - start).days + 1 > MAX_DAYS:
            raise FilterError(f"The range is longer than {MAX_DAYS} days; pick a shorter one.")
        return DateRange(start=start, end=end)
    days = DEFAULT_DAYS
    if days_raw:
        try:
            days = int(days_raw)
        except ValueError:
            raise FilterError(f"days={days_raw!r} is not a whole number of days.") from None
        if not 1 <= days <= MAX_DAYS:
            raise FilterError(f"days must be between 1 and {MAX_DAYS}, got {days}.")
    return DateRange(start=today - dt.timedelta(days=days - 1), end=today)


def parse_page(*, params: Mapping[str, str]) -> int:
    raw = (params.get("page") or "1").strip()
    try:
        page = int(raw)
    except ValueError:
        raise FilterError(f"page={raw!r} is not a page number.") from None
    if page < 1:
        raise FilterError(f"page must be 1 or more, got {page}.")
    if page > MAX_PAGE:
        raise FilterError(f"page must be at most {MAX_PAGE:,}.")
    return page


def parse_choice(*, params: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """The parameter's value if it is one of ``choices``; the first choice when absent."""
    raw = (params.get(name) or "").strip()
    if not raw:
        return choices[0]
    if raw not in choices:
        raise FilterError(f"{name}={raw!r} is not one of: {', '.join(choices)}.")
    return raw
