"""Time as the registry sees it.

Dates on cards and expiry are judged in China Standard Time (UTC+8, no daylight saving), so a
fixed offset is exact and needs no tz database. Services take `now` from a Clock so tests can
move time forward.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from idguard.core.errors import InvalidField

CST = dt.timezone(dt.timedelta(hours=8), name="CST")


class Clock(Protocol):
    def now(self) -> dt.datetime: ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class FixedClock:
    """A clock for tests and the demo loader: stays where it is put."""

    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def now(self) -> dt.datetime:
        return self.at

    def advance(self, delta: dt.timedelta) -> None:
        self.at += delta


_last_iso: tuple[dt.datetime | None, str] = (None, "")


def isoformat(at: dt.datetime) -> str:
    """`at.isoformat()`, remembered for the last datetime object asked: a single check formats
    its `now` twice (the answer's `checked_at`, the check log's row), ~1 us each (issue 14).
    The cache is one (object, text) pair swapped whole, so any thread reads a matching pair."""
    global _last_iso
    last = _last_iso
    if last[0] is at:
        return last[1]
    text = at.isoformat()
    _last_iso = (at, text)
    return text


def today_cst(now: dt.datetime) -> dt.date:
    """The calendar date in China for an aware UTC instant."""
    return now.astimezone(CST).date()


def as_utc(value: dt.datetime, field: str) -> dt.datetime:
    """An instant a client gave (a filter bound, a cursor) in UTC, as every time column stores it.
    InvalidField naming `field` for a time without a zone, or one outside the calendar once in
    UTC (0001-01-01T00:00:00+14:00 is in the year 0 in UTC; 9999-12-31T23:59:59-14:00 in 10000),
    which no column can hold."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidField(field, "give a time zone (RFC 3339)", code="invalid_time")
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise InvalidField(
            field, "out of range: the time is before year 1 or after year 9999 in UTC"
        ) from None
