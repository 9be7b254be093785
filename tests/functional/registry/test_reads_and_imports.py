"""Staff reads of personal data are audited; an unknown person is a 404; and an admin's import
cannot put an older card after a newer one (docs/rules.md, "Staff and roles", "Issuing")."""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard.db.common import AuditEntry
from idguard.registry.models import Person
from tests.factories import NOW, STAFF, id_number
from tests.functional.conftest import Counter, assert_problem

CLERK_B = next(s for s in STAFF if s.username == "clerk_b")


def audit_of(
    session_factory: sessionmaker[Session], number: str
) -> list[tuple[str, uuid.UUID | None, str | None]]:
    with session_factory() as s:
        person_id = s.scalar(sa.select(Person.id).where(Person.id_number == number))
        rows = s.execute(
            sa.select(AuditEntry.action, AuditEntry.staff_id, AuditEntry.detail, AuditEntry.at)
            .where(AuditEntry.person_id == person_id)
            .order_by(AuditEntry.id)
        ).all()
    for *_, at in rows:
        assert at.replace(tzinfo=dt.UTC) == NOW.replace(tzinfo=dt.UTC)
    return [(action, staff, detail) for action, staff, detail, _ in rows]


def test_reading_a_cards_ledger_is_audited(counter: Counter, session_factory: sessionmaker[Session]) -> None:
    number = counter.person()
    card = counter.card(number)
    before = audit_of(session_factory, number)
    # A clerk of another office may read it (registry reads are national), and the read is recorded.
    r = counter.get(f"/api/v1/cards/{card['card_id']}/events", as_="clerk_b")
    assert r.status_code == 200, r.text
    assert [e["event"] for e in r.json()["items"]] == ["issued:first"]
    assert audit_of(session_factory, number) == [*before, ("card.events", CLERK_B.id, card["card_id"])]


def test_a_failed_read_records_nothing(counter: Counter, session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        before = s.scalar(sa.select(sa.func.count()).select_from(AuditEntry))
    unknown = id_number(dt.date(1971, 2, 3))
    assert_problem(counter.get(f"/api/v1/persons/{unknown}/cards"), 404)
    assert_problem(counter.get(f"/api/v1/cards/{uuid.uuid4()}/events"), 404)
    with session_factory() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == before


def test_the_cards_of_an_unknown_person_are_404_and_a_bad_number_422(counter: Counter) -> None:
    unknown = id_number(dt.date(1971, 2, 3))  # well formed, registered by nobody
    r = counter.get(f"/api/v1/persons/{unknown}/cards", as_="auditor")
    assert_problem(r, 404)
    assert unknown not in r.text  # masked in problem details
    assert_problem(counter.get("/api/v1/persons/110105197102030000/cards"), 422, field="id_number")


def test_an_import_older_than_the_persons_newest_card_is_refused(counter: Counter) -> None:
    number = counter.person(dt.date(1990, 5, 4))
    first = counter.card(number, issued_on="2020-01-01", as_="admin")
    r = counter.issue(number, "renewal", issued_on="2019-12-31", as_="admin")
    assert_problem(r, 409, says="issued later")
    cards = counter.cards(number)
    assert [(c["card_id"], c["status"]) for c in cards] == [(first["card_id"], "valid")]
    assert [e["event"] for e in counter.events(first["card_id"])] == ["issued:first"]
    # The same day is not older (a card replaced the day it was issued): accepted.
    r = counter.issue(number, "renewal", issued_on="2020-01-01", as_="admin")
    assert r.status_code == 201, r.text
    status = {c["card_id"]: c["status"] for c in counter.cards(number)}
    assert status == {first["card_id"]: "superseded", r.json()["card_id"]: "valid"}
