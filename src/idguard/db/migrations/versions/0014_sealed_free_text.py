"""sealed staff-written free text (issue 16)

The free text staff, units and citizens write, which may name people, is sealed at rest as the
registry's personal data is (0012, registry/sealed.py): a blacklist listing's note and its
events' reasons, the reasons of victim protection, an incident's closing note, a case's finding
and the text of every case event (notices, units' statements, decisions), the webhook messages
(a case notice's carries its text) and a unit's suspension reason (a new column). Each clear column
becomes `<column>_sealed` (AES-256-GCM, bound to table, column and row id) with the row's key id
(`seal_key`, NULL while a row has nothing sealed), and the clear column is dropped.
docs/operations.md lists the free-text columns left clear, and why.

The existing rows are sealed here with the data key ring (as 0012: the ring attached to the
engine that runs it, else IDGUARD_DATA_KEYS of the environment); the downgrade opens them again.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-28 15:00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from idguard.core.sealing import KeyRing, ring_for, sealing_context

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 2000
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# table -> (row id column and its type, ((clear column, its type, clear nullable, sealed nullable), ...)).
# The sealed column of a table whose ids the database assigns is nullable: a new row is sealed by
# an UPDATE right after its INSERT (registry/sealed.py, SealedTable.db_assigned).
SEALED: dict[str, tuple[tuple[str, Any], tuple[tuple[str, Any, bool, bool], ...]]] = {
    "blacklist_entries": (("entry_no", sa.String(32)), (("note", sa.String(500), True, True),)),
    "blacklist_events": (("id", _ID), (("reason", sa.String(500), True, True),)),
    "protection_events": (("id", _ID), (("reason", sa.String(500), True, True),)),
    "incidents": (("incident_no", sa.String(32)), (("note", sa.String(500), True, True),)),
    "cases": (("case_no", sa.String(24)), (("finding", sa.String(2000), False, False),)),
    "case_events": (("id", _ID), (("text", sa.String(4000), False, True),)),
    # Webhook messages keep their body until the purge; a case notice's body carries its text.
    "webhook_messages": (("id", sa.Uuid()), (("body", sa.Text(), False, False),)),
}
# Sealed columns with no clear column before them: a unit's suspension reason (it was only
# copied into the audit log, which keeps what it has: rewriting it would break the chain).
NEW: dict[str, tuple[str, ...]] = {"units": ("status_reason",)}


def _ring() -> KeyRing:
    ring = ring_for(op.get_bind().engine)
    if ring is not None:
        return ring
    from idguard.config import Settings  # the environment's settings: IDGUARD_DATA_KEYS

    return KeyRing(Settings().personal_data_keys)


def _rows(conn: sa.Connection, table: sa.TableClause, key: sa.ColumnClause[Any], columns: list[Any]) -> Any:
    """The rows in row-id order, BATCH at a time (keyset: updates between pages are safe)."""
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
    for name, columns in NEW.items():
        op.add_column(name, sa.Column("seal_key", sa.String(length=16), nullable=True))
        for column in columns:
            op.add_column(name, sa.Column(f"{column}_sealed", sa.LargeBinary(), nullable=True))
    for name, ((key_name, key_type), fields) in SEALED.items():
        if _sqlite():
            # In place (3.35+), as 0012: a batch copy would drop a table others reference.
            conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN seal_key VARCHAR(16)")
            for column, _type, _clear_null, sealed_null in fields:
                not_null = "" if sealed_null else " NOT NULL DEFAULT x''"
                conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {column}_sealed BLOB{not_null}")
        else:
            op.add_column(name, sa.Column("seal_key", sa.String(length=16), nullable=True))
            for column, _type, _clear_null, _sealed_null in fields:
                op.add_column(name, sa.Column(f"{column}_sealed", sa.LargeBinary(), nullable=True))
        key = sa.column(key_name, key_type)
        clear = [sa.column(column, type_) for column, type_, _, _ in fields]
        sealed = [sa.column(f"{column}_sealed", sa.LargeBinary()) for column, _, _, _ in fields]
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
                # A row with nothing to seal keeps seal_key NULL (as the application leaves it).
                item: dict[str, Any] = {
                    "_key": row_id,
                    "_seal_key": ring.active_key_id if any(t is not None for t in texts) else None,
                }
                for (column, _type, _clear_null, _sealed_null), text in zip(fields, texts, strict=True):
                    item[f"_{column}_sealed"] = (
                        None
                        if text is None
                        else ring.seal(text, context=sealing_context(name, column, row_id))
                    )
                values.append(item)
            conn.execute(update, values)
        if _sqlite():
            for column, _type, _clear_null, _sealed_null in fields:
                conn.exec_driver_sql(f"ALTER TABLE {name} DROP COLUMN {column}")
        else:
            for column, _type, _clear_null, sealed_null in fields:
                if not sealed_null:
                    op.alter_column(name, f"{column}_sealed", existing_type=sa.LargeBinary(), nullable=False)
                op.drop_column(name, column)


def downgrade() -> None:
    conn = op.get_bind()
    ring = _ring()
    for name, ((key_name, key_type), fields) in SEALED.items():
        if _sqlite():
            for column, type_, clear_null, _sealed_null in fields:
                kind = type_.compile(dialect=conn.dialect)
                not_null = "" if clear_null else " NOT NULL DEFAULT ''"
                conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {column} {kind}{not_null}")
        else:
            for column, type_, _clear_null, _sealed_null in fields:
                op.add_column(name, sa.Column(column, type_, nullable=True))
        key = sa.column(key_name, key_type)
        sealed = [sa.column(f"{column}_sealed", sa.LargeBinary()) for column, _, _, _ in fields]
        table = sa.table(
            name, key, sa.column("seal_key", sa.String()), *sealed, *(sa.column(c) for c, _, _, _ in fields)
        )
        update = (
            table.update()
            .where(key == sa.bindparam("_key"))
            .values({c: sa.bindparam(f"_{c}") for c, _, _, _ in fields})
        )
        for rows in _rows(conn, table, key, [table.c.seal_key, *sealed]):
            values = []
            for row_id, key_id, *blobs in rows:
                item: dict[str, Any] = {"_key": row_id}
                for (column, _type, _clear_null, _sealed_null), blob in zip(fields, blobs, strict=True):
                    item[f"_{column}"] = (
                        None
                        if blob is None
                        else ring.open(key_id, bytes(blob), context=sealing_context(name, column, row_id))
                    )
                values.append(item)
            conn.execute(update, values)
        if _sqlite():
            for column, _type, _clear_null, _sealed_null in fields:
                conn.exec_driver_sql(f"ALTER TABLE {name} DROP COLUMN {column}_sealed")
            conn.exec_driver_sql(f"ALTER TABLE {name} DROP COLUMN seal_key")
        else:
            for column, type_, clear_null, _sealed_null in fields:
                if not clear_null:
                    op.alter_column(name, column, existing_type=type_, nullable=False)
                op.drop_column(name, f"{column}_sealed")
            op.drop_column(name, "seal_key")
    for name, columns in NEW.items():
        for column in columns:
            op.drop_column(name, f"{column}_sealed")
        op.drop_column(name, "seal_key")
