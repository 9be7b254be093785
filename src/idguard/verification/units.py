"""Onboarding ID-using units and managing their API keys."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.orm import Session

from idguard import uow
from idguard.core.errors import InvalidField, NotFound, RuleViolation
from idguard.core.grants import Actor, Permission
from idguard.core.sealing import Sealer, SealError
from idguard.db.common import AuditEntry
from idguard.verification.models import RegistryVersion, Unit, UnitKey, UnitWebhookSecret
from idguard.verification.rules import PURPOSES, UnitStatus, new_api_key

DEFAULT_ROTATION_GRACE = dt.timedelta(hours=24)
# How long the previous webhook secret keeps signing after a roll (docs/webhooks.md).
DEFAULT_WEBHOOK_OVERLAP = dt.timedelta(hours=24)
MAX_WEBHOOK_OVERLAP = dt.timedelta(days=7)
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix that marks the secret, not a secret
# The fields a supervisor may change after onboarding (PATCH /api/v1/units/{code}); `offline`
# is another feature's (a UnitFlag) and handled beside them.
MUTABLE_FIELDS = ("name", "purposes", "rate_limit", "webhook_url")


@dataclass(frozen=True, slots=True)
class IssuedKey:
    unit: Unit
    api_key: str  # shown once, never stored
    webhook_secret: str | None  # shown once, at onboarding only (a key rotation leaves it)


@dataclass(frozen=True, slots=True)
class RolledSecret:
    unit: Unit
    webhook_secret: str  # shown once; kept only sealed
    previous_expire_at: dt.datetime | None  # the overlap's end; None when nothing was rolled away


@dataclass(frozen=True, slots=True)
class UnitFlag:
    """A yes/no setting of a unit that a higher feature keeps in its own table (offline
    verification's `offline`: offline/grants.py). The units routes cannot import that feature
    (it sits above this one in the layers), so it registers itself in `app.state.unit_flags` at
    install and the routes set and show it in the same transaction as the unit's own fields."""

    assign: Callable[[Session, str, bool, Actor, dt.datetime], bool]  # returns the new value
    granted: Callable[[Session, Sequence[str]], frozenset[str]]  # the codes that have it


def legacy_webhook_secret(secret_key: str, unit_code: str) -> str:
    """The webhook secret units onboarded before secrets were random were given (derived from
    the service secret): it keeps signing their deliveries until they roll it."""
    return hmac.new(secret_key.encode(), f"webhook:{unit_code}".encode(), hashlib.sha256).hexdigest()


@functools.lru_cache(maxsize=4)
def secret_sealer(secret_key: str) -> Sealer:
    """Seals webhook secrets at rest, under a key of its own derived from the service secret
    (HKDF, like config.Settings.derived_key): a leaked database holds no usable secret."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"idguard/webhook-secrets/v1").derive(
        secret_key.encode()
    )
    return Sealer(key)


def _secret_context(unit_code: str, secret_id: object) -> str:
    return f"webhook-secret/{unit_code}/{secret_id}"


def _store_secret(
    session: Session,
    sealer: Sealer,
    unit_code: str,
    secret: str,
    now: dt.datetime,
    expires_at: dt.datetime | None = None,
) -> UnitWebhookSecret:
    row = UnitWebhookSecret(unit_code=unit_code, sealed="", created_at=now, expires_at=expires_at)
    session.add(row)
    session.flush()  # the id is in the sealing context: a sealed value moved to another row won't open
    row.sealed = sealer.seal(secret, context=_secret_context(unit_code, row.id))
    return row


def _new_webhook_secret() -> str:
    return WEBHOOK_SECRET_PREFIX + secrets.token_hex(32)


@dataclass(frozen=True, slots=True)
class SigningSecret:
    """One secret in the clear with its end (`None`: the current one), as the sender holds it."""

    secret: str
    created_at: dt.datetime
    expires_at: dt.datetime | None


def open_secrets(
    session: Session, *, secret_key: str, code: str, now: dt.datetime
) -> tuple[list[SigningSecret], int]:
    """The unit's secrets still live at `now`, opened (any order), and how many live ones did not
    open (sealed under another IDGUARD_SECRET_KEY, or altered: the unit must roll). A unit with no
    stored secret (onboarded before they were random) has its legacy derived one, with no end.

    A secret that ended stays ended (a roll only ever brings an end closer, and bumps the units
    version), so a caller may keep the result and filter it by time with `in_use` until the units
    version moves (runtime/webhooks.py does)."""
    rows = session.scalars(sa.select(UnitWebhookSecret).where(UnitWebhookSecret.unit_code == code)).all()
    if not rows:
        return [
            SigningSecret(
                legacy_webhook_secret(secret_key, code), dt.datetime.min.replace(tzinfo=dt.UTC), None
            )
        ], 0
    sealer = secret_sealer(secret_key)
    opened: list[SigningSecret] = []
    unreadable = 0
    for row in rows:
        if row.expires_at is not None and row.expires_at <= now:
            continue  # ended: never opened again
        try:
            secret = sealer.open(row.sealed, context=_secret_context(code, row.id))
        except SealError:
            unreadable += 1
            continue
        opened.append(SigningSecret(secret, row.created_at, row.expires_at))
    return opened, unreadable


def in_use(secrets: Sequence[SigningSecret], now: dt.datetime) -> list[str]:
    """Those of `secrets` that sign at `now`, newest first: the current one (no end), then those
    rolled away, the latest-ending first (two rolls within one clock tick order the same way)."""
    live = sorted(
        (s for s in secrets if s.expires_at is None or s.expires_at > now),
        key=lambda s: (s.expires_at is None, s.expires_at or now, s.created_at),
        reverse=True,
    )
    return [s.secret for s in live]


def signing_secrets(session: Session, *, secret_key: str, code: str, now: dt.datetime) -> list[str]:
    """The secrets a delivery to the unit is signed with now, newest first: the current one, and
    during a roll's overlap the previous ones. Empty when none opens (IDGUARD_SECRET_KEY changed
    since they were sealed: the unit must roll its secret)."""
    return in_use(open_secrets(session, secret_key=secret_key, code=code, now=now)[0], now)


def _bump(session: Session) -> None:
    """Tell every verification worker that units or keys changed (they poll this counter, and
    are woken to apply it before the answer: uow.changed)."""
    version = session.execute(
        sa.update(RegistryVersion)
        .where(RegistryVersion.name == "units")
        .values(version=RegistryVersion.version + 1)
        .returning(RegistryVersion.version)
    ).scalar_one()
    uow.changed(session, units_version=int(version))


def _add_key(session: Session, unit_code: str, now: dt.datetime) -> str:
    key, prefix, digest = new_api_key()
    session.add(UnitKey(unit_code=unit_code, prefix=prefix, key_hash=digest, created_at=now))
    return key


def onboard(
    session: Session,
    *,
    actor: Actor | None,
    now: dt.datetime,
    secret_key: str,
    code: str,
    name: str,
    sector: str,
    purposes: list[str],
    rate_limit: int,
    webhook_url: str | None = None,
) -> IssuedKey:
    """Onboard a unit (supervisor only; `actor=None` is the CLI run by an operator)."""
    if actor is not None:
        actor.require(Permission.ONBOARD_UNITS)
    purposes = _check_purposes(purposes)
    if session.get(Unit, code) is not None:
        raise RuleViolation(f"unit {code} already exists")
    unit = Unit(
        code=code,
        name=name,
        sector=sector,
        purposes=purposes,
        rate_limit=rate_limit,
        status=UnitStatus.ACTIVE,
        webhook_url=webhook_url,
        created_at=now,
        updated_at=now,
    )
    session.add(unit)
    session.flush()
    key = _add_key(session, code, now)
    secret = _new_webhook_secret()
    _store_secret(session, secret_sealer(secret_key), code, secret, now)
    session.add(
        AuditEntry(at=now, staff_id=actor.staff_id if actor else None, action="unit.onboard", detail=code)
    )
    _bump(session)
    session.flush()
    return IssuedKey(unit=unit, api_key=key, webhook_secret=secret)


def suspect_harvesting(session: Session, *, now: dt.datetime, code: str, reason: str) -> bool:
    """Mark the unit suspected of harvesting (the verifier does, from its checks): every worker
    throttles it within a poll. Audited and logged for supervisors; False if already marked."""
    unit = session.get(Unit, code, with_for_update={"key_share": True})
    if unit is None or unit.harvesting_suspected_at is not None:
        return False
    unit.harvesting_suspected_at = now
    unit.harvesting_reason = reason[:200]
    unit.updated_at = now
    session.add(
        AuditEntry(
            at=now, staff_id=None, action="unit.harvesting_suspected", detail=f"{code}: {reason}"[:200]
        )
    )
    _bump(session)
    session.flush()
    return True


def clear_harvesting(session: Session, *, actor: Actor, now: dt.datetime, code: str) -> Unit:
    """A supervisor has looked into it: the unit's own rate applies again."""
    actor.require(Permission.ONBOARD_UNITS)
    unit = _unit(session, code)
    if unit.harvesting_suspected_at is None:
        raise RuleViolation(f"unit {code} is not suspected of harvesting")
    session.add(
        AuditEntry(
            at=now,
            staff_id=actor.staff_id,
            action="unit.harvesting_cleared",
            detail=f"{code}: was {unit.harvesting_reason}"[:200],
        )
    )
    unit.harvesting_suspected_at = None
    unit.harvesting_reason = None
    unit.updated_at = now
    _bump(session)
    session.flush()
    return unit


