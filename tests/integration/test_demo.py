"""The demo population, bulk-loaded on SQLite and PostgreSQL: it keeps the registry's rules, the
ledger is whole, and the ORM and the services work on the rows as if they had written them."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from idguard import uow
from idguard.biometrics.fingerprints import Biometrics, FingerprintMismatch
from idguard.biometrics.models import Fingerprint, FingerprintComparison
from idguard.cli.main import app
from idguard.config import Settings
from idguard.core.clock import today_cst
from idguard.core.grants import Actor, Role
from idguard.core.idnumber import parse
from idguard.demo import fingers
from idguard.demo import load as demo_load
from idguard.demo.load import (
    DEMO_BLACKLISTED,
    DEMO_CREDENTIALS,
    DatabaseNotEmpty,
    demo_fingerprint_holders,
    load_demo,
)
from idguard.demo.population import OFFICES, Population
from idguard.registry.lifecycle import CardStatus, LossReason, expiry_date, temporary_expiry
from idguard.registry.loss_reports import report_loss
from idguard.registry.models import Card, FoundCard, LedgerEvent, LedgerHead, LossReport, Person, Staff
from idguard.registry.staff import authenticate
from tests.factories import NOW

CITIZENS = 300
SEED = 7
TODAY = today_cst(NOW)
FINGERPRINT_PERSONS = 5  # ~30 ms of CPU each: enough to see the rule hold, cheap enough to test


def schema(engine: sa.Engine) -> list[tuple[object, ...]]:
    """Every constraint and index, as the database states it."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            constraints = conn.exec_driver_sql(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE connamespace = current_schema()::regnamespace"
            ).all()
            indexes = conn.exec_driver_sql(
                "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
            ).all()
            return sorted(tuple(r) for r in [*constraints, *indexes])
        return sorted(
            tuple(r) for r in conn.exec_driver_sql("SELECT type, name, sql FROM sqlite_master").all()
        )


def test_loaded_population_keeps_the_registry_rules(engine: sa.Engine, settings: Settings) -> None:
    before = schema(engine)
    biometrics = Biometrics.from_settings(settings)
    report = load_demo(
        engine,
        citizens=CITIZENS,
        seed=SEED,
        now=NOW,
        fingerprint_persons=FINGERPRINT_PERSONS,
        biometrics=biometrics,
    )
    assert schema(engine) == before  # the PostgreSQL path drops and re-creates checks
    assert report.rows["persons"] == CITIZENS
    assert str(CITIZENS) in report.summary()
    with Session(engine) as session:
        persons = session.scalars(sa.select(Person)).all()
        cards = session.scalars(sa.select(Card)).all()
        events = session.scalars(sa.select(LedgerEvent).order_by(LedgerEvent.seq)).all()
        reports = session.scalars(sa.select(LossReport)).all()
        found = session.scalars(sa.select(FoundCard)).all()
        head = session.scalar(sa.select(LedgerHead.seq))
        prints = session.scalars(sa.select(Fingerprint)).all()
    # The demo's blacklist (watchlist): a few fingerprinted persons listed now, an event on each of
    # their cards; the loaded history before it.
    listed = [e for e in events if e.event.is_watchlist]
    assert {e.event.value for e in listed} == {"blacklisted"}
    assert {e.at for e in listed} == {NOW}
    assert len(report.blacklisted) == min(DEMO_BLACKLISTED, FINGERPRINT_PERSONS)
    listed_numbers = {c.id_number for c in cards if c.id in {e.card_id for e in listed}}
    assert listed_numbers == {b["id_number"] for b in report.blacklisted}
    assert all(b["id_number"] in report.summary() for b in report.blacklisted)
    loaded = [e for e in events if not e.event.is_watchlist]
    assert report.rows == {
        "persons": len(persons),
        "cards": len(cards),
        "loss_reports": len(reports),
        "found_cards": len(found),
        "ledger_events": len(loaded),
    }
    # A population this size has some of everything the model produces.
    assert {c.status for c in cards} >= {CardStatus.VALID, CardStatus.SUPERSEDED, CardStatus.REPORTED_LOST}
    assert any(c.temporary for c in cards)
    assert reports
    assert any(p.revoked_reason for p in persons)

    for person in persons:
        number = parse(person.id_number, today=TODAY)
        assert (number.birth_date, number.sex) == (person.birth_date, person.sex)
    # The same seed gives the same persons, whatever the database.
    assert sorted((p.id, p.id_number, p.name) for p in persons) == sorted(
        (row[0], row[1], row[2]) for row in generated_persons(SEED, CITIZENS)
    )

    # The ledger: seq exactly 1..head, in time order, all in the past.
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert head == len(events)
    assert all(a.at <= b.at for a, b in itertools.pairwise(events))
    assert loaded[-1].at < NOW

    by_card: dict[uuid.UUID, list[LedgerEvent]] = defaultdict(list)
    for event in events:
        by_card[event.card_id].append(event)
    regular: dict[uuid.UUID, list[Card]] = defaultdict(list)
    for card in cards:
        history = by_card[card.id]
        assert history[0].event.startswith("issued:")
        assert history[0].status_before is None
        assert all(a.status_after == b.status_before for a, b in itertools.pairwise(history))
        assert history[-1].status_after == card.status
        assert (card.created_at, card.updated_at) == (history[0].at, history[-1].at)
        expected = (
            temporary_expiry(card.issued_on)
            if card.temporary
            else expiry_date(card.birth_date, card.issued_on)
        )
        assert card.expires_on == expected
        if not card.temporary:
            regular[card.person_id].append(card)
    for held in regular.values():
        held.sort(key=lambda c: c.issued_on)
        assert [c for c in held if c.status is CardStatus.VALID] in ([], [held[-1]])
        assert all(old.superseded_by == new.id for old, new in itertools.pairwise(held))

    # Fingerprints: a card is flagged if and only if its two fingers are stored, sealed under the
    # active key; the sample is current valid regular cards issued since 2013, one per person.
    by_card_prints: dict[uuid.UUID, list[Fingerprint]] = defaultdict(list)
    for fp in prints:
        by_card_prints[fp.card_id].append(fp)
    flagged = [c for c in cards if c.fingerprints_registered]
    assert len(flagged) == report.fingerprint_cards == FINGERPRINT_PERSONS
    assert {c.id for c in flagged} == set(by_card_prints)
    assert str(FINGERPRINT_PERSONS) in report.summary()
    archive_clerks = {clerk.id for clerk in archive_staff(engine)}
    for card in flagged:
        stored = by_card_prints[card.id]
        assert sorted(fp.finger for fp in stored) == sorted(fingers.DEMO_FINGERS)
        assert all(fp.key_id == biometrics.vault.active_key_id for fp in stored)
        assert all(fp.enrolled_at == card.created_at and fp.enrolled_by in archive_clerks for fp in stored)
        assert card.status is CardStatus.VALID
        assert not card.temporary
        assert card.issued_on >= fingers.FINGERPRINTS_FROM
        assert card.expires_on is None or card.expires_on >= TODAY
    assert len({c.person_id for c in flagged}) == len(flagged)

    references = {e.reference for e in events}
    numbers = {c.id: c.id_number for c in cards}
    for loss in reports:
        assert loss.report_no in references
        assert loss.applicant_id_number == numbers[loss.card_id]
        assert loss.cancelled_at is None or loss.cancelled_at > loss.accepted_at
    statuses = {c.id: c.status for c in cards}
    for item in found:
        assert item.found_no in references
        if item.disposition.value == "destroyed":
            assert statuses[item.card_id] is CardStatus.DESTROYED

    with pytest.raises(DatabaseNotEmpty):
        load_demo(engine, citizens=10, seed=SEED, now=NOW)


