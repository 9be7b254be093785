"""The registry's tables: offices and staff, persons, cards, loss reports, found cards, and the
ledger. Alembic migrations in db/migrations are checked against every feature's models
(idguard.schema); the migrations are what builds a database.

Where to look first: `Card` (one physical document), `LedgerEvent` (the append-only history with
its global gap-free `seq`), and the partial unique indexes that hold "one valid card per person".
"""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from idguard.core.chain import GENESIS
from idguard.core.grants import Role
from idguard.core.idnumber import Sex
from idguard.db.base import Base
from idguard.db.types import StrEnumText, str_enum
from idguard.registry.lifecycle import (
    CardStatus,
    EventKind,
    FoundDisposition,
    IssueKind,
    LossReason,
    RevocationReason,
)
from idguard.registry.sealed import Sealed, track


class Office(Base):
    """A household-registration office or service hall (户籍派出所 / 办证大厅)."""

    __tablename__ = "offices"
    code: Mapped[str] = mapped_column(sa.String(12), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    region: Mapped[str] = mapped_column(sa.String(6))
    created_at: Mapped[dt.datetime]


class Staff(Base):
    __tablename__ = "staff"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(sa.String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(200))
    role: Mapped[Role] = mapped_column(str_enum(Role, "staff_role"))
    office_code: Mapped[str | None] = mapped_column(sa.ForeignKey("offices.code"))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime]

    __table_args__ = (
        # A clerk is bound to exactly one office.
        sa.CheckConstraint("role != 'clerk' OR office_code IS NOT NULL", name="clerk_has_office"),
    )


class Person(Base):
    """A citizen identity record (公民身份信息)."""

    __tablename__ = "persons"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    id_number: Mapped[str] = mapped_column(sa.String(18), unique=True)
    # Name and address sealed at rest (registry/sealed.py): `person.name` is the clear text in
    # memory, `name_sealed` the AES-GCM ciphertext under key `seal_key`.
    name = Sealed[str]()
    name_sealed: Mapped[bytes] = mapped_column(sa.LargeBinary)
    sex: Mapped[Sex] = mapped_column(str_enum(Sex, "sex"))
    ethnicity: Mapped[str] = mapped_column(sa.String(30))
    birth_date: Mapped[dt.date]
    address = Sealed[str]()
    address_sealed: Mapped[bytes] = mapped_column(sa.LargeBinary)
    seal_key: Mapped[str] = mapped_column(sa.String(16))
    hukou_office: Mapped[str] = mapped_column(sa.ForeignKey("offices.code"))
    revoked_reason: Mapped[RevocationReason | None] = mapped_column(
        str_enum(RevocationReason, "revocation_reason")
    )
    revoked_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime]


class Card(Base):
    """One physical card (or temporary card). Printed data is copied here: it never changes."""

    __tablename__ = "cards"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    person_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("persons.id"), index=True)
    id_number: Mapped[str] = mapped_column(sa.String(18))
    kind: Mapped[IssueKind] = mapped_column(str_enum(IssueKind, "issue_kind"))
    temporary: Mapped[bool]
    status: Mapped[CardStatus] = mapped_column(str_enum(CardStatus, "card_status"))
    name = Sealed[str]()  # sealed at rest, as the person's (registry/sealed.py)
    name_sealed: Mapped[bytes] = mapped_column(sa.LargeBinary)
    sex: Mapped[Sex] = mapped_column(str_enum(Sex, "sex"))
    ethnicity: Mapped[str] = mapped_column(sa.String(30))
    birth_date: Mapped[dt.date]
    address = Sealed[str]()
    address_sealed: Mapped[bytes] = mapped_column(sa.LargeBinary)
    seal_key: Mapped[str] = mapped_column(sa.String(16))
    issued_on: Mapped[dt.date]
    expires_on: Mapped[dt.date | None]
    issuing_office: Mapped[str] = mapped_column(sa.ForeignKey("offices.code"))
    chip_serial: Mapped[str] = mapped_column(sa.String(32), unique=True)
    fingerprints_registered: Mapped[bool] = mapped_column(default=False)
    superseded_by: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("cards.id"))
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]

    __table_args__ = (
        # The invariant "a person holds at most one valid card" lives in the database, so no
        # race in application code can break it. A temporary card may coexist (its own index).
        sa.Index(
            "uq_cards_one_valid_card",
            "person_id",
            unique=True,
            sqlite_where=sa.text("status = 'valid' AND NOT temporary"),
            postgresql_where=sa.text("status = 'valid' AND NOT temporary"),
        ),
        sa.Index(
            "uq_cards_one_valid_temporary_card",
            "person_id",
            unique=True,
            sqlite_where=sa.text("status = 'valid' AND temporary"),
            postgresql_where=sa.text("status = 'valid' AND temporary"),
        ),
        sa.Index("ix_cards_id_number_issued_on", "id_number", "issued_on"),
    )


