"""Load the demo: offices, staff accounts, then a synthetic population by a bulk path.

The population goes in with PostgreSQL's COPY (psycopg 3) or, on SQLite, executemany of plain
INSERTs on the raw connection: the ORM would spend most of its time on unit-of-work bookkeeping
for rows that need none. Every value is first passed through the column type's own SQLAlchemy
bind processor, so the rows are stored exactly as the ORM would store them (on SQLite: UUIDs
as 32 hex characters, datetimes as naive UTC text, booleans as 0/1). A thread generates the
next chunk while the database writes the current one.

PostgreSQL loads in one transaction, holding the ledger head's row lock throughout (other ledger
writers wait), with foreign keys and secondary indexes re-created at the end: a failure leaves
nothing behind. SQLite commits once per chunk to keep its WAL small, after reserving the whole
seq range in ledger_head so that a writer running meanwhile numbers its events after ours; a
failed SQLite load leaves a partial database, to be deleted.

Then fingerprints (`fingerprint_persons`): a card is flagged `fingerprints_registered` only with
its two fingers stored, and building a template costs ~12 ms a finger, far too much for every
card of a large population. So the bulk load flags none, and a bounded sample of persons gets
real synthetic fingers (fingers.py: a pure function of the id number, so `idguard demo
fingerprint` can make a matching live capture later) on their current valid card, through the
ORM and `biometrics.fingerprints` as a counter would: templates are built on a few threads (numpy
releases the GIL for most of the work), then stored `ENROL_BATCH` cards per transaction, each
transaction storing both fingers and setting the flag together. An interrupted enrolment leaves
fewer enrolled persons, never a flag without fingers.
"""

from __future__ import annotations

import datetime as dt
import os
import queue
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import sqlalchemy as sa
from argon2 import PasswordHasher
from psycopg import errors, sql
from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.biometrics import fingerprints as fingerprint_service
from idguard.biometrics.fingerprints import Biometrics, Enrolment
from idguard.biometrics.models import Fingerprint
from idguard.core.clock import CST, today_cst
from idguard.core.errors import InvalidField, RuleViolation
from idguard.core.grants import Actor, Role
from idguard.core.sealing import KeyRing, sealing_context
from idguard.db.common import AuditEntry
from idguard.db.engine import make_sessionmaker
from idguard.demo import fingers
from idguard.demo.population import COLUMNS, OFFICES, Population, Row
from idguard.registry import chains, sealed
from idguard.registry.lifecycle import CardStatus
from idguard.registry.models import Card, Office, Staff
from idguard.registry.staff import add_office, add_staff
from idguard.schema import Base

# Demo-only accounts, printed by `make run`: never use these anywhere real.
DEMO_CREDENTIALS: list[tuple[str, str, str, str | None]] = [
    ("clerk1", "clerk1-demo", Role.CLERK.value, "110105101"),  # 朝阳区建外派出所
    ("clerk2", "clerk2-demo", Role.CLERK.value, "310115101"),  # 浦东新区陆家嘴派出所
    ("supervisor1", "supervisor1-demo", Role.SUPERVISOR.value, None),
    ("auditor1", "auditor1-demo", Role.AUDITOR.value, None),
    ("admin1", "admin1-demo", Role.ADMIN.value, None),
]
# The registry's history starts with the first cards; offices and the clerks who recorded that
# history (inactive "archive" accounts, one per office) are dated from then.
HISTORY_STARTS = dt.datetime(1985, 1, 1, tzinfo=CST).astimezone(dt.UTC)
ARCHIVE_CLERK = "archive.{code}"
# Persons whose current card gets synthetic fingerprints by default (`idguard demo`, `make run`):
# ~30 ms of CPU each, so about 1.5 s on two cores, less on more.
DEFAULT_FINGERPRINT_PERSONS = 100
ENROL_BATCH = 50  # cards per enrolment transaction
# Demo persons with registered fingers put on the impersonator blacklist (watchlist), so that a
# check of their card answers `blacklisted` and their finger on someone else's card
# `known_impersonator` (docs/integration.md, section 0).
DEMO_BLACKLISTED = 3
DEMO_CASE = "DEMO-2026-0001"


