"""Offline verification's tables (离线核查): which units may hold the offline set, and the
generations of the set's salt."""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from idguard.db.base import Base


class OfflineGrant(Base):
    """A unit granted `offline`: it may download the set of valid cards and its deltas, and
    upload the checks it made offline. A unit without a row gets 403 on those routes. (A table
    of its own rather than a column of `units`, which belongs to verification.)"""

    __tablename__ = "offline_grants"
    unit_code: Mapped[str] = mapped_column(sa.ForeignKey("units.code"), primary_key=True)
    granted_at: Mapped[dt.datetime]
    granted_by: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("staff.id"))


class OfflineGeneration(Base):
    """A generation of the offline set: the salt its key hashes use, from ledger position
    `started_version` on. Deltas are only served within one generation (a reader holding an
    older one gets 410 and fetches a snapshot). A new generation starts only when two issued
    cards' keys share a hash under the current salt (about n^2 / 2^65 for n cards)."""

    __tablename__ = "offline_generations"
    generation: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    salt: Mapped[str] = mapped_column(sa.String(32))  # 16 bytes, hex
    started_version: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[dt.datetime]
