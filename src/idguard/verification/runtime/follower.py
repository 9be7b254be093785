"""Keeps a worker's verification index current by following the ledger.

At start-up the index is built from the cards table (after reading the ledger head, so nothing
committed meanwhile is missed: events after that head are replayed, and replaying is idempotent).
Then a thread polls every POLL_INTERVAL: one query reads the ledger head and the `units` version;
if the ledger moved, the new events are read in sequence order and their cards re-read and
upserted; if the units version moved, the key ring is reloaded.

Why polling and not LISTEN/NOTIFY: it works the same on SQLite and PostgreSQL, one cheap
indexed query per interval per worker, and the bound it gives (one interval plus a query) is
well inside the 100 ms target — see bench/verify/ for the measured propagation. Committed order
equals sequence order (registry/ledger.py), so reading `seq > last` never skips an event.

If the database becomes unreachable the index keeps answering; `age` says how long it has been
since the last successful poll, and the API reports it with every answer and in health.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard.core.sealing import KeyRing as DataKeys
from idguard.core.sealing import context_prefix
from idguard.registry import sealed
from idguard.registry.lifecycle import EventKind
from idguard.registry.models import Card, LedgerEvent, LedgerHead
from idguard.verification.index import BLACKLISTED, CHECK_REQUIRED, CardFacts, CardIndex
from idguard.verification.models import PersonFlags, RegistryVersion
from idguard.verification.runtime.keyring import KeyRing

log = logging.getLogger("idguard.follower")

POLL_INTERVAL = 0.02
BATCH = 5000
_FACTS = (
    Card.id_number,
    Card.id,  # with the key id: the name is sealed at rest and opened here (registry/sealed.py)
    Card.seal_key,
    Card.name_sealed,
    Card.issued_on,
    Card.expires_on,
    Card.chip_serial,
    Card.status,
    PersonFlags.blacklisted,
    PersonFlags.blacklisted_until,
    PersonFlags.person_check_required,
)
# The holder's alert flags come with each card (most persons have no PersonFlags row).
_WITH_FLAGS = sa.outerjoin(Card, PersonFlags, PersonFlags.person_id == Card.person_id)
# Told of each card a listing or a lifting touched, and of each new card of a listed holder:
# (card id, id number, listed now, the listing's last day). The verifier's blacklist gallery
# follows the ledger this way (verifier.BlacklistGallery).
ListingHook = Callable[[list[tuple[uuid.UUID, str, bool, Any]]], None]


def _facts(rows: Iterable[Any], ring: DataKeys) -> Iterator[CardFacts]:
    """Cards as the index keeps them. The name is opened in memory, only to be hashed by `pack`
    as before, so every answer is what it was with clear names."""
    openers: dict[str, Callable[[bytes, bytes], str]] = {}
    prefix = context_prefix("cards", "name")  # sealing_context, inlined: this runs per card
    for number, card_id, key_id, blob, issued_on, expires_on, chip, status, listed, until, required in rows:
        open_name = openers.get(key_id) or openers.setdefault(key_id, ring.opener(key_id))
        name = open_name(blob, prefix + card_id.bytes)
        flags = (BLACKLISTED if listed else 0) | (CHECK_REQUIRED if required else 0)
        yield CardFacts(number, name, issued_on, expires_on, chip, status, flags, until if listed else None)


_LISTING_EVENTS = frozenset({EventKind.BLACKLISTED, EventKind.BLACKLIST_ENDED})


class IndexFollower:
    def __init__(self, sessions: sessionmaker[Session], index: CardIndex, keyring: KeyRing) -> None:
        self._sessions = sessions
        self.index = index
        self.keyring = keyring
        self.seq = 0
        self.last_ok = 0.0  # time.monotonic() of the last successful poll
        self.loaded_in = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()
        self._last_warning = 0.0
        self._polling = threading.Lock()  # the thread and a request forcing a refresh
        self.on_listing: list[ListingHook] = []

    @property
    def age(self) -> float:
        """Seconds since the index was last known to be current."""
        return time.monotonic() - self.last_ok

    def load(self) -> None:
        started = time.monotonic()
        with self._sessions() as session:
            head = session.scalar(sa.select(LedgerHead.seq).where(LedgerHead.id == 1)) or 0
            version = session.scalar(
                sa.select(RegistryVersion.version).where(RegistryVersion.name == "units")
            )
            self.keyring.reload(session, version or 0)
            result = session.execute(
                sa.select(*_FACTS).select_from(_WITH_FLAGS).execution_options(yield_per=50_000)
            )
            self.index.load(_facts(result, sealed.ring_of(session)))
        self.seq = head
        self.poll()  # events committed while we were loading
        self.loaded_in = time.monotonic() - started
        log.info(
            "verification index ready: %d cards at seq %d in %.1f s",
            len(self.index),
            self.seq,
            self.loaded_in,
        )

    def poll(self) -> int:
        """Apply what changed since the last poll; return the number of events applied."""
        applied = 0
        with self._polling, self._sessions() as session:
            head, version = session.execute(
                sa.select(
                    sa.select(LedgerHead.seq).where(LedgerHead.id == 1).scalar_subquery(),
                    sa.select(RegistryVersion.version)
                    .where(RegistryVersion.name == "units")
                    .scalar_subquery(),
                )
            ).one()
            if version is not None and version != self.keyring.version:
                self.keyring.reload(session, version)
            while head is not None and self.seq < head:
                rows = session.execute(
                    sa.select(LedgerEvent.seq, LedgerEvent.event, Card.id, *_FACTS)
                    .select_from(_WITH_FLAGS)
                    .join(LedgerEvent, LedgerEvent.card_id == Card.id)
                    .where(LedgerEvent.seq > self.seq)
                    .order_by(LedgerEvent.seq)
                    .limit(BATCH)
                ).all()
                if not rows:
                    break
                listings = []
                cards = _facts((row[3:] for row in rows), sealed.ring_of(session))
                for row, card in zip(rows, cards, strict=True):
                    self.index.upsert(card)
                    event = row[1]
                    if event in _LISTING_EVENTS or (event.is_issue and card.flags & BLACKLISTED):
                        listings.append(
                            (row[2], card.id_number, bool(card.flags & BLACKLISTED), card.blacklisted_until)
                        )
                self.seq = rows[-1][0]
                if listings:
                    for hook in self.on_listing:
                        try:
                            hook(listings)
                        except Exception:
                            log.exception("a listing hook failed")
                applied += len(rows)
        self.last_ok = time.monotonic()
        if applied:
            with self._changed:
                self._changed.notify_all()
        return applied

    def wait_for_change(self, timeout: float) -> None:
        """Block until the index applies new events (used by notification streams)."""
        with self._changed:
            self._changed.wait(timeout)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="idguard-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(POLL_INTERVAL):
            try:
                self.poll()
            except Exception as exc:  # the database may be down: keep answering from the index
                now = time.monotonic()
                if now - self._last_warning >= 5:  # one line per 5 s, not 50 per second
                    self._last_warning = now
                    log.warning("ledger poll failed (%s); index is %.1f s old", type(exc).__name__, self.age)
