"""Keeps a worker's verification index current by following the ledger.

At start-up the index is built from the cards table (after reading the ledger head, so nothing
committed meanwhile is missed: events after that head are replayed, and replaying is idempotent).
Then a thread polls: one query reads the ledger head and the `units` version; if the ledger
moved, the new events are read in sequence order and their cards re-read and upserted; if the
units version moved, the key ring is reloaded. Committed order equals sequence order
(registry/ledger.py), so reading `seq > last` never skips an event.

It polls when told, not only every POLL_INTERVAL (the safety net): a write on this machine wakes
every worker of the node at once (runtime/node.py), and on PostgreSQL the writing transaction's
NOTIFY wakes the workers of every machine (uow.py sends it; this thread LISTENs). After each poll
the worker says what it has applied, which is what a writer waits for before answering; and
before answering a check, `current()` makes sure nothing published on this node is missing.

If the database becomes unreachable the index keeps answering; `age` says how long it has been
since the last successful poll, and the API reports it with every answer and in health.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import PoolProxiedConnection

from idguard.core.errors import Unavailable
from idguard.core.sealing import KeyRing as DataKeys
from idguard.core.sealing import context_prefix
from idguard.registry import sealed
from idguard.registry.lifecycle import EventKind
from idguard.registry.models import Card, LedgerEvent, LedgerHead
from idguard.verification.index import BLACKLISTED, CHECK_REQUIRED, CardFacts, CardIndex
from idguard.verification.models import PersonFlags, RegistryVersion
from idguard.verification.runtime.keyring import KeyRing
from idguard.verification.runtime.node import Member, Node

log = logging.getLogger("idguard.follower")

POLL_INTERVAL = 0.02
_PROBE = sa.select(
    sa.select(LedgerHead.seq).where(LedgerHead.id == 1).scalar_subquery(),
    sa.select(RegistryVersion.version).where(RegistryVersion.name == "units").scalar_subquery(),
)
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


NOTIFY_CHANNEL = "idguard_ledger"


class IndexBehind(Unavailable):
    """A write published on this node has not reached this worker, and it cannot catch up now
    (the database is unreachable): it answers 503 rather than from the old state."""

    code = "index_behind"
    retry_after = 1


class IndexFollower:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        index: CardIndex,
        keyring: KeyRing,
        *,
        node: Node | None = None,
        listen_url: str | None = None,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self._sessions = sessions
        self.poll_interval = poll_interval
        self.node = node
        self.member: Member | None = None
        self._listen_url = listen_url  # PostgreSQL: LISTEN for the writers' NOTIFY
        self._generation = 0  # the node's publish generation this worker has caught up with
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
        self._probe_conn: PoolProxiedConnection | None = None  # held by whoever holds `_polling`
        self._probe_sql = ""
        self._probe_closer: Callable[[], object] = lambda: None
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

    def current(self) -> None:
        """Before an answer: catch up with every write published on this node since the last
        poll (one read of shared memory when there is none), or raise IndexBehind."""
        node = self.node
        if node is None or node.generation() == self._generation:
            return
        try:
            self.poll()
        except Exception as exc:
            raise IndexBehind(
                "this server has not yet applied a change to the registry and cannot reach the "
                "database to catch up; retry in a second"
            ) from exc

    def poll(self) -> int:
        """Apply what changed since the last poll; return the number of events applied."""
        # Read before the query: whatever was published by then was committed before it.
        generation = self.node.generation() if self.node is not None else 0
        with self._polling:
            head, version = self._probe()
            if (head is None or head <= self.seq) and (version is None or version == self.keyring.version):
                applied = 0  # the common case, 50 times a second: nothing moved
            else:
                applied = self._apply(head, version)
        self.last_ok = time.monotonic()
        if generation > self._generation:
            self._generation = generation
        if self.member is not None:
            self.member.applied(self.seq, self.keyring.version)
        if applied:
            with self._changed:
                self._changed.notify_all()
        return applied

    def _probe(self) -> tuple[int | None, int | None]:
        """The ledger head and the units version, read with SQL compiled once on a connection the
        follower keeps for it: the engine's own (its connect settings: SQLite's busy timeout),
        detached from the request pool (it would hold one of its connections for good), used
        through the driver in autocommit (no transaction is left open between polls). About half
        the CPU of a session's query (~150 vs ~330 µs), which runs 50 times a second in every
        worker. A failed connection is closed, and the next poll opens another. An in-memory
        SQLite database (one connection's own) is read through a session as before."""
        conn = self._probe_conn
        if conn is None:
            engine: sa.Engine = self._sessions.kw["bind"]
            if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
                with self._sessions() as session:
                    head, version = session.execute(_PROBE).one()
                    return head, version
            self._probe_sql = str(_PROBE.compile(engine, compile_kwargs={"literal_binds": True}))
            conn = engine.raw_connection()
            if engine.dialect.name == "postgresql":
                conn.driver_connection.autocommit = True  # type: ignore[union-attr]
            # SQLite: the engine's connections are in the driver's autocommit already (db/engine.py)
            conn.detach()
            self._probe_conn = conn
            # Closed with the follower, stopped or not (a test's follower may never be stopped).
            self._probe_closer = weakref.finalize(self, _close_quietly, conn)
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(self._probe_sql)
                head, version = cursor.fetchone() or (None, None)
            finally:
                cursor.close()
        except Exception:
            self._probe_conn = None
            self._probe_closer()
            raise
        return head, version

    def _apply(self, head: int | None, version: int | None) -> int:
        """Reload the key ring if the units moved, and apply the ledger's events up to `head`."""
        applied = 0
        with self._sessions() as session:
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
        return applied

    def wait_for_change(self, timeout: float) -> None:
        """Block until the index applies new events (used by notification streams)."""
        with self._changed:
            self._changed.wait(timeout)

    def start(self) -> None:
        if self.node is not None:
            self.member = self.node.join()
            self.member.applied(self.seq, self.keyring.version)
        self._thread = threading.Thread(target=self._run, name="idguard-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.member is not None:
            self.member.wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.member is not None:
            self.member.leave()
            self.member = None
        with self._polling:
            self._probe_conn = None
            self._probe_closer()

    def _run(self) -> None:
        listener = _Listener(self._listen_url) if self._listen_url else None
        wake = self.member.socket if self.member is not None else None
        try:
            while not self._stop.is_set():
                try:
                    self._wait(listener, wake)
                except Exception:  # never let the thread die: the poll keeps the index current
                    log.exception("the follower's wait failed; polling on")
                    if listener is not None:
                        listener.close()
                    self._stop.wait(self.poll_interval)
                if not self._stop.is_set():
                    self._poll_logged()
        finally:
            if listener is not None:
                listener.close()

    def _wait(self, listener: _Listener | None, wake: socket.socket | None) -> None:
        """Until a write on this node wakes us, a NOTIFY arrives, or the poll interval passes."""
        fds: list[int] = []
        if wake is not None:
            fds.append(wake.fileno())
        pg = listener.socket() if listener is not None else None
        if pg is not None:
            fds.append(pg)
        if not fds:
            self._stop.wait(self.poll_interval)
            return
        ready, _, _ = select.select(fds, [], [], self.poll_interval)
        if wake is not None and wake.fileno() in ready:
            _drain(wake)
        if listener is not None and pg is not None and pg in ready:
            listener.drain()

    def _poll_logged(self) -> None:
        try:
            self.poll()
        except Exception as exc:  # the database may be down: keep answering from the index
            now = time.monotonic()
            if now - self._last_warning >= 5:  # one line per 5 s, not 50 per second
                self._last_warning = now
                log.warning("ledger poll failed (%s); index is %.1f s old", type(exc).__name__, self.age)


def _close_quietly(conn: PoolProxiedConnection) -> None:
    with contextlib.suppress(Exception):
        conn.close()


def _drain(sock: socket.socket) -> None:
    with contextlib.suppress(BlockingIOError, OSError):
        while sock.recv(64):
            pass


class _Listener:
    """A PostgreSQL connection that LISTENs for the writers' NOTIFY (uow.py), reconnecting after
    a failure at most once a second; while it is down the poll interval still applies."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._next_try = 0.0

    def socket(self) -> int | None:
        if self._conn is None and time.monotonic() >= self._next_try:
            self._next_try = time.monotonic() + 1.0
            try:
                self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=2)
                self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            except psycopg.Error as exc:
                log.warning("cannot LISTEN for ledger changes (%s); polling only", type(exc).__name__)
                self.close()
        if self._conn is None:
            return None
        try:
            return self._conn.pgconn.socket
        except psycopg.Error:  # the server ended the connection: reconnect on a later round
            self.close()
            return None

    def drain(self) -> None:
        if self._conn is None:
            return
        pgconn = self._conn.pgconn
        try:
            pgconn.consume_input()
            while pgconn.notifies() is not None:
                pass
        except psycopg.Error:
            self.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing a broken connection: at least free the socket
                conn.pgconn.finish()
