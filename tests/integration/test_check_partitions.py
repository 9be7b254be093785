"""The check log partitioned by month on PostgreSQL (issue 15; verification/runtime/partitions.py,
migration 0013): months are created ahead of time, a check whose month has no partition is still
written (the default partition) and moved into its month once that is created, the retention job
drops whole months only (and the travel-certificate rows of their checks), a journal replayed
after a crash and a sink's batch written twice add no row twice (`ON CONFLICT (id, at)`), and the
migration keeps every row and index both ways. SQLite is not partitioned: there the tests that
still mean something (migration, replay, the sink's writer) run too."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from idguard import uow
from idguard.citizens import cli as citizens_cli
from idguard.citizens.models import CertificateCheck
from idguard.citizens.rules import retention_horizon
from idguard.config import Settings
from idguard.db import migrate
from idguard.scaleout.sink import Sink
from idguard.verification.models import Check, Unit
from idguard.verification.runtime import partitions
from idguard.verification.runtime.checklog import CheckEntry, CheckLog
from tests.factories import NOW, SECRET, id_number

UNIT = "PARTBANK"
P = "checks_partitions."  # the partitions' schema
INDEXES = {
    "ix_checks_id_hash",
    "ix_checks_unit_code_at",
    "ix_checks_id_hash_at_id",
    "ix_checks_unit_code_id_hash_at",
}


def utc(year: int, month: int, day: int = 1, hour: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, tzinfo=dt.UTC)


@pytest.fixture
def unit(engine: sa.Engine) -> str:
    with uow.connection(engine) as conn:
        conn.execute(
            sa.insert(Unit),
            {
                "code": UNIT,
                "name": "Partition Bank",
                "sector": "bank",
                "purposes": ["account_opening"],
                "rate_limit": 100,
                "status": "active",
                "created_at": NOW,
                "updated_at": NOW,
            },
        )
    return UNIT


def postgres_only(engine: sa.Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite's check log is one table: no partitions")


def entry(at: dt.datetime, *, n: int = 0) -> CheckEntry:
    return (
        str(uuid.uuid4()),
        UNIT,
        "teller-7",
        "account_opening",
        at,
        "valid",
        None,
        id_number(dt.date(1980, 1, 1) + dt.timedelta(days=n)),
        None,
        1,
        None,
        None,
    )


def written(engine: sa.Engine, entries: list[CheckEntry]) -> None:
    """`entries` written by the check log's writer (COPY on PostgreSQL), as the server does."""
    log = CheckLog(engine, SECRET)
    log.append(entries)
    log.flush()


def rows_by_id(engine: sa.Engine) -> dict[uuid.UUID, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(Check.id, sa.func.count()).group_by(Check.id)).all()
    return dict(rows)


def where(engine: sa.Engine, check_id: str) -> str:
    """The partition holding the check."""
    with engine.connect() as conn:
        found = conn.scalar(
            sa.text("SELECT tableoid::regclass::text FROM checks WHERE id = :id"), {"id": uuid.UUID(check_id)}
        )
    assert found is not None
    return str(found)