def _check_purposes(purposes: Sequence[str]) -> list[str]:
    unknown = sorted(set(purposes) - PURPOSES)
    if unknown:
        raise InvalidField("purposes", f"unknown purposes {unknown}; known: {sorted(PURPOSES)}")
    if not purposes:
        raise InvalidField("purposes", "a unit needs at least one purpose")
    return sorted(set(purposes))


def update_unit(
    session: Session, *, actor: Actor, now: dt.datetime, code: str, changes: Mapping[str, Any]
) -> tuple[Unit, list[str]]:
    """Change what a supervisor set at onboarding (PATCH /api/v1/units/{code}): `changes` holds
    only the fields sent, among MUTABLE_FIELDS (`webhook_url: None` removes the webhook). Returns
    the unit and the names of the fields whose value changed; a field set to the value it has
    changes nothing, and a request that changes nothing records nothing (a retry is harmless).
    Audited with the fields' names (not their values); every worker sees it within one poll."""
    actor.require(Permission.ONBOARD_UNITS)
    unknown = sorted(set(changes) - set(MUTABLE_FIELDS))
    if unknown:
        raise InvalidField(unknown[0], f"cannot be changed; changeable: {', '.join(MUTABLE_FIELDS)}")
    unit = session.get(Unit, code, with_for_update={"key_share": True})
    if unit is None:
        raise NotFound(f"no unit {code}")
    wanted = dict(changes)
    for name in ("name", "rate_limit", "purposes"):
        if name in wanted and wanted[name] is None:
            raise InvalidField(name, "cannot be null")
    if "purposes" in wanted:
        wanted["purposes"] = _check_purposes(list(wanted["purposes"]))
    changed = [name for name in MUTABLE_FIELDS if name in wanted and getattr(unit, name) != wanted[name]]
    if not changed:
        return unit, []
    for name in changed:
        setattr(unit, name, wanted[name])
    unit.updated_at = now
    session.add(
        AuditEntry(
            at=now,
            staff_id=actor.staff_id,
            action="unit.update",
            detail=f"{code}: {', '.join(changed)}"[:200],
        )
    )
    _bump(session)
    session.flush()
    return unit, changed


