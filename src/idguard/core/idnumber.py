"""Citizen identity number (公民身份号码), GB 11643-1999.

18 characters: 6-digit region (GB/T 2260), 8-digit birth date, 3-digit sequence (odd = male),
one ISO 7064 MOD 11-2 check character. Validation is delegated to python-stdnum's `cn.ric`,
which knows the region table; we add the rule stdnum does not have: no birth date in the future.
"""

from __future__ import annotations

import codecs
import datetime as dt
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from stdnum import exceptions as stdnum_errors
from stdnum import numdb
from stdnum.cn import ric

from idguard.core.errors import InvalidField


class Sex(StrEnum):
    MALE = "male"
    FEMALE = "female"


@dataclass(frozen=True, slots=True)
class IdNumber:
    value: str
    birth_date: dt.date
    sex: Sex
    region: str

    def __str__(self) -> str:
        return mask(self.value)


# Unicode White_Space: what pydantic's strip_whitespace strips (Python's str.strip() also strips
# U+001C..U+001F), so a number is trimmed alike in every route.
WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)
# The shape of a number after `normalise`: ASCII digits only (`re`'s [0-9], unlike \d, is ASCII).
SHAPE = r"^[0-9]{17}[0-9X]$"
_SHAPE = re.compile(r"[0-9]{17}[0-9X]")
SHAPE_FAULT = "an id number is 17 digits (0-9) and a check digit or X"


def normalise(value: str) -> str:
    """The one form of an id number as sent, for every route: white space around it removed and
    upper case (a lower-case x check character is X); a number written with compatibility
    characters (full-width digits １１０１…, Ｘ) is first folded by NFKC to ASCII. ASCII text, the
    common case, is only stripped and upper-cased. Digits NFKC leaves alone (Arabic-Indic ١١٠…)
    stay as they are, and `parse` (or the SHAPE every route checks) refuses them."""
    if not value.isascii():
        value = unicodedata.normalize("NFKC", value)
    return value.strip(WHITE_SPACE).upper()


def normalised(value: str) -> str | None:
    """`normalise(value)` when it has the shape of an id number (17 ASCII digits and a digit or
    X), else None: the routes' one test of an id number's form (the checks of `parse` beyond the
    form need the region table and the date)."""
    number = normalise(value)
    return number if _SHAPE.fullmatch(number) else None


def parse(value: str, *, today: dt.date, field: str = "id_number") -> IdNumber:
    """Validate an id number; raise InvalidField naming `field` and the fault."""
    raw = normalise(value) if isinstance(value, str) else ""
    if len(raw) != 18:
        raise InvalidField(field, "an id number has 18 characters", code="invalid_id_number")
    if not _SHAPE.fullmatch(raw):
        raise InvalidField(field, SHAPE_FAULT, code="invalid_id_number")
    try:
        number = ric.validate(raw)
    except stdnum_errors.InvalidChecksum:
        raise InvalidField(
            field, "the check character does not match (ISO 7064 MOD 11-2)", code="invalid_id_number"
        ) from None
    except stdnum_errors.InvalidComponent:
        # stdnum raises InvalidComponent both for impossible dates and for regions it does not
        # place at the birth year.
        try:
            born = ric.get_birth_date(raw)
        except stdnum_errors.ValidationError:
            raise InvalidField(
                field, "the birth date in the id number is not a real date", code="invalid_id_number"
            ) from None
        if not _region_in_use_since(raw[:6], born.year):
            raise InvalidField(
                field, "the region code is not a known GB/T 2260 region", code="invalid_id_number"
            ) from None
        number = raw
    except stdnum_errors.ValidationError as exc:  # pragma: no cover - other stdnum faults
        raise InvalidField(field, f"not a valid id number: {exc}", code="invalid_id_number") from None
    birth_date = ric.get_birth_date(number)
    if birth_date > today:
        raise InvalidField(
            field, "the birth date in the id number is in the future", code="invalid_id_number"
        )
    sex = Sex.MALE if int(number[16]) % 2 == 1 else Sex.FEMALE
    return IdNumber(value=number, birth_date=birth_date, sex=sex, region=number[:6])


