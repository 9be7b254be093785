"""index data stored beside each finger (issue 10)

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-28 15:00:00

`fingerprints.index_data`: what the 1:N gallery files a finger by
(`biometrics.identification.index_data`: per cylinder its direction, list and int8 index vector,
~2.9 KB per finger), sealed with the template's vault key and bound to (card, finger, "index")
like the template, because it is derived from the minutiae. Nullable and not back-filled here:
a migration holds no vault keys, and a finger without it (enrolled before, or under another index
model) is filed from its template as before, only slower (docs/fingerprints.md, "Loading").
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("fingerprints") as batch:
        batch.add_column(sa.Column("index_data", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fingerprints") as batch:
        batch.drop_column("index_data")