class DatabaseNotEmpty(RuleViolation):
    """The demo loads only into a registry without persons."""


@dataclass(slots=True)
class LoadReport:
    backend: str
    citizens: int
    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COLUMNS, 0))
    seconds: float = 0.0  # everything, fingerprints included
    fingerprint_cards: int = 0  # cards enrolled with two synthetic fingers
    fingerprint_seconds: float = 0.0
    blacklisted: list[dict[str, Any]] = field(default_factory=list)  # verify bodies of listed persons

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def citizens_per_second(self) -> float:
        return self.citizens / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        r = self.rows
        return (
            f"demo loaded into {self.backend}: {r['persons']:,} persons, {r['cards']:,} cards, "
            f"{r['ledger_events']:,} ledger events, {r['loss_reports']:,} loss reports, "
            f"{r['found_cards']:,} found cards in {self.seconds:.1f} s "
            f"({self.citizens_per_second:,.0f} citizens/s, {self.total_rows / max(self.seconds, 1e-9):,.0f} rows/s)"
            + (
                f"; synthetic fingerprints (2 fingers) on {self.fingerprint_cards:,} cards "
                f"in {self.fingerprint_seconds:.1f} s of that"
                if self.fingerprint_cards
                else ""
            )
            + (
                f"\nblacklist: {len(self.blacklisted)} demo persons with registered fingers listed (case "
                f"{DEMO_CASE}): {', '.join(b['id_number'] for b in self.blacklisted)}. The first holds the card "
                '`idguard demo card with_fingerprints` prints (a check answers alerts ["blacklisted"]); '
                "the finger of another of them on that card (`idguard demo fingerprint ID_NUMBER`) answers "
                '["blacklisted", "known_impersonator"] (docs/integration.md, section 0)'
                if self.blacklisted
                else ""
            )
        )


def load_demo(
    engine: sa.Engine,
    *,
    citizens: int,
    seed: int,
    now: dt.datetime,
    fingerprint_persons: int = 0,
    biometrics: Biometrics | None = None,
) -> LoadReport:
    """Create the demo offices and accounts (keeping any that exist) and load `citizens` persons
    with their cards and history. Refuses with DatabaseNotEmpty if the registry holds persons.

    Then, when `fingerprint_persons` > 0, enrol synthetic fingerprints on the current valid card
    (issued from 2013) of up to that many persons, sealed with `biometrics` (required then).
    """
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    if citizens < 0:
        raise ValueError("citizens must not be negative")
    if fingerprint_persons < 0:
        raise ValueError("fingerprint_persons must not be negative")
    if fingerprint_persons and biometrics is None:
        raise ValueError("enrolling fingerprints needs the biometrics configuration")
    started = time.perf_counter()
    with engine.connect() as conn:
        _refuse_if_populated(conn.exec_driver_sql("SELECT count(*) FROM persons").scalar_one())
    clerks = _create_offices_and_staff(engine, now)

    def population(first_seq: int) -> Population:
        return Population(seed=seed, citizens=citizens, now=now, clerks=clerks, first_seq=first_seq)

    report = LoadReport(backend=engine.dialect.name, citizens=citizens)
    if engine.dialect.name == "postgresql":
        _load_postgres(engine, population, report)
    else:
        _load_sqlite(engine, population, report)
    if fingerprint_persons:
        assert biometrics is not None  # noqa: S101 - checked above
        enrolling = time.perf_counter()
        report.fingerprint_cards = enrol_fingerprints(
            engine, biometrics, persons=fingerprint_persons, clerks=clerks, now=now
        )
        report.fingerprint_seconds = time.perf_counter() - enrolling
        report.blacklisted = blacklist_demo_persons(engine, now=now)
    from idguard.accountability import demo as accountability_demo  # units, checks, transactions

    accountability_demo.load(engine, now=now)
    report.seconds = time.perf_counter() - started
    return report


def _enrollable(today: dt.date) -> tuple[sa.ColumnElement[bool], ...]:
    """A card the demo may enrol: a holder's current valid regular card, issued since cards
    register fingerprints, not expired, without fingers yet."""
    return (
        Card.status == CardStatus.VALID,
        Card.temporary.is_(False),
        Card.issued_on >= fingers.FINGERPRINTS_FROM,
        sa.or_(Card.expires_on.is_(None), Card.expires_on >= today),
        Card.fingerprints_registered.is_(False),
    )


