"""watchlist incidents, blacklist and protection

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import idguard.db.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_UTC = idguard.db.types.UTCDateTime(timezone=True)


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=24)


def upgrade() -> None:
    # The check's alerts (comma-joined; NULL when none): accountability's `ignored_alert`.
    with op.batch_alter_table("checks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("alerts", sa.String(length=60), nullable=True))

    op.create_table(
        "person_flags",
        sa.Column("person_id", sa.Uuid(), nullable=False),
        sa.Column("blacklisted", sa.Boolean(), nullable=False),
        sa.Column("blacklisted_until", sa.Date(), nullable=True),
        sa.Column("person_check_required", sa.Boolean(), nullable=False),
        sa.Column("updated_at", _UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["person_id"], ["persons.id"], name=op.f("fk_person_flags_person_id_persons")
        ),
        sa.PrimaryKeyConstraint("person_id", name=op.f("pk_person_flags")),
    )

    op.create_table(
        "blacklist_entries",
        sa.Column("entry_no", sa.String(length=32), nullable=False),
        sa.Column("person_id", sa.Uuid(), nullable=False),
        sa.Column(
            "reason",
            _enum("blacklist_reason", "impersonation", "fraudulent_application", "card_trafficking"),
            nullable=False,
        ),
        sa.Column("case_no", sa.String(length=60), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("listed_on", sa.Date(), nullable=False),
        sa.Column("until", sa.Date(), nullable=True),
        sa.Column("status", _enum("blacklist_status", "active", "lifted", "expired"), nullable=False),
        sa.Column("listed_by", sa.Uuid(), nullable=False),
        sa.Column("listed_at", _UTC, nullable=False),
        sa.Column("ended_at", _UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["listed_by"], ["staff.id"], name=op.f("fk_blacklist_entries_listed_by_staff")
        ),
        sa.ForeignKeyConstraint(
            ["person_id"], ["persons.id"], name=op.f("fk_blacklist_entries_person_id_persons")
        ),
        sa.PrimaryKeyConstraint("entry_no", name=op.f("pk_blacklist_entries")),
    )
    with op.batch_alter_table("blacklist_entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_blacklist_entries_person_id"), ["person_id"], unique=False)
        batch_op.create_index(
            "uq_blacklist_one_active_entry",
            ["person_id"],
            unique=True,
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )

    op.create_table(
        "blacklist_events",
        sa.Column("id", _ID, nullable=False),
        sa.Column("entry_no", sa.String(length=32), nullable=False),
        sa.Column("action", _enum("blacklist_action", "listed", "lifted", "expired"), nullable=False),
        sa.Column("at", _UTC, nullable=False),
        sa.Column("staff_id", sa.Uuid(), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["entry_no"],
            ["blacklist_entries.entry_no"],
            name=op.f("fk_blacklist_events_entry_no_blacklist_entries"),
        ),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"], name=op.f("fk_blacklist_events_staff_id_staff")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blacklist_events")),
    )
    with op.batch_alter_table("blacklist_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_blacklist_events_entry_no"), ["entry_no"], unique=False)

    op.create_table(
        "protection_events",
        sa.Column("id", _ID, nullable=False),
        sa.Column("person_id", sa.Uuid(), nullable=False),
        sa.Column("required", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("by", sa.String(length=64), nullable=False),
        sa.Column("at", _UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["person_id"], ["persons.id"], name=op.f("fk_protection_events_person_id_persons")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_protection_events")),
    )
    with op.batch_alter_table("protection_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_protection_events_person_id"), ["person_id"], unique=False)

    op.create_table(
        "incidents",
        sa.Column("seq", _ID, nullable=False),
        sa.Column("incident_no", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("status", _enum("incident_status", "open", "confirmed", "dismissed"), nullable=False),
        sa.Column("dedup_key", sa.String(length=200), nullable=False),
        sa.Column("person_id", sa.Uuid(), nullable=True),
        sa.Column("card_id", sa.Uuid(), nullable=True),
        sa.Column("office", sa.String(length=12), nullable=True),
        sa.Column("unit_code", sa.String(length=32), nullable=True),
        sa.Column("check_id", sa.String(length=36), nullable=True),
        sa.Column("matched_card_id", sa.Uuid(), nullable=True),
        sa.Column("detail", sa.String(length=200), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("opened_at", _UTC, nullable=False),
        sa.Column("last_at", _UTC, nullable=False),
        sa.Column("closed_at", _UTC, nullable=True),
        sa.Column("closed_by", sa.Uuid(), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name=op.f("fk_incidents_card_id_cards")),
        sa.ForeignKeyConstraint(["closed_by"], ["staff.id"], name=op.f("fk_incidents_closed_by_staff")),
        sa.ForeignKeyConstraint(
            ["matched_card_id"], ["cards.id"], name=op.f("fk_incidents_matched_card_id_cards")
        ),
        sa.ForeignKeyConstraint(["office"], ["offices.code"], name=op.f("fk_incidents_office_offices")),
        sa.ForeignKeyConstraint(["person_id"], ["persons.id"], name=op.f("fk_incidents_person_id_persons")),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_incidents")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_incidents_dedup_key")),
        sa.UniqueConstraint("incident_no", name=op.f("uq_incidents_incident_no")),
    )
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.create_index("ix_incidents_office_opened_at", ["office", "opened_at"], unique=False)
        batch_op.create_index("ix_incidents_opened_at", ["opened_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_incidents_person_id"), ["person_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_incidents_person_id"))
        batch_op.drop_index("ix_incidents_opened_at")
        batch_op.drop_index("ix_incidents_office_opened_at")
    op.drop_table("incidents")
    with op.batch_alter_table("protection_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_protection_events_person_id"))
    op.drop_table("protection_events")
    with op.batch_alter_table("blacklist_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_blacklist_events_entry_no"))
    op.drop_table("blacklist_events")
    with op.batch_alter_table("blacklist_entries", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_blacklist_one_active_entry",
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        )
        batch_op.drop_index(batch_op.f("ix_blacklist_entries_person_id"))
    op.drop_table("blacklist_entries")
    op.drop_table("person_flags")
    with op.batch_alter_table("checks", schema=None) as batch_op:
        batch_op.drop_column("alerts")
