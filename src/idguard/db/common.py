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
