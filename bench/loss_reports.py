"""Loss reports per second vs. a bare single-row insert-and-commit, on SQLite and PostgreSQL.

A loss report is the whole use-case (`report_loss`, the holder in person): check the applicant
is the holder and the card valid today, change its status, append the chained ledger event
(allocating the global sequence), store the report, commit. On PostgreSQL the checks and the
writes are one guarded statement (ledger.record_guarded), on SQLite four; a report the guard
does not pass takes the plain path (lock, read, check in Python, ledger.record), as before.
The baseline is the cheapest durable write the same database can do:
one INSERT of one row and a COMMIT, on the same engine, in the same run, the two alternating in
ten blocks (a busy neighbour slows both alike). Target: ratio >= 0.5.

    .venv/bin/python bench/loss_reports.py [--reports 2000] [--postgres-url URL]

Against an older tree (`--against DIR`, its `src`, e.g. from `git archive HEAD src | tar -x -C
DIR`): two processes per database, this tree's and the older one's (PYTHONPATH), each on its own
copy of the database, run the same blocks in turn (the order swapped every block), so the two
are measured side by side through the same load; both ratios and both client CPUs are printed.

    .venv/bin/python bench/loss_reports.py --against /work/old/src
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from harness import admin_engine, scratch_database, settings_for, uptime
from idguard.core.grants import Actor, Role
from idguard.core.idnumber import Sex, check_character
from idguard.db import migrate
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.registry import sealed
from idguard.registry.lifecycle import CardStatus, IssueKind, LossReason
from idguard.registry.loss_reports import report_loss
from idguard.registry.models import Card, Office, Person, Staff

NOW = dt.datetime(2026, 6, 15, 2, 0, tzinfo=dt.UTC)
OFFICE = "110105001"


def seed(engine: sa.Engine, n: int) -> tuple[Actor, list[str]]:
    """n persons with one valid card each, inserted directly (this is setup, not measured)."""
    staff_id = uuid.uuid4()
    persons, cards = [], []
    for i in range(n):
        birth = dt.date(1950, 1, 1) + dt.timedelta(days=i % 20000)
        body = f"110105{birth:%Y%m%d}{(i % 500) * 2 + 1:03d}"
        number = body + check_character(body)
        pid, cid = uuid.uuid4(), uuid.uuid4()
        persons.append(
            {
                "id": pid,
                "id_number": number,
                "name": "张三",
                "sex": Sex.MALE,
                "ethnicity": "汉",
                "birth_date": birth,
                "address": "北京",
                "hukou_office": OFFICE,
                "created_at": NOW,
            }
        )
        cards.append(
            {
                "id": cid,
                "person_id": pid,
                "id_number": number,
                "kind": IssueKind.FIRST,
                "temporary": False,
                "status": CardStatus.VALID,
                "name": "张三",
                "sex": Sex.MALE,
                "ethnicity": "汉",
                "birth_date": birth,
                "address": "北京",
                "issued_on": dt.date(2020, 1, 1),
                "expires_on": None,
                "issuing_office": OFFICE,
                "chip_serial": cid.hex.upper(),
                "fingerprints_registered": False,
                "created_at": NOW,
                "updated_at": NOW,
            }
        )
    # Unique numbers: the sequence digit cycles every 500, the birth date every 20,000.
    assert len({p["id_number"] for p in persons}) == n
    with engine.begin() as conn:
        conn.execute(
            sa.insert(Office), [{"code": OFFICE, "name": "bench", "region": "110105", "created_at": NOW}]
        )
        conn.execute(
            sa.insert(Staff),
            [
                {
                    "id": staff_id,
                    "username": "bench",
                    "password_hash": "x",
                    "role": Role.CLERK,
                    "office_code": OFFICE,
                    "active": True,
                    "created_at": NOW,
                }
            ],
        )
        ring = sealed.ring_of(engine)  # names and addresses are stored sealed
        conn.execute(sa.insert(Person), [sealed.sealed_values(ring, "persons", p) for p in persons])
        conn.execute(sa.insert(Card), [sealed.sealed_values(ring, "cards", c) for c in cards])
        conn.execute(sa.text("CREATE TABLE bench_bare (id BIGINT PRIMARY KEY, payload VARCHAR(64))"))
    actor = Actor(staff_id=staff_id, username="bench", role=Role.CLERK, office=OFFICE)
    return actor, [f"{c['id']}|{c['id_number']}" for c in cards]


def bare_inserts(engine: sa.Engine, n: int, *, first: int = 0) -> float:
    start = time.perf_counter()
    for i in range(first, first + n):
        with engine.begin() as conn:
            conn.execute(
                sa.text("INSERT INTO bench_bare (id, payload) VALUES (:i, :p)"), {"i": i, "p": "x" * 32}
            )
    return n / (time.perf_counter() - start) if n else 0.0


def loss_reports(engine: sa.Engine, actor: Actor, cards: list[str]) -> float:
    sessions = make_sessionmaker(engine)
    start = time.perf_counter()
    for entry in cards:
        card_id, number = entry.split("|")
        with sessions() as session:
            report_loss(
                session,
                actor=actor,
                now=NOW,
                card_id=card_id,
                reason=LossReason.LOST,
                office=OFFICE,
                applicant_id_number=number,
            )
            session.commit()
    return len(cards) / (time.perf_counter() - start)


BLOCKS = 10  # the two paths alternate in this many blocks, so a change of load falls on both


def prepared(url: str, n: int) -> tuple[sa.Engine, Actor, list[str]]:
    """The database at `url` migrated and seeded with n cards (and 20 more), both paths warmed
    (connection pool, statement caches) on the 20."""
    engine = make_engine(settings_for(url))
    migrate.upgrade(engine)
    actor, cards = seed(engine, n + 20)
    bare_inserts(engine, 0)
    loss_reports(engine, actor, cards[n:])
    return engine, actor, cards


def run(name: str, url: str, n: int) -> tuple[str, float, float, float, float]:
    engine, actor, cards = prepared(url, n)
    size = max(1, n // BLOCKS)
    bare_s = report_s = bare_cpu = report_cpu = 0.0
    for start in range(0, n, size):
        block = cards[start : min(n, start + size)]
        cpu = time.process_time()
        bare_s += len(block) / bare_inserts(engine, len(block), first=start)
        bare_cpu += time.process_time() - cpu
        cpu = time.process_time()
        report_s += len(block) / loss_reports(engine, actor, block)
        report_cpu += time.process_time() - cpu
    engine.dispose()
    # This process's CPU per operation (the database server's is not in it): what a loaded
    # machine distorts least.
    return name, n / bare_s, n / report_s, bare_cpu / n * 1e6, report_cpu / n * 1e6


def serve(url: str, n: int) -> None:
    """A side-by-side worker (`--against`): seed, warm, say so, then for each block number read
    from stdin run that block (bare inserts, then loss reports) and answer its times as JSON."""
    engine, actor, cards = prepared(url, n)
    size = max(1, n // BLOCKS)
    print("ready", flush=True)
    for line in sys.stdin:
        start = int(line) * size
        block = cards[start : min(n, start + size)]
        cpu = time.process_time()
        bare = len(block) / bare_inserts(engine, len(block), first=start)
        bare_cpu = time.process_time() - cpu
        cpu = time.process_time()
        reports = len(block) / loss_reports(engine, actor, block)
        times = [bare, bare_cpu, reports, time.process_time() - cpu]
        print(json.dumps(times), flush=True)
    engine.dispose()


def side_by_side(name: str, urls: dict[str, str], srcs: dict[str, str], n: int) -> list[tuple[str, ...]]:
    """This tree and an older one, block by block, each on its own database (`serve`)."""
    workers = {}
    for tree, url in urls.items():
        env = {**os.environ, "PYTHONPATH": srcs[tree]}
        workers[tree] = subprocess.Popen(  # noqa: S603 - this script, with a bench database's URL
            [sys.executable, __file__, "--serve", url, "--reports", str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
    try:
        for worker in workers.values():
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        sums = {tree: [0.0, 0.0, 0.0, 0.0] for tree in workers}
        order = list(workers)
        for k in range(-(-n // max(1, n // BLOCKS))):
            for tree in order if k % 2 == 0 else order[::-1]:
                worker = workers[tree]
                assert worker.stdin is not None
                assert worker.stdout is not None
                worker.stdin.write(f"{k}\n")
                worker.stdin.flush()
                for i, value in enumerate(json.loads(worker.stdout.readline())):
                    sums[tree][i] += value
    finally:
        for worker in workers.values():
            assert worker.stdin is not None
            worker.stdin.close()
            worker.wait()
    rows = []
    for tree, (bare_s, bare_cpu, report_s, report_cpu) in sums.items():
        rows.append((f"{name} [{tree}]", n / bare_s, n / report_s, bare_cpu / n * 1e6, report_cpu / n * 1e6))
    return rows  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--against", metavar="SRC", help="an older tree's src directory, run side by side")
    parser.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.reports)
        return
    if args.against:
        main_side_by_side(args)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(
            run("sqlite (WAL, synchronous=FULL)", f"sqlite:///{Path(tmp) / 'bench.db'}", args.reports)
        )
    admin = admin_engine(args.postgres_url)
    try:
        with scratch_database(admin, args.postgres_url, "idguard_bench_lr") as url:
            rows.append(run("postgresql", url, args.reports))
    except sa.exc.OperationalError as exc:
        print(f"postgresql skipped: {type(exc.orig).__name__}")
    print(f"\n({uptime()})")
    print(f"{args.reports} loss reports, one transaction each, vs. {args.reports} bare insert+commit")
    print(
        f"{'database':32} {'bare insert/s':>14} {'loss report/s':>14} {'ratio':>7}  target >= 0.50"
        f"   {'client CPU us: bare':>20} {'report':>7}"
    )
    for name, baseline, reports, bare_cpu, report_cpu in rows:
        print(
            f"{name:32} {baseline:14.0f} {reports:14.0f} {reports / baseline:7.2f}"
            f"                 {bare_cpu:20.0f} {report_cpu:7.0f}"
        )


def main_side_by_side(args: argparse.Namespace) -> None:
    here = str(Path(__file__).resolve().parent.parent / "src")
    srcs = {"this tree": here, "older": str(Path(args.against).resolve())}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        urls = {tree: f"sqlite:///{Path(tmp) / f'bench{i}.db'}" for i, tree in enumerate(srcs)}
        rows += side_by_side("sqlite (WAL, synchronous=FULL)", urls, srcs, args.reports)
    admin = admin_engine(args.postgres_url)
    try:
        with (
            scratch_database(admin, args.postgres_url, "idguard_bench_lr") as new,
            scratch_database(admin, args.postgres_url, "idguard_bench_lr_older") as old,
        ):
            rows += side_by_side("postgresql", {"this tree": new, "older": old}, srcs, args.reports)
    except sa.exc.OperationalError as exc:
        print(f"postgresql skipped: {type(exc.orig).__name__}")
    print(f"\n({uptime()})")
    print(f"{args.reports} loss reports, one transaction each, vs. {args.reports} bare insert+commit")
    print(
        f"{'database':44} {'bare insert/s':>14} {'loss report/s':>14} {'ratio':>7}"
        f"   {'client CPU us: bare':>20} {'report':>7}"
    )
    for name, baseline, reports, bare_cpu, report_cpu in rows:
        print(
            f"{name:44} {baseline:14.0f} {reports:14.0f} {reports / baseline:7.2f}   {bare_cpu:20.0f} {report_cpu:7.0f}"
        )


if __name__ == "__main__":
    main()
