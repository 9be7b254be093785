"""Citizens' own view (公民): accounts and their activation codes, published loss declarations
(遗失声明), one-trip travel certificates (临时身份证明) and the checks made of them.

Also the index that finds a citizen's own checks in the check log (`checks`, verification's table):
by the keyed hash of the id number, newest first.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from idguard.db.base import Base
from idguard.db.types import str_enum
from idguard.verification.models import Check


class TravelPurpose(StrEnum):
    """What a one-trip certificate is good for; the checking unit's sector must agree."""

    RAIL = "rail"
    AIR = "air"
    LODGING = "lodging"


class CitizenAccount(Base):
    """A citizen's own account: one per person, opened with an activation code from a counter."""

    __tablename__ = "citizen_accounts"
    person_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("persons.id"), primary_key=True)
    password_hash: Mapped[str] = mapped_column(sa.String(200))
    # TOTP secret sealed (AES-GCM, idguard.core.sealing); `totp_enabled` once confirmed with a code.
    totp_secret: Mapped[str | None] = mapped_column(sa.String(200))
    totp_enabled: Mapped[bool] = mapped_column(default=False)
    totp_last_step: Mapped[int | None] = mapped_column(sa.BigInteger)  # a code is accepted once
    # Raised by every activation (a password reset at a counter): older tokens stop at once.
    token_version: Mapped[int] = mapped_column(default=1)
    activated_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class ActivationCode(Base):
    """A one-use activation code printed on a counter receipt; kept only as a keyed hash."""

    __tablename__ = "citizen_activation_codes"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    person_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("persons.id"), index=True)
    code_hash: Mapped[str] = mapped_column(sa.String(64))
    issued_by: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("staff.id"))
    office: Mapped[str | None] = mapped_column(sa.ForeignKey("offices.code"))
    issued_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]
    # A newer code for the same person replaces this one.
    withdrawn_at: Mapped[dt.datetime | None]


class LossDeclaration(Base):
    """遗失声明: a public, Ed25519-signed notice that a reported card is void. `payload` is the
    exact canonical JSON that was signed (citizens/declarations.py); it is served as it is."""

    __tablename__ = "loss_declarations"
    declaration_no: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    card_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("cards.id"), unique=True)
    person_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("persons.id"), index=True)
    published_at: Mapped[dt.datetime]
    key_id: Mapped[str] = mapped_column(sa.String(16))
    payload: Mapped[str] = mapped_column(sa.Text)
    signature: Mapped[str] = mapped_column(sa.String(100))


class TravelCertificate(Base):
    """临时身份证明: issued by station, airport and hotel-district police for one journey or stay
    on one day, to a person who cannot present a valid card."""

    __tablename__ = "travel_certificates"
    certificate_no: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    person_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("persons.id"), index=True)
    purpose: Mapped[TravelPurpose] = mapped_column(str_enum(TravelPurpose, "travel_purpose"))
    valid_on: Mapped[dt.date]
    office: Mapped[str] = mapped_column(sa.ForeignKey("offices.code"))
    issued_by: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("staff.id"))
    issued_at: Mapped[dt.datetime]
    fingerprint_matched: Mapped[bool | None]  # None: the person has no registered fingers


class CertificateCheck(Base):
    """Which checks of the check log were checks of a travel certificate (the holder's view says so)."""

    __tablename__ = "certificate_checks"
    check_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    certificate_no: Mapped[str] = mapped_column(
        sa.ForeignKey("travel_certificates.certificate_no"), index=True
    )


# A citizen's checks: every check of their id number, newest first, found by the keyed hash
# (GET /me/checks). Declared here, on verification's table, because this feature is the reader
# that needs it; (id_hash, at, id) answers the page in index order with no sort.
ix_checks_id_hash_at = sa.Index("ix_checks_id_hash_at_id", Check.id_hash, Check.at, Check.id)
