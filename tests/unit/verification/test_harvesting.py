"""Harvesting detection on fixed inputs: counters' traffic passes, made-up numbers and a single
operator enumerating numbers are caught, each unit once, and the window forgets."""

from __future__ import annotations

from idguard.verification.harvesting import MIN_CHECKS, OPERATOR_NUMBERS, WINDOW, HarvestWatch


def checks(unit: str, n: int, *, result: str = "valid", operators: int = 50, start: int = 0):  # type: ignore[no-untyped-def]
    return [(unit, f"teller-{i % operators}", f"1101051990010{start + i:05d}", result) for i in range(n)]


def test_a_busy_bank_with_real_cards_is_not_suspected() -> None:
    watch = HarvestWatch()
    traffic = checks("BANK", 5000, operators=200) + checks("BANK", 300, result="invalid", operators=200)
    traffic += checks("BANK", 200, result="mismatch", operators=200)  # typos happen: 4 %
    assert watch.observe(0.0, traffic) == []


def test_made_up_numbers_are_suspected_once_enough_are_seen() -> None:
    watch = HarvestWatch()
    assert watch.observe(0.0, checks("HARV", MIN_CHECKS - 1, result="mismatch")) == []
    found = watch.observe(1.0, checks("HARV", 1, result="mismatch", start=10_000))
    assert [s.unit_code for s in found] == ["HARV"]
    assert "matched no card" in found[0].reason
    assert watch.observe(2.0, checks("HARV", 500, result="mismatch")) == []  # once, until cleared


def test_half_mismatches_is_the_line() -> None:
    below = HarvestWatch()
    assert below.observe(0.0, checks("U", 101, result="valid") + checks("U", 99, result="mismatch")) == []
    at = HarvestWatch()
    assert at.observe(0.0, checks("U", 100, result="valid") + checks("U", 100, result="mismatch")) != []


def test_one_operator_enumerating_numbers_is_suspected_even_when_they_match() -> None:
    watch = HarvestWatch()
    found = watch.observe(0.0, checks("HOTEL", OPERATOR_NUMBERS, operators=1))
    assert [s.unit_code for s in found] == ["HOTEL"]
    assert "teller-0" in found[0].reason


def test_repeating_the_same_numbers_is_not_enumeration() -> None:
    watch = HarvestWatch()
    same = [("HOTEL", "desk", f"11010519900101{i % 20:04d}", "valid") for i in range(2000)]
    assert watch.observe(0.0, same) == []


def test_the_window_forgets_and_units_are_judged_apart() -> None:
    watch = HarvestWatch()
    assert watch.observe(0.0, checks("A", 150, result="mismatch")) == []
    # 150 more after the first ones left the window: never 200 in one window
    assert watch.observe(WINDOW + 1, checks("A", 150, result="mismatch", start=1000)) == []
    assert watch.observe(WINDOW + 2, checks("B", MIN_CHECKS, result="mismatch")) != []


def test_a_cleared_unit_is_watched_afresh() -> None:
    watch = HarvestWatch()
    assert watch.observe(0.0, checks("H", MIN_CHECKS, result="mismatch")) != []
    watch.clear("H")
    assert watch.observe(1.0, checks("H", MIN_CHECKS - 1, result="mismatch")) == []
    assert watch.observe(2.0, checks("H", 1, result="mismatch", start=9000)) != []
