"""Part 1, beside the index: what strict `YYYY-MM-DD` card dates cost a check's validation.

The same item validated from its JSON (the verify routes' one-pass `validate_json`) by
`VerifyItem` as it is (dates judged in pydantic's Rust core: the text's shape, then the date)
and by the same TypedDict with the dates as they were before issue 18 (pydantic's lax `date`,
which also took `2015-03-01T00:00:00Z` and numbers), interleaved, medians.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import timeit
from typing import Annotated, NotRequired

from pydantic import ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import TypedDict

from bench.harness import note, table
from idguard.verification import schemas

_Lax = Annotated[dt.date, Field(ge=schemas.FIRST_CARDS)]


@with_config(ConfigDict(extra="forbid"))
class LaxItem(TypedDict):
    id_number: schemas._IdNumber
    name: schemas._Name
    issued_on: _Lax
    expires_on: _Lax | None
    purpose: schemas._Purpose
    operator: schemas._Operator
    chip_serial: NotRequired[schemas._ChipSerial | None]
    fingerprint: NotRequired[schemas._Fingerprint | None]
    watch: NotRequired[bool]


def run(rounds: int = 7, number: int = 20_000) -> tuple[float, float]:
    lax, strict = TypeAdapter(LaxItem), TypeAdapter(schemas.VerifyItem)
    body = json.dumps(
        {
            "id_number": "11010519491231002X",
            "name": "张三",
            "issued_on": "2015-03-01",
            "expires_on": "2035-03-01",
            "purpose": "account_opening",
            "operator": "teller-0042",
        },
        ensure_ascii=False,
    ).encode()
    assert lax.validate_json(body) == strict.validate_json(body)  # the same values
    before: list[float] = []
    after: list[float] = []
    for _ in range(rounds):
        before.append(
            min(timeit.repeat(lambda: lax.validate_json(body), number=number, repeat=3)) / number * 1e6
        )
        after.append(
            min(timeit.repeat(lambda: strict.validate_json(body), number=number, repeat=3)) / number * 1e6
        )
    b, a = statistics.median(before), statistics.median(after)
    table(
        f"Part 1b - a verify item's validation from JSON, lax vs strict dates ({rounds} interleaved rounds)",
        ("dates", "us per item", "vs lax"),
        [("lax (before issue 18)", b, 1.0), ("strict YYYY-MM-DD", a, a / b)],
    )
    note(f"strict dates cost {a - b:+.2f} us per checked item")
    return b, a


if __name__ == "__main__":
    run()
