"""citizens accounts, declarations and certificates

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import idguard.db.types

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "citizen_accounts",
        sa.Column("person_id", sa.Uuid(), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("totp_secret", sa.String(length=200), nullable=True),
        sa.Column("totp_enabled", sa.Boolean(), nullable=False),
        sa.Column("totp_last_step", sa.BigInteger(), nullable=True),
        sa.Column("token_version", sa.Integer(), nullable=False),
        sa.Column("activated_at", idguard.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", idguard.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["person_id"], ["persons.id"], name=op.f("fk_citizen_accounts_person_id_persons")
        ),
        sa.PrimaryKeyConstraint("person_id", name=op.f("pk_citizen_accounts")),
    )
    op.create_table(
        "citizen_activation_codes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("person_id", sa.Uuid(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("issued_by", sa.Uuid(), nullable=False),
        sa.Column("office", sa.String(length=12), nullable=True),
        sa.Column("issued_at", idguard.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", idguard.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", idguard.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("withdrawn_at", idguard.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["issued_by"], ["staff.id"], name=op.f("fk_citizen_activation_codes_issued_by_staff")
        ),
        sa.ForeignKeyConstraint(
            ["office"], ["offices.code"], name=op.f("fk_citizen_activation_codes_office_offices")
        ),
        sa.ForeignKeyConstraint(
            ["person_id"], ["persons.id"], name=op.f("fk_citizen_activation_codes_person_id_persons")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_citizen_activation_codes")),
    )
    with op.batch_alter_table("citizen_activation_codes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_citizen_activation_codes_person_id"), ["person_id"], unique=False
        )
    op.create_table(
        "loss_declarations",
        sa.Column("declaration_no", sa.String(length=32), nullable=False),
        sa.Column("card_id", sa.Uuid(), nullable=False),
        sa.Column("person_id", sa.Uuid(), nullable=False),
        sa.Column("published_at", idguard.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("signature", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name=op.f("fk_loss_declarations_card_id_cards")),
        sa.ForeignKeyConstraint(
            ["person_id"], ["persons.id"], name=op.f("fk_loss_declarations_person_id_persons")
        ),
        sa.PrimaryKeyConstraint("declaration_no", name=op.f("pk_loss_declarations")),
        sa.UniqueConstraint("card_id", name=op.f("uq_loss_declarations_card_id")),
    )
    with op.batch_alter_table("loss_declarations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_loss_declarations_person_id"), ["person_id"], unique=False)
    op.create_table(
        "travel_certificates",
        sa.Column("certificate_no", sa.String(length=32), nullable=False),
        sa.Column("person_id", sa.Uuid(), nullable=False),
        sa.Column(
            "purpose",
            sa.Enum(
                "rail",
                "air",
                "lodging",
                name="travel_purpose",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("valid_on", sa.Date(), nullable=False),
        sa.Column("office", sa.String(length=12), nullable=False),
        sa.Column("issued_by", sa.Uuid(), nullable=False),
        sa.Column("issued_at", idguard.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("fingerprint_matched", sa.Boolean(), nullable=True),
        sa.ForeignKeyConstraint(
            ["issued_by"], ["staff.id"], name=op.f("fk_travel_certificates_issued_by_staff")
        ),
        sa.ForeignKeyConstraint(
            ["office"], ["offices.code"], name=op.f("fk_travel_certificates_office_offices")
        ),
        sa.ForeignKeyConstraint(
            ["person_id"], ["persons.id"], name=op.f("fk_travel_certificates_person_id_persons")
        ),
        sa.PrimaryKeyConstraint("certificate_no", name=op.f("pk_travel_certificates")),
    )
    with op.batch_alter_table("travel_certificates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_travel_certificates_person_id"), ["person_id"], unique=False)
    op.create_table(
        "certificate_checks",
        sa.Column("check_id", sa.Uuid(), nullable=False),
        sa.Column("certificate_no", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["certificate_no"],
            ["travel_certificates.certificate_no"],
            name=op.f("fk_certificate_checks_certificate_no_travel_certificates"),
        ),
        sa.PrimaryKeyConstraint("check_id", name=op.f("pk_certificate_checks")),
    )
    with op.batch_alter_table("certificate_checks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_certificate_checks_certificate_no"), ["certificate_no"], unique=False
        )
    # A citizen's own checks, newest first (GET /me/checks): by keyed hash, then time and id.
    with op.batch_alter_table("checks", schema=None) as batch_op:
        batch_op.create_index("ix_checks_id_hash_at_id", ["id_hash", "at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("checks", schema=None) as batch_op:
        batch_op.drop_index("ix_checks_id_hash_at_id")
    with op.batch_alter_table("certificate_checks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_certificate_checks_certificate_no"))
    op.drop_table("certificate_checks")
    with op.batch_alter_table("travel_certificates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_travel_certificates_person_id"))
    op.drop_table("travel_certificates")
    with op.batch_alter_table("loss_declarations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_loss_declarations_person_id"))
    op.drop_table("loss_declarations")
    with op.batch_alter_table("citizen_activation_codes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_citizen_activation_codes_person_id"))
    op.drop_table("citizen_activation_codes")
    op.drop_table("citizen_accounts")
