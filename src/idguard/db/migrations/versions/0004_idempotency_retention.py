"""idempotency keys: sealed answers, kept 24 hours

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 06:20:00

Stored answers were kept in the clear and forever. From now on they are sealed (idguard.uow) and
purged after IDEMPOTENCY_TTL; the answers stored before cannot be sealed here (the key is the
service's, not the migration's), so they are dropped: a retry of a request answered before the
upgrade acts again instead of replaying — the same as a retry after the 24-hour window.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DELETE FROM idempotency_keys")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_idempotency_keys_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_created_at"))