def enrol_fingerprints(
    engine: sa.Engine,
    biometrics: Biometrics,
    *,
    persons: int,
    clerks: dict[str, uuid.UUID],
    now: dt.datetime,
) -> int:
    """Enrol the demo fingers (fingers.py) on up to `persons` enrollable cards; returns how many.

    The sample is the enrollable cards in card-id order: the ids are seeded random draws, so it
    is a random sample that the same seed repeats on either database. Each card's fingers are
    stored as its issuing office's archive clerk (`clerks`: office -> staff id) would have
    registered them when issuing it (enrolled_at = the card's creation; no ledger event, as at a
    counter). Every batch re-reads its cards under lock with the same conditions, so a card that
    changed meanwhile (a loss report on a running server) is skipped rather than enrolled.
    """
    today = today_cst(now)
    factory = make_sessionmaker(engine)
    with factory() as session:
        sample = session.execute(
            sa.select(Card.id, Card.id_number).where(*_enrollable(today)).order_by(Card.id).limit(persons)
        ).all()
    enrolled = 0
    pool = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="demo-fingers")
    try:
        # map submits everything now and yields in order: batch n is stored while later ones build.
        prepared = pool.map(_prepare, [number for _, number in sample])
        batch: dict[uuid.UUID, list[Enrolment]] = {}
        for (card_id, _), enrolments in zip(sample, prepared, strict=True):
            if enrolments is not None:
                batch[card_id] = enrolments
            if len(batch) == ENROL_BATCH:
                enrolled += _store(factory, biometrics, batch, clerks=clerks, today=today, now=now)
                batch = {}
        if batch:
            enrolled += _store(factory, biometrics, batch, clerks=clerks, today=today, now=now)
    finally:
        pool.shutdown(cancel_futures=True)
    return enrolled


def _prepare(id_number: str) -> list[Enrolment] | None:
    """Build the two templates, through the counter's own checks. None if the quality gate
    refuses a capture (a clerk would capture again; this person then has no fingerprints)."""
    try:
        return fingerprint_service.prepare_enrolment(fingers.enrolment_samples(id_number))
    except InvalidField:
        return None


def _store(
    factory: sessionmaker[Session],
    biometrics: Biometrics,
    batch: dict[uuid.UUID, list[Enrolment]],
    *,
    clerks: dict[str, uuid.UUID],
    today: dt.date,
    now: dt.datetime,
) -> int:
    """One transaction: seal and store the fingers of these cards and flag them."""
    with uow.transaction(factory) as session:
        cards = session.scalars(
            sa.select(Card).where(Card.id.in_(batch), *_enrollable(today)).order_by(Card.id).with_for_update()
        ).all()
        stored = 0
        for card in cards:
            clerk = clerks.get(card.issuing_office)
            if clerk is None:  # not a demo office: not a card this loader wrote
                continue
            actor = Actor(
                staff_id=clerk,
                username=ARCHIVE_CLERK.format(code=card.issuing_office),
                role=Role.CLERK,
                office=card.issuing_office,
            )
            fingerprint_service.enrol(
                session, biometrics, card.id, batch[card.id], actor=actor, now=card.created_at
            )
            card.fingerprints_registered = True
            stored += 1
        if stored:
            session.add(
                AuditEntry(
                    at=now,
                    action="demo.fingerprints",
                    detail=f"synthetic fingerprints on {stored} demo cards",
                )
            )
    return stored


def demo_fingerprint_holders(
    engine: sa.Engine, *, now: dt.datetime, examples: int = 3
) -> tuple[int, list[str]]:
    """(how many valid cards have demo-enrolled fingers, the id numbers of the first `examples`).

    Only fingers enrolled by the demo's archive clerks count, so a database holding real
    enrolments never has them listed: these id numbers are for `idguard demo fingerprint`.
    """
    today = today_cst(now)
    demo_cards = (
        sa.select(Card.id, Card.id_number)
        .join(Fingerprint, Fingerprint.card_id == Card.id)
        .join(Staff, Staff.id == Fingerprint.enrolled_by)
        .where(
            Fingerprint.finger == fingers.DEMO_FINGERS[0],
            Staff.username.startswith(ARCHIVE_CLERK.format(code=""), autoescape=True),
            Card.status == CardStatus.VALID,
            sa.or_(Card.expires_on.is_(None), Card.expires_on >= today),
        )
    )
    with engine.connect() as conn:
        count = conn.scalar(sa.select(sa.func.count()).select_from(demo_cards.subquery())) or 0
        numbers = list(
            conn.scalars(demo_cards.with_only_columns(Card.id_number).order_by(Card.id).limit(examples))
        )
    return count, numbers


