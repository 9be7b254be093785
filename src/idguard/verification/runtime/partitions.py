"""The check log's monthly partitions on PostgreSQL (issue 15; docs/checklog.md, "Partitions").

On PostgreSQL `checks` is partitioned by RANGE (at), one partition per calendar month in **UTC**
(`checks_partitions.checks_2026_11` holds 2026-11-01 00:00 UTC up to 2026-12-01 00:00 UTC: the same calendar the
retention horizon is computed in, citizens/rules.retention_horizon), plus `checks_default` for
a row whose month has no partition, so no check is ever refused for want of one. SQLite's table
is not partitioned.

- `ensure` creates the partitions of the current month and the AHEAD_MONTHS after it, and of
  every month found in the default partition (a check from the future, or an offline upload of
  an old check), moving those rows into it: the default partition stays (nearly) empty, so
  attaching a month scans nothing. Run by `PartitionKeeper` at each worker's start and daily, by
  `idguard checks partitions --create`, and (the first time) by migration 0013.
- `drop_expired` is the retention job's part (`idguard citizens purge-checks`): it drops every
  partition whose whole month is older than the horizon's month, and deletes the default
  partition's rows before that month; `forget` first removes what refers to those check ids.
  Only whole months go: a check is kept its retention and at most one month more.

A month is created as a plain table, filled from the default partition, then attached (ATTACH
PARTITION takes SHARE UPDATE EXCLUSIVE on `checks`: writers go on), not with CREATE TABLE …
PARTITION OF (ACCESS EXCLUSIVE). Dropping a partition does take ACCESS EXCLUSIVE, briefly: every
DDL here waits at most LOCK_TIMEOUT for its locks and is retried later rather than queueing the
check writers behind a long query. Workers serialize on an advisory lock; every step is
idempotent, so any number of workers (and the CLI) may run it at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from idguard import uow

log = logging.getLogger("idguard.checklog.partitions")

TABLE = "checks"
# The partitions live in a schema of their own, out of the way of everything that lists the
# tables of the service's schema (Alembic's comparison of models and migrations, the tests'
# emptying, an operator's `\dt`): they are `checks`' storage, not tables of the model.
SCHEMA = "checks_partitions"
DEFAULT = f"{SCHEMA}.checks_default"
AHEAD_MONTHS = 3  # months created ahead of the current one
LOCK_TIMEOUT = "5s"
EVERY_SECONDS = 24 * 3600.0  # the keeper's round
RETRY_SECONDS = 600.0  # after a round that failed (a lock not granted, the database away)
_ADVISORY_KEY = 0x1D9C_0015  # pg_advisory_xact_lock: one maintainer at a time
_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")

# Removes what refers to the check ids the SELECT returns (the retention job's travel-certificate
# rows), in the transaction that then drops them.
Forget = Callable[[sa.Connection, sa.Select[tuple[object]]], None]


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    start: dt.datetime | None  # None: the default partition
    end: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Dropped:
    partitions: list[str]
    default_rows: int  # rows deleted from the default partition


def month_start(at: dt.datetime) -> dt.datetime:
    """The first instant (UTC) of the month `at` falls in."""
    utc = at.astimezone(dt.UTC)
    return dt.datetime(utc.year, utc.month, 1, tzinfo=dt.UTC)


def add_months(start: dt.datetime, n: int) -> dt.datetime:
    total = start.year * 12 + start.month - 1 + n
    return dt.datetime(total // 12, total % 12 + 1, 1, tzinfo=dt.UTC)


def name_of(start: dt.datetime) -> str:
    """The month's partition, schema-qualified: `checks_partitions.checks_2026_11`."""
    return f"{SCHEMA}.{TABLE}_{start.year:04d}_{start.month:02d}"


def _literal(at: dt.datetime) -> str:
    return f"'{at.astimezone(dt.UTC).isoformat(sep=' ')}'"


def partitioned(conn: sa.Connection) -> bool:
    """Whether `checks` is a partitioned table here (PostgreSQL after migration 0013)."""
    if conn.dialect.name != "postgresql":
        return False
    kind = conn.scalar(sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"), {"t": TABLE})
    return bool(kind == "p")


def partitions(conn: sa.Connection) -> list[Partition]:
    """The partitions of `checks`, months in order, the default partition last."""
    rows = conn.execute(
        sa.text(
            "SELECT n.nspname || '.' || c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE i.inhparent = to_regclass(:t)"
        ),
        {"t": TABLE},
    ).all()
    months: list[Partition] = []
    default: list[Partition] = []
    for name, bound in rows:
        found = _BOUND.search(bound or "")
        if found is None:
            default.append(Partition(name, None, None))
            continue
        start, end = (dt.datetime.fromisoformat(v).astimezone(dt.UTC) for v in found.groups())
        months.append(Partition(name, start, end))
    months.sort(key=lambda p: p.start or dt.datetime.min.replace(tzinfo=dt.UTC))
    return months + default


def _lock(conn: sa.Connection) -> None:
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_ADVISORY_KEY})")


def _default_months(conn: sa.Connection) -> list[dt.datetime]:
    if conn.scalar(sa.text("SELECT to_regclass(:t)"), {"t": DEFAULT}) is None:
        return []
    rows = conn.exec_driver_sql(
        f"SELECT DISTINCT date_trunc('month', at AT TIME ZONE 'UTC') FROM {DEFAULT}"  # noqa: S608 - constant
    ).scalars()
    return sorted(m.replace(tzinfo=dt.UTC) for m in rows)


