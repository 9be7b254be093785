"""Demo population load rate vs. a bare bulk insert, on SQLite and PostgreSQL.

Loads N citizens (persons, cards, loss reports, found cards, ledger events: about 8 rows a
citizen) with `idguard.demo.load.load_demo` into a fresh database, then measures the cheapest
bulk write the same database can do: N one-column rows by the same bulk path (COPY on
PostgreSQL, executemany in one transaction on SQLite). The ratio of the two rates in rows/s says
how close the loader comes to the raw engine (it also generates the data, keeps seven indexes
and fourteen foreign keys, and writes rows twenty times as wide).

    .venv/bin/python bench/demo_load.py [--citizens 200000] [--postgres-url URL] [--skip-sqlite|--skip-postgres]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from harness import admin_engine, scratch_database, settings_for
from idguard.db import migrate
from idguard.db.engine import make_engine
from idguard.demo.load import LoadReport, load_demo

NOW = dt.datetime(2026, 6, 15, 2, 0, tzinfo=dt.UTC)
PG_DATABASE = "idguard_bench_demo"


def baseline(engine: sa.Engine, n: int) -> float:
    """Rows/s of a bare bulk insert of n one-column rows, by the loader's bulk path."""
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE bench_baseline (n BIGINT)")
    raw = engine.raw_connection()
    conn: Any = raw.driver_connection
    try:
        start = time.perf_counter()
        if engine.dialect.name == "postgresql":
            with conn.cursor() as cur, cur.copy("COPY bench_baseline (n) FROM STDIN") as copy:
                for i in range(n):
                    copy.write_row((i,))
            conn.commit()
        else:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO bench_baseline (n) VALUES (?)", [(i,) for i in range(n)])
            conn.execute("COMMIT")
        return n / (time.perf_counter() - start)
    finally:
        raw.close()


def run(name: str, url: str, citizens: int) -> tuple[str, LoadReport, float]:
    engine = make_engine(settings_for(url))
    migrate.upgrade(engine)
    report = load_demo(engine, citizens=citizens, seed=1, now=NOW)
    print(f"  {name}: {report.summary()}", flush=True)
    rate = baseline(engine, citizens)
    engine.dispose()
    return name, report, rate


def postgres(admin_url: str, citizens: int) -> tuple[str, LoadReport, float] | None:
    """Run on a fresh database created for the purpose and dropped after; None if unreachable."""
    admin = admin_engine(admin_url)
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as exc:
        print(f"postgresql skipped, unreachable: {type(exc.orig).__name__}")
        return None
    try:
        with scratch_database(admin, admin_url, PG_DATABASE) as url:
            return run("postgresql", url, citizens)
    finally:
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--citizens", type=int, default=200_000)
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--skip-sqlite", action="store_true", help="PostgreSQL only (large runs)")
    parser.add_argument("--skip-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args()
    results = []
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            results.append(run("sqlite (WAL)", f"sqlite:///{Path(tmp) / 'bench.db'}", args.citizens))
    if not args.skip_postgres and (result := postgres(args.postgres_url, args.citizens)):
        results.append(result)

    print(f"\n{args.citizens:,} citizens; baseline: {args.citizens:,} one-column rows by the same bulk path")
    print(
        f"{'database':14} {'rows':>11} {'seconds':>8} {'citizens/s':>11} {'rows/s':>9} "
        f"{'baseline rows/s':>16} {'ratio':>6}"
    )
    for name, report, rate in results:
        rows_per_s = report.total_rows / report.seconds
        print(
            f"{name:14} {report.total_rows:11,} {report.seconds:8.1f} {report.citizens_per_second:11,.0f} "
            f"{rows_per_s:9,.0f} {rate:16,.0f} {rows_per_s / rate:6.3f}"
        )


if __name__ == "__main__":
    main()
