"""The watchlist's tables: the impersonator blacklist (冒用身份证人员黑名单) with its append-only
history, incidents (冒用线索), and the history of victim protection.

The alert flags the verification index answers from are `verification.models.PersonFlags`
(verification cannot import this package); the use-cases here keep them in step.
"""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from idguard.db.base import Base
from idguard.db.types import StrEnumText, str_enum
from idguard.registry.sealed import Sealed, track
from idguard.watchlist.rules import (
    BlacklistAction,
    BlacklistReason,
    EntryStatus,
    IncidentKind,
    IncidentStatus,
)


class BlacklistEntry(Base):
    """One listing of a person. Its `status` moves once, from active to lifted or expired; every
    step is also a BlacklistEvent row (the history), and the person's PersonFlags and ledger say
    so to every worker."""

    __tablename__ = "blacklist_entries"
    entry_no: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    person_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("persons.id"), index=True)
    reason: Mapped[BlacklistReason] = mapped_column(str_enum(BlacklistReason, "blacklist_reason"))
    case_no: Mapped[str] = mapped_column(sa.String(60))
    # The supervisor's note, sealed at rest (registry/sealed.py): `entry.note` is the clear text
    # in memory, `note_sealed` the AES-GCM ciphertext under key `seal_key`.
    note = Sealed[str | None]()
    note_sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    seal_key: Mapped[str | None] = mapped_column(sa.String(16))
    listed_on: Mapped[dt.date]  # China Standard Time
    until: Mapped[dt.date | None]  # the last day it holds (inclusive); NULL until lifted
    status: Mapped[EntryStatus] = mapped_column(str_enum(EntryStatus, "blacklist_status"))
    listed_by: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("staff.id"))
    listed_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime | None]

    __table_args__ = (
        # One active entry per person, in the database (a race between two supervisors gets one 409).
        sa.Index(
            "uq_blacklist_one_active_entry",
            "person_id",
            unique=True,
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        ),
    )


class BlacklistEvent(Base):
    """The append-only history of the blacklist: listed, lifted (with its reason), expired."""

    __tablename__ = "blacklist_events"
    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    entry_no: Mapped[str] = mapped_column(sa.ForeignKey("blacklist_entries.entry_no"), index=True)
    action: Mapped[BlacklistAction] = mapped_column(str_enum(BlacklistAction, "blacklist_action"))
    at: Mapped[dt.datetime]
    staff_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("staff.id"))  # NULL: by itself
    # Sealed at rest (a lifting reason is free text); sealed just after the INSERT, which gives
    # the id it is bound to (registry/sealed.py, SealedTable.db_assigned).
    reason = Sealed[str | None]()
    reason_sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    seal_key: Mapped[str | None] = mapped_column(sa.String(16))


class ProtectionEvent(Base):
    """Victim protection, append-only: who required (or released) the person-card check on a
    person's cards, when and why. `by` is "holder" or the member of staff's username."""

    __tablename__ = "protection_events"
    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    person_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("persons.id"), index=True)
    required: Mapped[bool]
    reason = Sealed[str | None]()  # sealed at rest, as the blacklist events' reasons
    reason_sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    seal_key: Mapped[str | None] = mapped_column(sa.String(16))
    by: Mapped[str] = mapped_column(sa.String(64))
    at: Mapped[dt.datetime]


class Incident(Base):
    """冒用线索: opened automatically from a signal (a check, a dispute, a unit's harvesting), owned
    by the holder's hukou office (`office`; NULL for a unit's harvesting: supervisors'). One per
    (card, kind, unit, day): a repeat only counts (`count`, `last_at`). Closed once, never deleted.

    `seq` orders incidents for the event stream; `dedup_key` holds the one-per-day rule in the
    database, so two workers seeing the same signal make one incident."""

    __tablename__ = "incidents"
    seq: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    incident_no: Mapped[str] = mapped_column(sa.String(32), unique=True)
    kind: Mapped[IncidentKind] = mapped_column(StrEnumText(IncidentKind, 32))
    status: Mapped[IncidentStatus] = mapped_column(str_enum(IncidentStatus, "incident_status"))
    dedup_key: Mapped[str] = mapped_column(sa.String(200), unique=True)
    person_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("persons.id"), index=True)
    card_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("cards.id"))
    office: Mapped[str | None] = mapped_column(sa.ForeignKey("offices.code"))
    unit_code: Mapped[str | None] = mapped_column(sa.String(32))
    check_id: Mapped[str | None] = mapped_column(sa.String(36))  # the first check that signalled it
    # known_impersonator: the listed person's card whose finger matched (police only)
    matched_card_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("cards.id"))
    detail: Mapped[str | None] = mapped_column(sa.String(200))
    count: Mapped[int]
    opened_at: Mapped[dt.datetime]
    last_at: Mapped[dt.datetime]
    closed_at: Mapped[dt.datetime | None]
    closed_by: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("staff.id"))
    # The closing note, sealed at rest and bound to `incident_no` (the upsert that opens an
    # incident writes no note, and leaves `seal_key` NULL until one is written).
    note = Sealed[str | None]()
    note_sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    seal_key: Mapped[str | None] = mapped_column(sa.String(16))

    __table_args__ = (
        sa.Index("ix_incidents_office_opened_at", "office", "opened_at"),
        sa.Index("ix_incidents_opened_at", "opened_at"),
    )


track(BlacklistEntry, BlacklistEvent, ProtectionEvent, Incident)  # sealed free text (registry/sealed.py)
