"""offline verification: units granted `offline`, generations of the set's salt

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 09:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import idguard.db.types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTC = idguard.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "offline_grants",
        sa.Column("unit_code", sa.String(length=32), nullable=False),
        sa.Column("granted_at", _UTC, nullable=False),
        sa.Column("granted_by", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["unit_code"], ["units.code"], name=op.f("fk_offline_grants_unit_code_units")
        ),
        sa.ForeignKeyConstraint(
            ["granted_by"], ["staff.id"], name=op.f("fk_offline_grants_granted_by_staff")
        ),
        sa.PrimaryKeyConstraint("unit_code", name=op.f("pk_offline_grants")),
    )
    op.create_table(
        "offline_generations",
        sa.Column("generation", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("salt", sa.String(length=32), nullable=False),
        sa.Column("started_version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.PrimaryKeyConstraint("generation", name=op.f("pk_offline_generations")),
    )


def downgrade() -> None:
    op.drop_table("offline_generations")
    op.drop_table("offline_grants")
