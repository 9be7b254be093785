"""Id numbers (core/idnumber.py): the cases the mutants `make mutation` found untested, written
out by hand (docs/testing.md lists them). Mostly log masking (`occurrences`): a number must be
found, so masked, whatever garbage surrounds it in an access log."""

from __future__ import annotations

import datetime as dt

import pytest

from idguard.core import idnumber
from idguard.core.errors import InvalidField
from idguard.core.idnumber import check_character, parse

VALID = "11010519491231002X"
TODAY = dt.date(2026, 6, 15)


def test_a_number_after_a_broken_percent_escape_is_still_found() -> None:
    # "%E5" starts a three-byte character that never comes: it decodes to U+FFFD, which is no
    # digit, so the number after it stands alone (not glued to the "1" before the escape).
    assert idnumber.occurrences("1%E5" + VALID) == [(4, 22, VALID)]
    assert idnumber.occurrences("1%E5%BC" + VALID) == [(7, 25, VALID)]


@pytest.mark.parametrize("junk", ["%G1", "%1G", "%%", "%", "%4", "%Z%31"])
def test_a_malformed_percent_escape_is_text_and_the_number_after_it_is_found(junk: str) -> None:
    # A log line with a stray `%` must neither crash the masking nor hide the number.
    text = f"q={junk} {VALID}"
    start = text.index(VALID)
    assert idnumber.occurrences(text) == [(start, start + 18, VALID)]


FULL_WIDTH = str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")


def test_a_full_width_number_is_found_in_text_without_any_percent_escape() -> None:
    wide = VALID.translate(FULL_WIDTH)
    text = f"申请人 {wide} 挂失"
    assert idnumber.occurrences(text) == [(4, 22, VALID)]


def test_numbers_are_found_anywhere_in_a_long_log_line() -> None:
    # Access-log lines run to hundreds of characters; positions past 256 must work alike.
    padding = "x" * 300
    text = f"{padding}%20{VALID}%20{padding}"
    start = len(padding) + 3
    assert idnumber.occurrences(text) == [(start, start + 18, VALID)]
    ending = f"{padding} {VALID}%41"  # the escape at the very end, "A" glued to the number
    assert idnumber.occurrences(ending) == []
    assert idnumber.occurrences(f"{padding} {VALID} %41") == [(301, 319, VALID)]


def numbered(region: str, birth: str) -> str:
    body = f"{region}{birth}001"
    return body + check_character(body)


def test_a_county_registered_after_birth_and_abolished_since_is_known() -> None:
    # 昌平县 (110221) existed 1982-1999: someone born in 1950 got a number there; nobody born after
    # 1999 did (docs/rules.md: a region may be younger than the person, not older than the number).
    assert parse(numbered("110221", "19500101"), today=TODAY).region == "110221"
    assert parse(numbered("110221", "19990101"), today=TODAY).region == "110221"
    with pytest.raises(InvalidField, match="region"):
        parse(numbered("110221", "20050101"), today=TODAY)


def test_a_number_at_the_very_start_of_the_text_is_found_in_every_form() -> None:
    wide = VALID.translate(FULL_WIDTH)
    encoded = "".join(f"%{b:02X}" for b in VALID.encode())
    assert idnumber.occurrences(wide + " 挂失") == [(0, 18, VALID)]
    assert idnumber.occurrences(encoded + "&x=1") == [(0, 54, VALID)]
