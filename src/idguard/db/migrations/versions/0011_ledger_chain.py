"""ledger and audit hash chains, signed checkpoints (issue 16)

The ledger's events and the audit log's entries get their hash chain (idguard.core.chain); the
rows already there are chained here, in order (the ledger by seq, the audit log by id), so a
registry with history comes out of the upgrade verifiable. The chain's text is computed from the
values as the application reads them, in batches, streaming: a large ledger is not held in
memory. Checkpoints get their table; the first one is written by `idguard ledger checkpoint`.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28 12:00:00
"""

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

import idguard.db.types
from idguard.core import chain as hash_chain

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTC = idguard.db.types.UTCDateTime(timezone=True)
BATCH = 5000

# The columns as the chain reads them (types that give back what the application sees).
_events = sa.table(
    "ledger_events",
    sa.column("seq", sa.BigInteger),
    sa.column("card_id", sa.Uuid),
    sa.column("person_id", sa.Uuid),
    sa.column("event", sa.String),
    sa.column("status_before", sa.String),
    sa.column("status_after", sa.String),
    sa.column("office", sa.String),
    sa.column("actor", sa.Uuid),
    sa.column("at", _UTC),
    sa.column("reason", sa.String),
    sa.column("reference", sa.String),
    sa.column("chain", sa.String),
)
_audit = sa.table(
    "audit_log",
    sa.column("id", sa.BigInteger),
    sa.column("at", _UTC),
    sa.column("staff_id", sa.Uuid),
    sa.column("action", sa.String),
    sa.column("person_id", sa.Uuid),
    sa.column("detail", sa.String),
    sa.column("seq", sa.BigInteger),
    sa.column("chain", sa.String),
)
_EVENT_VALUES = (
    "card_id",
    "person_id",
    "event",
    "status_before",
    "status_after",
    "office",
    "actor",
    "at",
    "reason",
    "reference",
)
_AUDIT_VALUES = ("id", "at", "staff_id", "action", "person_id", "detail")


def _batches(conn: sa.Connection, stmt: sa.Select[Any]) -> Iterator[Sequence[Sequence[Any]]]:
    """Rows of `stmt` (ordered by its key, the first column) BATCH at a time, by keyset."""
    after: int | None = None
    key = stmt.selected_columns[0]
    while True:
        page = stmt if after is None else stmt.where(key > after)
        rows = conn.execute(page.order_by(key).limit(BATCH)).all()
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def _chain_ledger(conn: sa.Connection) -> None:
    previous = hash_chain.GENESIS
    columns = [_events.c.seq, *(_events.c[name] for name in _EVENT_VALUES)]
    for rows in _batches(conn, sa.select(*columns)):
        updates = []
        for row in rows:
            previous = hash_chain.link(previous, hash_chain.canonical(row[0], row[1:]))
            updates.append({"k": row[0], "c": previous})
        conn.execute(
            _events.update().where(_events.c.seq == sa.bindparam("k")).values(chain=sa.bindparam("c")),
            updates,
        )
    # The events are chained as they are: a gap or a head past the last event is for
    # `idguard ledger verify` to name, not for the upgrade to hide or refuse.
    conn.execute(sa.text("UPDATE ledger_head SET chain = :c WHERE id = 1"), {"c": previous})


def _chain_audit(conn: sa.Connection) -> None:
    previous = hash_chain.GENESIS
    seq = 0
    columns = [_audit.c[name] for name in _AUDIT_VALUES]
    for rows in _batches(conn, sa.select(*columns)):
        updates = []
        for row in rows:
            seq += 1
            previous = hash_chain.link(previous, hash_chain.canonical(seq, row))
            updates.append({"k": row[0], "s": seq, "c": previous})
        conn.execute(
            _audit.update()
            .where(_audit.c.id == sa.bindparam("k"))
            .values(seq=sa.bindparam("s"), chain=sa.bindparam("c")),
            updates,
        )
    conn.execute(
        sa.text("INSERT INTO audit_head (id, seq, chain) VALUES (1, :s, :c)"), {"s": seq, "c": previous}
    )


def upgrade() -> None:
    with op.batch_alter_table("ledger_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("chain", sa.String(length=64), nullable=True))
    with op.batch_alter_table("ledger_head", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("chain", sa.String(length=64), server_default=hash_chain.GENESIS, nullable=False)
        )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("chain", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_audit_log_seq"), ["seq"])
        batch_op.create_index(
            "ix_audit_log_unsealed",
            ["id"],
            unique=False,
            sqlite_where=sa.text("seq IS NULL"),
            postgresql_where=sa.text("seq IS NULL"),
        )
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("chain", sa.String(length=64), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_audit_head_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.create_table(
        "chain_checkpoints",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("chain_name", sa.String(length=8), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("chain", sa.String(length=64), nullable=False),
        sa.Column("at", _UTC, nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("signature", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_checkpoints")),
    )
    with op.batch_alter_table("chain_checkpoints", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_chain_checkpoints_at"), ["at"], unique=False)

    conn = op.get_bind()
    _chain_ledger(conn)
    _chain_audit(conn)


def downgrade() -> None:
    with op.batch_alter_table("chain_checkpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_chain_checkpoints_at"))
    op.drop_table("chain_checkpoints")
    op.drop_table("audit_head")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_unsealed")
        batch_op.drop_constraint(batch_op.f("uq_audit_log_seq"), type_="unique")
        batch_op.drop_column("chain")
        batch_op.drop_column("seq")
    with op.batch_alter_table("ledger_head", schema=None) as batch_op:
        batch_op.drop_column("chain")
    with op.batch_alter_table("ledger_events", schema=None) as batch_op:
        batch_op.drop_column("chain")
