"""`idguard relay`: the ledger, the units' keys and states, and snapshots of the index, onto NATS.

One relay per deployment reads the database as a worker's follower does (runtime/follower.py:
the ledger after the last seq, each event's card re-read with its holder's flags; the `units`
registry version) and publishes, in sequence order:

* each ledger event as one message on {P}.ledger.card, message id `c<seq>`;
* the units' keys, states and suspension notes, whenever the `units` version moves, on
  {P}.ledger.units, message id `u<version>`.

Exactly once: JetStream drops a message id it has stored within the duplicate window (two
minutes), so a publish retried after a lost acknowledgement is stored once; and on start the relay
resumes after the last `c<seq>` the stream holds (not from a local file that could lag), so a
restart neither skips nor repeats an event. Events are published in order and the next round
starts only once every message of the round is acknowledged.

It wakes every POLL_SECONDS, or at once on {P}.nudge (a writer's commit), and beats on {P}.head
every lease / BEATS_PER_LEASE with the seq it has published: nodes measure their lag against it.

Leases (read-your-write under a partition; docs/scaling.md, "The node's cut-off"): the leader
answers {P}.required (a writer's seq: acknowledged, with the lease's length, once it has published
it) and {P}.lease (a node's request), and its beats are leases too: each says the seq it has
published, the lease's length (`settings.propagation_wait_ms`, the writers' bound) and the
relay's clock when it was read. A node answers only until the lease's length
after a moment of its own clock no later than that stamp (its request's sending, or a beat's
stamp through the relay's clock read against its own at a request); a writer gives up on a node
no earlier than the lease's length after the relay acknowledged its seq; so a node that did not
hear of the seq has stopped answering before any writer gives up on it. A relay grants leases only
once it has published what the database held after it took the lead (a lease without a seq is
then older than that seq's acknowledgement).

Failover: any number of relays may run; exactly one, the leader, publishes and beats. Leadership
is a lock the database holds for a process (scaleout/relay.py, `Leadership`): on PostgreSQL a
session-level advisory lock (`pg_try_advisory_lock`, its key derived from the prefix) on a
dedicated connection, which PostgreSQL frees the moment that connection ends (a leader killed with
kill -9, its host gone once TCP keepalive gives up); on SQLite an exclusive `flock` on a file
beside the database, which the kernel frees when the process dies. A standby loads its index at
start, keeps it current from the database every STANDBY_CATCH_UP_SECONDS, and tries the lock
every TAKEOVER_POLL_SECONDS; once it holds it, it resumes after the stream's last `c<seq>` like
any restarted relay. Exactly once does not rest on the lock: two relays publishing at once (a
leader that has lost its lock connection but not yet noticed; it checks every
LOCK_CHECK_SECONDS and stands down) publish the same ids in the same order, and JetStream stores
each id once and in order (the first copy of every id arrives in ledger order).

Snapshots: the relay keeps its own compact index, changed only by what it publishes (after an
initial load from the database), and every `snapshot_seconds` writes it with the units' state and
the stream position it reflects to the object store ({P}_snapshots/index). A node starts from the
latest snapshot and follows the stream after that position.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from idguard.config import Settings
from idguard.registry import sealed
from idguard.registry.models import Card, LedgerEvent, LedgerHead
from idguard.scaleout import streams
from idguard.scaleout.compact import CompactIndex, Hasher
from idguard.verification.index import BLACKLISTED, CardFacts, pack
from idguard.verification.models import RegistryVersion
from idguard.verification.runtime.follower import _FACTS, _WITH_FLAGS, _facts
from idguard.verification.runtime.keyring import KeyRing

log = logging.getLogger("idguard.relay")

POLL_SECONDS = 0.005
BEATS_PER_LEASE = 5  # a beat every lease / 5 (50 ms at the default 250 ms): 4 may be lost in a row
BATCH = 5000
TAKEOVER_POLL_SECONDS = 0.1  # a standby tries the lock this often
LOCK_CHECK_SECONDS = 0.5  # a leader checks its lock connection this often
STANDBY_CATCH_UP_SECONDS = 1.0  # a standby brings its index up to the database this often
ACK_FORGET_SECONDS = 10.0  # a writer's request for a seq not published by then is dropped
_LOW = (1 << 45) - 1


def index_key(settings: Settings) -> bytes:
    """The key of the index's name and chip hashes, shared by the relay and every node."""
    return settings.derived_key("scaleout-index")


