"""scale-out: the check log partitioned by month on PostgreSQL (issue 15)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-28 12:00:00

PostgreSQL: `checks` becomes a table partitioned by RANGE (at), one partition per UTC month
(`checks_2026_11`) and a DEFAULT partition (`checks_default`) for a row whose month has none, the
partitions in a schema of their own, `checks_partitions` (out of the way of Alembic's comparison
of the models with the database, which lists the service schema's tables).
Its key becomes (id, at) (a partitioned table's key must hold the partition column). The table is
renamed, the new one created with partitions covering every month from the oldest row's to three
months past the current one (and the newest row's), the rows copied, the old table dropped and
the indexes built again on the new one. Afterwards verification/runtime/partitions.py keeps
months ahead and the retention job drops old ones. Downgrade copies the rows back into a plain
table keyed by id.

SQLite: no partitions; the key becomes (id, at) too (the table is copied: SQLite cannot alter a
key), so the check log's `ON CONFLICT (id, at)` means the same on both.
"""

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import idguard.db.types

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AHEAD_MONTHS = 3  # as runtime/partitions.AHEAD_MONTHS when this was written
SCHEMA = "checks_partitions"  # runtime/partitions.SCHEMA
COLUMNS = (
    "id, unit_code, operator, purpose, at, result, reason, id_masked, id_hash, watch, "
    "fingerprint_match, alerts"
)
# The check log's indexes as they are at 0012 (0002, 0007, 0008), built again on the new table.
INDEXES = (
    ("ix_checks_id_hash", "id_hash"),
    ("ix_checks_unit_code_at", "unit_code, at"),
    ("ix_checks_id_hash_at_id", "id_hash, at, id"),
    ("ix_checks_unit_code_id_hash_at", "unit_code, id_hash, at"),
)


def _columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("unit_code", sa.String(length=32), nullable=False),
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=40), nullable=False),
        sa.Column("at", idguard.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("result", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=True),
        sa.Column("id_masked", sa.String(length=18), nullable=False),
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("watch", sa.Boolean(), nullable=False),
        sa.Column("fingerprint_match", sa.Boolean(), nullable=True),
        sa.Column("alerts", sa.String(length=60), nullable=True),
    ]


def _month(at: dt.datetime) -> dt.datetime:
    at = at.astimezone(dt.UTC)
    return dt.datetime(at.year, at.month, 1, tzinfo=dt.UTC)


def _next(month: dt.datetime, n: int = 1) -> dt.datetime:
    total = month.year * 12 + month.month - 1 + n
    return dt.datetime(total // 12, total % 12 + 1, 1, tzinfo=dt.UTC)


def _literal(at: dt.datetime) -> str:
    return f"'{at.isoformat(sep=' ')}'"


def _drop_indexes() -> None:
    for name, _ in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")


def _create_indexes() -> None:
    for name, columns in INDEXES:
        op.execute(f"CREATE INDEX {name} ON checks ({columns})")


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        with op.batch_alter_table("checks", schema=None, recreate="always") as batch_op:
            batch_op.drop_constraint("pk_checks", type_="primary")
            batch_op.create_primary_key("pk_checks", ["id", "at"])
        return
    conn = op.get_bind()
    oldest, newest = conn.execute(sa.text("SELECT min(at), max(at) FROM checks")).one()
    _drop_indexes()
    op.execute("ALTER TABLE checks RENAME TO checks_unpartitioned")
    op.execute("ALTER TABLE checks_unpartitioned RENAME CONSTRAINT pk_checks TO pk_checks_unpartitioned")
    op.create_table(
        "checks",
        *_columns(),
        sa.ForeignKeyConstraint(["unit_code"], ["units.code"], name=op.f("fk_checks_unit_code_units")),
        sa.PrimaryKeyConstraint("id", "at", name=op.f("pk_checks")),
        postgresql_partition_by="RANGE (at)",
    )
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    op.execute(f"CREATE TABLE {SCHEMA}.checks_default PARTITION OF checks DEFAULT")
    current = _month(dt.datetime.now(dt.UTC))
    first = min(_month(oldest), current) if oldest is not None else current
    last = (
        max(_month(newest), _next(current, AHEAD_MONTHS))
        if newest is not None
        else _next(current, AHEAD_MONTHS)
    )
    month = first
    while month <= last:
        end = _next(month)
        op.execute(
            f"CREATE TABLE {SCHEMA}.checks_{month.year:04d}_{month.month:02d} PARTITION OF checks "
            f"FOR VALUES FROM ({_literal(month)}) TO ({_literal(end)})"
        )
        month = end
    op.execute(f"INSERT INTO checks ({COLUMNS}) SELECT {COLUMNS} FROM checks_unpartitioned")  # noqa: S608 - constant
    op.execute("DROP TABLE checks_unpartitioned")
    _create_indexes()
    op.execute("ANALYZE checks")


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        with op.batch_alter_table("checks", schema=None, recreate="always") as batch_op:
            batch_op.drop_constraint("pk_checks", type_="primary")
            batch_op.create_primary_key("pk_checks", ["id"])
        return
    _drop_indexes()
    op.execute("ALTER TABLE checks RENAME TO checks_partitioned")
    op.execute("ALTER TABLE checks_partitioned RENAME CONSTRAINT pk_checks TO pk_checks_partitioned")
    op.create_table(
        "checks",
        *_columns(),
        sa.ForeignKeyConstraint(["unit_code"], ["units.code"], name=op.f("fk_checks_unit_code_units")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checks")),
    )
    # Keyed by id alone again: should one id have been recorded at two times, the first is kept.
    op.execute(
        f"INSERT INTO checks ({COLUMNS}) SELECT {COLUMNS} FROM checks_partitioned "  # noqa: S608 - constant
        "ORDER BY at ON CONFLICT (id) DO NOTHING"
    )
    op.execute("DROP TABLE checks_partitioned")  # and every partition with it
    op.execute(f"DROP SCHEMA IF EXISTS {SCHEMA}")  # empty now (not CASCADE: nothing else is dropped)
    _create_indexes()
    op.execute("ANALYZE checks")
