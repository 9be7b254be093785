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

What the database's own work allows (`--floor`): the statements the loss reports ran, with the
values they bound, captured from this tree's code on one database and replayed straight on the
driver (sqlite3, psycopg: no SQLAlchemy, no session, no Python of ours) on a copy of its starting
state, against a bare insert+commit on the same driver, in alternating blocks. No code on top of
the driver can do better than that ratio. With a local PostgreSQL it also prints the server
backend's CPU per operation (/proc). A second row per database ("in a Session") runs the same
statements on the cursor of an ORM Session's transaction (its begin, commit and close) against
this bench's own bare insert (SQLAlchemy Core): the most a loss report written through a Session
can reach in this bench, with no Python of ours at all.

    .venv/bin/python bench/loss_reports.py --floor

What a commit writes on SQLite (`--wal-frames`): the WAL frames (pages) per commit of each path,
from the WAL file's growth over 100 commits after a TRUNCATE checkpoint (fewer than the 1,000
that start an automatic checkpoint); with `--against`, the older tree's as well.

    .venv/bin/python bench/loss_reports.py --wal-frames [--against /work/old/src]
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import sqlalchemy as sa

from harness import (
    admin_engine,
    database_url,
    drop_database,
    recreate_database,
    scratch_database,
    settings_for,
    uptime,
)
from idguard.core.grants import Actor, Role
from idguard.core.idnumber import Sex, check_character
from idguard.db import migrate
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.registry import ledger, sealed
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


def side_by_side(
    name: str, urls: dict[str, str], srcs: dict[str, str], n: int
) -> list[tuple[str, float, float, float, float]]:
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
    return rows


# ---------------------------------------------------------------------------------------------
# --wal-frames: the pages a commit writes on SQLite

WAL_COMMITS = 100  # per measure: fewer than wal_autocheckpoint's 1,000 frames even at 9 a commit


def wal_frames(n: int) -> None:
    """Print, as JSON, the WAL frames per commit of each path on a scratch SQLite database,
    twice each, alternating (this process's tree: PYTHONPATH)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        engine, actor, cards = prepared(f"sqlite:///{path}", n)
        wal = Path(f"{path}-wal")
        with closing(sqlite3.connect(path)) as raw:
            page = int(raw.execute("PRAGMA page_size").fetchone()[0])

        def frames(work: Callable[[], float]) -> float:
            with closing(sqlite3.connect(path, isolation_level=None)) as raw:
                busy, _, _ = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert not busy, "the checkpoint could not truncate the WAL"
            work()
            return (wal.stat().st_size - 32) / (page + 24) / WAL_COMMITS  # 32: the WAL header

        out: dict[str, list[float]] = {"bare": [], "report": []}
        for r in range(n // WAL_COMMITS):
            start = r * WAL_COMMITS
            block = cards[start : start + WAL_COMMITS]
            out["bare"].append(frames(functools.partial(bare_inserts, engine, WAL_COMMITS, first=start)))
            out["report"].append(frames(functools.partial(loss_reports, engine, actor, block)))
        engine.dispose()
    print(json.dumps(out), flush=True)


def main_wal_frames(args: argparse.Namespace) -> None:
    here = str(Path(__file__).resolve().parent.parent / "src")
    srcs = {"this tree": here} | ({"older": str(Path(args.against).resolve())} if args.against else {})
    n = 2 * WAL_COMMITS
    print(f"\n({uptime()})")
    print(f"SQLite WAL frames per commit ({WAL_COMMITS} commits a measure, after a TRUNCATE checkpoint)")
    print(f"{'tree':12} {'bare insert':>20} {'loss report':>20}")
    for tree, src in srcs.items():
        done = subprocess.run(  # noqa: S603 - this script
            [sys.executable, __file__, "--wal-frames-worker", "--reports", str(n)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": src},
        )
        out = json.loads(done.stdout.strip().splitlines()[-1])
        bare, report = (" / ".join(f"{v:.2f}" for v in out[k]) for k in ("bare", "report"))
        print(f"{tree:12} {bare:>20} {report:>20}")


# ---------------------------------------------------------------------------------------------
# --floor: the same statements on the bare driver


@contextmanager
def captured() -> Iterator[list[tuple[str, Any]]]:
    """Every statement the loss reports run on the DBAPI cursor (ledger._Statements) with the
    values the driver receives, as `_Statements.run` computes them (`_Direct.args`)."""
    seen: list[tuple[Any, Any, dict[str, Any]]] = []
    real = ledger._Statements.run

    def run(statements: Any, statement: Any, params: dict[str, Any]) -> Any:
        rows = real(statements, statement, params)
        seen.append((statements, statement, params))
        return rows

    out: list[tuple[str, Any]] = []
    with mock.patch.object(ledger._Statements, "run", run):
        yield out
    for statements, statement, params in seen:
        assert not statements.listened, "a listener took conn.execute: nothing to replay"
        direct = statements.compiled[id(statement)][1]
        out.append((direct.sql, direct.args(params, {})))


def _backend_cpu(pid: int | None) -> float:
    """The server backend's CPU seconds so far (a local PostgreSQL), or 0.0 when unreadable."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Row = tuple[str, float, float, float, float, float, float]