def test_orm_and_services_carry_on_from_the_loaded_rows(
    engine: sa.Engine, session_factory: sessionmaker[Session]
) -> None:
    load_demo(engine, citizens=CITIZENS, seed=SEED, now=NOW)
    with session_factory() as session:
        card_id = session.scalars(
            sa.select(Card.id).where(
                Card.status == CardStatus.VALID,
                Card.temporary.is_(False),
                Card.fingerprints_registered.is_(False),
                sa.or_(Card.expires_on.is_(None), Card.expires_on >= TODAY),
            )
        ).first()
        assert card_id is not None
        card = session.get(Card, card_id)
        assert card is not None
        assert isinstance(card.id, uuid.UUID)
        assert card.temporary is False
        assert card.created_at.tzinfo == dt.UTC
        assert card.updated_at.tzinfo == dt.UTC
        person = session.get(Person, card.person_id)
        assert person is not None
        assert person.id_number == card.id_number
        assert person.created_at.tzinfo == dt.UTC

        # The loaded accounts work, and the next ledger event follows the loaded ones.
        clerk = authenticate(session, username=DEMO_CREDENTIALS[0][0], password=DEMO_CREDENTIALS[0][1])
        assert clerk is not None
        assert clerk.office_code == DEMO_CREDENTIALS[0][3]
        head = session.scalar(sa.select(LedgerHead.seq))
        actor = Actor(staff_id=clerk.id, username=clerk.username, role=Role.CLERK, office=clerk.office_code)
        _, reported = report_loss(
            session,
            actor=actor,
            now=NOW,
            card_id=str(card_id),
            reason=LossReason.STOLEN,
            office=clerk.office_code or "",
            applicant_id_number=person.id_number,
        )
        uow.commit(session)
        assert reported.status is CardStatus.REPORTED_STOLEN
        last = session.scalars(sa.select(LedgerEvent).order_by(LedgerEvent.seq.desc()).limit(1)).one()
        assert (last.seq, last.card_id) == (head + 1 if head is not None else 1, card_id)
        archive = session.scalars(sa.select(Staff).where(Staff.username.startswith("archive."))).all()
        assert len(archive) == len(OFFICES)
        assert not any(s.active for s in archive)