def roll_webhook_secret(
    session: Session,
    *,
    actor: Actor | None,
    now: dt.datetime,
    secret_key: str,
    code: str,
    overlap: dt.timedelta = DEFAULT_WEBHOOK_OVERLAP,
    by_unit: bool = False,
) -> RolledSecret:
    """A new random webhook secret, shown once. The secrets in use keep signing until
    `now + overlap` (each delivery then carries one signature per secret, newest first), so
    the unit can deploy the new one without rejecting a delivery. `actor` is a supervisor, or
    None for the unit itself (`by_unit`, its key already matched to `code`) or the CLI. Audited."""
    if actor is not None:
        actor.require(Permission.ONBOARD_UNITS)
    if not dt.timedelta(0) <= overlap <= MAX_WEBHOOK_OVERLAP:
        raise InvalidField("overlap_seconds", f"between 0 and {int(MAX_WEBHOOK_OVERLAP.total_seconds())}")
    unit = session.get(Unit, code, with_for_update={"key_share": True})
    if unit is None:
        raise NotFound(f"no unit {code}")
    sealer = secret_sealer(secret_key)
    end = now + overlap
    rows = session.scalars(sa.select(UnitWebhookSecret).where(UnitWebhookSecret.unit_code == code)).all()
    if not rows:
        # Onboarded before secrets were random: its derived secret overlaps like any other.
        _store_secret(session, sealer, code, legacy_webhook_secret(secret_key, code), unit.created_at, end)
    previous = None
    for row in rows:
        if row.expires_at is None or row.expires_at > end:
            row.expires_at = end
        if row.expires_at > now:
            previous = end
    if not rows:
        previous = end if overlap else None
    secret = _new_webhook_secret()
    _store_secret(session, sealer, code, secret, now)
    who = "unit" if by_unit else "supervisor" if actor is not None else "operator"
    session.add(
        AuditEntry(
            at=now,
            staff_id=actor.staff_id if actor else None,
            action="unit.webhook_secret_rolled",
            detail=f"{code}: by the {who}, overlap {int(overlap.total_seconds())} s"[:200],
        )
    )
    # Every worker's dispatcher keeps the unit's opened secrets until the units version moves
    # (runtime/webhooks.py): within one poll it signs with the new secret.
    _bump(session)
    session.flush()
    return RolledSecret(unit=unit, webhook_secret=secret, previous_expire_at=previous)


