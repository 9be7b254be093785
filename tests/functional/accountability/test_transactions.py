"""Transactions reported over HTTP and classified against the unit's own checks, on SQLite and
PostgreSQL: every class and its edges, idempotent refs, item errors."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.accountability import transactions
from idguard.accountability.models import Transaction
from idguard.core.errors import RuleViolation
from idguard.verification.runtime.checklog import IdHasher, id_hash
from tests.factories import CHECK_HASH_KEY, NOW
from tests.functional.accountability.conftest import CheckLog, Unit, at, number, tx
from tests.functional.conftest import Counter, assert_problem

WINDOW = 24 * 60  # minutes


def cls(result: dict[str, object]) -> object:
    assert result["status"] == "accepted", result
    return result["classification"]


def test_compliant_when_the_latest_check_before_is_valid(bank: Unit, checks: CheckLog) -> None:
    n = number()
    checks.add(bank, n, -10)
    assert cls(bank.one(n, 0)) == "compliant"


def test_unchecked_without_any_check(bank: Unit) -> None:
    assert cls(bank.one(number(), 0)) == "unchecked"


def test_a_check_exactly_at_the_transaction_counts_as_before(bank: Unit, checks: CheckLog) -> None:
    n = number()
    checks.add(bank, n, 0)
    assert cls(bank.one(n, 0)) == "compliant"


def test_window_boundary(bank: Unit, checks: CheckLog) -> None:
    """A check exactly a window before counts; a microsecond earlier does not."""
    inside, outside = number(), number()
    checks.add(bank, inside, -WINDOW)
    checks.add(bank, outside, -WINDOW - 1 / 60_000_000)
    assert cls(bank.one(inside, 0)) == "compliant"
    assert cls(bank.one(outside, 0)) == "unchecked"


def test_checked_after_only_within_the_window_after(bank: Unit, checks: CheckLog) -> None:
    after, too_late = number(), number()
    checks.add(bank, after, -60)  # the check 60 minutes after the transaction at -120 ...
    assert cls(bank.one(after, -120)) == "checked_after"
    checks.add(bank, too_late, -5)  # ... and one more than a window after its transaction
    assert cls(bank.one(too_late, -WINDOW - 10)) == "unchecked"


def test_a_check_after_the_transaction_does_not_make_it_compliant(bank: Unit, checks: CheckLog) -> None:
    n = number()
    checks.add(bank, n, -100, "invalid")
    checks.add(bank, n, -10, "valid")  # after the transaction at -50: too late
    assert cls(bank.one(n, -50)) == "accepted_invalid"


def test_several_checks_the_latest_before_decides(bank: Unit, checks: CheckLog) -> None:
    valid_last, invalid_last, mismatch_last = number(), number(), number()
    checks.add(bank, valid_last, -30, "invalid")
    checks.add(bank, valid_last, -20, "valid")
    checks.add(bank, invalid_last, -30, "valid")
    checks.add(bank, invalid_last, -20, "invalid")
    checks.add(bank, mismatch_last, -30, "valid")
    checks.add(bank, mismatch_last, -20, "mismatch")
    assert cls(bank.one(valid_last, 0)) == "compliant"
    assert cls(bank.one(invalid_last, 0)) == "accepted_invalid"
    assert cls(bank.one(mismatch_last, 0)) == "accepted_invalid"


@pytest.mark.parametrize("alerts", ["person_check_required", "blacklisted", "known_impersonator"])
def test_ignored_alert(bank: Unit, checks: CheckLog, alerts: str) -> None:
    n = number()
    checks.add(bank, n, -5, "valid", alerts=alerts)
    assert cls(bank.one(n, 0)) == "ignored_alert"


def test_a_later_clean_check_clears_an_earlier_alert(bank: Unit, checks: CheckLog) -> None:
    n = number()
    checks.add(bank, n, -30, "valid", alerts="person_check_required")
    checks.add(bank, n, -10, "valid", fingerprint_match=True)  # checked again, with the finger
    assert cls(bank.one(n, 0)) == "compliant"


def test_invalid_with_an_alert_is_accepted_invalid(bank: Unit, checks: CheckLog) -> None:
    n = number()
    checks.add(bank, n, -5, "invalid", alerts="blacklisted")
    assert cls(bank.one(n, 0)) == "accepted_invalid"


def test_another_units_check_does_not_count(bank: Unit, other: Unit, checks: CheckLog) -> None:
    n = number()
    checks.add(other, n, -5)
    assert cls(bank.one(n, 0)) == "unchecked"
    assert cls(other.one(n, 0)) == "compliant"


def test_a_check_of_another_number_does_not_count(bank: Unit, checks: CheckLog) -> None:
    checks.add(bank, number(), -5)
    assert cls(bank.one(number(), 0)) == "unchecked"


def test_a_live_check_through_verify(counter: Counter, bank: Unit) -> None:
    """End to end: a real check, written by the check log, then the transaction."""
    person = counter.person()
    card = counter.card(person)
    body = {
        "id_number": person,
        "name": "张三",
        "issued_on": card["issued_on"],
        "expires_on": card["expires_on"],
        "purpose": "account_opening",
        "operator": "teller-1",
    }
    counter.client.app.state.verifier.follower.poll()  # type: ignore[attr-defined]
    r = bank.post("/api/v1/verify", body)
    assert r.status_code == 200, r.text
    assert r.json()["result"] == "valid"
    counter.client.app.state.verifier.log.flush()  # type: ignore[attr-defined]
    assert cls(bank.one(person, 1)) == "compliant"


def test_stored_without_the_full_number(bank: Unit, session_factory: sessionmaker[Session]) -> None:
    n = number()
    bank.one(n, 0)
    with session_factory() as session:
        row = session.scalars(sa.select(Transaction).where(Transaction.unit_code == bank.code)).one()
        stored = [str(v) for v in row.__dict__.values()]
    assert n not in " ".join(stored)
    assert row.id_masked == n[:6] + "********" + n[14:]
    assert row.id_hash == id_hash(CHECK_HASH_KEY, n)


def test_ref_is_idempotent(bank: Unit, checks: CheckLog, session_factory: sessionmaker[Session]) -> None:
    n = number()
    item = tx(n, 0)
    first = bank.report(item)
    again = bank.report(item)
    assert first == again
    assert first[0]["status"] == "accepted"
    changed = bank.report({**item, "at": at(-1)})
    assert changed[0]["status"] == "rejected"
    assert [e["field"] for e in changed[0]["errors"]] == ["ref"]
    with session_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Transaction)) == 1
    # Another unit may use the same ref: refs are per unit.


def test_same_ref_twice_in_one_batch(bank: Unit) -> None:
    n = number()
    item = tx(n, 0)
    results = bank.report(item, item, {**item, "purpose": "hotel_checkin"})
    assert [r["status"] for r in results] == ["accepted", "accepted", "rejected"]


def test_refs_are_per_unit(bank: Unit, other: Unit) -> None:
    item = tx(number(), 0)
    assert bank.report(item)[0]["status"] == "accepted"
    assert other.report(item)[0]["status"] == "accepted"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"at": "2026-06-15 02:00"}, "at"),  # no zone
        ({"at": "yesterday"}, "at"),
        ({"at": "2030-01-01T00:00:00Z"}, "at"),  # in the future
        ({"id_number": "11010519491231002"}, "id_number"),
        ({"id_number": "110105194912310021"}, "id_number"),  # wrong check character
        ({"purpose": "gambling"}, "purpose"),
        ({"ref": ""}, "ref"),
        ({"ref": "x" * 65}, "ref"),
        ({"check_id": "not-a-uuid"}, "check_id"),
        ({"colour": "red"}, "colour"),
        ({"ref": 12}, "ref"),
    ],
)
def test_bad_items_are_rejected_naming_the_field_and_the_rest_stored(
    bank: Unit, change: dict[str, object], field: str
) -> None:
    good, bad = tx(number(), 0), {**tx(number(), 0), **change}
    results = bank.report(good, bad)
    assert results[0]["status"] == "accepted"
    assert results[1]["status"] == "rejected"
    assert field in [e["field"] for e in results[1]["errors"]], results[1]
    assert results[1]["classification"] is None


def test_a_missing_field_is_named(bank: Unit) -> None:
    item = tx(number(), 0)
    del item["purpose"]
    [result] = bank.report(item)
    assert result["errors"] == [{"field": "purpose", "detail": "required"}]


def test_batch_limits(bank: Unit) -> None:
    r = bank.post("/api/v1/transactions", {"items": []})
    assert_problem(r, 422, field="items")
    items = [tx(number(), 0) for _ in range(1001)]
    r = bank.post("/api/v1/transactions", {"items": items})
    assert_problem(r, 422, field="items")


def test_a_full_batch(bank: Unit, checks: CheckLog) -> None:
    n = number()
    checks.add(bank, n, -1)
    results = bank.report(*[tx(n, 0) for _ in range(1000)])
    assert {r["classification"] for r in results} == {"compliant"}


def test_staff_cannot_report(counter: Counter) -> None:
    r = counter.post("/api/v1/transactions", {"items": [tx(number(), 0)]}, as_="supervisor")
    assert r.status_code == 401


def test_a_ref_stored_concurrently_is_a_conflict_not_a_server_error(
    bank: Unit, session_factory: sessionmaker[Session]
) -> None:
    """Two requests with the same new ref (PostgreSQL runs them at once): the loser's insert
    hits the unique (unit, ref) and its batch is refused whole with a 409 to retry."""
    item = transactions.validate(tx(number(), 0), hasher=IdHasher(CHECK_HASH_KEY), now=NOW)
    assert isinstance(item, transactions.ValidItem)
    window = dt.timedelta(hours=24)
    with session_factory() as first, session_factory() as second:
        transactions.store(first, unit_code=bank.code, items=[item], now=NOW, window=window)
        uow.commit(first)
        with pytest.raises(RuleViolation, match="concurrent"):
            transactions.store(second, unit_code=bank.code, items=[item], now=NOW, window=window)