def blacklist_demo_persons(
    engine: sa.Engine, *, now: dt.datetime, count: int = DEMO_BLACKLISTED
) -> list[dict[str, Any]]:
    """List `count` demo persons whose current card has demo fingers on the blacklist (by the demo
    supervisor, through the watchlist's use-case, as a supervisor would); returns their cards'
    verify bodies. The first by id number is always one of them: its card is the one `idguard demo
    card with_fingerprints` prints (demo/testcards.py), so `blacklisted` and, with another listed
    person's finger on it, `known_impersonator` need no more than the demo commands."""
    from idguard.watchlist import blacklist
    from idguard.watchlist.rules import BlacklistReason

    _, holders = demo_fingerprint_holders(engine, now=now, examples=1_000_000)
    sessions = make_sessionmaker(engine)
    bodies: list[dict[str, Any]] = []
    with uow.transaction(sessions) as session:
        supervisor = session.scalars(sa.select(Staff).where(Staff.username == "supervisor1")).one()
        actor = Actor(staff_id=supervisor.id, username=supervisor.username, role=supervisor.role, office=None)
        today = today_cst(now)
        ordered = sorted(holders)
        # the first (the holder of `with_fingerprints`) and the last count - 1
        chosen = ordered[:1] + ordered[max(1, len(ordered) - count + 1) :] if count else []
        for number in chosen:
            listed = blacklist.list_person(
                session,
                actor=actor,
                now=now,
                id_number=number,
                reason=BlacklistReason.IMPERSONATION,
                case_no=DEMO_CASE,
                until=None,
                note="demo data",
            )
            card = session.scalars(
                sa.select(Card).where(
                    Card.person_id == listed.person.id,
                    Card.status == CardStatus.VALID,
                    Card.fingerprints_registered.is_(True),
                    sa.or_(Card.expires_on.is_(None), Card.expires_on >= today),
                )
            ).first()
            if card is not None:
                bodies.append(
                    {
                        "id_number": card.id_number,
                        "name": card.name,
                        "issued_on": card.issued_on.isoformat(),
                        "expires_on": card.expires_on.isoformat() if card.expires_on else None,
                        "purpose": "account_opening",
                        "operator": "demo-teller",
                    }
                )
    return bodies


def _refuse_if_populated(persons: int) -> None:
    if persons:
        raise DatabaseNotEmpty(
            f"the database already holds {persons} persons: the demo loads only into an empty "
            "registry (use a fresh database)"
        )


def _create_offices_and_staff(engine: sa.Engine, now: dt.datetime) -> dict[str, uuid.UUID]:
    """Offices, the demo accounts and one archive clerk per office; returns office -> clerk id."""
    with uow.transaction(make_sessionmaker(engine)) as session:
        offices = set(session.scalars(sa.select(Office.code)))
        for office in OFFICES:
            if office.code not in offices:
                add_office(
                    session, now=HISTORY_STARTS, code=office.code, name=office.name, region=office.region
                )
        users = dict(session.execute(sa.select(Staff.username, Staff.id)).all())
        for username, password, role, office_code in DEMO_CREDENTIALS:
            if username not in users:
                add_staff(
                    session,
                    now=now,
                    username=username,
                    password=password,
                    role=Role(role),
                    office=office_code,
                )
        # Archive clerks stand for the staff who recorded the imported history (loss reports and
        # found cards need someone who accepted them). Inactive, with a hash of a discarded
        # random secret: nobody can log in as them.
        unusable = PasswordHasher().hash(secrets.token_urlsafe(32))
        clerks = {}
        for office in OFFICES:
            username = ARCHIVE_CLERK.format(code=office.code)
            if username not in users:
                users[username] = uuid.uuid4()
                session.add(
                    Staff(
                        id=users[username],
                        username=username,
                        password_hash=unusable,
                        role=Role.CLERK,
                        office_code=office.code,
                        active=False,
                        created_at=HISTORY_STARTS,
                    )
                )
                session.add(AuditEntry(at=now, action="staff.add", detail=f"{username} clerk (demo archive)"))
            clerks[office.code] = users[username]
    return clerks


