"""The blacklist gallery: the registered fingers of blacklisted persons' cards, searched 1:N when a
person-card check fails (`known_impersonator`, API.md part 2).

One per worker, beside the index. It is loaded at start on a thread of its own (a check never
waits for it: until it is loaded a failed finger is simply not searched) and then follows the
ledger: the follower hands it the cards a listing or a lifting touched (and a listed holder's new
cards), and the same thread adds or removes their fingers — no rebuild. The templates are opened
here, in the worker's memory only, as the 1:1 comparison opens them (biometrics/fingerprints.py);
they never leave the process. The search itself is biometrics.identification.Gallery (MCC
indexing, then the 1:1 matcher on the candidates).
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard.biometrics.fingerprints import Biometrics, _context
from idguard.biometrics.identification import IDENTIFICATION_THRESHOLD, Gallery
from idguard.biometrics.mcc import Template
from idguard.biometrics.models import Fingerprint
from idguard.registry.models import Card
from idguard.verification.models import PersonFlags

log = logging.getLogger("idguard.gallery")

LOAD_BATCH = 2000
SEARCH_LIMIT = 5


class BlacklistGallery:
    """card id → (id number, listing's last day); the Gallery holds "card_id/finger" keys."""

    def __init__(self, sessions: sessionmaker[Session], biometrics: Biometrics) -> None:
        self._sessions = sessions
        self._biometrics = biometrics
        # The 1:N threshold, not the 1:1 one: the candidates were chosen because they resemble the
        # probe, so at the 1:1 threshold strangers were answered with someone (docs/fingerprints.md).
        self.gallery = Gallery(threshold=max(biometrics.threshold, IDENTIFICATION_THRESHOLD))
        self._cards: dict[uuid.UUID, tuple[str, dt.date | None, tuple[int, ...]]] = {}
        self._changes: queue.SimpleQueue[list[tuple[uuid.UUID, str, bool, Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.ready = threading.Event()
        self.loaded_in = 0.0
        self._changed_at: float | None = None  # monotonic time of the last load or change applied
        # Changes handed over by the follower and changes fully applied (fingers and cards both):
        # equal when the gallery holds everything the follower has seen.
        self._handed = 0
        self._applied = 0

    def __len__(self) -> int:
        return len(self.gallery)

    def status(self) -> dict[str, object]:
        """For /health: fingers held, whether the load finished, how long it took, and seconds
        since the gallery last took in a change (the load or a listing/lifting); no personal data."""
        changed = self._changed_at
        return {
            "fingers": len(self.gallery),
            "cards": len(self._cards),
            "loaded": self.ready.is_set(),
            "loaded_in_seconds": round(self.loaded_in, 3),
            "age_seconds": None if changed is None else round(time.monotonic() - changed, 3),
        }

    # --- following the ledger ------------------------------------------------------------------

    def on_listing(self, changes: list[tuple[uuid.UUID, str, bool, Any]]) -> None:
        """The follower's hook: cards whose holder was listed or lifted (queued, never blocks)."""
        self._handed += 1
        self._changes.put(changes)

    def settled(self) -> bool:
        """The load finished and every change handed over so far is applied."""
        return self.ready.is_set() and self._applied == self._handed

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="idguard-gallery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._changes.put(None)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        try:
            self.load()
        except Exception:
            log.exception("blacklist gallery could not be loaded; known impersonators are not searched")
        while True:
            changes = self._changes.get()
            if changes is None:
                return
            try:
                self.apply(changes)
            except Exception:
                log.exception("blacklist gallery: a listing change could not be applied")
            finally:
                self._applied += 1

    def load(self) -> None:
        """Every registered finger of every listed person's cards."""
        started = time.monotonic()
        with self._sessions() as session:
            rows = session.execute(
                sa.select(Card.id, Card.id_number, PersonFlags.blacklisted_until)
                .join(PersonFlags, PersonFlags.person_id == Card.person_id)
                .where(PersonFlags.blacklisted.is_(True), Card.fingerprints_registered.is_(True))
            ).all()
            for start in range(0, len(rows), LOAD_BATCH):
                self._add(session, rows[start : start + LOAD_BATCH])
        self.loaded_in = time.monotonic() - started
        self._changed_at = time.monotonic()
        self.ready.set()
        log.info("blacklist gallery ready: %d fingers in %.1f s", len(self.gallery), self.loaded_in)

    def apply(self, changes: list[tuple[uuid.UUID, str, bool, Any]]) -> None:
        listed = [(card_id, number, until) for card_id, number, on, until in changes if on]
        for card_id, _, on, _ in changes:
            if not on:
                self._remove(card_id)
        if listed:
            with self._sessions() as session:
                self._add(session, listed)
        self._changed_at = time.monotonic()

    def _add(self, session: Session, cards: Sequence[Any]) -> None:
        by_card = {card_id: (number, until) for card_id, number, until in cards}
        vault = self._biometrics.vault
        rows = session.execute(
            sa.select(
                Fingerprint.card_id,
                Fingerprint.finger,
                Fingerprint.key_id,
                Fingerprint.template,
                Fingerprint.index_data,
            ).where(Fingerprint.card_id.in_(list(by_card)))
        ).all()
        fingers: dict[uuid.UUID, list[int]] = {card_id: [] for card_id in by_card}
        opened: list[tuple[uuid.UUID, int, bytes, bytes | None]] = []
        for card_id, finger, key_id, blob, index in rows:
            try:
                # Stored zlib-compressed (biometrics/fingerprints.py): added as stored, without
                # building a Template object. The index data (sealed beside it since migration
                # 0015; None before) files it without decompressing or projecting anything.
                opened.append(
                    (
                        card_id,
                        finger,
                        vault.open(key_id, blob, context=_context(card_id, finger, "template")),
                        None
                        if index is None
                        else vault.open(key_id, index, context=_context(card_id, finger, "index")),
                    )
                )
            except Exception as exc:  # an integrity fault: that finger cannot be searched
                log.error(
                    "blacklist gallery: finger %d of card %s cannot be opened: %s", finger, card_id, exc
                )
        try:  # the batch at once: one sorted run for all its cylinders
            self.gallery.add_indexed_many((f"{c}/{f}", stored, index) for c, f, stored, index in opened)
            added = opened
        except Exception:  # one malformed template or index data: add the others one by one
            added = []
            for card_id, finger, stored, index in opened:
                try:
                    self.gallery.add_indexed_many([(f"{card_id}/{finger}", stored, index)])
                except Exception as exc:
                    log.error(
                        "blacklist gallery: finger %d of card %s cannot be indexed: %s", finger, card_id, exc
                    )
                    continue
                added.append((card_id, finger, stored, index))
        if added:
            self.gallery.warm()  # the scan compiled (or read from numba's cache) now, not in a search
        for card_id, finger, *_ in added:
            fingers[card_id].append(finger)
        for card_id, (number, until) in by_card.items():
            # Fingers a previous listing of the card added and this one did not are dropped.
            for finger in set(self._cards.get(card_id, ("", None, ()))[2]) - set(fingers[card_id]):
                self.gallery.remove(f"{card_id}/{finger}")
            self._cards[card_id] = (number, until, tuple(fingers[card_id]))

    def _remove(self, card_id: uuid.UUID) -> None:
        known = self._cards.pop(card_id, None)
        if known is not None:
            for finger in known[2]:
                self.gallery.remove(f"{card_id}/{finger}")

    # --- the search (a failed person-card check) -------------------------------------------------

    def search(self, probe: Template, *, today: dt.date, checked: str) -> uuid.UUID | None:
        """The card of a listed person (other than the checked card's holder, `checked`) whose
        registered finger matches `probe`, best first; None when none does (or nothing is
        loaded yet). A listing past its last day no longer counts."""
        if not self._cards:
            return None
        for key, _ in self.gallery.search(probe, limit=SEARCH_LIMIT):
            card_id = uuid.UUID(key.partition("/")[0])
            known = self._cards.get(card_id)
            if known is None:
                continue
            number, until, _ = known
            if number != checked and (until is None or today <= until):
                return card_id
        return None