def names(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return {p.name for p in partitions.partitions(conn)}


# --- created ahead, a month with none, moved in -------------------------------------------------


def test_months_are_created_ahead_and_a_check_goes_into_its_month(engine: sa.Engine, unit: str) -> None:
    postgres_only(engine)
    now = utc(2031, 3, 10, 12)
    created = partitions.ensure(engine, now, ahead=3)
    wanted = {f"{P}checks_2031_03", f"{P}checks_2031_04", f"{P}checks_2031_05", f"{P}checks_2031_06"}
    assert set(created) == wanted - (names(engine) - set(created))
    assert wanted <= names(engine)
    assert partitions.ensure(engine, now, ahead=3) == []  # idempotent: nothing left to create
    with engine.connect() as conn:
        bounds = {p.name: (p.start, p.end) for p in partitions.partitions(conn)}
    assert bounds[f"{P}checks_2031_04"] == (utc(2031, 4), utc(2031, 5))  # a UTC month, end excluded

    late = entry(utc(2031, 4, 30, 23))  # 07:00 on 1 May in Beijing, still April in UTC
    first = entry(utc(2031, 5, 1))
    written(engine, [late, first])
    assert where(engine, late[0]) == f"{P}checks_2031_04"
    assert where(engine, first[0]) == f"{P}checks_2031_05"


def test_the_keeper_creates_the_months_at_start(engine: sa.Engine) -> None:
    postgres_only(engine)
    keeper = partitions.PartitionKeeper(engine, now=lambda: utc(2033, 11, 5), every_seconds=3600)
    keeper.start()
    try:
        assert {
            f"{P}checks_2033_11",
            f"{P}checks_2033_12",
            f"{P}checks_2034_01",
            f"{P}checks_2034_02",
        } <= names(engine)
    finally:
        keeper.stop()


def test_a_check_for_a_month_without_a_partition_is_written_then_moved_into_its_month(
    engine: sa.Engine, unit: str
) -> None:
    postgres_only(engine)
    far = utc(2044, 2, 14, 9)
    assert f"{P}checks_2044_02" not in names(engine)
    check = entry(far)
    written(engine, [check])  # COPY straight into the table: no partition for February 2044
    assert where(engine, check[0]) == partitions.DEFAULT
    # The next round of the keeper (any month's): months found in the default partition are made.
    assert f"{P}checks_2044_02" in partitions.ensure(engine, utc(2044, 1, 20), ahead=0)
    assert where(engine, check[0]) == f"{P}checks_2044_02"
    assert rows_by_id(engine)[uuid.UUID(check[0])] == 1
    with engine.connect() as conn:
        left = conn.scalar(sa.text(f"SELECT count(*) FROM {partitions.DEFAULT} WHERE at >= '2044-02-01'"))  # noqa: S608
    assert left == 0


# --- retention: whole months ---------------------------------------------------------------------


def test_the_retention_job_drops_whole_months_past_the_horizon_only(engine: sa.Engine, unit: str) -> None:
    postgres_only(engine)
    now = utc(2052, 3, 20, 8)
    horizon = retention_horizon(now, 24)  # 2050-03-20 08:00
    assert horizon == utc(2050, 3, 20, 8)
    partitions.ensure(engine, utc(2050, 1, 5), ahead=3)  # January to April 2050
    january, february = entry(utc(2050, 1, 15)), entry(utc(2050, 2, 28, 23))
    march_old, march_new = entry(utc(2050, 3, 2)), entry(utc(2050, 3, 25))
    april = entry(utc(2050, 4, 1))
    stray = entry(utc(2049, 6, 6))  # an old offline check: no partition, in the default one
    written(engine, [january, february, march_old, march_new, april, stray])
    assert where(engine, stray[0]) == partitions.DEFAULT
    with uow.connection(engine) as conn:  # travel-certificate checks refer to two of them
        # (the certificate itself does not matter here: its foreign key is off for this insert)
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        for e in (january, march_old):
            conn.execute(sa.insert(CertificateCheck), {"check_id": uuid.UUID(e[0]), "certificate_no": "X"})

    dropped = citizens_cli.drop_months(engine, horizon=horizon)

    assert {f"{P}checks_2050_01", f"{P}checks_2050_02"} <= set(dropped.partitions)
    assert all(p.end is not None and p.end <= utc(2050, 3) for p in _expired_now(engine, dropped))
    assert dropped.default_rows >= 1
    left = rows_by_id(engine)
    gone = {uuid.UUID(e[0]) for e in (january, february, stray)}
    kept = {uuid.UUID(e[0]) for e in (march_old, march_new, april)}
    assert not gone & left.keys()
    # March 2050 holds a check older than the horizon: its month is not wholly past, so it stays.
    assert kept <= left.keys()
    assert {f"{P}checks_2050_03", f"{P}checks_2050_04"} <= names(engine)
    with engine.connect() as conn:
        certificate = set(conn.scalars(sa.select(CertificateCheck.check_id)))
    assert certificate == {uuid.UUID(march_old[0])}
    # Run again: nothing more goes.
    again = citizens_cli.drop_months(engine, horizon=horizon)
    assert again.partitions == []
    assert again.default_rows == 0
    assert kept <= rows_by_id(engine).keys()


def _expired_now(engine: sa.Engine, dropped: partitions.Dropped) -> list[partitions.Partition]:
    """The partitions still there that the job should have dropped (none)."""
    with engine.connect() as conn:
        return [p for p in partitions.partitions(conn) if p.name in dropped.partitions]


@settings(max_examples=200, deadline=None)
@given(
    at=st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2200, 12, 31)),  # noqa: DTZ001 - naive bounds, zone below
    offset=st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_every_instant_falls_in_exactly_the_utc_month_named_by_its_partition(
    at: dt.datetime, offset: int
) -> None:
    """Whatever zone a time comes in, its partition is its UTC month: start <= at < end, months
    adjacent, and the name is that month's."""
    aware = at.replace(tzinfo=dt.timezone(dt.timedelta(minutes=offset)))
    start = partitions.month_start(aware)
    end = partitions.add_months(start, 1)
    assert start <= aware < end
    assert partitions.add_months(end, -1) == start
    utc_at = aware.astimezone(dt.UTC)
    assert partitions.name_of(start) == f"{P}checks_{utc_at.year:04d}_{utc_at.month:02d}"