Encoder = Callable[[Row], Sequence[Any]]
Batch = list[tuple[str, list[Sequence[Any]]]]  # one chunk: (table, encoded rows), in FK order


def _stored(table: str) -> tuple[str, ...]:
    """The columns written: the population's, with its clear personal fields replaced by the row's
    key id and their sealed columns (registry/sealed.py), in that order at the end."""
    spec = sealed.SEALED_TABLES.get(table)
    if spec is None:
        return COLUMNS[table]
    kept = tuple(c for c in COLUMNS[table] if c not in spec.fields)
    return (*kept, "seal_key", *(spec.column(f) for f in spec.fields))


STORED: dict[str, tuple[str, ...]] = {table: _stored(table) for table in COLUMNS}


def _sealer(table: str, ring: KeyRing) -> Callable[[Row], Row]:
    """Seals one population row of `table` into STORED's column order (no clear value is kept)."""
    spec = sealed.SEALED_TABLES.get(table)
    if spec is None:
        return lambda row: row
    columns = COLUMNS[table]
    kept = [i for i, c in enumerate(columns) if c not in spec.fields]
    fields = [(f, columns.index(f)) for f in spec.fields]
    row_id = columns.index(spec.row_id)
    active, seal = ring.active_key_id, ring.seal

    def seal_row(row: Row) -> Row:
        rid = row[row_id]
        out = [row[i] for i in kept]
        out.append(active)
        for f, i in fields:
            value = row[i]
            out.append(
                None if value is None else seal(cast(str, value), context=sealing_context(table, f, rid))
            )
        return tuple(out)

    return seal_row


def _encoders(dialect: sa.Dialect) -> dict[str, Encoder]:
    """Per table, a function applying each column type's SQLAlchemy bind processor to a row."""
    encoders = {}
    for table, columns in STORED.items():
        types = [Base.metadata.tables[table].c[column].type for column in columns]
        processors = [t.dialect_impl(dialect).bind_processor(dialect) for t in types]
        encoders[table] = _encoder([(i, p) for i, p in enumerate(processors) if p is not None])
    return encoders


def _encoder(steps: list[tuple[int, Callable[[Any], Any]]]) -> Encoder:
    def encode(row: Row) -> list[Any]:
        values = list(row)
        for i, process in steps:
            values[i] = process(values[i])
        return values

    return encode


def _batches(people: Population, dialect: sa.Dialect, ring: KeyRing) -> Iterator[Batch]:
    encoders = _encoders(dialect)
    sealers = {table: _sealer(table, ring) for table in COLUMNS}
    for chunk in people.chunks():
        yield [
            (table, [encoders[table](sealers[table](row)) for row in rows]) for table, rows in chunk.tables()
        ]


_DONE = object()


