"""The server's side of the offline set: the universe and the changes read from the registry, the
snapshot a worker keeps (rebuilt when old), and the signed files the routes send.

The version of a set is a ledger position (registry/ledger.py: every status change and every
issue is an event with a gap-free `seq`, committed in `seq` order). A snapshot at version V holds
exactly the cards valid after event V; a delta from A to B holds each card whose validity after
event B differs from after event A.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.config import Settings
from idguard.core.clock import Clock, today_cst
from idguard.offline import fuse, sets
from idguard.offline.models import OfflineGeneration
from idguard.offline.signing import DEVELOPMENT_KEY_ID, SigningKeys, parse_keys
from idguard.registry.lifecycle import CardStatus
from idguard.registry.models import Card, LedgerEvent, LedgerHead

log = logging.getLogger("idguard.offline")
_READ_ATTEMPTS = 10
_CHUNK = 1000


class Gone(Exception):
    """The changes since that version are no longer served as a delta: fetch a snapshot."""


class AheadOfRegistry(Exception):
    """A version the registry has not reached."""


def signing_keys(settings: Settings) -> SigningKeys:
    """IDGUARD_OFFLINE_KEYS, or (development, test) one key derived from the service secret."""
    if settings.offline_keys is not None:
        return SigningKeys(parse_keys(settings.offline_keys.get_secret_value()))
    return SigningKeys({DEVELOPMENT_KEY_ID: settings.derived_key("offline-set-signing")})


def head(session: Session) -> int:
    return int(session.scalar(sa.select(LedgerHead.seq).where(LedgerHead.id == 1)) or 0)


def generation(session: Session) -> OfflineGeneration | None:
    return session.scalars(
        sa.select(OfflineGeneration).order_by(OfflineGeneration.generation.desc()).limit(1)
    ).first()


def start_generation(session: Session, *, version: int, now: dt.datetime) -> OfflineGeneration:
    """A new generation with a fresh random salt, from `version` on."""
    current = generation(session)
    row = OfflineGeneration(
        generation=1 if current is None else current.generation + 1,
        salt=os.urandom(16).hex(),
        started_version=version,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True, slots=True)
class Universe:
    keys: list[bytes]
    valid: list[bool]
    version: int


def read_universe(session: Session, *, today: dt.date) -> Universe:
    """Every issued card's key and whether it is valid (stored valid, not expired `today`), at
    one ledger position: the head is read before and after the cards, and the read repeated
    if it moved (no status change or issue committed in between, so the cards are as at it)."""
    for _ in range(_READ_ATTEMPTS):
        before = head(session)
        keys: list[bytes] = []
        valid: list[bool] = []
        rows = session.execute(
            sa.select(Card.id_number, Card.chip_serial, Card.expires_on, Card.status).execution_options(
                yield_per=100_000
            )
        )
        for id_number, chip_serial, expires_on, status in rows:
            key = sets.card_key(id_number, chip_serial, expires_on)
            if key is None:  # pragma: no cover - every stored card has an ASCII key
                continue
            keys.append(key)
            valid.append(status is CardStatus.VALID and (expires_on is None or expires_on >= today))
        if head(session) == before:
            return Universe(keys, valid, before)
        session.rollback()  # read the next attempt in a new transaction
    raise RuntimeError("the registry kept changing while the offline set was read; try again")


def changes(session: Session, *, after: int, until: int, limit: int) -> list[sets.Change]:
    """Each card whose validity after event `until` differs from after event `after`. Gone when
    more than `limit` events lie in between (a snapshot is then smaller than the delta)."""
    n = session.scalar(sa.select(sa.func.count()).where(LedgerEvent.seq > after, LedgerEvent.seq <= until))
    if (n or 0) > limit:
        raise Gone(f"more than {limit} registry events since version {after}: fetch a snapshot")
    first: dict[object, CardStatus | None] = {}
    last: dict[object, CardStatus] = {}
    rows = session.execute(
        sa.select(LedgerEvent.card_id, LedgerEvent.status_before, LedgerEvent.status_after)
        .where(LedgerEvent.seq > after, LedgerEvent.seq <= until)
        .order_by(LedgerEvent.seq)
    )
    for card_id, before, after_status in rows:
        if card_id not in first:
            first[card_id] = before
        last[card_id] = after_status
    changed = [c for c in last if (first[c] is CardStatus.VALID) != (last[c] is CardStatus.VALID)]
    out: list[sets.Change] = []
    for start in range(0, len(changed), _CHUNK):
        chunk = changed[start : start + _CHUNK]
        for card_id, id_number, chip_serial, expires_on in session.execute(
            sa.select(Card.id, Card.id_number, Card.chip_serial, Card.expires_on).where(Card.id.in_(chunk))
        ):
            key = sets.card_key(id_number, chip_serial, expires_on)
            if key is not None:
                out.append(sets.Change(key, last[card_id] is CardStatus.VALID))
    return out


@dataclass(frozen=True, slots=True)
class SignedFile:
    data: bytes
    version: int
    generation: int


class OfflineService:
    """One per worker (app.state.offline): keeps the last snapshot it built, rebuilt when it is
    older than `snapshot_seconds` or `max_delta_events` events behind (a unit holding it catches
    up with deltas either way)."""

    def __init__(self, sessions: sessionmaker[Session], clock: Clock, settings: Settings) -> None:
        self._sessions = sessions
        self._clock = clock
        self.keys = signing_keys(settings)
        self.k = settings.offline_k
        self.max_delta_events = settings.offline_max_delta_events
        self.snapshot_seconds = settings.offline_snapshot_seconds
        self._lock = threading.Lock()
        self._snapshot: SignedFile | None = None
        self._built_at = 0.0
        self.last_build_seconds = 0.0

    def snapshot(self) -> SignedFile:
        with self._lock:
            cached = self._snapshot
            if cached is not None and time.monotonic() - self._built_at < self.snapshot_seconds:
                with self._sessions() as session:
                    behind = head(session) - cached.version
                if behind <= self.max_delta_events // 2:
                    return cached
            self._snapshot = self._build()
            self._built_at = time.monotonic()
            return self._snapshot

    def _generation(self, version: int) -> OfflineGeneration:
        with self._sessions() as session:
            current = generation(session)
        if current is not None:
            return current
        try:
            with uow.transaction(self._sessions) as session:
                return start_generation(session, version=version, now=self._clock.now())
        except IntegrityError:  # another worker started it first
            with self._sessions() as session:
                current = generation(session)
            if current is None:  # pragma: no cover - the conflicting insert committed
                raise
            return current

    def _build(self) -> SignedFile:
        started = time.monotonic()
        now = self._clock.now()
        with self._sessions() as session:
            universe = read_universe(session, today=today_cst(now))
        keys = fuse.key_array(universe.keys)
        valid = np.array(universe.valid, dtype=bool)
        for _ in range(3):
            current = self._generation(universe.version)
            try:
                built = sets.build(
                    keys,
                    valid,
                    salt=bytes.fromhex(current.salt),
                    k=self.k,
                    version=universe.version,
                    generation=current.generation,
                    built_at=now,
                    today=today_cst(now),
                )
                break
            except sets.HashCollision:
                log.warning("offline set: two cards share a hash; starting a new generation")
                with uow.transaction(self._sessions) as session:
                    start_generation(session, version=universe.version, now=now)
        else:  # pragma: no cover - three 2^-64 events in a row
            raise RuntimeError("the offline set could not be built")
        data = self.keys.sign_file(sets.SNAPSHOT_MAGIC, built.header, built.body)
        self.last_build_seconds = time.monotonic() - started
        log.info(
            "offline set built: %d cards, %d valid, version %d, %d bytes in %.1f s",
            built.header["universe"],
            built.header["valid"],
            universe.version,
            len(data),
            self.last_build_seconds,
        )
        return SignedFile(data, universe.version, current.generation)

    def delta(self, after: int) -> SignedFile:
        """The signed delta from `after` to the registry's head. Gone when `after` is of an
        older generation or too far behind; AheadOfRegistry when past the head."""
        now = self._clock.now()
        with self._sessions() as session:
            current = generation(session)
            until = head(session)
            if after > until:
                raise AheadOfRegistry(f"version {after} is ahead of the registry (at {until})")
            if current is None or after < current.started_version:
                raise Gone(f"version {after} is of an older generation of the set: fetch a snapshot")
            found = changes(session, after=after, until=until, limit=self.max_delta_events)
        built = sets.build_delta(
            found,
            salt=bytes.fromhex(current.salt),
            generation=current.generation,
            from_version=after,
            to_version=until,
            built_at=now,
        )
        return SignedFile(
            self.keys.sign_file(sets.DELTA_MAGIC, built.header, built.body), until, current.generation
        )
