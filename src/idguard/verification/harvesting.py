"""Harvesting detection (DOMAIN: anomaly alerts): a unit key used to learn who holds which number
rather than to check the cards in front of its tellers.

What a counter's checks look like: real cards, so almost every answer is `valid` or `invalid`,
and each teller checks a customer every few minutes. What harvesting looks like: numbers made up
or enumerated, so most answers are `mismatch` (no such card printed so), and a single "operator"
sending hundreds of distinct numbers a minute. `HarvestWatch` keeps, per unit, the last WINDOW
seconds of written checks (fed by the check-log writer, off the request path) and says when a
unit crosses either threshold; the verifier then marks the unit suspected (units.py), which
throttles it to SUSPECTED_RATE on every worker until a supervisor clears it.

Pure: no database, no clock of its own (the caller passes monotonic seconds).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

WINDOW = 60.0  # seconds of checks looked at
MIN_CHECKS = 200  # no verdict on fewer checks in the window
MISMATCH_SHARE = 0.5  # at least this share of mismatches ...
OPERATOR_NUMBERS = 300  # ... or one operator sending this many distinct numbers in the window
SUSPECTED_RATE = 1  # checks per second a suspected unit is throttled to, until cleared


@dataclass(slots=True)
class _Unit:
    events: deque[tuple[float, str, str, bool]] = field(
        default_factory=deque
    )  # (t, operator, number, mismatch)
    mismatches: int = 0
    per_operator: dict[str, dict[str, int]] = field(default_factory=dict)  # operator -> number -> count
    flagged: bool = False


@dataclass(frozen=True, slots=True)
class Suspicion:
    unit_code: str
    reason: str


class HarvestWatch:
    def __init__(self) -> None:
        self._units: dict[str, _Unit] = {}

    def observe(self, now: float, checks: Iterable[tuple[str, str, str, str]]) -> list[Suspicion]:
        """Take written checks as (unit code, operator, id number, result); return the units that
        crossed a threshold with these (each once, until `clear`)."""
        touched: set[str] = set()
        for code, operator, number, result in checks:
            unit = self._units.get(code)
            if unit is None:
                unit = self._units[code] = _Unit()
            mismatch = result == "mismatch"
            unit.events.append((now, operator, number, mismatch))
            unit.mismatches += mismatch
            numbers = unit.per_operator.setdefault(operator, {})
            numbers[number] = numbers.get(number, 0) + 1
            touched.add(code)
        found = []
        for code in sorted(touched):
            unit = self._units[code]
            self._expire(unit, now)
            if unit.flagged:
                continue
            reason = self._verdict(unit)
            if reason is not None:
                unit.flagged = True
                found.append(Suspicion(code, reason))
        return found

    def clear(self, unit_code: str) -> None:
        """Forget everything seen of the unit."""
        self._units.pop(unit_code, None)

    def forget_flag(self, unit_code: str) -> None:
        """The unit is no longer suspected (a supervisor cleared it): a new crossing counts, on
        what is seen from now on."""
        unit = self._units.get(unit_code)
        if unit is not None and unit.flagged:
            self.clear(unit_code)

    @staticmethod
    def _expire(unit: _Unit, now: float) -> None:
        while unit.events and unit.events[0][0] <= now - WINDOW:
            _, operator, number, mismatch = unit.events.popleft()
            unit.mismatches -= mismatch
            numbers = unit.per_operator[operator]
            if numbers[number] == 1:
                del numbers[number]
                if not numbers:
                    del unit.per_operator[operator]
            else:
                numbers[number] -= 1

    @staticmethod
    def _verdict(unit: _Unit) -> str | None:
        checks = len(unit.events)
        if checks < MIN_CHECKS:
            return None
        if unit.mismatches >= MISMATCH_SHARE * checks:
            return (
                f"{unit.mismatches} of {checks} checks in {WINDOW:.0f} s matched no card "
                "(made-up or enumerated numbers)"
            )
        operator, numbers = max(unit.per_operator.items(), key=lambda item: len(item[1]))
        if len(numbers) >= OPERATOR_NUMBERS:
            return f"operator {operator!r} checked {len(numbers)} distinct numbers in {WINDOW:.0f} s"
        return None
