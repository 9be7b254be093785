"""accountability transactions, compliance and cases

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import idguard.db.types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTC = idguard.db.types.UTCDateTime(timezone=True)
_BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=24)


def upgrade() -> None:
    op.create_table(
        "transactions",
        sa.Column("id", _BIGID, nullable=False),
        sa.Column("unit_code", sa.String(length=32), nullable=False),
        sa.Column("ref", sa.String(length=64), nullable=False),
        sa.Column("at", _UTC, nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("id_masked", sa.String(length=18), nullable=False),
        sa.Column("purpose", sa.String(length=40), nullable=False),
        sa.Column("check_id", sa.Uuid(), nullable=True),
        sa.Column("window_start", _UTC, nullable=False),
        sa.Column("window_end", _UTC, nullable=False),
        sa.Column(
            "classification",
            _enum("tx_class", "compliant", "unchecked", "checked_after", "accepted_invalid", "ignored_alert"),
            nullable=True,
        ),
        sa.Column("received_at", _UTC, nullable=False),
        sa.ForeignKeyConstraint(["unit_code"], ["units.code"], name=op.f("fk_transactions_unit_code_units")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transactions")),
        sa.UniqueConstraint("unit_code", "ref", name="uq_transactions_unit_code_ref"),
    )
    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.create_index("ix_transactions_month", ["month"], unique=False)
        batch_op.create_index(
            "ix_transactions_unit_code_month_classification",
            ["unit_code", "month", "classification"],
            unique=False,
        )
    op.create_table(
        "closed_months",
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("closed_at", _UTC, nullable=False),
        sa.Column("closed_by", sa.Uuid(), nullable=True),
        sa.Column("units", sa.Integer(), nullable=False),
        sa.Column("transactions", sa.BigInteger(), nullable=False),
        sa.Column("window_hours", sa.Integer(), nullable=False),
        sa.Column("ladder", sa.String(length=200), nullable=False),
        sa.Column("items_json", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["closed_by"], ["staff.id"], name=op.f("fk_closed_months_closed_by_staff")),
        sa.PrimaryKeyConstraint("month", name=op.f("pk_closed_months")),
    )
    op.create_table(
        "compliance_months",
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("unit_code", sa.String(length=32), nullable=False),
        sa.Column("transactions", sa.Integer(), nullable=False),
        sa.Column("compliant", sa.Integer(), nullable=False),
        sa.Column("unchecked", sa.Integer(), nullable=False),
        sa.Column("checked_after", sa.Integer(), nullable=False),
        sa.Column("accepted_invalid", sa.Integer(), nullable=False),
        sa.Column("ignored_alert", sa.Integer(), nullable=False),
        sa.Column("violation_rate", sa.Float(), nullable=False),
        sa.Column(
            "level", _enum("compliance_level", "ok", "early_warning", "standard", "excessive"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["month"], ["closed_months.month"], name=op.f("fk_compliance_months_month_closed_months")
        ),
        sa.ForeignKeyConstraint(
            ["unit_code"], ["units.code"], name=op.f("fk_compliance_months_unit_code_units")
        ),
        sa.PrimaryKeyConstraint("month", "unit_code", name=op.f("pk_compliance_months")),
    )
    op.create_table(
        "cases",
        sa.Column("case_no", sa.String(length=24), nullable=False),
        sa.Column("unit_code", sa.String(length=32), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("finding", sa.String(length=2000), nullable=False),
        sa.Column("status", _enum("case_status", "open", "decided"), nullable=False),
        sa.Column("decision", _enum("case_decision", "warning", "suspension", "dismissed"), nullable=True),
        sa.Column("opened_at", _UTC, nullable=False),
        sa.Column("opened_by", sa.Uuid(), nullable=False),
        sa.Column("decided_at", _UTC, nullable=True),
        sa.ForeignKeyConstraint(["opened_by"], ["staff.id"], name=op.f("fk_cases_opened_by_staff")),
        sa.ForeignKeyConstraint(["unit_code"], ["units.code"], name=op.f("fk_cases_unit_code_units")),
        sa.PrimaryKeyConstraint("case_no", name=op.f("pk_cases")),
    )
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cases_unit_code"), ["unit_code"], unique=False)
    op.create_table(
        "case_events",
        sa.Column("id", _BIGID, nullable=False),
        sa.Column("case_no", sa.String(length=24), nullable=False),
        sa.Column("unit_code", sa.String(length=32), nullable=False),
        sa.Column(
            "kind", _enum("case_event_kind", "opened", "response", "decided", "reinstated"), nullable=False
        ),
        sa.Column("at", _UTC, nullable=False),
        sa.Column("staff_id", sa.Uuid(), nullable=True),
        sa.Column("text", sa.String(length=4000), nullable=False),
        sa.Column(
            "decision", _enum("case_event_decision", "warning", "suspension", "dismissed"), nullable=True
        ),
        sa.ForeignKeyConstraint(["case_no"], ["cases.case_no"], name=op.f("fk_case_events_case_no_cases")),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"], name=op.f("fk_case_events_staff_id_staff")),
        sa.ForeignKeyConstraint(["unit_code"], ["units.code"], name=op.f("fk_case_events_unit_code_units")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_events")),
    )
    with op.batch_alter_table("case_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_case_events_case_no"), ["case_no"], unique=False)
        batch_op.create_index("ix_case_events_unit_code_id", ["unit_code", "id"], unique=False)
    op.create_table(
        "case_webhook_cursors",
        sa.Column("unit_code", sa.String(length=32), nullable=False),
        sa.Column("delivered_id", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["unit_code"], ["units.code"], name=op.f("fk_case_webhook_cursors_unit_code_units")
        ),
        sa.PrimaryKeyConstraint("unit_code", name=op.f("pk_case_webhook_cursors")),
    )
    # Classification's lookup: the unit's latest check of a number before a time.
    with op.batch_alter_table("checks", schema=None) as batch_op:
        batch_op.create_index("ix_checks_unit_code_id_hash_at", ["unit_code", "id_hash", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("checks", schema=None) as batch_op:
        batch_op.drop_index("ix_checks_unit_code_id_hash_at")
    op.drop_table("case_webhook_cursors")
    with op.batch_alter_table("case_events", schema=None) as batch_op:
        batch_op.drop_index("ix_case_events_unit_code_id")
        batch_op.drop_index(batch_op.f("ix_case_events_case_no"))
    op.drop_table("case_events")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cases_unit_code"))
    op.drop_table("cases")
    op.drop_table("compliance_months")
    op.drop_table("closed_months")
    with op.batch_alter_table("transactions", schema=None) as batch_op:
        batch_op.drop_index("ix_transactions_unit_code_month_classification")
        batch_op.drop_index("ix_transactions_month")
    op.drop_table("transactions")
