"""Times a client gives, in UTC or refused naming the field (core/clock.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idguard.core.clock import CST, as_utc, isoformat
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


@given(
    st.datetimes(
        min_value=dt.datetime(1970, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
        timezones=st.sampled_from([dt.UTC, CST, None]),
    ),
    st.datetimes(
        min_value=dt.datetime(1970, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive
        timezones=st.just(dt.UTC),
    ),
)
def test_isoformat_is_the_datetimes_own_whichever_was_asked_last(
    first: dt.datetime, second: dt.datetime
) -> None:
    """The remembered text is only ever the asked object's own: asking another datetime (even
    an equal one in another zone) gives that one's text."""
    for at in (first, second, first, first.astimezone(dt.UTC) if first.tzinfo else first, second):
        assert isoformat(at) == at.isoformat()
