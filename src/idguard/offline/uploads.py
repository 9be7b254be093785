"""Offline checks uploaded by a unit (POST /api/v1/offline/checks): each is a check like any other,
appended to the verifier's check log (runtime/checklog.py) under the unit, so the unit's history
(GET /api/v1/checks), accountability and the holder's own view see it. Idempotent per check id:
an id already recorded for the unit is answered `duplicate` and not recorded again."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.verification.models import Check
from idguard.verification.runtime.checklog import CHECK_FIELDS, CheckEntry, IdHasher, Signal
from idguard.verification.runtime.keyring import UnitView
from idguard.watchlist import incidents

MAX_ITEMS = 1000
CLOCK_SKEW = dt.timedelta(minutes=5)  # a reader's clock may run this far ahead of ours


@dataclass(frozen=True, slots=True)
class OfflineCheck:
    check_id: uuid.UUID
    at: dt.datetime
    id_number: str
    result: str  # valid / invalid
    version: int  # the set's version the answer was given at
    operator: str
    purpose: str | None
    chip_serial: str | None = None  # read from the chip: identifies the card (incidents)


@dataclass(frozen=True, slots=True)
class Outcome:
    check_id: uuid.UUID
    status: str  # recorded / duplicate / rejected
    errors: tuple[tuple[str, str], ...] = ()


def recorded_owners(session: Session, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """{check id: unit code} of those already in the check log."""
    found: dict[uuid.UUID, str] = {}
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        rows = session.execute(sa.select(Check.id, Check.unit_code).where(Check.id.in_(chunk)))
        found.update((check_id, unit_code) for check_id, unit_code in rows)
    return found


def plan(
    unit: UnitView, items: Sequence[OfflineCheck], owners: dict[uuid.UUID, str], now: dt.datetime
) -> tuple[list[Outcome], list[CheckEntry]]:
    """Each item's outcome, and the check-log entries of those to record (built by field name
    from CHECK_FIELDS, so a field the check log gains shows up here as a KeyError in tests)."""
    outcomes: list[Outcome] = []
    entries: list[CheckEntry] = []
    seen: set[uuid.UUID] = set()
    for item in items:
        errors: list[tuple[str, str]] = []
        owner = owners.get(item.check_id)
        if item.check_id in seen or owner == unit.code:
            outcomes.append(Outcome(item.check_id, "duplicate"))
            continue
        if owner is not None:
            errors.append(("check_id", "this check id is already used: send a new UUID"))
        purpose = item.purpose
        if purpose is None:
            if len(unit.purposes) == 1:
                purpose = next(iter(unit.purposes))
            else:
                errors.append(("purpose", "required: your unit has several purposes"))
        elif purpose not in unit.purposes:
            errors.append(("purpose", f"your unit may not check for purpose {purpose!r}"))
        if item.at > now + CLOCK_SKEW:
            errors.append(("at", "the check's time is in the future"))
        if errors:
            outcomes.append(Outcome(item.check_id, "rejected", tuple(errors)))
            continue
        seen.add(item.check_id)
        values: dict[str, object] = {
            "check_id": str(item.check_id),
            "unit_code": unit.code,
            "operator": item.operator,
            "purpose": purpose,
            "at": item.at.astimezone(dt.UTC),
            "result": item.result,
            "reason": None,  # the offline set says valid or invalid, never why
            "id_number": item.id_number,
            "watch_on": None,
            "seq": item.version,
            "fingerprint_match": None,
            "alerts": None,
        }
        entries.append(cast(CheckEntry, tuple(values[f] for f in CHECK_FIELDS)))
        outcomes.append(Outcome(item.check_id, "recorded"))
    return outcomes, entries


Observed = tuple[str, str, str, str]  # (unit code, operator, id hash, result): what the writer reports


class UploadedChecks:
    """The uploaded checks not yet written, so harvesting detection does not judge them.

    The check log tells `on_written` of every check it writes; the verifier's harvesting watch
    flags a unit when one operator sends hundreds of distinct numbers within a minute. A reader
    uploading the morning's offline checks at once looks exactly like that, yet they were made
    at the gate, one by one, hours apart. `install` puts `observe` in front of the hook: rows of
    an upload are taken out of what harvesting sees (metrics still count them)."""

    MAX_PENDING = 1_000_000

    def __init__(self, check_hash_key: str) -> None:
        self._hasher = IdHasher(check_hash_key)
        self._pending: Counter[Observed] = Counter()
        self._lock = threading.Lock()

    def expect(self, entries: Sequence[CheckEntry]) -> None:
        unit = CHECK_FIELDS.index("unit_code")
        operator = CHECK_FIELDS.index("operator")
        number = CHECK_FIELDS.index("id_number")
        result = CHECK_FIELDS.index("result")
        rows = [
            (str(e[unit]), str(e[operator]), self._hasher(str(e[number])), str(e[result])) for e in entries
        ]
        with self._lock:
            if len(self._pending) > self.MAX_PENDING:  # rows that were never reported (a replay)
                self._pending.clear()
            self._pending.update(rows)

    def observe(self, told: Callable[[list[Observed]], None] | None) -> Callable[[list[Observed]], None]:
        """An `on_written` hook passing on to `told` what is not an upload's."""

        def written(rows: list[Observed]) -> None:
            with self._lock:
                pending = self._pending
                kept = []
                for row in rows:
                    if pending.get(row):
                        pending[row] -= 1
                        if not pending[row]:
                            del pending[row]
                    else:
                        kept.append(row)
            if kept and told is not None:
                told(kept)

        return written


def incident_signals(
    session: Session, unit_code: str, items: Sequence[OfflineCheck], outcomes: Sequence[Outcome]
) -> list[Signal]:
    """The incidents the recorded checks of an upload open, as online checks would have
    (watchlist/incidents.offline_signals): handed to the check log with the checks, so the
    watchlist opens them once the checks are durable, by the same dedup rule."""
    recorded = {o.check_id for o in outcomes if o.status == "recorded"}
    return incidents.offline_signals(
        session,
        [
            (str(i.check_id), unit_code, i.at.astimezone(dt.UTC), i.id_number, i.chip_serial, i.result)
            for i in items
            if i.check_id in recorded
        ],
    )
