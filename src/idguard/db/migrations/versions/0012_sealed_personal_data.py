"""personal data sealed at rest, blind indexes (issue 16)

Names and addresses of persons and cards, finders' names and phones: the clear columns become
AES-256-GCM ciphertext (`<column>_sealed`) with the row's key id (`seal_key`), and the clear
columns are dropped (registry/sealed.py). No blind index is added: every lookup that compares a
name narrows by id number first and compares in memory.

The existing rows are sealed here, so this migration needs the data key ring: the one attached
to the engine that runs it (`idguard migrate` and the app build their engine from the settings:
IDGUARD_DATA_KEYS, or in development and test the key derived from IDGUARD_SECRET_KEY), else the
ring of the settings in the environment. Run it with the production keys in the environment,
the same ones the service will start with. The downgrade opens them again with the same ring.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28 12:00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from idguard.core.sealing import KeyRing, ring_for, sealing_context

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 2000
# table -> (row id column and its type, ((clear column, its type, nullable), ...))
SEALED: dict[str, tuple[tuple[str, Any], tuple[tuple[str, Any, bool], ...]]] = {
    "persons": (("id", sa.Uuid()), (("name", sa.String(60), False), ("address", sa.String(200), False))),
    "cards": (("id", sa.Uuid()), (("name", sa.String(60), False), ("address", sa.String(200), False))),
    "found_cards": (
        ("found_no", sa.String(32)),
        (("finder_name", sa.String(60), False), ("finder_phone", sa.String(30), True)),
    ),
}


def _ring() -> KeyRing:
    ring = ring_for(op.get_bind().engine)
    if ring is not None:
        return ring
    from idguard.config import Settings  # the environment's settings: IDGUARD_DATA_KEYS

    return KeyRing(Settings().personal_data_keys)


def _rows(conn: sa.Connection, table: sa.TableClause, key: sa.ColumnClause[Any], columns: list[Any]) -> Any:
    """The rows in primary-key order, BATCH at a time (keyset: updates between pages are safe)."""
    after = None
    while True:
        stmt = sa.select(key, *columns).order_by(key).limit(BATCH)
        if after is not None:
            stmt = stmt.where(key > after)
        rows = conn.execute(stmt).all()
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def _sqlite() -> bool:
    return bool(op.get_bind().dialect.name == "sqlite")


def upgrade() -> None:
    conn = op.get_bind()
    ring = _ring()
    if _sqlite():
        # Freed pages are zeroed, so the dropped clear values do not linger in the file.
        conn.exec_driver_sql("PRAGMA secure_delete = ON")
    for name, ((key_name, key_type), fields) in SEALED.items():
        if _sqlite():
            # SQLite alters in place (3.35+): copying `persons` or `cards` as batch mode does would
            # drop a table that others reference. NOT NULL needs a default on ADD COLUMN; the
            # application always writes the column, and an empty value would never open.
            conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN seal_key VARCHAR(16) NOT NULL DEFAULT ''")
            for column, _type, nullable in fields:
                not_null = "" if nullable else " NOT NULL DEFAULT x''"
                conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {column}_sealed BLOB{not_null}")
        else:
            op.add_column(name, sa.Column("seal_key", sa.String(length=16), nullable=True))
            for column, _type, _nullable in fields:
                op.add_column(name, sa.Column(f"{column}_sealed", sa.LargeBinary(), nullable=True))
        key = sa.column(key_name, key_type)
        clear = [sa.column(column, type_) for column, type_, _ in fields]
        sealed = [sa.column(f"{column}_sealed", sa.LargeBinary()) for column, _, _ in fields]
        table = sa.table(name, key, sa.column("seal_key", sa.String()), *clear, *sealed)
        update = (
            table.update()
            .where(key == sa.bindparam("_key"))
            .values(
                {
                    "seal_key": sa.bindparam("_seal_key"),
                    **{s.name: sa.bindparam(f"_{s.name}") for s in sealed},
                }
            )
        )
        for rows in _rows(conn, table, key, clear):
            values = []
            for row_id, *texts in rows:
                item: dict[str, Any] = {"_key": row_id, "_seal_key": ring.active_key_id}
                for (column, _type, _nullable), text in zip(fields, texts, strict=True):
                    item[f"_{column}_sealed"] = (
                        None
                        if text is None
                        else ring.seal(text, context=sealing_context(name, column, row_id))
                    )
                values.append(item)
            conn.execute(update, values)
        if _sqlite():
            for column, _type, _nullable in fields:
                conn.exec_driver_sql(f"ALTER TABLE {name} DROP COLUMN {column}")
        else:
            op.alter_column(name, "seal_key", existing_type=sa.String(length=16), nullable=False)
            for column, _type, nullable in fields:
                if not nullable:
                    op.alter_column(name, f"{column}_sealed", existing_type=sa.LargeBinary(), nullable=False)
                op.drop_column(name, column)


def downgrade() -> None:
    conn = op.get_bind()
    ring = _ring()
    for name, ((key_name, key_type), fields) in SEALED.items():
        if _sqlite():
            for column, type_, nullable in fields:
                kind = type_.compile(dialect=conn.dialect)
                not_null = "" if nullable else " NOT NULL DEFAULT ''"
                conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {column} {kind}{not_null}")
        else:
            for column, type_, _nullable in fields:
                op.add_column(name, sa.Column(column, type_, nullable=True))
        key = sa.column(key_name, key_type)
        sealed = [sa.column(f"{column}_sealed", sa.LargeBinary()) for column, _, _ in fields]
        table = sa.table(
            name, key, sa.column("seal_key", sa.String()), *sealed, *(sa.column(c) for c, _, _ in fields)
        )
        update = (
            table.update()
            .where(key == sa.bindparam("_key"))
            .values({c: sa.bindparam(f"_{c}") for c, _, _ in fields})
        )
        for rows in _rows(conn, table, key, [table.c.seal_key, *sealed]):
            values = []
            for row_id, key_id, *blobs in rows:
                item: dict[str, Any] = {"_key": row_id}
                for (column, _type, _nullable), blob in zip(fields, blobs, strict=True):
                    item[f"_{column}"] = (
                        None
                        if blob is None
                        else ring.open(key_id, bytes(blob), context=sealing_context(name, column, row_id))
                    )
                values.append(item)
            conn.execute(update, values)
        if _sqlite():
            for column, _type, _nullable in fields:
                conn.exec_driver_sql(f"ALTER TABLE {name} DROP COLUMN {column}_sealed")
            conn.exec_driver_sql(f"ALTER TABLE {name} DROP COLUMN seal_key")
        else:
            for column, type_, nullable in fields:
                if not nullable:
                    op.alter_column(name, column, existing_type=type_, nullable=False)
                op.drop_column(name, f"{column}_sealed")
            op.drop_column(name, "seal_key")