# --- replay and the sink: no row twice ----------------------------------------------------------


def test_a_journal_replayed_after_a_crash_writes_no_check_twice(
    engine: sa.Engine, unit: str, tmp_path: Path
) -> None:
    """A worker killed after its checks were written but before their journal segment was removed:
    the next start replays the segment (twice, even), and `ON CONFLICT (id, at)` skips every check
    already there — also one whose row was moved out of the default partition meanwhile."""
    if engine.dialect.name == "postgresql":
        partitions.ensure(engine, NOW, ahead=1)
    spread = [entry(NOW + dt.timedelta(minutes=i), n=i) for i in range(20)]
    spread += [entry(utc(2046, 7, 4), n=99)]  # a month with no partition (default)
    directory = tmp_path / "journal"
    crashed = CheckLog(engine, SECRET, journal_dir=directory)
    asyncio.run(crashed.recorded(crashed.append(spread)))
    assert crashed.journal is not None
    [segment] = crashed.journal.files
    saved = segment.read_bytes()
    crashed.flush()  # written, and then the process dies before cutting the segment back:
    crashed.journal.close()
    segment.write_bytes(saved)  # as it was on disk at the kill

    restarted = CheckLog(engine, SECRET, journal_dir=directory)
    assert restarted.replay() == len(spread)
    counts = rows_by_id(engine)
    assert {uuid.UUID(e[0]) for e in spread} <= counts.keys()
    assert all(counts[uuid.UUID(e[0])] == 1 for e in spread)

    if engine.dialect.name == "postgresql":
        partitions.ensure(engine, utc(2046, 7, 1), ahead=0)  # the stray row moves into July 2046
        assert where(engine, spread[-1][0]) == f"{P}checks_2046_07"
    segment.write_bytes(saved)  # replayed once more, as if the replaying worker died before removing it
    assert restarted.replay() == len(spread)
    counts = rows_by_id(engine)
    assert all(counts[uuid.UUID(e[0])] == 1 for e in spread)
    assert list(directory.glob("checks-*")) == []


def test_the_sinks_batch_written_twice_adds_nothing(engine: sa.Engine, unit: str, settings: Settings) -> None:
    """The sink writes a fetched batch and only then acknowledges it: redelivered after a crash,
    the same lines are written again (the sink's own path: CheckLog._write, idempotent)."""
    sink = Sink(settings, engine)
    if engine.dialect.name == "postgresql":
        partitions.ensure(engine, NOW, ahead=0)
    checks = [entry(NOW + dt.timedelta(seconds=i), n=i) for i in range(50)] + [entry(utc(2047, 1, 9), n=7)]
    log = CheckLog(engine, settings.check_hash_key)
    lines, _, _ = log._format(checks)
    for _ in range(2):
        sink._writer._write(["".join(lines)], [], idempotent=True)
    counts = rows_by_id(engine)
    assert all(counts[uuid.UUID(e[0])] == 1 for e in checks)
    # A check that comes back with the same id and time is the same check; the writer's
    # non-idempotent COPY refuses it, and its fall-back (the idempotent write) skips it.
    with pytest.raises(sa.exc.IntegrityError):
        sink._writer._write(["".join(lines[:1])], [])
    sink._writer._write(["".join(lines[:1])], [], idempotent=True)
    assert rows_by_id(engine)[uuid.UUID(checks[0][0])] == 1


# --- the migration ------------------------------------------------------------------------------


