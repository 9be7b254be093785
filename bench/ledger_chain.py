"""What the hash chains cost (issue 16), on SQLite and PostgreSQL, measured side by side:

1. an audited staff read's write: one audit entry INSERT + COMMIT into `audit_log` (with the
   chain's columns and indexes) vs the same into a table shaped as before the chain, in
   alternating rounds: what sealing after commit leaves on the request path;
2. the sealer: audit entries chained per second (`registry.chains.seal_audit`);
3. `idguard ledger verify`: chained rows recomputed per second (the audit log's here; the
   ledger's walk is the same code over wider rows).

The loss report's cost (the ledger is chained in its appending statement) is measured by
bench/loss_reports.py against a bare insert.

    .venv/bin/python bench/ledger_chain.py [--entries 1000] [--events 20000] [--postgres-url URL]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from harness import admin_engine, scratch_database, settings_for, uptime
from idguard import uow
from idguard.db import migrate
from idguard.db.common import AuditEntry
from idguard.db.engine import make_engine
from idguard.registry import chains

NOW = dt.datetime(2026, 6, 15, 2, 0, tzinfo=dt.UTC)
PLAIN = """CREATE TABLE audit_plain (
    id {pk}, at {ts} NOT NULL, staff_id {uuid}, action VARCHAR(40) NOT NULL,
    person_id {uuid}, detail VARCHAR(200))"""


def _entry(i: int) -> dict[str, object]:
    return {"at": NOW, "staff_id": None, "action": "person.read", "person_id": None, "detail": f"bench {i}"}


def audit_inserts(engine: sa.Engine, table: str, n: int) -> float:
    stmt = sa.text(
        f"INSERT INTO {table} (at, staff_id, action, person_id, detail) "  # noqa: S608 - two fixed names
        "VALUES (:at, :staff_id, :action, :person_id, :detail)"
    ).bindparams(sa.bindparam("at", type_=sa.DateTime(timezone=True)))
    start = time.perf_counter()
    for i in range(n):
        with uow.connection(engine) as conn:
            conn.execute(stmt, _entry(i))
    return n / (time.perf_counter() - start)


def fill_audit(engine: sa.Engine, n: int) -> None:
    """n more audit entries, in one transaction (setup: the sealer and verify are measured)."""
    with uow.connection(engine) as conn:
        conn.execute(sa.insert(AuditEntry.__table__), [_entry(i) for i in range(n)])  # type: ignore[arg-type]


def run(name: str, url: str, entries: int, sealed_entries: int, rounds: int = 4) -> list[str]:
    engine = make_engine(settings_for(url))
    migrate.upgrade(engine)
    postgres = engine.dialect.name == "postgresql"
    with uow.connection(engine) as conn:
        conn.exec_driver_sql(
            PLAIN.format(
                pk="BIGSERIAL PRIMARY KEY" if postgres else "INTEGER PRIMARY KEY",
                ts="TIMESTAMPTZ" if postgres else "DATETIME",
                uuid="UUID" if postgres else "CHAR(32)",
            )
        )
    audit_inserts(engine, "audit_log", 10)  # warm the pool and the statement caches
    audit_inserts(engine, "audit_plain", 10)
    chained: list[float] = []
    plain: list[float] = []
    for r in range(rounds):
        for table in ("audit_log", "audit_plain") if r % 2 == 0 else ("audit_plain", "audit_log"):
            (chained if table == "audit_log" else plain).append(audit_inserts(engine, table, entries))
    fill_audit(engine, sealed_entries)
    start = time.perf_counter()
    sealed = chains.seal_audit(engine)
    seal_rate = sealed / (time.perf_counter() - start)
    start = time.perf_counter()
    result = chains.verify(engine, chains.keyring(settings_for(url)))
    verify_rate = (result.ledger.rows + result.audit.rows) / (time.perf_counter() - start)
    assert result.ok, result.problems()
    engine.dispose()
    c, p = sorted(chained)[rounds // 2], sorted(plain)[rounds // 2]
    return [
        f"{name:11} audit entry+commit/s: chained table {c:7.0f}, plain table {p:7.0f}, ratio {c / p:.2f}"
        f"  (rounds: {[round(x) for x in chained]} vs {[round(x) for x in plain]})",
        f"{name:11} sealer: {sealed:,} entries in {sealed / seal_rate:.2f} s = {seal_rate:,.0f}/s;"
        f" verify: {result.audit.rows:,} entries recomputed, {verify_rate:,.0f} rows/s",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--sealed", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds of the insert comparison")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    print(uptime())
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        lines += run("sqlite", f"sqlite:///{Path(tmp) / 'bench.db'}", args.entries, args.sealed, args.rounds)
    admin = admin_engine(args.postgres_url)
    try:
        with scratch_database(admin, args.postgres_url, "idguard_bench_chain") as url:
            lines += run("postgresql", url, args.entries, args.sealed, args.rounds)
    except sa.exc.OperationalError as exc:
        print(f"postgresql skipped: {type(exc.orig).__name__}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
