"""Units' API keys in memory, for checking a key on every request without a database trip.

Reloaded whenever the `units` registry version moves (any onboarding, rotation or revocation),
which every worker polls with the ledger (see follower.py). Comparison is constant-time, and an
unknown key costs the same as a wrong one: both hash the presented key and compare it against a
stored (or dummy) digest.

A suspended unit's keys stay in the ring (they are not revoked): `identify` still knows them, so
the request dependency can answer 401 saying the unit is suspended, with the note a higher
feature provides (`suspension_notes`, installed by accountability: the case and how to appeal).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hmac
import threading
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.verification.harvesting import SUSPECTED_RATE
from idguard.verification.models import Unit, UnitKey
from idguard.verification.rules import UnitStatus, hash_key, key_prefix

_DUMMY_DIGEST = hash_key("idg_no-such-key-000000000000000000000000")


@dataclass(frozen=True, slots=True)
class UnitView:
    code: str
    name: str
    purposes: frozenset[str]
    rate_limit: int
    active: bool
    webhook_url: str | None
    harvesting_suspected: bool = False  # then `rate_limit` is harvesting.SUSPECTED_RATE
    suspension_note: str | None = None  # while suspended: why, and how to appeal


@dataclass(frozen=True, slots=True)
class _Key:
    digest: str
    unit_code: str
    expires_at: dt.datetime | None


class KeyRing:
    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}
        self._units: dict[str, UnitView] = {}
        self._lock = threading.Lock()
        self.version = -1
        # {unit code: note} for suspended units, read at every reload (accountability installs it).
        self.suspension_notes: Callable[[Session], dict[str, str]] | None = None

    def reload(self, session: Session, version: int) -> None:
        keys = {
            k.prefix: _Key(k.key_hash, k.unit_code, k.expires_at)
            for k in session.scalars(sa.select(UnitKey).where(UnitKey.revoked_at.is_(None)))
        }
        units = {
            u.code: UnitView(
                u.code,
                u.name,
                frozenset(u.purposes),
                u.rate_limit if u.harvesting_suspected_at is None else min(u.rate_limit, SUSPECTED_RATE),
                u.status is UnitStatus.ACTIVE,
                u.webhook_url,
                u.harvesting_suspected_at is not None,
            )
            for u in session.scalars(sa.select(Unit))
        }
        if self.suspension_notes is not None and any(not u.active for u in units.values()):
            notes = self.suspension_notes(session)
            units = {
                code: u if u.active else dataclasses.replace(u, suspension_note=notes.get(code))
                for code, u in units.items()
            }
        with self._lock:
            self._keys, self._units, self.version = keys, units, version

    # -- for verifier nodes without a database (scaleout/, issue 15): the relay ships the ring's
    # state on the ledger stream, and each node installs it.

    def state(self) -> tuple[list[tuple[str, str, str, dt.datetime | None]], list[UnitView]]:
        """The live keys (prefix, digest, unit code, expiry) and the units, as last reloaded."""
        with self._lock:
            keys = [(p, k.digest, k.unit_code, k.expires_at) for p, k in self._keys.items()]
            return keys, list(self._units.values())

    def install(
        self, keys: list[tuple[str, str, str, dt.datetime | None]], units: list[UnitView], version: int
    ) -> None:
        """Replace the ring's keys and units with `state()`'s of another process."""
        ring = {prefix: _Key(digest, code, expires) for prefix, digest, code, expires in keys}
        views = {u.code: u for u in units}
        with self._lock:
            self._keys, self._units, self.version = ring, views, version

    def authenticate(self, presented: str, now: dt.datetime) -> UnitView | None:
        """The active unit whose live key `presented` is; None otherwise (the hot path: inline)."""
        entry = self._keys.get(key_prefix(presented))
        expected = entry.digest if entry is not None else _DUMMY_DIGEST
        matches = hmac.compare_digest(hash_key(presented), expected)
        if entry is None or not matches:
            return None
        if entry.expires_at is not None and entry.expires_at <= now:
            return None
        unit = self._units.get(entry.unit_code)
        return unit if unit is not None and unit.active else None

    def identify(self, presented: str, now: dt.datetime) -> UnitView | None:
        """The unit whose live key `presented` is, active or suspended; None for no such key."""
        entry = self._keys.get(key_prefix(presented))
        expected = entry.digest if entry is not None else _DUMMY_DIGEST
        matches = hmac.compare_digest(hash_key(presented), expected)
        if entry is None or not matches:
            return None
        if entry.expires_at is not None and entry.expires_at <= now:
            return None
        return self._units.get(entry.unit_code)

    def unit(self, code: str) -> UnitView | None:
        return self._units.get(code)

    def units(self) -> list[UnitView]:
        return list(self._units.values())
