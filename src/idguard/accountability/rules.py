"""Accountability's pure rules (责任追究): transaction classes, the monthly level ladder, months,
and the case lifecycle. No SQLAlchemy, FastAPI or pydantic here (tests/unit/accountability).

The ladder is modelled on card schemes' monitoring programmes: a unit's month is judged by its
`violation_rate` = non-compliant transactions / transactions, and a level needs both the rate
and an absolute number of violations (a small unit with 3 bad transactions out of 100 is not
"excessive"). DOMAIN.md's defaults: `early_warning` from 0.65 % and 75 violations, `standard`
from 0.9 % and 100, `excessive` from 1.8 % and 1,000; below, `ok`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from dataclasses import dataclass
from enum import StrEnum

from idguard.core.clock import CST
from idguard.core.errors import InvalidField, RuleViolation


class TxClass(StrEnum):
    """How a reported transaction stands against the unit's own check log (API.md part 2)."""

    COMPLIANT = "compliant"  # latest check before `at` (within the window) valid, no alert
    UNCHECKED = "unchecked"  # no check of that number by that unit within the window
    CHECKED_AFTER = "checked_after"  # only checks after `at` (within the window after it)
    ACCEPTED_INVALID = "accepted_invalid"  # latest check before `at` answered invalid / mismatch
    IGNORED_ALERT = "ignored_alert"  # latest check before `at` valid but carried an alert


VIOLATIONS = frozenset(TxClass) - {TxClass.COMPLIANT}


class Level(StrEnum):
    OK = "ok"
    EARLY_WARNING = "early_warning"
    STANDARD = "standard"
    EXCESSIVE = "excessive"


@dataclass(frozen=True, slots=True)
class Rung:
    level: Level
    rate_percent: float  # from this violation rate (in %) ...
    min_violations: int  # ... and at least this many violations


@dataclass(frozen=True, slots=True)
class Ladder:
    """The rungs above `ok`, from the lowest to the highest."""

    rungs: tuple[Rung, ...]

    def level(self, transactions: int, violations: int) -> Level:
        """The highest rung the month reaches; `ok` when none (and for a month with nothing)."""
        if transactions <= 0 or violations <= 0:
            return Level.OK
        reached = Level.OK
        for rung in self.rungs:
            # Compare in integers: violations / transactions >= rate / 100 without float drift at
            # the boundary (0.65 % of 10,000 is exactly 65 violations).
            scaled = round(rung.rate_percent * 1_000_000)
            if violations * 100_000_000 >= scaled * transactions and violations >= rung.min_violations:
                reached = rung.level
        return reached


DEFAULT_LADDER_TEXT = "early_warning:0.65:75,standard:0.9:100,excessive:1.8:1000"


def parse_ladder(text: str) -> Ladder:
    """ "level:rate_percent:min_violations,…" (IDGUARD_COMPLIANCE_LEVELS) as a Ladder; every level
    above `ok` exactly once, in rising order of both numbers."""
    rungs: list[Rung] = []
    for n, part in enumerate(p.strip() for p in text.split(",")):
        pieces = part.split(":")
        if len(pieces) != 3:
            raise ValueError(f"compliance level {n + 1}: expected level:rate_percent:min_violations")
        name, rate, count = pieces
        try:
            rung = Rung(Level(name), float(rate), int(count))
        except ValueError:
            raise ValueError(f"compliance level {n + 1} ({part!r}) is not level:percent:count") from None
        if not 0 < rung.rate_percent <= 100 or rung.min_violations < 0:
            raise ValueError(f"compliance level {name}: rate must be in (0, 100], count >= 0")
        rungs.append(rung)
    levels = [r.level for r in rungs]
    if levels != [Level.EARLY_WARNING, Level.STANDARD, Level.EXCESSIVE]:
        raise ValueError("compliance levels must be early_warning, standard, excessive, in that order")
    for low, high in itertools.pairwise(rungs):
        if high.rate_percent < low.rate_percent or high.min_violations < low.min_violations:
            raise ValueError(f"compliance level {high.level} must not be below {low.level}")
    return Ladder(tuple(rungs))


DEFAULT_LADDER = parse_ladder(DEFAULT_LADDER_TEXT)


def violation_rate(transactions: int, violations: int) -> float:
    """Non-compliant / transactions, 0.0 for a month with none; rounded to 6 places."""
    return round(violations / transactions, 6) if transactions else 0.0


# Months are calendar months in China Standard Time, like every date the registry judges.
_MONTH = re.compile(r"(\d{4})-(\d{2})")


def parse_month(text: str, field: str = "month") -> str:
    """A `YYYY-MM` month, validated; InvalidField naming `field` otherwise."""
    match = _MONTH.fullmatch(text.strip())
    if match is None or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1970:
        raise InvalidField(field, "a month is YYYY-MM (e.g. 2026-05)")
    return f"{match.group(1)}-{match.group(2)}"


def month_of(at: dt.datetime) -> str:
    """The `YYYY-MM` (China Standard Time) a transaction at `at` belongs to."""
    return at.astimezone(CST).strftime("%Y-%m")


def month_bounds(month: str) -> tuple[dt.datetime, dt.datetime]:
    """The month's first instant and the next month's first instant, as aware UTC times."""
    year, mon = int(month[:4]), int(month[5:7])
    start = dt.datetime(year, mon, 1, tzinfo=CST)
    end = dt.datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=CST)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def closable_at(month: str, window: dt.timedelta) -> dt.datetime:
    """When a month can be closed: its end plus the check window, so a check made up to a
    window after the month's last transaction (`checked_after`) is counted before the figures
    are frozen."""
    return month_bounds(month)[1] + window


# Cases: open -> (responses, any number) -> decided (warning / suspension / dismissed).
class CaseStatus(StrEnum):
    OPEN = "open"
    DECIDED = "decided"


class Decision(StrEnum):
    WARNING = "warning"
    SUSPENSION = "suspension"
    DISMISSED = "dismissed"


class CaseEventKind(StrEnum):
    OPENED = "opened"
    RESPONSE = "response"  # the unit's statement (hearing, 听证/陈述申辩)
    DECIDED = "decided"
    REINSTATED = "reinstated"  # the unit's keys work again after a suspension


# What the unit is told through its notification channel (the case's other events are the
# unit's own statements, which it knows).
NOTIFIED = frozenset({CaseEventKind.OPENED, CaseEventKind.DECIDED, CaseEventKind.REINSTATED})


def check_can_respond(status: CaseStatus) -> None:
    """A unit answers while the case is open; after the decision the hearing is over."""
    if status is not CaseStatus.OPEN:
        raise RuleViolation("the case is decided: the hearing is over (appeal by the route in the decision)")


HEARING_PERIOD = dt.timedelta(days=7)


def check_can_decide(
    status: CaseStatus,
    *,
    responses: int,
    decision: Decision,
    opened_at: dt.datetime,
    now: dt.datetime,
    hearing_period: dt.timedelta = HEARING_PERIOD,
) -> None:
    """A case is decided once. A sanction (warning, suspension) needs the unit to have been
    heard: a response, or the hearing period since the case was opened gone by without one.
    Dismissal needs neither."""
    if status is not CaseStatus.OPEN:
        raise RuleViolation("the case is already decided; decisions are final and append-only")
    if decision is not Decision.DISMISSED and responses == 0 and now < opened_at + hearing_period:
        raise RuleViolation(
            "the unit has not been heard: a warning or suspension needs its response "
            "(POST /api/v1/cases/{case_no}/responses with the unit's key) or "
            f"{hearing_period.days} days since the case was opened without one"
        )
