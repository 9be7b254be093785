"""Staff reads per second (`GET /api/v1/persons/{id}`, an audited read) vs. a bare SELECT of the
person and an INSERT of one audit row, on SQLite and PostgreSQL.

The staff read is what the route runs, in process: check the grant, find the person by id
number, record the read in the audit log, read the cards, commit; then the answer as the route
builds it (the sealed name and address opened). The baseline is the least the same database
can do for an audited read: one SELECT of the person row by id number, one INSERT of an audit
row, a COMMIT, on the same engine, in the same run, alternating in ten blocks. Target: ratio
>= 0.5 (issue 14).

    .venv/bin/python bench/staff_reads.py [--reads 2000] [--postgres-url URL]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from harness import admin_engine, scratch_database, settings_for, table
from idguard.core.grants import Actor
from idguard.core.sealing import Sealer
from idguard.db import migrate
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.db.types import UTCDateTime
from idguard.registry import persons
from idguard.registry.schemas import PersonOut
from idguard.uow import UnitOfWork
from loss_reports import NOW, seed

TARGET = 0.5
BLOCKS = 10  # the paths alternate in this many blocks, so a change of load falls on all alike


def bare_reads(engine: sa.Engine, staff_id: uuid.UUID, numbers: list[str]) -> float:
    """SELECT the person by id number, INSERT an audit row naming it, COMMIT: per number."""
    select = sa.text("SELECT * FROM persons WHERE id_number = :n").columns(sa.column("id", sa.Uuid()))
    insert = sa.text(
        "INSERT INTO audit_log (at, staff_id, action, person_id) VALUES (:at, :staff, 'person.read', :person)"
    ).bindparams(
        sa.bindparam("at", type_=UTCDateTime()),
        sa.bindparam("staff", type_=sa.Uuid()),
        sa.bindparam("person", type_=sa.Uuid()),
    )
    start = time.perf_counter()
    for number in numbers:
        with engine.begin() as conn:
            row = conn.execute(select, {"n": number}).one()
            conn.execute(insert, {"at": NOW, "staff": staff_id, "person": row.id})
    return len(numbers) / (time.perf_counter() - start)


def staff_reads(engine: sa.Engine, actor: Actor, numbers: list[str], *, answer: bool) -> float:
    """The route's work per number: the audited read and its commit (uow), and with `answer`
    the answer the route returns (PersonOut, its sealed fields opened)."""
    sessions = make_sessionmaker(engine)
    sealer = Sealer(bytes(32))  # seals nothing here: a read stores no answer
    start = time.perf_counter()
    for number in numbers:
        with sessions() as session:

            def read(s: Session = session, n: str = number) -> persons.PersonRecord:
                return persons.read_person(s, actor=actor, now=NOW, id_number=n, action="person.read")

            record = UnitOfWork(session, NOW, sealer).read(read)
            if answer:
                PersonOut.of(record.person, record.cards, NOW).model_dump_json()
    return len(numbers) / (time.perf_counter() - start)


def run(name: str, url: str, n: int) -> tuple[object, ...]:
    engine = make_engine(settings_for(url))
    migrate.upgrade(engine)
    actor, cards = seed(engine, n)
    numbers = [entry.split("|")[1] for entry in cards]
    staff_id = actor.staff_id
    # Warm both paths (connection pool, statement caches) before measuring; then alternate them
    # in blocks.
    bare_reads(engine, staff_id, numbers[:20])
    staff_reads(engine, actor, numbers[:20], answer=True)
    size = max(1, len(numbers) // BLOCKS)
    rates: dict[str, list[float]] = {"bare": [], "read": [], "answer": []}
    cpu = {"bare": 0.0, "answer": 0.0}  # this process's CPU (not the database server's)
    for part in (numbers[i : i + size] for i in range(0, len(numbers), size)):
        started = time.process_time()
        rates["bare"].append(bare_reads(engine, staff_id, part))
        cpu["bare"] += time.process_time() - started
        rates["read"].append(staff_reads(engine, actor, part, answer=False))
        started = time.process_time()
        rates["answer"].append(staff_reads(engine, actor, part, answer=True))
        cpu["answer"] += time.process_time() - started
    engine.dispose()
    blocks = [len(numbers[i : i + size]) for i in range(0, len(numbers), size)]
    bare, read, answer = (
        len(numbers) / sum(b / r for b, r in zip(blocks, rates[k], strict=True))
        for k in ("bare", "read", "answer")
    )
    us = {k: v / len(numbers) * 1e6 for k, v in cpu.items()}
    verdict = "MET" if answer / bare >= TARGET else "MISSED"
    return (name, bare, read, answer, read / bare, answer / bare, verdict, us["bare"], us["answer"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(run("sqlite (WAL, synchronous=FULL)", f"sqlite:///{Path(tmp) / 'bench.db'}", args.reads))
    admin = admin_engine(args.postgres_url)
    try:
        with scratch_database(admin, args.postgres_url, "idguard_bench_sr") as url:
            rows.append(run("postgresql", url, args.reads))
    except sa.exc.OperationalError as exc:
        print(f"postgresql skipped: {type(exc.orig).__name__}")
    table(
        f"{args.reads} staff reads (GET /api/v1/persons/{{id}}, in process), one transaction each, "
        f"vs. {args.reads} bare SELECT + audit INSERT + COMMIT",
        (
            "database",
            "bare/s",
            "read/s",
            "read+answer/s",
            "read/bare",
            "read+answer/bare",
            f">= {TARGET}",
            "client CPU us: bare",
            "read+answer",
        ),
        rows,
    )


if __name__ == "__main__":
    main()