def _ahead(batches: Iterator[Batch]) -> Generator[Batch]:
    """Produce the next batch in a thread while the database writes this one.

    Generating is Python; writing is mostly the database (another process), and both drivers
    release the GIL while they wait for it, so on two cores the two overlap. One batch waits in
    the queue, so at most three chunks are in memory.
    """
    queue_: queue.Queue[object] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                queue_.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not offer(batch):
                    return
            offer(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            offer(exc)

    thread = threading.Thread(target=produce, name="demo-generator", daemon=True)
    thread.start()
    try:
        while (item := queue_.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield cast(Batch, item)
    finally:
        stop.set()
        thread.join()


def _load_postgres(engine: sa.Engine, population: Callable[[int], Population], report: LoadReport) -> None:
    copies = {
        table: sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        for table, columns in STORED.items()
    }
    with uow.connection(engine) as transaction:
        conn: Any = transaction.connection.driver_connection  # psycopg.Connection
        with conn.cursor() as cur:
            # Holding the head's row lock until commit queues every other ledger writer behind us.
            head = cur.execute("SELECT seq FROM ledger_head WHERE id = 1 FOR UPDATE").fetchone()[0]
            _refuse_if_populated(cur.execute("SELECT count(*) FROM persons").fetchone()[0])
            people = population(head + 1)
            rebuild = _drop_secondary_checks(conn, cur)
            for batch in _ahead(_batches(people, engine.dialect, sealed.ring_of(engine))):
                for table, rows in batch:
                    with cur.copy(copies[table]) as copy:
                        for row in rows:
                            copy.write_row(row)
                    report.rows[table] += len(rows)
            for statement in rebuild:
                cur.execute(statement)
            cur.execute("UPDATE ledger_head SET seq = %s WHERE id = 1", (head + people.plan(),))
            chains.chain_ledger_from(transaction, head + 1)  # the loaded events' hash chain, in seq order
            cur.execute(sql.SQL("ANALYZE {}").format(sql.SQL(", ").join(map(sql.Identifier, COLUMNS))))


def _drop_secondary_checks(conn: Any, cur: Any) -> list[sql.Composable]:
    """Drop the loaded tables' foreign keys and secondary indexes; return what re-creates them.

    PostgreSQL's own advice for bulk loads: one index build and one join per foreign key after
    the load cost far less than maintaining them row by row (200,000 citizens: 56 s -> 34 s).
    Primary keys and unique constraints stay, and in the end every check is back: the
    definitions come from the catalog, and re-creating them in the same transaction validates
    every row before anyone can see it. A role that may not alter the tables loads with the
    checks in place, only slower.
    """
    tables = list(COLUMNS)
    foreign_keys = cur.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE contype = 'f' AND conrelid = ANY(%s::regclass[])",
        (tables,),
    ).fetchall()
    indexes = cur.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i"
        " WHERE i.indrelid = ANY(%s::regclass[]) AND NOT EXISTS (SELECT 1 FROM pg_constraint c"
        " WHERE c.conrelid = i.indrelid AND c.conindid = i.indexrelid)",
        (tables,),
    ).fetchall()
    try:
        with conn.transaction():  # a savepoint: undone alone if we may not
            for table, name, _definition in foreign_keys:
                cur.execute(
                    sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.SQL(table), sql.Identifier(name))
                )
            for name, _definition in indexes:
                cur.execute(sql.SQL("DROP INDEX {}").format(sql.SQL(name)))
    except errors.InsufficientPrivilege:
        return []
    cur.execute("SET LOCAL maintenance_work_mem = '256MB'")  # for the index builds
    return [sql.SQL(definition) for _name, definition in indexes] + [
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            sql.SQL(table), sql.Identifier(name), sql.SQL(definition)
        )
        for table, name, definition in foreign_keys
    ]


def _load_sqlite(engine: sa.Engine, population: Callable[[int], Population], report: LoadReport) -> None:
    inserts = {
        table: f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608 - names are constants
        for table, columns in STORED.items()
    }
    # Chunks commit one by one, each its own transaction; the first also reserves the whole seq
    # range, so a writer running meanwhile numbers its events after ours.
    batches: Generator[Batch] | None = None
    try:
        while True:
            with uow.connection(engine) as transaction:
                conn: Any = transaction.connection.driver_connection  # sqlite3, in our BEGIN IMMEDIATE
                if batches is None:
                    _refuse_if_populated(conn.execute("SELECT count(*) FROM persons").fetchone()[0])
                    head = conn.execute("SELECT seq FROM ledger_head WHERE id = 1").fetchone()[0]
                    people = population(head + 1)
                    conn.execute("UPDATE ledger_head SET seq = ? WHERE id = 1", (head + people.plan(),))
                    batches = _ahead(_batches(people, engine.dialect, sealed.ring_of(engine)))
                batch = next(batches, None)
                for table, rows in batch or ():
                    conn.executemany(inserts[table], rows)
                    report.rows[table] += len(rows)
            if batch is None:
                break
        with uow.connection(engine) as transaction:  # the loaded events' hash chain, in seq order
            chains.chain_ledger_from(transaction, head + 1)
    finally:
        if batches is not None:
            batches.close()