def create_month(engine: sa.Engine, start: dt.datetime) -> bool:
    """Create the partition of the month starting at `start` (moving any of its rows out of the
    default partition) unless it exists; whether it was created. One transaction."""
    start = month_start(start)
    end = add_months(start, 1)
    name = name_of(start)
    with uow.connection(engine) as conn:
        _lock(conn)
        if any(p.start == start for p in partitions(conn)):
            return False
        if conn.scalar(sa.text("SELECT to_regclass(:t)"), {"t": name}) is not None:
            raise RuntimeError(f"a table {name} exists and is not a partition of {TABLE}")
        within = f"at >= {_literal(start)} AND at < {_literal(end)}"
        conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        conn.exec_driver_sql(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        if conn.scalar(sa.text("SELECT to_regclass(:t)"), {"t": DEFAULT}) is not None:
            moved = conn.exec_driver_sql(
                f"WITH moved AS (DELETE FROM {DEFAULT} WHERE {within} RETURNING *) "  # noqa: S608 - constant
                f"INSERT INTO {name} SELECT * FROM moved"
            ).rowcount
            if moved:
                log.info("check log: %d checks moved from %s into %s", moved, DEFAULT, name)
        # Matches the new month's bound, so attaching need not scan the table for it.
        bound = f"{name.partition('.')[2]}_at"
        conn.exec_driver_sql(f"ALTER TABLE {name} ADD CONSTRAINT {bound} CHECK ({within})")
        conn.exec_driver_sql(
            f"ALTER TABLE {TABLE} ATTACH PARTITION {name} "
            f"FOR VALUES FROM ({_literal(start)}) TO ({_literal(end)})"
        )
        conn.exec_driver_sql(f"ALTER TABLE {name} DROP CONSTRAINT {bound}")
    return True


def ensure(engine: sa.Engine, now: dt.datetime, *, ahead: int = AHEAD_MONTHS) -> list[str]:
    """Create the current month's partition, the `ahead` months after it, and those of months
    found in the default partition; the names created (none on SQLite or an unpartitioned table)."""
    with engine.connect() as conn:
        if not partitioned(conn):
            return []
        have = {p.start for p in partitions(conn)}
        found = _default_months(conn)
    first = month_start(now)
    wanted = sorted({add_months(first, n) for n in range(ahead + 1)} | set(found))
    created = [name_of(m) for m in wanted if m not in have and create_month(engine, m)]
    if created:
        log.info("check log partitions created: %s", ", ".join(created))
    return created


def drop_expired(engine: sa.Engine, horizon: dt.datetime, *, forget: Forget | None = None) -> Dropped:
    """Drop each partition whose whole month is before the month of `horizon` (the retention
    horizon: the oldest instant kept), and delete the default partition's rows before that
    month; `forget` is called first, in the same transaction, with the ids about to go."""
    cutoff = month_start(horizon)
    dropped: list[str] = []
    with engine.connect() as conn:
        if not partitioned(conn):
            return Dropped([], 0)
        old = [p for p in partitions(conn) if p.end is not None and p.end <= cutoff]
    for partition in old:
        with uow.connection(engine) as conn:
            _lock(conn)
            if forget is not None:
                schema, _, table = partition.name.partition(".")
                forget(conn, sa.select(sa.column("id")).select_from(sa.table(table, schema=schema)))
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {partition.name}")
        dropped.append(partition.name)
        log.info("check log retention: partition %s dropped", partition.name)
    with uow.connection(engine) as conn:
        if conn.scalar(sa.text("SELECT to_regclass(:t)"), {"t": DEFAULT}) is None:
            return Dropped(dropped, 0)
        _lock(conn)
        default = sa.table(DEFAULT.partition(".")[2], sa.column("id"), sa.column("at"), schema=SCHEMA)
        old_rows = default.c.at < cutoff
        if forget is not None:
            forget(conn, sa.select(default.c.id).where(old_rows))
        deleted = conn.execute(sa.delete(default).where(old_rows)).rowcount
    return Dropped(dropped, deleted)


class PartitionKeeper:
    """A worker's thread: `ensure` at start and then daily (every worker runs one; they serialize
    on the advisory lock and find nothing left to do after the first). A failure is logged and
    retried after RETRY_SECONDS: the keeper never stops the worker, and a check meanwhile goes to
    the default partition rather than being refused."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        now: Callable[[], dt.datetime],
        ahead: int = AHEAD_MONTHS,
        every_seconds: float = EVERY_SECONDS,
    ) -> None:
        self.engine = engine
        self.now = now
        self.ahead = ahead
        self.every_seconds = every_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> bool:
        try:
            ensure(self.engine, self.now(), ahead=self.ahead)
        except Exception:
            log.exception("check log partitions could not be created; retrying in %.0f s", RETRY_SECONDS)
            return False
        return True

    def start(self) -> None:
        if self.engine.dialect.name != "postgresql":
            return
        self._stop.clear()
        ok = self.tick()  # before the worker serves
        self._thread = threading.Thread(
            target=self._run, args=(ok,), name="idguard-partition-keeper", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self, ok: bool) -> None:
        while not self._stop.wait(self.every_seconds if ok else RETRY_SECONDS):
            ok = self.tick()
