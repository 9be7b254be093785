"""Accountability's tables (责任追究): the transactions units report, the monthly compliance rows
frozen when a month is closed, and cases with their append-only history."""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from idguard.accountability.rules import CaseEventKind, CaseStatus, Decision, Level, TxClass
from idguard.db.base import Base
from idguard.db.types import str_enum
from idguard.registry.sealed import Sealed, track
from idguard.verification.models import Check

_BIGID = sa.BigInteger().with_variant(sa.Integer, "sqlite")

# Classification looks up "the unit's latest check of this number before `at`": this index
# answers it with one descent (unit, number, newest first). It is accountability's, on the check
# log's table, so it is declared (and migrated, 0008) here.
_checks = Check.__table__
CHECKS_BY_UNIT_NUMBER_TIME = sa.Index(
    "ix_checks_unit_code_id_hash_at", _checks.c.unit_code, _checks.c.id_hash, _checks.c.at
)


class Transaction(Base):
    """A transaction a unit performed on the strength of a check (opened an account, checked a
    guest in). The id number is kept only as the check log keeps it: masked, and as the keyed
    hash (HMAC-SHA256 under the check-hash key) that finds the unit's checks of it.

    `window_start` / `window_end` are `at` ∓ IDGUARD_CHECK_WINDOW_HOURS when it was reported: the
    window it is judged in, kept with it so re-classifying (when the month is closed) uses the
    same window and the SQL needs no date arithmetic (which SQLite and PostgreSQL spell apart).
    `classification` is provisional until the month is closed (a check made after `at` may
    still arrive)."""

    __tablename__ = "transactions"
    id: Mapped[int] = mapped_column(_BIGID, primary_key=True)
    unit_code: Mapped[str] = mapped_column(sa.ForeignKey("units.code"))
    ref: Mapped[str] = mapped_column(sa.String(64))
    at: Mapped[dt.datetime]
    month: Mapped[str] = mapped_column(sa.String(7))  # YYYY-MM in China Standard Time
    id_hash: Mapped[str] = mapped_column(sa.String(64))
    id_masked: Mapped[str] = mapped_column(sa.String(18))
    purpose: Mapped[str] = mapped_column(sa.String(40))
    check_id: Mapped[uuid.UUID | None]  # the check the unit says it relied on (informative)
    window_start: Mapped[dt.datetime]
    window_end: Mapped[dt.datetime]
    classification: Mapped[TxClass | None] = mapped_column(str_enum(TxClass, "tx_class"))
    received_at: Mapped[dt.datetime]

    __table_args__ = (
        sa.UniqueConstraint("unit_code", "ref", name="uq_transactions_unit_code_ref"),
        sa.Index("ix_transactions_unit_code_month_classification", "unit_code", "month", "classification"),
        sa.Index("ix_transactions_month", "month"),
    )


class ClosedMonth(Base):
    """A month whose compliance figures are frozen in `compliance_months` (`idguard compliance
    close`, or the first read after it could be closed)."""

    __tablename__ = "closed_months"
    month: Mapped[str] = mapped_column(sa.String(7), primary_key=True)
    closed_at: Mapped[dt.datetime]
    closed_by: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("staff.id"))
    units: Mapped[int]
    transactions: Mapped[int] = mapped_column(sa.BigInteger)
    window_hours: Mapped[int]
    ladder: Mapped[str] = mapped_column(sa.String(200))  # the thresholds the levels were judged by
    # The month's rows as GET /api/v1/compliance answers them (a JSON array, by unit code),
    # rendered once at closing: the whole month for 10,000 units is then one row read.
    items_json: Mapped[str] = mapped_column(sa.Text)


class ComplianceMonth(Base):
    """One unit's month, as frozen when the month was closed."""

    __tablename__ = "compliance_months"
    month: Mapped[str] = mapped_column(sa.ForeignKey("closed_months.month"), primary_key=True)
    unit_code: Mapped[str] = mapped_column(sa.ForeignKey("units.code"), primary_key=True)
    transactions: Mapped[int]
    compliant: Mapped[int]
    unchecked: Mapped[int]
    checked_after: Mapped[int]
    accepted_invalid: Mapped[int]
    ignored_alert: Mapped[int]
    violation_rate: Mapped[float] = mapped_column(sa.Float)
    level: Mapped[Level] = mapped_column(str_enum(Level, "compliance_level"))


class Case(Base):
    """A case (责任追究案件) opened by a supervisor against a unit for a month. Its status and
    decision are kept consistent with its events, which are the record (append-only)."""

    __tablename__ = "cases"
    case_no: Mapped[str] = mapped_column(sa.String(24), primary_key=True)
    unit_code: Mapped[str] = mapped_column(sa.ForeignKey("units.code"), index=True)
    month: Mapped[str] = mapped_column(sa.String(7))
    # The supervisor's finding, sealed at rest (registry/sealed.py): `case.finding` is the clear
    # text in memory, `finding_sealed` the AES-GCM ciphertext under key `seal_key`.
    finding = Sealed[str]()
    finding_sealed: Mapped[bytes] = mapped_column(sa.LargeBinary)
    seal_key: Mapped[str | None] = mapped_column(sa.String(16))
    status: Mapped[CaseStatus] = mapped_column(str_enum(CaseStatus, "case_status"))
    decision: Mapped[Decision | None] = mapped_column(str_enum(Decision, "case_decision"))
    opened_at: Mapped[dt.datetime]
    opened_by: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("staff.id"))
    decided_at: Mapped[dt.datetime | None]


class CaseEvent(Base):
    """Everything that happened on a case, in order; never updated or deleted. `id` is also the
    cursor of the unit's case notifications (verification/notifications.py's extra feeds)."""

    __tablename__ = "case_events"
    id: Mapped[int] = mapped_column(_BIGID, primary_key=True)
    case_no: Mapped[str] = mapped_column(sa.ForeignKey("cases.case_no"), index=True)
    unit_code: Mapped[str] = mapped_column(sa.ForeignKey("units.code"))
    kind: Mapped[CaseEventKind] = mapped_column(str_enum(CaseEventKind, "case_event_kind"))
    at: Mapped[dt.datetime]
    staff_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("staff.id"))  # None: the unit
    # The notice, statement or decision, sealed at rest; sealed just after the INSERT, which
    # gives the id it is bound to (registry/sealed.py, SealedTable.db_assigned).
    text = Sealed[str]()
    text_sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    seal_key: Mapped[str | None] = mapped_column(sa.String(16))
    decision: Mapped[Decision | None] = mapped_column(str_enum(Decision, "case_event_decision"))

    __table_args__ = (sa.Index("ix_case_events_unit_code_id", "unit_code", "id"),)


class CaseWebhookCursor(Base):
    """How far each unit's webhook has been sent its case notifications (case_events.id)."""

    __tablename__ = "case_webhook_cursors"
    unit_code: Mapped[str] = mapped_column(sa.ForeignKey("units.code"), primary_key=True)
    delivered_id: Mapped[int] = mapped_column(sa.BigInteger)
    failures: Mapped[int]
    next_attempt_at: Mapped[dt.datetime | None]


track(Case, CaseEvent)  # sealed free text (registry/sealed.py)
