"""Times a client gives, in UTC or refused naming the field (core/clock.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from idguard.core.clock import as_utc
from idguard.core.errors import InvalidField


def test_an_aware_time_is_converted_to_utc() -> None:
    cst = dt.timezone(dt.timedelta(hours=8))
    assert as_utc(dt.datetime(2026, 1, 1, 8, tzinfo=cst), "from") == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    edge = dt.datetime(1, 1, 1, 14, tzinfo=dt.timezone(dt.timedelta(hours=14)))
    assert as_utc(edge, "from") == dt.datetime(1, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (dt.datetime(2026, 1, 1), "time zone"),  # noqa: DTZ001 - the naive time under test
        (dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=14))), "out of range"),
        (dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.timezone(dt.timedelta(hours=-14))), "out of range"),
    ],
)
def test_a_time_without_zone_or_outside_the_calendar_in_utc_is_refused(value: dt.datetime, says: str) -> None:
    with pytest.raises(InvalidField) as info:
        as_utc(value, "to")
    assert info.value.field == "to"
    assert says in info.value.detail
