"""Accountability at scale: classify N transactions against M checks, set-based, beside a plain
INSERT … SELECT of the same rows in the same run; and a closed month's compliance report for
10,000 units.

Targets (issue 11): classified rows/s >= 0.5 x the plain INSERT … SELECT's rows/s; the report of
a closed month for 10,000 units in <= 200 ms.

    .venv/bin/python bench/accountability.py [--transactions 1000000] [--checks 10000000]
        [--postgres-url URL] [--sqlite] [--units 10000]

The data is generated in SQL (generate_series / a recursive CTE), not measured: transaction n is
by unit n % 1000 on number n; check g <= N is of transaction g's number by the same unit a few
minutes before (every 10th: 10 minutes after; every 13th: by another unit; every 50th invalid,
53rd mismatch, 71st with an alert), checks g > N are of numbers nobody transacted. So every class
occurs and most lookups find a check, as in a real month. Then, timed and alternated twice:
  plain:      INSERT INTO transactions (…) SELECT … FROM bench_src             (no classification)
  classified: INSERT INTO transactions (…) SELECT …, <classification> FROM bench_src
(the table is emptied in between; the best of the two runs of each is reported).
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa

from harness import admin_engine, scratch_database, settings_for
from idguard import uow
from idguard.accountability import compliance
from idguard.accountability.classify import classification
from idguard.accountability.models import ClosedMonth, ComplianceMonth, Transaction
from idguard.accountability.routes.compliance import report_json
from idguard.accountability.rules import DEFAULT_LADDER, DEFAULT_LADDER_TEXT, Level
from idguard.db import migrate
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.verification.models import Unit

NOW = dt.datetime(2026, 6, 15, 2, 0, tzinfo=dt.UTC)
TX_UNITS = 1000
MONTH = "2026-05"
SPREAD = 2_300_000  # seconds from 2026-05-01 00:00 UTC (08:00 in Beijing): all within May


def _sql(engine: sa.Engine) -> tuple[Callable[[str], str], Callable[[str], str], Callable[[int], str]]:
    """(time of `seconds` after the base, 64-character hash of number `k`, a series 1..n)."""
    if engine.dialect.name == "postgresql":
        return (
            lambda s: f"(timestamptz '2026-05-01 00:00:00+00' + ({s}) * interval '1 second')",
            lambda k: f"lpad(({k})::text, 64, '0')",
            lambda n: f"generate_series(1, {n}) AS s(g)",
        )
    # SQLite stores UTC datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff' text (SQLAlchemy's format).
    return (
        lambda s: f"(datetime('2026-05-01 00:00:00', printf('%+d seconds', {s})) || '.000000')",
        lambda k: f"printf('%064d', {k})",
        lambda n: (
            f"(WITH RECURSIVE r(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM r WHERE g < {n}) SELECT g FROM r) AS s"  # noqa: S608 - a number
        ),
    )


def seed(engine: sa.Engine, n: int, m: int, units: int) -> None:
    ts, digest, series = _sql(engine)
    pg = engine.dialect.name == "postgresql"
    step = f"({SPREAD}.0 / {n})"
    at_tx = f"cast(g * {step} AS integer)"
    with uow.connection(engine) as conn:
        conn.execute(
            sa.insert(Unit),
            [
                {
                    "code": f"B{u:05d}",
                    "name": f"unit {u}",
                    "sector": "bank",
                    "purposes": ["account_opening"],
                    "rate_limit": 100,
                    "status": "active",
                    "webhook_url": None,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for u in range(max(units, TX_UNITS))
            ],
        )
    with uow.connection(engine) as conn:
        conn.exec_driver_sql("DROP INDEX IF EXISTS ix_checks_unit_code_id_hash_at")
        conn.exec_driver_sql("DROP INDEX IF EXISTS ix_checks_unit_code_at")
        conn.exec_driver_sql("DROP INDEX IF EXISTS ix_checks_id_hash")
        uuid_expr = "gen_random_uuid()" if pg else "lower(hex(randomblob(16)))"
        unit_of = (
            "'B' || lpad(((g + CASE WHEN g % 13 = 0 THEN 1 ELSE 0 END) % 1000)::text, 5, '0')"
            if pg
            else ("'B' || printf('%05d', (g + CASE WHEN g % 13 = 0 THEN 1 ELSE 0 END) % 1000)")
        )
        offset = "CASE WHEN g % 10 = 0 THEN 600 ELSE -1 - (g % 1800) END"
        at_check = f"CASE WHEN g <= {n} THEN {at_tx} + {offset} ELSE g % {SPREAD} END"
        conn.execute(
            sa.text(
                f"""INSERT INTO checks (id, unit_code, operator, purpose, at, result, reason, id_masked,
                                    id_hash, watch, fingerprint_match, alerts)
                SELECT {uuid_expr}, {unit_of}, 'op', 'account_opening', {ts(at_check)},
                       CASE WHEN g % 50 = 0 THEN 'invalid' WHEN g % 53 = 0 THEN 'mismatch' ELSE 'valid' END,
                       CASE WHEN g % 50 = 0 THEN 'reported_lost' END,
                       '110105********0000', {digest("g")}, false, NULL,
                       CASE WHEN g % 71 = 0 THEN 'blacklisted' END
                FROM {series(m)}"""  # noqa: S608 - generated numbers only
            )
        )
        conn.exec_driver_sql("CREATE INDEX ix_checks_unit_code_id_hash_at ON checks (unit_code, id_hash, at)")
        conn.exec_driver_sql("CREATE INDEX ix_checks_unit_code_at ON checks (unit_code, at)")
        conn.exec_driver_sql("CREATE INDEX ix_checks_id_hash ON checks (id_hash)")
        unit_tx = "'B' || lpad((g % 1000)::text, 5, '0')" if pg else "'B' || printf('%05d', g % 1000)"
        unlogged = "UNLOGGED " if pg else ""
        conn.execute(
            sa.text(
                f"""CREATE {unlogged}TABLE bench_src AS
                SELECT g AS n, {unit_tx} AS unit_code, {ts(at_tx)} AS at, {ts(f"{at_tx} - 86400")} AS window_start,
                       {ts(f"{at_tx} + 86400")} AS window_end, {digest("g")} AS id_hash
                FROM {series(n)}"""  # noqa: S608 - generated numbers only
            )
        )
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")


def _columns(src: sa.Table, classified: bool) -> list[Any]:
    ref = sa.literal("R") + sa.cast(src.c.n, sa.String)
    return [
        src.c.unit_code,
        ref,
        src.c.at,
        sa.literal(MONTH),
        src.c.id_hash,
        sa.literal("110105********0000"),
        sa.literal("account_opening"),
        sa.null(),
        src.c.window_start,
        src.c.window_end,
        classification(src.c.unit_code, src.c.id_hash, src.c.at, src.c.window_start, src.c.window_end)
        if classified
        else sa.null(),
        sa.literal(NOW, type_=Transaction.__table__.c.received_at.type),
    ]


def measure(engine: sa.Engine, n: int) -> tuple[float, float, float, dict[str, int]]:
    src = sa.Table(
        "bench_src",
        sa.MetaData(),
        sa.Column("n", sa.Integer),
        sa.Column("unit_code", sa.String),
        sa.Column("at", Transaction.__table__.c.at.type),
        sa.Column("window_start", Transaction.__table__.c.at.type),
        sa.Column("window_end", Transaction.__table__.c.at.type),
        sa.Column("id_hash", sa.String),
    )
    names = [
        "unit_code", "ref", "at", "month", "id_hash", "id_masked", "purpose", "check_id",
        "window_start", "window_end", "classification", "received_at",
    ]  # fmt: skip
    tx = cast(sa.Table, Transaction.__table__)
    best = {"plain": float("inf"), "classified": float("inf"), "classified, in index order": float("inf")}
    for _ in range(2):
        for kind in best:
            with uow.connection(engine) as conn:
                conn.execute(sa.delete(tx))
            select = sa.select(*_columns(src, kind != "plain"))
            if kind.endswith("index order"):
                # The lookups in (unit, number) order: neighbouring probes share index pages.
                select = select.order_by(src.c.unit_code, src.c.id_hash)
            stmt = sa.insert(tx).from_select(names, select)
            started = time.perf_counter()
            with uow.connection(engine) as conn:
                conn.execute(stmt)
            best[kind] = min(best[kind], time.perf_counter() - started)
    with engine.connect() as conn:
        counts = {
            str(c): int(k)
            for c, k in conn.execute(
                sa.select(tx.c.classification, sa.func.count()).group_by(tx.c.classification)
            )
        }
    return n / best["plain"], n / best["classified"], n / best["classified, in index order"], counts


def report_bench(engine: sa.Engine, units: int) -> dict[str, float]:
    """A closed month for `units` units (its stored rows written directly: setup), then the
    route's answer for the whole month (routes/compliance.report_json), best of 5: from the
    answer stored at closing (what GET /api/v1/compliance?month= does), and from the rows."""
    with uow.connection(engine) as conn:
        conn.execute(
            sa.insert(ClosedMonth),
            [{"month": "2026-04", "closed_at": NOW, "closed_by": None, "units": units, "transactions": 0,
              "window_hours": 24, "ladder": DEFAULT_LADDER_TEXT, "items_json": "[]"}],
        )  # fmt: skip
        conn.execute(
            sa.insert(ComplianceMonth),
            [
                {"month": "2026-04", "unit_code": f"B{u:05d}", "transactions": 1000 + u, "compliant": 990 + u,
                 "unchecked": 5, "checked_after": 3, "accepted_invalid": 1, "ignored_alert": 1,
                 "violation_rate": 10 / (1000 + u), "level": Level.OK}
                for u in range(units)
            ],
        )  # fmt: skip
    sessions = make_sessionmaker(engine)
    with uow.transaction(sessions) as session:  # setup: what closing renders
        closed = session.get(ClosedMonth, "2026-04")
        assert closed is not None
        closed.items_json = compliance.items_json(compliance.stored(session, month="2026-04"))
    timings = {}
    for name, after in (("stored answer", None), ("rows read and written", "")):
        times = []
        for _ in range(5):
            started = time.perf_counter()
            with sessions() as session:
                body = report_json(session, month="2026-04", ladder=DEFAULT_LADDER, after=after, limit=10_000)
            times.append(time.perf_counter() - started)
            assert body.count('"unit_code"') == units
        timings[name] = min(times) * 1000
    return timings


def run(name: str, url: str, n: int, m: int, units: int) -> None:
    engine = make_engine(settings_for(url))
    migrate.upgrade(engine)
    started = time.perf_counter()
    seed(engine, n, m, units)
    print(
        f"\n{name}: seeded {m:,} checks and {n:,} transactions to classify in {time.perf_counter() - started:.0f} s"
    )
    plain, classified, ordered, counts = measure(engine, n)
    ratio = classified / plain
    print(f"  plain INSERT … SELECT:      {plain:12,.0f} rows/s")
    print(
        f"  classified INSERT … SELECT: {classified:12,.0f} transactions/s   ratio {ratio:.2f}  target >= 0.50 "
        f"{'MET' if ratio >= 0.5 else 'MISSED'}"
    )
    print(
        f"  classified, in index order: {ordered:12,.0f} transactions/s   ratio {ordered / plain:.2f}  "
        f"{'MET' if ordered / plain >= 0.5 else 'MISSED'}"
    )
    print(f"  classes: {counts}")
    for how, ms in report_bench(engine, units).items():
        print(
            f"  closed month's report, {units:,} units ({how}): {ms:.1f} ms   target <= 200 ms "
            f"{'MET' if ms <= 200 else 'MISSED'}"
        )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--checks", type=int, default=10_000_000)
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    args = parser.parse_args()
    if args.checks < args.transactions:
        parser.error("--checks must be at least --transactions")
    if args.sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            run(
                "sqlite (WAL, synchronous=FULL)",
                f"sqlite:///{Path(tmp) / 'bench.db'}",
                args.transactions,
                args.checks,
                args.units,
            )
        return
    admin = admin_engine(args.postgres_url)
    with scratch_database(admin, args.postgres_url, "idguard_bench_accountability") as url:
        run("postgresql", url, args.transactions, args.checks, args.units)


if __name__ == "__main__":
    main()
