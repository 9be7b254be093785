"""units: webhook settings and signing secrets (issue 18)

Random per-unit webhook secrets (sealed), kept webhook messages (the `Webhook-Id` of a delivery,
its exact body for retries and resends), and the message a failing cursor is retrying. Units
onboarded before this revision have no secret row: their deliveries stay signed with the secret
derived from the service secret (what they were given) until they roll it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import idguard.db.types

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UTC = idguard.db.types.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "unit_webhook_secrets",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("unit_code", sa.String(length=32), nullable=False),
        sa.Column("sealed", sa.String(length=200), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("expires_at", _UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["unit_code"], ["units.code"], name=op.f("fk_unit_webhook_secrets_unit_code_units")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unit_webhook_secrets")),
    )
    with op.batch_alter_table("unit_webhook_secrets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_unit_webhook_secrets_unit_code"), ["unit_code"], unique=False)

    op.create_table(
        "webhook_messages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("unit_code", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("last_cursor", sa.BigInteger(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", _UTC, nullable=False),
        sa.Column("delivered_at", _UTC, nullable=True),
        sa.ForeignKeyConstraint(
            ["unit_code"], ["units.code"], name=op.f("fk_webhook_messages_unit_code_units")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_messages")),
    )
    with op.batch_alter_table("webhook_messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_webhook_messages_unit_code"), ["unit_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_webhook_messages_created_at"), ["created_at"], unique=False)

    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("message_id", sa.Uuid(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_webhook_deliveries_message_id_webhook_messages"),
            "webhook_messages",
            ["message_id"],
            ["id"],
        )
        batch_op.create_index("ix_webhook_deliveries_at", ["at"], unique=False)
    with op.batch_alter_table("webhook_cursors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_message", sa.Uuid(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_cursors", schema=None) as batch_op:
        batch_op.drop_column("pending_message")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_deliveries_at")
        batch_op.drop_constraint(
            batch_op.f("fk_webhook_deliveries_message_id_webhook_messages"), type_="foreignkey"
        )
        batch_op.drop_column("message_id")
    with op.batch_alter_table("webhook_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_messages_created_at"))
        batch_op.drop_index(batch_op.f("ix_webhook_messages_unit_code"))
    op.drop_table("webhook_messages")
    with op.batch_alter_table("unit_webhook_secrets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_unit_webhook_secrets_unit_code"))
    op.drop_table("unit_webhook_secrets")