def archive_staff(engine: sa.Engine) -> list[Staff]:
    with Session(engine) as session:
        return list(session.scalars(sa.select(Staff).where(Staff.username.startswith("archive."))))


def demo_fingerprint(*args: str) -> str:
    """What `idguard demo fingerprint` prints: a counter scanner's base64 record."""
    result = CliRunner().invoke(app, ["demo", "fingerprint", *args])
    assert result.exit_code == 0, result.output
    return result.output.strip()


def test_a_demo_persons_live_capture_matches_their_card_and_no_one_elses(
    engine: sa.Engine, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    biometrics = Biometrics.from_settings(settings)
    load_demo(engine, citizens=CITIZENS, seed=SEED, now=NOW, fingerprint_persons=3, biometrics=biometrics)
    count, examples = demo_fingerprint_holders(engine, now=NOW, examples=2)
    assert count == 3
    assert len(examples) == 2
    holder, other = examples
    with session_factory() as session:
        clerk = authenticate(session, username=DEMO_CREDENTIALS[1][0], password=DEMO_CREDENTIALS[1][1])
        assert clerk is not None
        actor = Actor(staff_id=clerk.id, username=clerk.username, role=Role.CLERK, office=clerk.office_code)
        card = session.scalars(
            sa.select(Card).where(Card.id_number == holder, Card.fingerprints_registered)
        ).one()
        card_id = card.id

    def report(fingerprint: str | None) -> None:
        with session_factory() as session:
            report_loss(
                session,
                actor=actor,
                now=NOW,
                card_id=str(card_id),
                reason=LossReason.LOST,
                office=actor.office or "",
                applicant_id_number=holder,
                fingerprint=fingerprint,
                biometrics=biometrics,
            )
            uow.commit(session)

    # Another demo person's thumb, and the holder's own unregistered index finger: refused.
    for wrong in (demo_fingerprint(other), demo_fingerprint(holder, "--finger", "2")):
        with pytest.raises(FingerprintMismatch):
            report(wrong)
    # A new capture of the holder's left thumb (not the enrolled impression): accepted.
    live = demo_fingerprint(holder, "--finger", str(fingers.DEMO_FINGERS[1]), "--impression", "3")
    assert live == fingers.live_sample(holder, fingers.DEMO_FINGERS[1], 3)
    report(live)
    with session_factory() as session:
        reported = session.get(Card, card_id)
        assert reported is not None
        assert reported.status is CardStatus.REPORTED_LOST
        compared = session.scalars(
            sa.select(FingerprintComparison.matched).where(FingerprintComparison.card_id == card_id)
        ).all()
    assert compared == [True]  # the refusals' records are the unit of work's (API) to commit
    assert demo_fingerprint_holders(engine, now=NOW)[0] == 2  # only valid cards are listed


def test_a_failed_load(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL loads in one transaction: nothing is left. SQLite commits chunk by chunk: what
    was committed stays, but the ledger range was reserved first, so new events never collide."""
    before = schema(engine)
    real = demo_load._batches

    def failing(*args: Any) -> Iterator[Any]:
        yield from real(*args)
        raise RuntimeError("generator failed")

    monkeypatch.setattr(demo_load, "_batches", failing)
    with pytest.raises(RuntimeError, match="generator failed"):
        load_demo(engine, citizens=CITIZENS, seed=SEED, now=NOW)
    assert schema(engine) == before
    with Session(engine) as session:
        persons = session.scalar(sa.select(sa.func.count()).select_from(Person))
        events = session.scalar(sa.select(sa.func.max(LedgerEvent.seq)))
        head = session.scalar(sa.select(LedgerHead.seq))
    if engine.dialect.name == "postgresql":
        assert (persons, events, head) == (0, None, 0)
        monkeypatch.setattr(demo_load, "_batches", real)
        assert load_demo(engine, citizens=CITIZENS, seed=SEED, now=NOW).rows["persons"] == CITIZENS
    else:
        assert persons == CITIZENS
        assert head is not None
        assert events is not None
        assert head >= events


def generated_persons(seed: int, citizens: int) -> list[tuple[object, ...]]:
    clerks = {office.code: uuid.uuid4() for office in OFFICES}  # staff ids do not shape persons
    population = Population(seed=seed, citizens=citizens, now=NOW, clerks=clerks)
    return [row for chunk in population.chunks() for row in chunk.persons]


def test_same_seed_same_population() -> None:
    first = generated_persons(SEED, 120)
    assert first == generated_persons(SEED, 120)
    assert first[:50] == generated_persons(SEED, 50)  # a smaller population is a prefix
    assert len({row[1] for row in first}) == len(first)  # unique id numbers
    assert {row[1] for row in first}.isdisjoint({row[1] for row in generated_persons(SEED + 1, 120)})
