"""Tables every feature writes: the audit trail (every staff read of personal data, and
administration) and the stored answers of idempotent writes (see idguard.uow)."""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from idguard.db.base import Base


class AuditEntry(Base):
    """Every staff read of personal data, and staff administration, recorded (no full id numbers)."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    at: Mapped[dt.datetime]
    staff_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("staff.id"))
    action: Mapped[str] = mapped_column(sa.String(40))
    person_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("persons.id"), index=True)
    detail: Mapped[str | None] = mapped_column(sa.String(200))
    # The hash chain (core.chain), set by the sealer shortly after commit (ops.chains.seal_audit):
    # `seq` is the entry's position in the chain, in the order the sealer found committed rows;
    # both NULL until then. Inserting stays one plain INSERT, so a staff read costs no more.
    seq: Mapped[int | None] = mapped_column(sa.BigInteger, unique=True)
    chain: Mapped[str | None] = mapped_column(sa.String(64))

    __table_args__ = (
        # The sealer's work list: entries not yet chained, found without scanning the log.
        sa.Index(
            "ix_audit_log_unsealed",
            "id",
            sqlite_where=sa.text("seq IS NULL"),
            postgresql_where=sa.text("seq IS NULL"),
        ),
    )


class AuditHead(Base):
    """The audit chain's end: the last sealed position and its chain value. One row (id 1),
    created by the first seal when missing; its row lock serialises sealers."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    chain: Mapped[str] = mapped_column(sa.String(64))

    __table_args__ = (sa.CheckConstraint("id = 1", name="single_row"),)


class ChainCheckpoint(Base):
    """A signed checkpoint (core.chain.Checkpoint) of the ledger or the audit chain: chain
    `chain_name` had hash `chain` at `seq`. Kept here, and exported for an auditor to keep
    elsewhere (`idguard ledger checkpoint`): the copy outside is what a rewrite cannot reach."""

    __tablename__ = "chain_checkpoints"
    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    chain_name: Mapped[str] = mapped_column(sa.String(8))
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    chain: Mapped[str] = mapped_column(sa.String(64))
    at: Mapped[dt.datetime] = mapped_column(index=True)
    key_id: Mapped[str] = mapped_column(sa.String(16))
    signature: Mapped[str] = mapped_column(sa.String(100))


class IdempotencyRecord(Base):
    """The first answer to a write sent with an Idempotency-Key, kept for retries: sealed
    (`body` is AES-GCM, idguard.uow) and purged after IDEMPOTENCY_TTL."""

    __tablename__ = "idempotency_keys"
    principal: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    status_code: Mapped[int]
    body: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(index=True)  # purged after uow.IDEMPOTENCY_TTL