class LossReport(Base):
    """挂失申报, with its receipt number (回执)."""

    __tablename__ = "loss_reports"
    report_no: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    card_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("cards.id"), index=True)
    reason: Mapped[LossReason] = mapped_column(str_enum(LossReason, "loss_reason"))
    office: Mapped[str] = mapped_column(sa.ForeignKey("offices.code"))
    applicant_id_number: Mapped[str] = mapped_column(sa.String(18))
    by_guardian: Mapped[bool]
    accepted_by: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("staff.id"))
    accepted_at: Mapped[dt.datetime]
    cancelled_at: Mapped[dt.datetime | None]
    cancelled_by: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("staff.id"))


class FoundCard(Base):
    """A card handed in by a finder (丢失招领)."""

    __tablename__ = "found_cards"
    found_no: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    card_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("cards.id"), index=True)
    office: Mapped[str] = mapped_column(sa.ForeignKey("offices.code"))
    # The finder's name and phone, sealed at rest (registry/sealed.py).
    finder_name = Sealed[str]()
    finder_name_sealed: Mapped[bytes] = mapped_column(sa.LargeBinary)
    finder_phone = Sealed[str | None]()
    finder_phone_sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    seal_key: Mapped[str] = mapped_column(sa.String(16))
    received_by: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("staff.id"))
    received_at: Mapped[dt.datetime]
    disposition: Mapped[FoundDisposition] = mapped_column(str_enum(FoundDisposition, "found_disposition"))
    returned_at: Mapped[dt.datetime | None]
    returned_by: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("staff.id"))


track(Person, Card, FoundCard)  # sealed fields remember the ring that loaded them


class LedgerEvent(Base):
    """The append-only ledger. `seq` is global, gap-free and strictly increasing, allocated from
    `ledger_head` inside the writing transaction: the row lock on the head makes commit order equal
    sequence order, which the verification index relies on when it follows the ledger.
    """

    __tablename__ = "ledger_events"
    seq: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    card_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("cards.id"), index=True)
    person_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("persons.id"))
    event: Mapped[EventKind] = mapped_column(StrEnumText(EventKind, 32))
    status_before: Mapped[CardStatus | None] = mapped_column(str_enum(CardStatus, "status_before"))
    status_after: Mapped[CardStatus] = mapped_column(str_enum(CardStatus, "status_after"))
    office: Mapped[str | None] = mapped_column(sa.ForeignKey("offices.code"))
    actor: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("staff.id"))
    at: Mapped[dt.datetime]
    reason: Mapped[str | None] = mapped_column(sa.String(200))
    reference: Mapped[str | None] = mapped_column(sa.String(40))
    # The hash chain (core.chain): SHA-256 over the previous event's chain and this row, set in
    # the appending statement. NULL only while a bulk load (the demo) has yet to chain its rows;
    # `idguard ledger verify` reports a NULL as a broken chain.
    chain: Mapped[str | None] = mapped_column(sa.String(64))


class LedgerHead(Base):
    """A single row holding the last allocated ledger sequence number and the chain value of the
    event that has it (what the next event links from)."""

    __tablename__ = "ledger_head"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(sa.BigInteger)
    chain: Mapped[str] = mapped_column(sa.String(64), server_default=GENESIS)

    __table_args__ = (sa.CheckConstraint("id = 1", name="single_row"),)
