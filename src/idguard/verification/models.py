"""Networked verification's tables (联网核查): units and their keys, the check log, watches and
webhook delivery."""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from idguard.db.base import Base
from idguard.db.types import str_enum
from idguard.registry.sealed import Sealed, track
from idguard.verification.rules import UnitStatus


class Unit(Base):
    """An ID-using unit (用证单位): a bank branch network, a hotel chain, a railway."""

    __tablename__ = "units"
    code: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    sector: Mapped[str] = mapped_column(sa.String(40))
    purposes: Mapped[list[str]] = mapped_column(sa.JSON)
    rate_limit: Mapped[int] = mapped_column(doc="checks per second across the service")
    status: Mapped[UnitStatus] = mapped_column(str_enum(UnitStatus, "unit_status"))
    webhook_url: Mapped[str | None] = mapped_column(sa.String(300))
    # Set when its checks looked like harvesting (verification/harvesting.py): the unit is
    # throttled to harvesting.SUSPECTED_RATE until a supervisor clears it.
    harvesting_suspected_at: Mapped[dt.datetime | None]
    harvesting_reason: Mapped[str | None] = mapped_column(sa.String(200))
    # Why a supervisor last suspended or reinstated it: free text, sealed at rest
    # (registry/sealed.py, migration 0014); the audit entry names only the unit.
    status_reason = Sealed[str | None]()
    status_reason_sealed: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    seal_key: Mapped[str | None] = mapped_column(sa.String(16))
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]


class UnitKey(Base):
    """An API key, stored as its prefix (for lookup) and a SHA-256 of the whole key. Keys are
    32 random bytes, so a fast hash is enough; the key itself is shown once and never stored."""

    __tablename__ = "unit_keys"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    unit_code: Mapped[str] = mapped_column(sa.ForeignKey("units.code"), index=True)
    prefix: Mapped[str] = mapped_column(sa.String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime | None] = mapped_column(doc="set when rotated: the grace period's end")
    revoked_at: Mapped[dt.datetime | None]


class UnitWebhookSecret(Base):
    """A secret that signs the unit's webhook deliveries: 32 random bytes per unit (never derived
    from the service secret), sealed at rest (AES-GCM, core/sealing.py) because the sender needs
    it in the clear to sign. Rolling it sets the previous ones' `expires_at` to the overlap's end:
    until then every delivery carries a signature under each (verification/units.py)."""

    __tablename__ = "unit_webhook_secrets"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    unit_code: Mapped[str] = mapped_column(sa.ForeignKey("units.code"), index=True)
    sealed: Mapped[str] = mapped_column(sa.String(200))
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime | None] = mapped_column(doc="set when rolled: the overlap's end")


class RegistryVersion(Base):
    """Counters the verification workers poll besides the ledger: `units` moves on any unit or
    key change, so a revoked key stops working on every worker within one poll."""

    __tablename__ = "registry_versions"
    name: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    version: Mapped[int] = mapped_column(sa.BigInteger)


class Check(Base):
    """核查记录: one row per check. The id number is kept only masked and as a keyed hash
    (HMAC-SHA256 with the service secret) so a citizen's own checks can be found later."""

    __tablename__ = "checks"
    # The key is (id, at): on PostgreSQL the table is partitioned by month on `at` (migration
    # 0013, runtime/partitions.py), and a partitioned table's key must hold its partition column.
    # Both are fixed when the check is made (and journaled), so a check written twice has the same
    # (id, at) and `ON CONFLICT (id, at) DO NOTHING` skips it exactly (runtime/checklog.py).
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    unit_code: Mapped[str] = mapped_column(sa.ForeignKey("units.code"))
    operator: Mapped[str] = mapped_column(sa.String(64))
    purpose: Mapped[str] = mapped_column(sa.String(40))
    at: Mapped[dt.datetime] = mapped_column(primary_key=True)
    result: Mapped[str] = mapped_column(sa.String(10))
    reason: Mapped[str | None] = mapped_column(sa.String(20))
    id_masked: Mapped[str] = mapped_column(sa.String(18))
    id_hash: Mapped[str] = mapped_column(sa.String(64), index=True)
    watch: Mapped[bool]
    fingerprint_match: Mapped[bool | None]  # the person-card comparison's verdict, when one was made
    # The answer's alerts, comma-joined in a fixed order (index.ALERT_ORDER), NULL when none:
    # accountability classifies `ignored_alert` by `alerts IS NOT NULL`.
    alerts: Mapped[str | None] = mapped_column(sa.String(60))

    __table_args__ = (
        sa.Index("ix_checks_unit_code_at", "unit_code", "at"),
        {"postgresql_partition_by": "RANGE (at)"},  # one partition per UTC month
    )