def _region_in_use_since(code: str, year: int) -> bool:
    """Whether the GB/T 2260 county `code` existed in `year` or was created later.

    The address code is the county where the number was assigned, which for people registered
    after birth (a new district, a move before the first card) can be younger than the person;
    stdnum only accepts counties that existed in the birth year. A county abolished before the
    birth year is still refused.
    """
    results = numdb.get("cn/loc").info(code)
    counties = [props["county"] for part, props in results if "county" in props]
    for entry in ",".join(counties).split(","):
        if not entry:
            continue
        if not entry.startswith("["):
            return True
        end = entry[1:].split("]")[0].split("-")[1]
        if not end or int(end) >= year:
            return True
    return False


def mask(value: str) -> str:
    """`110105194912310021` -> `110105********0021`: region and last four only, for logs."""
    if len(value) != 18:
        return "*" * len(value)
    return value[:6] + "*" * 8 + value[14:]


# An id-number-shaped token in text whose every character is ASCII (after `_folded`).
_IN_TEXT = re.compile(r"(?<![0-9A-Za-z])[1-9][0-9]{16}[0-9Xx](?![0-9A-Za-z])")
_HEX = frozenset("0123456789abcdefABCDEF")


def occurrences(text: str) -> list[tuple[int, int, str]]:
    """Every id-number-shaped token in `text`, whatever form it was written in, as (start, end,
    the number in ASCII upper case): plain, percent-encoded (`%31%31%30…`, or `%EF%BC%91…`, the
    UTF-8 of full-width digits, as an access log writes a request's path and query), in
    full-width or any other script's digits, or a mix. For masking logs (idguard.logs), so it
    errs towards finding: any Unicode decimal digit counts as its ASCII digit.

    ASCII text with no percent-encoded byte (nearly every log line, and the access log's format
    string `%s - "%s %s HTTP/%s" %d`) costs one regular-expression scan: there is nothing to fold."""
    if text.isascii() and _PERCENT_BYTE.search(text) is None:
        return [(m.start(), m.end(), m.group().upper()) for m in _IN_TEXT.finditer(text)]
    view, starts, ends = _folded(text)
    return [(starts[m.start()], ends[m.end() - 1], m.group().upper()) for m in _IN_TEXT.finditer(view)]


def _folded(text: str) -> tuple[str, list[int], list[int]]:
    """`text` with percent-encoded UTF-8 decoded, each character folded by NFKC and every decimal
    digit made ASCII; with, for each character of the result, the span of `text` it came from."""
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []

    def emit(char: str, start: int, end: int) -> None:
        folded = unicodedata.normalize("NFKC", char) if not char.isascii() else char
        for c in folded:
            digit = unicodedata.decimal(c, None) if not c.isascii() else None
            out.append(str(digit) if digit is not None else c)
            starts.append(start)
            ends.append(end)

    i, n = 0, len(text)
    while i < n:
        if _percent_byte(text, i) is None:
            emit(text[i], i, i + 1)
            i += 1
            continue
        # A run of %XX: decoded as UTF-8 byte by byte, so each character knows its span.
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        start = i
        while (byte := _percent_byte(text, i)) is not None:
            i += 3
            chars = decoder.decode(bytes((byte,)))
            for char in chars:
                emit(char, start, i)
            if chars:
                start = i
        for char in decoder.decode(b"", final=True):
            emit(char, start, i)
    return "".join(out), starts, ends


_PERCENT_BYTE = re.compile(r"%[0-9A-Fa-f]{2}")  # what _percent_byte decodes


def _percent_byte(text: str, i: int) -> int | None:
    """The byte `%XX` at `text[i]` encodes, if it is one."""
    if i < len(text) and text[i] == "%":
        digits = text[i + 1 : i + 3]
        if len(digits) == 2 and digits[0] in _HEX and digits[1] in _HEX:
            return int(digits, 16)
    return None


def check_character(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character for 17 digits (used by the demo generator)."""
    # stdnum expects the full number and ignores its last character.
    return str(ric.calc_check_digit(first17 + "0"))
