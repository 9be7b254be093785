"""Registered fingerprints and the record of on-site comparisons. Both refer to registry rows
(cards, staff, offices) by foreign key only: biometrics imports nothing from the registry."""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from idguard.db.base import Base


class Fingerprint(Base):
    """A registered finger of one card (登记指纹): the enrolled ISO/IEC 19794-2 record and its MCC
    template, each sealed with AES-256-GCM under `key_id` and bound to (card, finger) as
    associated data. Never sent out of the registry; compared in place (biometrics/fingerprints)."""

    __tablename__ = "fingerprints"
    card_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("cards.id"), primary_key=True)
    finger: Mapped[int] = mapped_column(sa.SmallInteger, primary_key=True)  # ISO finger position 1-10
    key_id: Mapped[str] = mapped_column(sa.String(16), index=True)
    record: Mapped[bytes] = mapped_column(sa.LargeBinary)  # sealed ISO record, as enrolled
    template: Mapped[bytes] = mapped_column(sa.LargeBinary)  # sealed, zlib-compressed MCC template
    # Sealed like the template (derived from the minutiae): what the 1:N gallery files the finger
    # by (identification.index_data); None for fingers enrolled before migration 0015.
    index_data: Mapped[bytes | None] = mapped_column(sa.LargeBinary, nullable=True)
    minutiae: Mapped[int] = mapped_column(sa.SmallInteger)
    quality: Mapped[int] = mapped_column(sa.SmallInteger)
    enrolled_at: Mapped[dt.datetime]
    enrolled_by: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("staff.id"))


class FingerprintComparison(Base):
    """比对记录: every on-site 1:1 comparison at a counter (a loss report, a found card's return),
    matched or not, so that repeated failures on a card or at an office are visible."""

    __tablename__ = "fingerprint_comparisons"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    card_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("cards.id"))
    purpose: Mapped[str] = mapped_column(sa.String(20))
    office: Mapped[str] = mapped_column(sa.ForeignKey("offices.code"))
    staff_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("staff.id"))
    at: Mapped[dt.datetime]
    matched: Mapped[bool]
    score: Mapped[float]

    __table_args__ = (
        sa.Index("ix_fingerprint_comparisons_card_id_at", "card_id", "at"),
        sa.Index("ix_fingerprint_comparisons_at", "at"),
    )
