"""Citizen identity number (公民身份号码), GB 11643-1999.

18 characters: 6-digit region (GB/T 2260), 8-digit birth date, 3-digit sequence (odd = male),
one ISO 7064 MOD 11-2 check character. Validation is delegated to python-stdnum's `cn.ric`,
which knows the region table; we add the rule stdnum does not have: no birth date in the future.
"""

from __future__ import annotations

import datetime as dt
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


def parse(value: str, *, today: dt.date, field: str = "id_number") -> IdNumber:
    """Validate an id number; raise InvalidField naming `field` and the fault."""
    raw = value.strip().upper() if isinstance(value, str) else ""
    if len(raw) != 18:
        raise InvalidField(field, "an id number has 18 characters")
    if not raw[:17].isdigit() or not (raw[17].isdigit() or raw[17] == "X"):
        raise InvalidField(field, "an id number is 17 digits and a check digit or X")
    try:
        number = ric.validate(raw)
    except stdnum_errors.InvalidChecksum:
        raise InvalidField(field, "the check character does not match (ISO 7064 MOD 11-2)") from None
    except stdnum_errors.InvalidComponent:
        # stdnum raises InvalidComponent both for impossible dates and for regions it does not
        # place at the birth year.
        try:
            born = ric.get_birth_date(raw)
        except stdnum_errors.ValidationError:
            raise InvalidField(field, "the birth date in the id number is not a real date") from None
        if not _region_in_use_since(raw[:6], born.year):
            raise InvalidField(field, "the region code is not a known GB/T 2260 region") from None
        number = raw
    except stdnum_errors.ValidationError as exc:  # pragma: no cover - other stdnum faults
        raise InvalidField(field, f"not a valid id number: {exc}") from None
    birth_date = ric.get_birth_date(number)
    if birth_date > today:
        raise InvalidField(field, "the birth date in the id number is in the future")
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


def check_character(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character for 17 digits (used by the demo generator)."""
    # stdnum expects the full number and ignores its last character.
    return str(ric.calc_check_digit(first17 + "0"))
