"""Importing a unit's transactions from a file (`idguard transactions import UNIT FILE`).

The file is CSV (a header row naming the fields: ref, at, id_number, purpose, check_id) or JSONL
(one object per line), chosen by its extension (`.csv`, `.jsonl` / `.ndjson`).

The reading chosen (docs/accountability.md): the whole file is validated first, and if ANY row
is bad nothing is imported — the errors name each bad row (its line in the file) and field, so
the unit fixes the file and runs the command again. A file that validates is stored in batches,
each in its own transaction; a `ref` already stored with the same content is skipped, so an
interrupted import is resumed by running the same command again. A stored `ref` with other
content is a bad row (a ref names one transaction).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from idguard.accountability.rules import month_of
from idguard.accountability.transactions import (
    FIELDS,
    FieldError,
    ValidItem,
    closed_months,
    differs,
    stored_refs,
    validate,
)
from idguard.verification.runtime.checklog import IdHasher

BATCH = 5000
MAX_REPORTED_ERRORS = 100


@dataclass(frozen=True, slots=True)
class RowError:
    row: int  # the line in the file (1 = the first line; a CSV's header is line 1)
    field: str
    detail: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.field}: {self.detail}"


class BadFile(Exception):
    def __init__(self, errors: list[RowError], total: int) -> None:
        super().__init__(f"{total} bad rows")
        self.errors = errors
        self.total = total


def _rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, raw row) for every data row; a row that cannot be read at all is a dict
    with a marker the validator reports."""
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8-sig")
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        unknown = [h for h in header if h not in FIELDS]
        if unknown or "ref" not in header:
            raise BadFile(
                [RowError(1, "header", f"expected columns {', '.join(FIELDS)}; got {', '.join(header)}")], 1
            )
        for record in reader:
            extra = record.pop(None, None)
            row: dict[str, Any] = {k: v for k, v in record.items() if v not in (None, "")}
            if extra:
                row["row"] = "more values than columns"
            yield reader.line_num, row
    elif suffix in (".jsonl", ".ndjson"):
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                yield n, {"row": f"not JSON: {exc.msg}"}
    else:
        raise BadFile([RowError(0, "file", "a .csv, .jsonl or .ndjson file")], 1)


@dataclass(frozen=True, slots=True)
class Plan:
    new: list[ValidItem]
    skipped: int  # refs already stored with the same content
    total: int


def plan(session: Session, *, unit_code: str, path: Path, hash_key: str, now: dt.datetime) -> Plan:
    """Validate the whole file against the rules and the stored refs; BadFile lists the first
    MAX_REPORTED_ERRORS errors (and how many rows are bad) when any row is bad."""
    hasher = IdHasher(hash_key)
    errors: list[RowError] = []
    bad_rows = 0
    valid: list[tuple[int, ValidItem]] = []
    for line, raw in _rows(path):
        if isinstance(raw, dict) and "row" in raw and isinstance(raw["row"], str) and set(raw) == {"row"}:
            bad_rows += 1
            errors.append(RowError(line, "row", raw["row"]))
            continue
        checked = validate(raw, hasher=hasher, now=now)
        if isinstance(checked, list):
            bad_rows += 1
            errors.extend(RowError(line, e.field, e.detail) for e in checked)
        else:
            valid.append((line, checked))
    seen: dict[str, tuple[int, ValidItem]] = {}
    new: list[ValidItem] = []
    skipped = 0
    closed = closed_months(session, (month_of(v.at) for _, v in valid))
    for start in range(0, len(valid), BATCH):
        chunk = valid[start : start + BATCH]
        stored = stored_refs(session, unit_code, sorted({v.ref for _, v in chunk}))
        for line, item in chunk:
            earlier = stored.get(item.ref)
            first = seen.get(item.ref)
            problem: FieldError | None = None
            if earlier is not None:
                if item.same_as(earlier):
                    skipped += 1
                    continue
                problem = differs(earlier)
            elif first is not None:
                if item.same_as(first[1]):
                    continue  # the same transaction twice in the file
                problem = FieldError("ref", f"ref also on row {first[0]} with other content")
            elif month_of(item.at) in closed:
                problem = FieldError("at", f"month {month_of(item.at)} is closed: its figures are final")
            if problem is not None:
                bad_rows += 1
                errors.append(RowError(line, problem.field, problem.detail))
                continue
            seen[item.ref] = (line, item)
            new.append(item)
    if errors:
        raise BadFile(errors[:MAX_REPORTED_ERRORS], bad_rows)
    return Plan(new, skipped, len(valid))