def _each(run: Callable[[list[tuple[str, Any]]], None], works: list[list[tuple[str, Any]]]) -> None:
    for work in works:
        run(work)


def floor(name: str, url: str, copies: tuple[str, str], n: int, admin: sa.Engine | None = None) -> list[Row]:
    """The reports' statements replayed on the driver (on `copies[0]`, made a copy of `url`'s
    state before the reports ran there; through `admin` on PostgreSQL) vs the driver's bare
    insert+commit; and the same statements on the driver cursor of a Session's transaction (its
    begin, commit and close; on `copies[1]`) vs the bench's own bare insert (SQLAlchemy Core,
    `bare_inserts`): the most code that writes through the ORM Session can reach. The four
    alternate block by block."""
    engine, actor, cards = prepared(url, n)
    engine.dispose()
    sqlite = admin is None
    for copy in copies:
        if admin is None:
            source = Path(sa.make_url(url).database or "")
            with closing(sqlite3.connect(source)) as raw:
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            shutil.copy(source, Path(sa.make_url(copy).database or ""))
        else:
            recreate_database(admin, sa.make_url(copy).database or "", template=sa.make_url(url).database)
    engine = make_engine(settings_for(url))
    with captured() as statements:
        loss_reports(engine, actor, cards[:n])
    with engine.connect() as conn:
        head = conn.execute(sa.text("SELECT seq, chain FROM ledger_head")).one()
    engine.dispose()
    per = len(statements) // n
    replica = make_engine(settings_for(copies[0]))
    pooled = replica.raw_connection()
    driver: Any = pooled.driver_connection
    in_session = make_engine(settings_for(copies[1]))
    sessions = make_sessionmaker(in_session)
    pid = None
    if sqlite:
        driver.create_function(ledger._SQLITE_LINK, 3, ledger._sqlite_link, deterministic=True)

        @sa.event.listens_for(in_session, "connect")
        def _link(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.create_function(ledger._SQLITE_LINK, 3, ledger._sqlite_link, deterministic=True)

        begin, commit, insert = (
            "BEGIN IMMEDIATE",
            "COMMIT",
            "INSERT INTO bench_bare (id, payload) VALUES (?, ?)",
        )
    else:
        pid = driver.info.backend_pid
        begin, commit, insert = "", "", "INSERT INTO bench_bare (id, payload) VALUES (%s, %s)"

    def replay(cursor: Any, work: list[tuple[str, Any]]) -> None:
        for sql, args in work:
            cursor.execute(sql, args)
            if cursor.description is not None:
                cursor.fetchall()
        cursor.close()

    def one(work: list[tuple[str, Any]]) -> None:
        if begin:
            driver.execute(begin)
        replay(driver.cursor(), work)
        if commit:
            driver.execute(commit)
        else:
            driver.commit()

    def through_session(work: list[tuple[str, Any]]) -> None:
        with sessions() as session:
            replay(session.connection().connection.cursor(), work)
            session.commit()

    size = max(1, n // BLOCKS)
    # driver bare, driver statements, Core bare, statements in a Session: wall, client CPU, server CPU
    sums = [0.0] * 12
    for start in range(0, n, size):
        stop = min(n, start + size)
        works = [statements[k * per : (k + 1) * per] for k in range(start, stop)]
        bares = [[(insert, (k, "x" * 32))] for k in range(start, stop)]
        paths: list[Callable[[], object]] = [
            functools.partial(_each, one, bares),
            functools.partial(_each, one, works),
            functools.partial(bare_inserts, in_session, stop - start, first=start),
            functools.partial(_each, through_session, works),
        ]
        for i, path in enumerate(paths):
            wall, cpu, server = time.perf_counter(), time.process_time(), _backend_cpu(pid)
            path()
            sums[3 * i] += time.perf_counter() - wall
            sums[3 * i + 1] += time.process_time() - cpu
            sums[3 * i + 2] += _backend_cpu(pid) - server if i < 2 else 0.0
    cursor = driver.cursor()
    cursor.execute("SELECT seq, chain FROM ledger_head")
    assert tuple(cursor.fetchone()) == tuple(head), "the replay did not write what the reports wrote"
    cursor.close()
    pooled.close()
    replica.dispose()
    with in_session.connect() as conn:
        replayed = conn.execute(sa.text("SELECT seq, chain FROM ledger_head")).one()
    assert tuple(replayed) == tuple(head), "the replay in a Session did not write what the reports wrote"
    in_session.dispose()
    rows = []
    for label, k in ((name, 0), (f"{name} in a Session", 6)):
        bare_s, bare_cpu, bare_server, report_s, report_cpu, report_server = sums[k : k + 6]
        rows.append(
            (
                label,
                n / bare_s,
                n / report_s,
                bare_cpu / n * 1e6,
                report_cpu / n * 1e6,
                bare_server / n * 1e6,
                report_server / n * 1e6,
            )
        )
    return rows


def main_floor(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows += floor(
            "sqlite3 (WAL, synchronous=FULL)",
            f"sqlite:///{Path(tmp) / 'bench.db'}",
            (f"sqlite:///{Path(tmp) / 'copy.db'}", f"sqlite:///{Path(tmp) / 'copy2.db'}"),
            args.reports,
        )
    admin = admin_engine(args.postgres_url)
    try:
        with scratch_database(admin, args.postgres_url, "idguard_bench_lr") as url:
            try:
                copies = (
                    database_url(args.postgres_url, "idguard_bench_lr_copy"),
                    database_url(args.postgres_url, "idguard_bench_lr_copy2"),
                )
                rows += floor("psycopg", url, copies, args.reports, admin)
            finally:
                drop_database(admin, "idguard_bench_lr_copy")
                drop_database(admin, "idguard_bench_lr_copy2")
    except sa.exc.OperationalError as exc:
        print(f"postgresql skipped: {type(exc.orig).__name__}")
    print(f"\n({uptime()})")
    print(
        f"{args.reports} loss reports' own statements, replayed on the driver, one transaction each, vs. "
        f'{args.reports} bare insert+commit on the driver; and "in a Session": the same statements on the '
        "cursor of a Session's transaction vs. the bench's bare insert (SQLAlchemy Core)"
    )
    print(
        f"{'driver':44} {'bare insert/s':>14} {'statements/s':>14} {'ratio':>7}"
        f"   {'client CPU us: bare':>20} {'report':>7}   {'server CPU us: bare':>20} {'report':>7}"
    )
    for name, baseline, reports, bare_cpu, report_cpu, bare_server, report_server in rows:
        server = f"{bare_server:20.0f} {report_server:7.0f}" if report_server else f"{'-':>20} {'-':>7}"
        print(
            f"{name:44} {baseline:14.0f} {reports:14.0f} {reports / baseline:7.2f}"
            f"   {bare_cpu:20.0f} {report_cpu:7.0f}   {server}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--against", metavar="SRC", help="an older tree's src directory, run side by side")
    parser.add_argument(
        "--floor", action="store_true", help="the reports' own statements replayed on the bare driver"
    )
    parser.add_argument(
        "--wal-frames", action="store_true", help="SQLite: the WAL frames (pages) each path's commit writes"
    )
    parser.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--wal-frames-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.reports)
        return
    if args.wal_frames_worker:
        wal_frames(args.reports)
        return
    if args.wal_frames:
        main_wal_frames(args)
        return
    if args.floor:
        main_floor(args)
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