class Leadership:
    """The lock that makes one relay of a deployment the leader (see the module's docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        digest = hashlib.blake2b(f"idguard-relay:{settings.nats_prefix}".encode(), digest_size=8).digest()
        self.key = int.from_bytes(digest, "big", signed=True)  # pg advisory locks take a bigint
        self._engine: sa.Engine | None = None
        self._conn: sa.Connection | None = None
        self._file: int | None = None

    @property
    def lock_file(self) -> str:
        database = make_url(self.settings.database_url).database or "idguard.db"
        return f"{os.path.abspath(database)}.relay-{self.settings.nats_prefix}.lock"

    def try_acquire(self) -> bool:
        """Take the lock if no other process holds it; True when this process holds it."""
        if self.settings.is_sqlite:
            if self._file is None:
                fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    return False
                self._file = fd
            return True
        if self._conn is not None:
            return True
        if self._engine is None:
            from idguard.db.engine import make_engine

            # Its own engine: the connection holding the lock is never handed to anything else,
            # and is closed (invalidated), not returned to a pool, when the lock is let go.
            self._engine = make_engine(self.settings, pool_size=1, max_overflow=0)
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = bool(conn.scalar(sa.select(sa.func.pg_try_advisory_lock(self.key))))
        except Exception:
            conn.close()
            raise
        if got:
            self._conn = conn
        else:
            conn.close()
        return got

    def held(self) -> bool:
        """Whether the lock is still this process's (its connection alive)."""
        if self.settings.is_sqlite:
            return self._file is not None
        if self._conn is None:
            return False
        try:
            self._conn.scalar(sa.select(1))
        except Exception:
            self._drop()
            return False
        return True

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def release(self) -> None:
        if self._file is not None:
            os.close(self._file)  # the flock goes with the descriptor
            self._file = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.scalar(sa.select(sa.func.pg_advisory_unlock(self.key)))
            self._drop()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


