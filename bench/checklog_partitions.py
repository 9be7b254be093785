"""The check log's writer on PostgreSQL before and after migration 0013 (issue 15), side by side.

Two databases on one server: `before` migrated to 0012 (`checks` one table keyed by id), `after`
at head (partitioned by UTC month, keyed by (id, at)). Each is preloaded with the same rows
spread over the last PRELOAD_MONTHS months, then both take the same kind of batches, in
interleaved rounds (the order swapped every round), through the check log's own writer
(CheckLog.append + flush: COPY), and through its idempotent path (a journal replay or the sink:
COPY into a temporary table, INSERT … ON CONFLICT DO NOTHING), every row new; and the
idempotent path again with every row already there (a replayed segment). Prints checks/s per
round's median and the ratio after/before, with the load average.

    python -m bench.checklog_partitions [--rows 20000] [--rounds 8] [--preload 300000] [--keep]
        [--before-rev REV]

The `before` side runs the writer as it was at REV (default HEAD: the check log's module read
with `git show`; after issue 15 is committed, pass the commit before it), whose idempotent write
says `ON CONFLICT (id)`; the `after` side runs the working tree's (`ON CONFLICT (id, at)`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path

import sqlalchemy as sa

from idguard import uow
from idguard.config import Environment, Settings
from idguard.db import migrate
from idguard.db.engine import make_engine
from idguard.verification.models import Unit
from idguard.verification.runtime import partitions
from idguard.verification.runtime.checklog import CheckEntry, CheckLog

SERVER = os.environ.get("IDGUARD_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET = "bench-secret-key-0123456789abcdef"  # noqa: S105 - a bench's own throwaway key
UNIT = "BENCHBANK"
PRELOAD_MONTHS = 6


def database(name: str, revision: str, *, fresh: bool) -> sa.Engine:
    admin = sa.create_engine(
        sa.make_url(SERVER).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        exists = conn.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
        if fresh or not exists:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            exists = None
    admin.dispose()
    url = sa.make_url(SERVER).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(Settings(database_url=url, env=Environment.TEST, secret_key=SECRET))
    if not exists:
        migrate.upgrade(engine, revision)
        with uow.connection(engine) as conn:
            now = dt.datetime.now(dt.UTC)
            conn.execute(
                sa.insert(Unit),
                {
                    "code": UNIT,
                    "name": "bench",
                    "sector": "bank",
                    "purposes": ["account_opening"],
                    "rate_limit": 10**6,
                    "status": "active",
                    "created_at": now,
                    "updated_at": now,
                },
            )
    return engine


def entries(n: int, start: dt.datetime, span: dt.timedelta, seed: int) -> list[CheckEntry]:
    step = span / max(n, 1)
    return [
        (
            str(uuid.uuid4()),
            UNIT,
            "teller-7",
            "account_opening",
            start + step * i,
            "valid",
            None,
            f"110105{1950 + (seed + i) % 60:04d}0101{(seed * 7919 + i) % 1000:03d}X",
            None,
            1,
            None,
            None,
        )
        for i in range(n)
    ]


def checklog_at(rev: str) -> types.ModuleType:
    """The check log's module as it was at `rev`, loaded beside the current one."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(  # noqa: S603 - git with a revision the operator names
        ["git", "show", f"{rev}:src/idguard/verification/runtime/checklog.py"],  # noqa: S607
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType("bench_checklog_before")
    module.__file__ = f"checklog.py@{rev}"
    sys.modules[module.__name__] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - the project's own source
    return module


def timed_write(
    engine: sa.Engine, lines: list[str], *, idempotent: bool, writer: type[CheckLog] = CheckLog
) -> float:
    log = writer(engine, SECRET)
    started = time.perf_counter()
    log._write(["".join(lines)], [], idempotent=idempotent)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000, help="checks per batch")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--preload", type=int, default=300_000)
    parser.add_argument("--keep", action="store_true", help="keep the preloaded databases for a rerun")
    parser.add_argument(
        "--before-rev", default="HEAD", help="the revision whose writer the `before` side runs"
    )
    args = parser.parse_args()
    old_writer: type[CheckLog] = checklog_at(args.before_rev).CheckLog

    writers = {"before (0012, one table)": old_writer, "after (head, monthly partitions)": CheckLog}
    engines = {
        "before (0012, one table)": database("idguard_bench_h2_before", "0012", fresh=not args.keep),
        "after (head, monthly partitions)": database("idguard_bench_h2_after", "head", fresh=not args.keep),
    }
    now = dt.datetime.now(dt.UTC)
    formatter = CheckLog(next(iter(engines.values())), SECRET)
    first = now - dt.timedelta(days=30 * PRELOAD_MONTHS)
    # As in production, the preloaded months have their partitions (the keeper made them then).
    partitions.ensure(engines["after (head, monthly partitions)"], first, ahead=PRELOAD_MONTHS + 1)
    for name, engine in engines.items():
        with engine.connect() as conn:
            have = conn.scalar(sa.text("SELECT count(*) FROM checks")) or 0
        if have < args.preload:
            started = time.perf_counter()
            for chunk in range(0, args.preload - have, 50_000):
                rows = entries(min(50_000, args.preload - have - chunk), first, now - first, chunk)
                lines, _, _ = formatter._format(rows)
                timed_write(engine, lines, idempotent=False, writer=writers[name])
            with uow.connection(engine) as conn:
                conn.exec_driver_sql("ANALYZE checks")
            print(f"preloaded {name}: {args.preload - have:,} rows in {time.perf_counter() - started:.1f} s")

    results: dict[tuple[str, str], list[float]] = {}
    order = list(engines)
    for r in range(args.rounds):
        # Checks of the last minute (the live case), formatted once, the same for both.
        batch = entries(args.rows, now - dt.timedelta(minutes=1), dt.timedelta(minutes=1), 10_000 * (r + 1))
        lines, _, _ = formatter._format(batch)
        fresh = entries(args.rows, now - dt.timedelta(minutes=1), dt.timedelta(minutes=1), 7_777 * (r + 1))
        fresh_lines, _, _ = formatter._format(fresh)
        for name in order if r % 2 == 0 else reversed(order):
            engine = engines[name]
            for kind, text, idem in (
                ("COPY (writer)", lines, False),
                ("idempotent, new rows (sink)", fresh_lines, True),
                ("idempotent, all present (replay)", lines, True),
            ):
                seconds = timed_write(engine, text, idempotent=idem, writer=writers[name])
                results.setdefault((name, kind), []).append(args.rows / seconds)

    load = os.getloadavg()
    print(
        f"\ncheck-log writer, {args.rows:,} checks per batch, {args.rounds} interleaved rounds, "
        f"{args.preload:,} rows preloaded; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    kinds = ["COPY (writer)", "idempotent, new rows (sink)", "idempotent, all present (replay)"]
    before, after = order
    print(f"{'path':<34} {'before checks/s':>16} {'after checks/s':>16} {'after/before':>13}")
    for kind in kinds:
        b = statistics.median(results[(before, kind)])
        a = statistics.median(results[(after, kind)])
        print(f"{kind:<34} {b:>16,.0f} {a:>16,.0f} {a / b:>13.2f}")
    for engine in engines.values():
        engine.dispose()


if __name__ == "__main__":
    main()
