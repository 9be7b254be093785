"""Transactions units report (POST /api/v1/transactions, `idguard transactions import`).

Every item is validated on its own and answered on its own: a bad item is rejected with errors
naming its fields, the good ones in the same batch are stored. Items are idempotent per
(unit, `ref`): the same content again is accepted (and changes nothing), other content under a
stored `ref` is an item error. Stored rows are classified in one set-based statement
(classify.py) right after they are inserted, in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idguard.accountability.classify import classify_where
from idguard.accountability.models import ClosedMonth, Transaction
from idguard.accountability.rules import month_of
from idguard.core.errors import RuleViolation
from idguard.core.idnumber import check_character, mask, normalised
from idguard.core.text import fault
from idguard.verification.rules import PURPOSES
from idguard.verification.runtime.checklog import IdHasher

MAX_ITEMS = 1000
REF_MAX = 64
FIELDS = ("ref", "at", "id_number", "purpose", "check_id")
# A transaction's time may run this far ahead of the registry's clock (units' clocks drift).
CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    detail: str


@dataclass(frozen=True, slots=True)
class ValidItem:
    ref: str
    at: dt.datetime
    id_hash: str
    id_masked: str
    purpose: str
    check_id: uuid.UUID | None

    def same_as(self, row: Transaction | ValidItem) -> bool:
        return (
            row.at == self.at
            and row.id_hash == self.id_hash
            and row.purpose == self.purpose
            and row.check_id == self.check_id
        )


@dataclass(slots=True)
class ItemResult:
    ref: str | None
    status: str  # accepted | rejected
    errors: list[FieldError] = field(default_factory=list)
    classification: str | None = None


def _text(raw: Mapping[str, Any], name: str, errors: list[FieldError], *, max_length: int) -> str | None:
    value = raw.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        errors.append(FieldError(name, "required"))
        return None
    if not isinstance(value, str):
        errors.append(FieldError(name, "must be a string"))
        return None
    value = value.strip()
    if len(value) > max_length:
        errors.append(FieldError(name, f"at most {max_length} characters"))
        return None
    problem = fault(value)
    if problem is not None:
        errors.append(FieldError(name, problem))
        return None
    return value


def validate(raw: Mapping[str, Any], *, hasher: IdHasher, now: dt.datetime) -> ValidItem | list[FieldError]:
    """One item (an API item, a CSV row, a JSONL object) as a ValidItem, or the errors naming
    each bad field. Unknown fields are errors too (a typo must not drop data silently)."""
    errors: list[FieldError] = []
    if not isinstance(raw, Mapping):
        return [FieldError("item", "must be an object")]
    for name in sorted(set(raw) - set(FIELDS)):
        errors.append(FieldError(str(name)[:40], f"unknown field; known: {', '.join(FIELDS)}"))
    ref = _text(raw, "ref", errors, max_length=REF_MAX)
    at_text = _text(raw, "at", errors, max_length=40)
    at: dt.datetime | None = None
    if at_text is not None:
        try:
            at = dt.datetime.fromisoformat(at_text)
        except ValueError:
            errors.append(FieldError("at", "an RFC 3339 time, e.g. 2026-06-15T02:00:00Z"))
        else:
            if at.tzinfo is None or at.utcoffset() is None:
                errors.append(FieldError("at", "give a time zone (RFC 3339), e.g. 2026-06-15T02:00:00Z"))
                at = None
            elif at.year < 2000:
                errors.append(FieldError("at", "before the year 2000"))
                at = None
            else:
                at = at.astimezone(dt.UTC)
                if at > now + CLOCK_SKEW:
                    errors.append(FieldError("at", "in the future: report a transaction once it happened"))
                    at = None
    number_text = _text(raw, "id_number", errors, max_length=40)
    number = normalised(number_text) if number_text is not None else None
    if number_text is not None and number is None:
        errors.append(FieldError("id_number", "18 characters: 17 digits and a check digit or X"))
    elif number is not None and check_character(number[:17]) != number[17]:
        errors.append(FieldError("id_number", "the check character does not match (ISO 7064 MOD 11-2)"))
        number = None
    purpose = _text(raw, "purpose", errors, max_length=40)
    if purpose is not None and purpose not in PURPOSES:
        errors.append(FieldError("purpose", f"unknown purpose; known: {', '.join(sorted(PURPOSES))}"))
    check_id: uuid.UUID | None = None
    raw_check = raw.get("check_id")
    if raw_check not in (None, ""):
        try:
            check_id = uuid.UUID(str(raw_check))
        except ValueError:
            errors.append(FieldError("check_id", "the check_id of one of your checks (a UUID), or omit it"))
    if errors or ref is None or at is None or number is None or purpose is None:
        return errors
    return ValidItem(ref, at, hasher(number), mask(number), purpose, check_id)


def closed_months(session: Session, months: Iterable[str]) -> set[str]:
    wanted = sorted(set(months))
    if not wanted:
        return set()
    return set(session.scalars(sa.select(ClosedMonth.month).where(ClosedMonth.month.in_(wanted))))


def stored_refs(session: Session, unit_code: str, refs: Sequence[str]) -> dict[str, Transaction]:
    rows: dict[str, Transaction] = {}
    for start in range(0, len(refs), 1000):
        chunk = refs[start : start + 1000]
        rows.update(
            (t.ref, t)
            for t in session.scalars(
                sa.select(Transaction).where(Transaction.unit_code == unit_code, Transaction.ref.in_(chunk))
            )
        )
    return rows


def differs(existing: Transaction | ValidItem) -> FieldError:
    return FieldError(
        "ref",
        f"ref already reported with other content (at {existing.at.isoformat().replace('+00:00', 'Z')}, "
        f"id number {existing.id_masked}, purpose {existing.purpose}): a ref names one transaction; "
        "use a new ref",
    )


def store(
    session: Session, *, unit_code: str, items: Sequence[ValidItem], now: dt.datetime, window: dt.timedelta
) -> int:
    """Insert new, validated items and classify them, set-based; return how many. The caller has
    checked them against stored refs (`submit`, the importer)."""
    if not items:
        return 0
    try:
        _insert(session, unit_code=unit_code, items=items, now=now, window=window)
    except IntegrityError:
        # Another request stored one of these refs between our look-up and our insert (only
        # PostgreSQL lets two run at once): nothing of this batch is written; a retry is then
        # answered per ref like any repeat.
        raise RuleViolation(
            "a concurrent request stored one of these refs at the same moment; nothing was written — "
            "send the batch again (items already stored with the same content are accepted)"
        ) from None
    refs = [i.ref for i in items]
    for start in range(0, len(refs), 1000):
        session.execute(
            classify_where(
                Transaction.unit_code == unit_code,
                Transaction.ref.in_(refs[start : start + 1000]),
                Transaction.classification.is_(None),
            ),
            execution_options={"synchronize_session": False},
        )
    return len(items)


def _insert(
    session: Session, *, unit_code: str, items: Sequence[ValidItem], now: dt.datetime, window: dt.timedelta
) -> None:
    session.execute(
        sa.insert(Transaction),
        [
            {
                "unit_code": unit_code,
                "ref": i.ref,
                "at": i.at,
                "month": month_of(i.at),
                "id_hash": i.id_hash,
                "id_masked": i.id_masked,
                "purpose": i.purpose,
                "check_id": i.check_id,
                "window_start": i.at - window,
                "window_end": i.at + window,
                "classification": None,
                "received_at": now,
            }
            for i in items
        ],
    )


def submit(
    session: Session,
    *,
    unit_code: str,
    items: Sequence[Any],
    now: dt.datetime,
    window: dt.timedelta,
    hash_key: str,
) -> list[ItemResult]:
    """A unit's batch: each item accepted or rejected with its errors, in order."""
    hasher = IdHasher(hash_key)
    checked: list[ValidItem | list[FieldError]] = [validate(raw, hasher=hasher, now=now) for raw in items]
    valid = [c for c in checked if isinstance(c, ValidItem)]
    stored = stored_refs(session, unit_code, sorted({v.ref for v in valid}))
    closed = closed_months(session, (month_of(v.at) for v in valid))
    results: list[ItemResult] = []
    new: dict[str, ValidItem] = {}
    for raw, item in zip(items, checked, strict=True):
        if not isinstance(item, ValidItem):
            ref = raw.get("ref") if isinstance(raw, Mapping) else None
            results.append(ItemResult(ref if isinstance(ref, str) else None, "rejected", item))
            continue
        earlier: Transaction | ValidItem | None = stored.get(item.ref) or new.get(item.ref)
        if earlier is not None:
            if item.same_as(earlier):
                results.append(ItemResult(item.ref, "accepted"))
            else:
                results.append(ItemResult(item.ref, "rejected", [differs(earlier)]))
            continue
        if month_of(item.at) in closed:
            results.append(
                ItemResult(
                    item.ref,
                    "rejected",
                    [FieldError("at", f"month {month_of(item.at)} is closed: its figures are final")],
                )
            )
            continue
        new[item.ref] = item
        results.append(ItemResult(item.ref, "accepted"))
    store(session, unit_code=unit_code, items=list(new.values()), now=now, window=window)
    classes = dict(
        session.execute(
            sa.select(Transaction.ref, Transaction.classification).where(
                Transaction.unit_code == unit_code,
                Transaction.ref.in_(sorted({r.ref for r in results if r.status == "accepted" and r.ref})),
            )
        ).all()
    )
    for result in results:
        if result.status == "accepted" and result.ref is not None:
            cls = classes.get(result.ref)
            result.classification = cls.value if cls is not None else None
    return results