def _checks_state(engine: sa.Engine) -> tuple[set[tuple[object, ...]], set[str], list[str]]:
    with engine.connect() as conn:
        rows = {tuple(r) for r in conn.execute(sa.select(*Check.__table__.columns))}
        inspector = sa.inspect(conn)
        indexes = {ix["name"] for ix in inspector.get_indexes("checks") if ix["name"]}
        key = list(inspector.get_pk_constraint("checks")["constrained_columns"])
    return rows, indexes, key


def test_the_migration_partitions_a_populated_log_keeping_every_row_and_index_and_back(
    engine: sa.Engine, unit: str
) -> None:
    migrate.downgrade(engine, "0012")
    spread = [utc(2025, 1, 31, 23), utc(2025, 2, 1), utc(2025, 7, 9, 5), NOW, utc(2029, 12, 31, 23)]
    values = []
    for i, at in enumerate(spread * 3):
        values.append(
            {
                "id": uuid.uuid4(),
                "unit_code": UNIT,
                "operator": "op",
                "purpose": "account_opening",
                "at": at + dt.timedelta(microseconds=i),
                "result": "valid" if i % 2 else "invalid",
                "reason": None if i % 2 else "reported_lost",
                "id_masked": "110105********002X",
                "id_hash": f"{i:064x}",
                "watch": bool(i % 3 == 0),
                "fingerprint_match": None if i % 4 else True,
                "alerts": None if i % 5 else "blacklisted",
            }
        )
    with uow.connection(engine) as conn:
        conn.execute(sa.insert(Check), values)
    before, before_indexes, before_key = _checks_state(engine)
    assert before_key == ["id"]
    assert before_indexes >= INDEXES

    migrate.upgrade(engine, "0013")
    after, after_indexes, after_key = _checks_state(engine)
    assert after == before
    assert after_key == ["id", "at"]
    assert after_indexes >= INDEXES
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            assert partitions.partitioned(conn)
            found = partitions.partitions(conn)
            in_default = conn.scalar(sa.text(f"SELECT count(*) FROM {partitions.DEFAULT}"))  # noqa: S608
        months = {p.start for p in found if p.start is not None}
        # Every month from the oldest row's on, to the newest row's and beyond the current one.
        month = utc(2025, 1)
        while month <= utc(2029, 12):
            assert month in months
            month = partitions.add_months(month, 1)
        assert partitions.add_months(partitions.month_start(dt.datetime.now(dt.UTC)), 3) in months
        assert in_default == 0
        assert where(engine, str(values[0]["id"])) == f"{P}checks_2025_01"

    migrate.downgrade(engine, "0012")
    back, back_indexes, back_key = _checks_state(engine)
    assert back == before
    assert back_key == ["id"]
    assert back_indexes >= INDEXES
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            assert not partitions.partitioned(conn)
            schemas = conn.scalar(
                sa.text("SELECT count(*) FROM pg_namespace WHERE nspname = 'checks_partitions'")
            )
        assert schemas == 0  # the partitions went with their schema
    migrate.upgrade(engine)
    assert _checks_state(engine)[0] == before


# --- the commands -------------------------------------------------------------------------------


def test_the_commands_list_create_and_purge_by_month(
    engine: sa.Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from idguard.cli.main import app

    monkeypatch.setenv("IDGUARD_DATABASE_URL", database_url)
    monkeypatch.setenv("IDGUARD_ENV", "test")
    monkeypatch.setenv("IDGUARD_SECRET_KEY", SECRET)
    runner = CliRunner()
    listed = runner.invoke(app, ["checks", "partitions", "--create", "--ahead", "1"])
    if engine.dialect.name != "postgresql":
        assert listed.exit_code == 2
        assert "not partitioned" in listed.output
        return
    assert listed.exit_code == 0, listed.output
    month = partitions.month_start(dt.datetime.now(dt.UTC))
    for start in (month, partitions.add_months(month, 1)):
        assert f"{P}checks_{start.year:04d}_{start.month:02d}" in listed.output
    assert "checks_default" in listed.output
    purged = runner.invoke(app, ["citizens", "purge-checks"])
    assert purged.exit_code == 0, purged.output
    assert "monthly partitions" in purged.output
    assert partitions.name_of(month) in names(engine)  # the current month is never past the horizon