class Watch(Base):
    """A unit's subscription to a card it checked with `watch: true`; it hears of ledger events
    on that card after `since_seq`."""

    __tablename__ = "watches"
    unit_code: Mapped[str] = mapped_column(sa.ForeignKey("units.code"), primary_key=True)
    card_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("cards.id"), primary_key=True, index=True)
    check_id: Mapped[uuid.UUID]
    since_seq: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[dt.datetime]


class WebhookDelivery(Base):
    """The delivery log of webhook notifications: every attempt and its answer (the next try is
    on the unit's WebhookCursor)."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    unit_code: Mapped[str] = mapped_column(sa.ForeignKey("units.code"), index=True)
    cursor: Mapped[int] = mapped_column(sa.BigInteger)
    attempt: Mapped[int]
    at: Mapped[dt.datetime]
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(sa.String(200))
    delivered: Mapped[bool]
    # The message this attempt carried (its id is the `Webhook-Id` header); NULL for attempts
    # logged before messages were kept.
    message_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("webhook_messages.id"))

    # The retention purge (runtime/webhooks.py) finds old attempts by time.
    __table_args__ = (sa.Index("ix_webhook_deliveries_at", "at"),)


class WebhookMessage(Base):
    """One webhook message (a delivery): its body exactly as POSTed, kept so that a retry or a
    resend carries the same bytes under the same id (`Webhook-Id`), which a receiver can
    deduplicate on. A notification's body holds cursors, check ids, statuses and times; a case
    notice's holds the supervisor's text, which may name people: every body is sealed at rest
    (registry/sealed.py, migration 0014), bound to the message id the constructor sets."""

    __tablename__ = "webhook_messages"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    unit_code: Mapped[str] = mapped_column(sa.ForeignKey("units.code"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(16), doc="notifications | cases | test")
    last_cursor: Mapped[int | None] = mapped_column(sa.BigInteger, doc="the last item's cursor")
    body = Sealed[str]()
    body_sealed: Mapped[bytes] = mapped_column(sa.LargeBinary)
    seal_key: Mapped[str | None] = mapped_column(sa.String(16))
    created_at: Mapped[dt.datetime] = mapped_column(index=True, doc="the retention purge's key")
    delivered_at: Mapped[dt.datetime | None]


class WebhookCursor(Base):
    """How far each unit's webhook has been delivered (the ledger seq of the last notification)."""

    __tablename__ = "webhook_cursors"
    unit_code: Mapped[str] = mapped_column(sa.ForeignKey("units.code"), primary_key=True)
    delivered_seq: Mapped[int] = mapped_column(sa.BigInteger)
    next_attempt_at: Mapped[dt.datetime | None]
    failures: Mapped[int]
    # The message being retried: a failed batch is sent again as the same message (same id, same
    # body) until it is delivered, even if more notifications arrived meanwhile.
    pending_message: Mapped[uuid.UUID | None]


class PersonFlags(Base):
    """What a check of a person's cards must warn about (the verify answer's `alerts`), kept
    by the watchlist (watchlist/blacklist.py, watchlist/protection.py) and read by every worker's
    index with the person's cards when the ledger moves (a listing, lifting or protection event
    on each card: registry/lifecycle.WATCHLIST_EVENTS). A person without a row has no flags."""

    __tablename__ = "person_flags"
    person_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("persons.id"), primary_key=True)
    blacklisted: Mapped[bool] = mapped_column(default=False)
    # The listing's last day (China Standard Time), inclusive; NULL: until lifted. The index
    # stops answering `blacklisted` the day after, without waiting for anything to run.
    blacklisted_until: Mapped[dt.date | None]
    person_check_required: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[dt.datetime]


track(Unit, WebhookMessage)  # sealed free text (registry/sealed.py)
