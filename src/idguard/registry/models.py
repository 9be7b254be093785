"""The registry's tables. Alembic migrations in db/migrations are generated from and checked
against these models; the migrations are what builds a database.

Where to look first: `Card` (one physical document), `LedgerEvent` (the append-only history with
its global gap-free `seq`), and the partial unique indexes that hold "one valid card per person".
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from idguard.core.grants import Role
from idguard.core.idnumber import Sex
from idguard.db.types import UTCDateTime, str_enum
from idguard.registry.lifecycle import (
    CardStatus,
    FoundDisposition,
    IssueKind,
    LossReason,
    RevocationReason,
)
from idguard.verification.rules import UnitStatus


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dt.datetime: UTCDateTime()}
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


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
    name: Mapped[str] = mapped_column(sa.String(60))
    sex: Mapped[Sex] = mapped_column(str_enum(Sex, "sex"))
    ethnicity: Mapped[str] = mapped_column(sa.String(30))
    birth_date: Mapped[dt.date]
    address: Mapped[str] = mapped_column(sa.String(200))
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
    name: Mapped[str] = mapped_column(sa.String(60))
    sex: Mapped[Sex] = mapped_column(str_enum(Sex, "sex"))
    ethnicity: Mapped[str] = mapped_column(sa.String(30))
    birth_date: Mapped[dt.date]
    address: Mapped[str] = mapped_column(sa.String(200))
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
    finder_name: Mapped[str] = mapped_column(sa.String(60))
    finder_phone: Mapped[str | None] = mapped_column(sa.String(30))
    received_by: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("staff.id"))
    received_at: Mapped[dt.datetime]
    disposition: Mapped[FoundDisposition] = mapped_column(str_enum(FoundDisposition, "found_disposition"))
    returned_at: Mapped[dt.datetime | None]
    returned_by: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("staff.id"))


class LedgerEvent(Base):
    """The append-only ledger. `seq` is global, gap-free and strictly increasing, allocated from
    `ledger_head` inside the writing transaction: the row lock on the head makes commit order equal
    sequence order, which the verification index relies on when it follows the ledger.
    """

    __tablename__ = "ledger_events"
    seq: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    card_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("cards.id"), index=True)
    person_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("persons.id"))
    event: Mapped[str] = mapped_column(sa.String(32))
    status_before: Mapped[CardStatus | None] = mapped_column(str_enum(CardStatus, "status_before"))
    status_after: Mapped[CardStatus] = mapped_column(str_enum(CardStatus, "status_after"))
    office: Mapped[str | None] = mapped_column(sa.ForeignKey("offices.code"))
    actor: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("staff.id"))
    at: Mapped[dt.datetime]
    reason: Mapped[str | None] = mapped_column(sa.String(200))
    reference: Mapped[str | None] = mapped_column(sa.String(40))


class LedgerHead(Base):
    """A single row holding the last allocated ledger sequence number."""

    __tablename__ = "ledger_head"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(sa.BigInteger)

    __table_args__ = (sa.CheckConstraint("id = 1", name="single_row"),)


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
    """The first successful answer to a write sent with an Idempotency-Key, kept for retries."""

    __tablename__ = "idempotency_keys"
    principal: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    request_hash: Mapped[str] = mapped_column(sa.String(64))
    status_code: Mapped[int]
    body: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime]


# ---- networked verification (联网核查) ----------------------------------------------------------
class Unit(Base):
    """An ID-using unit (用证单位): a bank branch network, a hotel chain, a railway."""

    __tablename__ = "units"
    code: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    sector: Mapped[str] = mapped_column(sa.String(40))
    purposes: Mapped[list[str]] = mapped_column(sa.JSON)
    rate_limit: Mapped[int] = mapped_column(doc="checks per second across the service")
    status: Mapped[UnitStatus] = mapped_column(str_enum(UnitStatus, "unit_status"))
    webhook_url: Mapped[str | None] = mapped_column(sa.String(300))
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class UnitKey(Base):
    """An API key, stored as its prefix (for lookup) and a SHA-256 of the whole key. Keys are
    32 random bytes, so a fast hash is enough; the key itself is shown once and never stored."""

    __tablename__ = "unit_keys"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    unit_code: Mapped[str] = mapped_column(sa.ForeignKey("units.code"), index=True)
    prefix: Mapped[str] = mapped_column(sa.String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime | None] = mapped_column(doc="set when rotated: the grace period's end")
    revoked_at: Mapped[dt.datetime | None]


class RegistryVersion(Base):
    """Counters the verification workers poll besides the ledger: `units` moves on any unit or
    key change, so a revoked key stops working on every worker within one poll."""

    __tablename__ = "registry_versions"
    name: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    version: Mapped[int] = mapped_column(sa.BigInteger)


class Check(Base):
    """核查记录: one row per check. The id number is kept only masked and as a keyed hash
    (HMAC-SHA256 with the service secret) so a citizen's own checks can be found later."""

    __tablename__ = "checks"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    unit_code: Mapped[str] = mapped_column(sa.ForeignKey("units.code"))
    operator: Mapped[str] = mapped_column(sa.String(64))
    purpose: Mapped[str] = mapped_column(sa.String(40))
    at: Mapped[dt.datetime]
    result: Mapped[str] = mapped_column(sa.String(10))
    reason: Mapped[str | None] = mapped_column(sa.String(20))
    id_masked: Mapped[str] = mapped_column(sa.String(18))
    id_hash: Mapped[str] = mapped_column(sa.String(64), index=True)
    watch: Mapped[bool]
    fingerprint_match: Mapped[bool | None]  # the person-card comparison's verdict, when one was made

    __table_args__ = (sa.Index("ix_checks_unit_code_at", "unit_code", "at"),)


class Watch(Base):
    """A unit's subscription to a card it checked with `watch: true`; it hears of ledger events
    on that card after `since_seq`."""

    __tablename__ = "watches"
    unit_code: Mapped[str] = mapped_column(sa.ForeignKey("units.code"), primary_key=True)
    card_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("cards.id"), primary_key=True, index=True)
    check_id: Mapped[uuid.UUID]
    since_seq: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[dt.datetime]


class WebhookDelivery(Base):
    """The delivery log of webhook notifications: every attempt and its answer (the next try is
    on the unit's WebhookCursor)."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    unit_code: Mapped[str] = mapped_column(sa.ForeignKey("units.code"), index=True)
    cursor: Mapped[int] = mapped_column(sa.BigInteger)
    attempt: Mapped[int]
    at: Mapped[dt.datetime]
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(sa.String(200))
    delivered: Mapped[bool]


class WebhookCursor(Base):
    """How far each unit's webhook has been delivered (the ledger seq of the last notification)."""

    __tablename__ = "webhook_cursors"
    unit_code: Mapped[str] = mapped_column(sa.ForeignKey("units.code"), primary_key=True)
    delivered_seq: Mapped[int] = mapped_column(sa.BigInteger)
    next_attempt_at: Mapped[dt.datetime | None]
    failures: Mapped[int]