def list_units(session: Session, *, actor: Actor) -> list[Unit]:
    """Every unit, by code (supervisors, auditors, admins)."""
    actor.require(Permission.READ_UNITS)
    return list(session.scalars(sa.select(Unit).order_by(Unit.code)))


def _unit(session: Session, code: str) -> Unit:
    unit = session.get(Unit, code)
    if unit is None:
        raise NotFound(f"no unit {code}")
    return unit


def rotate_key(
    session: Session,
    *,
    actor: Actor | None,
    now: dt.datetime,
    secret_key: str,
    code: str,
    grace: dt.timedelta = DEFAULT_ROTATION_GRACE,
) -> IssuedKey:
    """A new key; the keys in use keep working until `now + grace`, then stop."""
    if actor is not None:
        actor.require(Permission.ONBOARD_UNITS)
    unit = _unit(session, code)
    live = session.scalars(
        sa.select(UnitKey).where(UnitKey.unit_code == code, UnitKey.revoked_at.is_(None))
    ).all()
    for old in live:
        if old.expires_at is None or old.expires_at > now + grace:
            old.expires_at = now + grace
    key = _add_key(session, code, now)
    session.add(
        AuditEntry(at=now, staff_id=actor.staff_id if actor else None, action="unit.rotate_key", detail=code)
    )
    _bump(session)
    session.flush()
    # The webhook secret is not shown again here: it is rolled on its own, with an overlap
    # (roll_webhook_secret), so a key rotation never changes what signs deliveries.
    return IssuedKey(unit=unit, api_key=key, webhook_secret=None)


def revoke_keys(session: Session, *, actor: Actor | None, now: dt.datetime, code: str) -> Unit:
    """Revoke every key of the unit, effective at once (a compromised key)."""
    if actor is not None:
        actor.require(Permission.ONBOARD_UNITS)
    unit = _unit(session, code)
    session.execute(
        sa.update(UnitKey)
        .where(UnitKey.unit_code == code, UnitKey.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    session.add(
        AuditEntry(at=now, staff_id=actor.staff_id if actor else None, action="unit.revoke_keys", detail=code)
    )
    _bump(session)
    session.flush()
    return unit


def suspend(session: Session, *, actor: Actor, now: dt.datetime, code: str, reason: str) -> Unit:
    """Suspend the unit (a supervisor's decision on an accountability case): every key of it
    stops on every worker within one poll of the `units` version, answering 401 with a problem
    detail that says so (routes/deps.py). Its keys are kept, not revoked: reinstating restores
    them. Audited."""
    actor.require(Permission.ONBOARD_UNITS)
    unit = session.get(Unit, code, with_for_update={"key_share": True})
    if unit is None:
        raise NotFound(f"no unit {code}")
    if unit.status is UnitStatus.SUSPENDED:
        raise RuleViolation(f"unit {code} is already suspended")
    unit.status = UnitStatus.SUSPENDED
    unit.status_reason = reason  # sealed at rest; the audit entry names only the unit
    unit.updated_at = now
    session.add(AuditEntry(at=now, staff_id=actor.staff_id, action="unit.suspend", detail=code))
    _bump(session)
    session.flush()
    return unit


def reinstate(session: Session, *, actor: Actor, now: dt.datetime, code: str, reason: str) -> Unit:
    """Lift a suspension: the unit's keys (those neither revoked nor expired) work again on every
    worker within one poll. Audited."""
    actor.require(Permission.ONBOARD_UNITS)
    unit = session.get(Unit, code, with_for_update={"key_share": True})
    if unit is None:
        raise NotFound(f"no unit {code}")
    if unit.status is not UnitStatus.SUSPENDED:
        raise RuleViolation(f"unit {code} is not suspended")
    unit.status = UnitStatus.ACTIVE
    unit.status_reason = reason
    unit.updated_at = now
    session.add(AuditEntry(at=now, staff_id=actor.staff_id, action="unit.reinstate", detail=code))
    _bump(session)
    session.flush()
    return unit
