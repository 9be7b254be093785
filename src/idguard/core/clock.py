"""Time as the registry sees it.

Dates on cards and expiry are judged in China Standard Time (UTC+8, no daylight saving), so a
fixed offset is exact and needs no tz database. Services take `now` from a Clock so tests can
move time forward.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

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


def today_cst(now: dt.datetime) -> dt.date:
    """The calendar date in China for an aware UTC instant."""
    return now.astimezone(CST).date()