class Relay:
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        *,
        snapshot_seconds: float = 300.0,
        suspension_notes: Callable[[Session], dict[str, str]] | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.settings = settings
        self.leadership = leadership  # None: this relay publishes without asking (tests, one relay)
        self.id = f"{os.uname().nodename}-{os.getpid()}-{secrets.token_hex(3)}"
        self.leader = False
        self.became_leader_at: float | None = None  # time.time() of the takeover
        self.names = streams.names(settings)
        self._sessions = sessions
        self._key = index_key(settings)
        self._hasher = Hasher(self._key)
        self.index = CompactIndex(self._key)
        self.keyring = KeyRing()
        self.keyring.suspension_notes = suspension_notes
        self.snapshot_seconds = snapshot_seconds
        self.seq = 0  # the last ledger seq in the stream
        self.stream_seq = 0  # that message's position in the stream
        self.units_version = -1  # the last units version in the stream
        self.published = 0  # messages published by this process
        self.snapshots = 0
        self._last_snapshot = 0.0
        self._nudge = asyncio.Event()
        self._index_seq = 0  # the ledger seq the index reflects at least
        self.lease_ms = round(streams.lease_seconds(settings) * 1000)  # the writers' bound
        self._acks: dict[int, list[tuple[str, float]]] = {}  # seq -> writers (reply, when asked)
        self._nc: Any = None
        self.granting = False  # leases only after the first round published as leader
        self.leases = 0  # lease requests answered

    # -- the database side (run in a thread) ------------------------------------------------------

    def _load(self) -> None:
        with self._sessions() as session:
            version = session.scalar(
                sa.select(RegistryVersion.version).where(RegistryVersion.name == "units")
            )
            self.keyring.reload(session, version or 0)
            head = session.scalar(sa.select(LedgerHead.seq).where(LedgerHead.id == 1))
            result = session.execute(
                sa.select(*_FACTS).select_from(_WITH_FLAGS).execution_options(yield_per=50_000)
            )
            self.index.load(_facts(result, sealed.ring_of(session)))
        self._index_seq = head or 0  # the cards were read after the head: at least as new

    def _catch_up(self) -> int:
        """Bring the index up to the database's ledger without publishing (a standby's)."""
        caught = 0
        while True:
            events, _version, _head = self._read(self._index_seq)
            if not events:
                return caught
            for _seq, card in events:
                self.index.upsert_packed(*self._packed(card))
            self._index_seq = events[-1][0]
            caught += len(events)

    def _packed(self, card: CardFacts) -> tuple[str, int, int, int, dt.date | None]:
        until = card.blacklisted_until if card.flags & BLACKLISTED else None
        return (
            card.id_number,
            pack(card) & _LOW,
            self._hasher.name(card.name),
            self._hasher.chip(card.chip_serial),
            until,
        )

    def _read(self, after: int) -> tuple[list[tuple[int, CardFacts]], int | None, int | None]:
        """Events after `after` (at most BATCH) with their cards, the units version, the head."""
        with self._sessions() as session:
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
            if head is None or head <= after:
                return [], version, head
            rows = session.execute(
                sa.select(LedgerEvent.seq, *_FACTS)
                .select_from(_WITH_FLAGS)
                .join(LedgerEvent, LedgerEvent.card_id == Card.id)
                .where(LedgerEvent.seq > after)
                .order_by(LedgerEvent.seq)
                .limit(BATCH)
            ).all()
            cards = _facts((r[1:] for r in rows), sealed.ring_of(session))  # names opened to be hashed
            events = list(zip((r[0] for r in rows), cards, strict=True))
        return events, version, head

    # -- the stream side ------------------------------------------------------------------------

    async def resume(self, js: JetStreamContext) -> None:
        """Where the stream is: the last card event's seq and position, the last units version."""
        n = self.names
        try:
            last = await js.get_last_msg(n.ledger_stream, n.card_subject)
        except NotFoundError:
            pass
        else:
            self.seq = streams.decode_card(last.data or b"")[0]
            self.stream_seq = last.seq or 0
        try:
            units = await js.get_last_msg(n.ledger_stream, n.units_subject)
        except NotFoundError:
            pass
        else:
            self.units_version = streams.decode_units(units.data or b"")[0]
            self.stream_seq = max(self.stream_seq, units.seq or 0)

    async def step(self, js: JetStreamContext) -> int:
        """Publish what the database has after the stream's last event; the number published."""
        events, version, _head = await asyncio.to_thread(self._read, self.seq)
        published = 0
        if version is not None and version != self.units_version:
            keys, units = self.keyring.state()
            ack = await js.publish(
                self.names.units_subject,
                streams.encode_units(version, keys, units),
                headers={"Nats-Msg-Id": f"u{version}"},
            )
            self.units_version = version
            self.stream_seq = max(self.stream_seq, ack.seq)
            published += 1
        if events:
            futures = []
            packed = []
            for seq, card in events:
                args = self._packed(card)
                packed.append(args)
                futures.append(
                    await js.publish_async(
                        self.names.card_subject,
                        streams.encode_card(seq, *args),
                        headers={"Nats-Msg-Id": f"c{seq}"},
                    )
                )
            acks = await asyncio.gather(*futures)
            for args in packed:
                self.index.upsert_packed(*args)
            self.seq = events[-1][0]
            self._index_seq = max(self._index_seq, self.seq)
            self.stream_seq = max(self.stream_seq, max(a.seq for a in acks))
            published += len(events)
        self.published += published
        return published

    async def snapshot(self, js: JetStreamContext) -> int:
        """Write the index, the units' state and the stream position to the object store."""
        keys, units = self.keyring.state()
        extra: dict[str, Any] = {
            "stream_seq": self.stream_seq,
            "units": json.loads(streams.encode_units(self.units_version, keys, units)),
            "written_at": time.time(),
        }
        blob = await asyncio.to_thread(self.index.dump, self.seq, extra)
        store = await js.object_store(self.names.snapshots)
        await store.put(streams.INDEX_OBJECT, blob, meta=streams.snapshot_meta())
        self.snapshots += 1
        self._last_snapshot = time.monotonic()
        log.info("snapshot at seq %d: %d cards, %d bytes", self.seq, len(self.index), len(blob))
        return len(blob)

    async def run(self, stop: asyncio.Event, *, ready: asyncio.Event | None = None) -> None:
        nc = self._nc = await streams.connect(self.settings, name=f"idguard-relay-{self.id}")
        js = nc.jetstream()
        beat: asyncio.Task[None] | None = None
        subscriptions: list[Any] = []
        try:
            await streams.ensure_streams(js, self.names)
            await asyncio.to_thread(self._load)
            if not await self._lead(stop):
                return
            await self.resume(js)
            await asyncio.to_thread(self._catch_up_to, self.seq)
            await nc.subscribe(self.names.core("nudge"), cb=self._on_nudge)
            subscriptions = [
                await nc.subscribe(self.names.core("required"), cb=self._on_required),
                await nc.subscribe(self.names.core("lease"), cb=self._on_lease),
            ]
            beat = asyncio.create_task(self._beat(nc, stop))
            log.info("relay resuming after ledger seq %d (stream position %d)", self.seq, self.stream_seq)
            first = True
            checked = time.monotonic()
            while not stop.is_set():
                if self.leadership is not None and time.monotonic() - checked >= LOCK_CHECK_SECONDS:
                    checked = time.monotonic()
                    if not await asyncio.to_thread(self.leadership.held):
                        log.warning("relay %s lost its leadership lock: standing down", self.id)
                        break
                try:
                    n = await self.step(js)
                except (sa.exc.OperationalError, sa.exc.TimeoutError) as exc:
                    log.warning("ledger read failed (%s); retrying", type(exc).__name__)
                    n = -1
                    await asyncio.sleep(0.5)
                except Exception as exc:  # NATS down or slow: the round is published again (same ids)
                    log.warning("publishing failed (%s); retrying", type(exc).__name__)
                    n = -1
                    await asyncio.sleep(0.2)
                if n > 0:
                    await self._publish_beat(nc)
                    await self._acknowledge()
                    continue  # more may wait
                if n == 0:
                    self.granting = True  # all the database held since the lead is published
                if first or time.monotonic() - self._last_snapshot >= self.snapshot_seconds:
                    try:
                        await self.snapshot(js)
                        first = False
                    except Exception as exc:  # NATS down: the next idle round tries again
                        log.warning("snapshot failed (%s)", type(exc).__name__)
                if ready is not None:
                    ready.set()
                self._nudge.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._nudge.wait(), POLL_SECONDS)
        finally:
            self.granting = False
            for sub in subscriptions:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            if beat is not None:
                beat.cancel()
            self.leader = False
            if self.leadership is not None:
                await asyncio.to_thread(self.leadership.release)
            await nc.close()

    async def _lead(self, stop: asyncio.Event) -> bool:
        """Wait until this relay holds the leadership lock (at once without one); False if
        stopped first. A standby keeps its index current meanwhile, so a takeover publishes
        after reading only the events since its last catch-up."""
        lock = self.leadership
        if lock is not None:
            caught_up = time.monotonic()
            announced = False
            while not stop.is_set():
                try:
                    if await asyncio.to_thread(lock.try_acquire):
                        break
                except sa.exc.OperationalError as exc:
                    log.warning("leadership lock unavailable (%s); retrying", type(exc).__name__)
                if not announced:
                    log.info("relay %s standing by: another relay leads", self.id)
                    announced = True
                if time.monotonic() - caught_up >= STANDBY_CATCH_UP_SECONDS:
                    with contextlib.suppress(sa.exc.OperationalError, sa.exc.TimeoutError):
                        await asyncio.to_thread(self._catch_up)
                    caught_up = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), TAKEOVER_POLL_SECONDS)
            else:
                return False
        self.leader = True
        self.became_leader_at = time.time()
        log.info("relay %s leads", self.id)
        return True

    def _catch_up_to(self, seq: int) -> None:
        """The index at least as new as the stream's last event (a standby's may lag it)."""
        if self._index_seq < seq:
            self._catch_up()

    async def _on_nudge(self, _msg: Any) -> None:
        self._nudge.set()

    async def _on_required(self, msg: Any) -> None:
        """A writer waits for a seq: acknowledged once it is published, so every lease granted
        after the acknowledgement names it (a node that has not applied it then waits or
        refuses: scaleout/node.py). A seq never published is never acknowledged (the writer
        stops asking at its bound)."""
        self._nudge.set()
        try:
            seq = int(msg.data)
        except ValueError:
            return
        if msg.reply:
            self._acks.setdefault(seq, []).append((msg.reply, time.monotonic()))
            await self._acknowledge()

    async def _acknowledge(self) -> None:
        """Acknowledge the writers whose seq is published; forget those long given up."""
        nc = self._nc
        if not self._acks or nc is None:
            return
        ack = json.dumps({"lease_ms": self.lease_ms, "relay": self.id, "seq": self.seq}).encode()
        forget = time.monotonic() - ACK_FORGET_SECONDS
        for seq in [seq for seq in self._acks if seq <= self.seq]:
            for reply, _asked in self._acks.pop(seq):
                with contextlib.suppress(Exception):
                    await nc.publish(reply, ack)
        for seq, waiting in list(self._acks.items()):
            self._acks[seq] = [w for w in waiting if w[1] >= forget]
            if not self._acks[seq]:
                del self._acks[seq]

    async def _on_lease(self, msg: Any) -> None:
        """A node's lease request: what it must have applied to answer, and for how long from
        its request it may answer. Not before this leader's first round is published: a lease
        must never omit a seq a writer was told was published (by this relay or an earlier one)."""
        if not self.granting or not msg.reply:
            return
        self.leases += 1
        with contextlib.suppress(Exception):
            await msg.respond(json.dumps(self._grant()).encode())

    def _grant(self) -> dict[str, Any]:
        """What a lease says, stamped with this relay's clock at the moment it is read (nothing
        awaited between: a seq published after the stamp is in no lease stamped before it)."""
        return {
            "seq": self.seq,
            "known": self.seq,  # (a writer's seq is acknowledged only once published)
            "lease_ms": self.lease_ms,
            "relay": self.id,
            "at": time.monotonic(),
        }

    async def _publish_beat(self, nc: Any) -> None:
        """The head on {P}.head; a leader that grants leases beats one (a node that has read this
        relay's clock against its own answers until the lease's length after the stamp)."""
        beat = self._grant() if self.granting else {"seq": self.seq, "relay": self.id}
        beat["stream_seq"] = self.stream_seq
        with contextlib.suppress(Exception):  # disconnected: the nodes notice the silence
            await nc.publish(self.names.core("head"), json.dumps(beat).encode())

    async def _beat(self, nc: Any, stop: asyncio.Event) -> None:
        every = max(0.005, self.lease_ms / 1000 / BEATS_PER_LEASE)
        while not stop.is_set():
            await self._publish_beat(nc)
            await asyncio.sleep(every)
