"""`idguard verifier`: a verifier node, answering checks with no database connection.

The node serves the same routes as an API server's verification (verification/routes/verify.py,
mounted as they are) from the same Verifier code; only its runtime is fed from NATS instead of
the database:

* the index is a CompactIndex (scaleout/compact.py), restored from the relay's latest snapshot
  ({P}_snapshots/index) and then kept current by following {P}_LEDGER after the snapshot's
  position (an ordered consumer: ephemeral, so any number of nodes come and go);
* the key ring (units' keys, states and suspension notes) is installed from the snapshot and
  from every {P}.ledger.units message;
* the check log is StreamCheckLog: each request's checks are published to {P}_CHECKS (file
  storage) as one message — from SEALED_MIN checks on sealed whole (sink.seal_checks: the id
  numbers, the request's heads and outcomes, a byte or two a check; the sink formats the check
  log's row lines, as an API server formats them), a smaller request's as row lines — and the
  answer leaves only once JetStream has acknowledged them (one message,
  one acknowledgement per request: a batch of 1000 checks is one; concurrent single checks are
  pipelined on the event loop). A check JetStream did not take is answered 503, never
  acknowledged to the unit. `idguard checklog-sink` writes the stream into the database
  (scaleout/sink.py).
* a batch is answered a batch at a time (NodeVerifier.check_items): numpy looks the whole batch
  up in the index (CompactIndex.check_many), and the answers are put together from per-request
  tables; the same answers, and the same check message once the sink has read it, as
  Verifier.check_items, which still takes a small request and a watch.
* the common batch body (8 to 1000 items of the six fields every check needs) is taken before
  the routes by the batch door (BatchDoor, below): parsed and judged a column at a time instead
  of by pydantic an item at a time, the same answers byte for byte; any other body goes to the
  routes as it came.

Freshness and read-your-write: the relay beats on {P}.head with the seq it has published; a node
announces the seq it has applied on {P}.applied (on every change, and every ANNOUNCE_SECONDS as
its heartbeat). A writer waiting for its change (scaleout/propagation.py) also says so on
{P}.required. A node answers only within a *lease*: a reply to its request on {P}.lease (every
CALIBRATE_SECONDS), or a beat of the leading relay, says what the relay has published and knows
of, and lets the node answer until the lease's length after a moment of its own monotonic clock
no later than the relay's stamp: its request's sending, or for a beat the relay's clock read
against its own at its last request (NodeFollower.calibrate; rates within RATE_ERROR). The
lease's length is the writers' bound (`settings.propagation_wait_ms`, one setting), and a writer
gives up on a node no earlier than that long after the relay acknowledged its seq; so a node that
hears nothing (a partition that still lets its checks through) has stopped answering before any
writer can answer without it (the argument: docs/scaling.md, "The node's cut-off"). A node is
*stale* when its lease has run out, or when it has been behind a seq it knows of (head, required,
or a lease's) for longer than the bound; a stale node answers verify requests 503 with
Retry-After, so it never answers `valid` for a card whose loss report a writer has acknowledged.
`X-Index-Age` and /health say how old the index may be.

What a node does not do: fingerprint comparisons (they read sealed templates from the database:
`fingerprint_reason` is `comparison_unavailable`), watches' notifications and webhooks, incidents
from checks (its checks' signals ride in their message: the sink opens the incidents).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import operator
import os
import secrets
import threading
import time
import typing
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError, ObjectNotFoundError
from pydantic import TypeAdapter
from pydantic_core import from_json
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idguard.api import errors
from idguard.api.guard import RequestGuard
from idguard.api.server import TELEMETRY_OFF
from idguard.config import Settings
from idguard.core.clock import Clock, SystemClock, today_cst
from idguard.core.ratelimit import RateLimiter
from idguard.scaleout import streams
from idguard.scaleout.compact import ANSWER_TABLE, CompactIndex
from idguard.scaleout.relay import index_key
from idguard.scaleout.sink import CheckSeal, Extra, IndexedSignal, seal_checks, seal_entries, signal_lines
from idguard.verification.index import BLACKLISTED, CHECK_REQUIRED, Reason, Result, alerts
from idguard.verification.routes import verify
from idguard.verification.runtime.checklog import (
    _ESCAPES_POSTGRES,
    CheckEntry,
    CheckLog,
    IdHasher,
    LogFull,
    NotJournaled,
    Signal,
    WatchSeal,
    watch_line,
)
from idguard.verification.runtime.follower import IndexFollower
from idguard.verification.runtime.keyring import KeyRing, UnitView
from idguard.verification.schemas import MAX_BATCH_ITEMS, VerifyItem
from idguard.verification.verifier import (
    _LOST,
    _LOST_KINDS,
    FingerprintReason,
    Item,
    Query,
    SignalKind,
    Verifier,
    check_ids,
    render_alerts,
    rfc3339,
)

log = logging.getLogger("idguard.node")

CALIBRATE_SECONDS = 2.0  # a lease request (and the relay's clock read against ours) this often
RATE_ERROR = 1e-3  # how far the rates of two machines' monotonic clocks may differ (NTP: 500 ppm)
ANNOUNCE_SECONDS = 0.2  # the node's heartbeat on {P}.applied
REFOLLOW_SECONDS = 1.0  # behind, and no ledger message this long: the consumer is made again
PUBLISH_TIMEOUT = 2.0  # a check message JetStream has not acknowledged by then is answered 503
FAST_BATCH_MIN = 8  # fewer checks in a request: Verifier.check_items (numpy's fixed cost)
# Fewer checks in a request: its message in the text form (row lines), whose cost is per check
# (the keyed hash, the line) where the sealed form's is mostly per message (its JSON and seal,
# ~7 us): 5.5 vs 12 us for one check, even at 10 (1.7 us a check), 1.3 vs 0.7 us a check at 100
# (in process; tests/unit/scaleout/test_check_message.py holds both to the API server's rows).
SEALED_MIN = 8


# A check's result and reason in its row line, by ANSWER_TABLE's number (as Verifier.check_items
# writes them): the distinct ones in a table every message carries, a byte a check into it.
def _outcome(result: Result, reason: Reason | None) -> tuple[str, str | None]:
    if result is Result.VALID:
        return "valid", None
    return ("mismatch", None) if reason is None else ("invalid", reason.value)


_OUTCOMES = list(dict.fromkeys(_outcome(result, reason) for result, reason, _ in ANSWER_TABLE))
_OUTCOME_OF = np.array(
    [_OUTCOMES.index(_outcome(result, reason)) for result, reason, _ in ANSWER_TABLE], dtype=np.uint8
)


class NodeFollower(IndexFollower):
    """The follower's interface (seq, age, loaded_in) for an index fed by the ledger stream; the
    runtime applies the messages (on the event loop, as the requests run: no locking needed)."""

    def __init__(self, index: CompactIndex, keyring: KeyRing, bound: float) -> None:  # no super()
        self.index = index
        self.bound = bound  # the writers' bound: behind a known seq for longer than this, stale
        self.lease_until = 0.0  # monotonic; none yet: stale until the relay grants one
        self.leases = 0  # grants received
        # relay id -> (our clock, its clock) at a moment of its: ours no later than that moment
        self.clocks: dict[str, tuple[float, float]] = {}
        self.keyring = keyring
        self.seq = 0
        self.stream_seq = 0
        self.last_ok = 0.0
        self.loaded_in = 0.0
        self.on_listing = []
        self._changed = threading.Condition()
        self.head = 0  # the relay's last beat: the seq it has published
        self.last_beat = 0.0
        self.required = 0  # the highest seq a writer waits for
        self.behind_since: float | None = None
        self.applied_events = 0
        self.node = None  # no node directory: its staleness is judged on the stream (below)
        self.member = None
        self._generation = 0

    def current(self) -> None:  # a node refuses when stale before the check (the runtime)
        return

    def load(self) -> None:  # the runtime restores the snapshot
        return

    def start(self) -> None:
        return

    def stop(self) -> None:
        return

    def poll(self) -> int:
        return 0

    def known(self) -> int:
        return max(self.head, self.required)

    def observe(self, now: float) -> None:
        """Re-judge whether the node is behind what it knows was published."""
        if self.seq >= self.known():
            self.behind_since = None
            self.last_ok = now
        elif self.behind_since is None:
            self.behind_since = now

    def grant(self, asked: float, head: int, known: int, lease: float, now: float) -> None:
        """A lease asked for at `asked` (monotonic) was granted: what must be applied before
        answering (the relay's head, the highest seq it knows of), and `lease` seconds from the
        request to answer in. Both at once (no await between: the guard sees both or neither)."""
        self.head = max(self.head, head)
        self.required = max(self.required, known)
        self.lease_until = max(self.lease_until, asked + lease)
        self.leases += 1
        self.observe(now)

    def calibrate(self, relay: str, asked: float, at: float) -> None:
        """The relay stamped `at` (its clock) on its reply to our request sent at `asked` (ours):
        the stamp is no earlier than `asked`. Kept when it bounds its clock tighter than the one
        held (either is a true bound; the older loses RATE_ERROR of its age)."""
        held = self.clocks.get(relay)
        if held is None or _no_later(held, at) <= asked:
            self.clocks.pop(relay, None)
            self.clocks[relay] = (asked, at)  # the last read last
            while len(self.clocks) > 8:  # relays long gone (takeovers)
                del self.clocks[next(iter(self.clocks))]

    def beat(self, relay: str, at: float, head: int, known: int, lease: float, now: float) -> bool:
        """A relay's beat stamped `at` on its clock: a grant as if asked at the moment of ours
        no later than the stamp (`calibrate`); False (what it knows taken, no lease) when its
        clock has not been read against ours yet."""
        clock = self.clocks.get(relay)
        if clock is None:
            self.head = max(self.head, head)
            self.required = max(self.required, known)
            self.observe(now)
            return False
        self.grant(_no_later(clock, at), head, known, lease, now)
        return True

    def stale(self, now: float) -> str | None:
        """Why this node must not answer (None: it may)."""
        if now >= self.lease_until:
            return "this verifier node has lost contact with the ledger stream"
        if self.behind_since is not None and now - self.behind_since > self.bound:
            return "this verifier node is catching up with the ledger"
        return None


def _no_later(clock: tuple[float, float], at: float) -> float:
    """Our clock at a moment no later than the relay's `at`, from a pair (ours, its) where ours
    was no later than its: its elapsed time, made as short (or, before the pair, as long) as a
    rate difference of RATE_ERROR could make ours."""
    ours, its = clock
    elapsed = at - its
    return ours + (elapsed / (1 + RATE_ERROR) if elapsed >= 0 else elapsed / (1 - RATE_ERROR))


class StreamCheckLog(CheckLog):
    """The check log of a node: each request's checks as one message on {P}_CHECKS, awaited
    (JetStream's acknowledgement) before the answer leaves. From SEALED_MIN checks on, the
    message is sealed whole (sink.seal_checks) and the sink makes the row lines; a smaller
    request's is the text form: row lines as CheckLog formats them for PostgreSQL's COPY, a
    watched check's id number and each signal sealed (WatchSeal). The salt in the header."""

    def __init__(self, secret_key: str, subject: str) -> None:  # no database: no super()
        self._id_hash = IdHasher(secret_key)
        self._escapes = _ESCAPES_POSTGRES
        self._salt = os.urandom(16)
        self._seal = WatchSeal(secret_key, self._salt)
        self.message_seal = CheckSeal(secret_key, self._salt)
        self._subject = subject
        self._pending: dict[int, tuple[bytes, str, int]] = {}
        self._ticket = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self.js: JetStreamContext | None = None
        self.written = 0  # checks JetStream acknowledged
        self.failures = 0
        self.replayed = 0
        self.journal_failures = 0
        self.on_written = None
        self.on_durable = None
        self._appended = 0
        # For the bench's side-by-side only (bench/scaleout.py: the ceiling without durability):
        # answers leave without their checks being published. Never in production.
        self.disabled = os.environ.get("IDGUARD_BENCH_NODE_NO_CHECK_STREAM") == "1"

    @property
    def pending(self) -> int:
        return self._appended - self.written

    def append(self, entries: Sequence[CheckEntry], signals: list[Signal] | None = None) -> int:
        """A request's checks (Verifier's paths). A node opens no incidents itself: its checks'
        signals ride in the same message, and the sink opens them once the checks are written."""
        first_id = entries[0][0] if entries else ""
        if len(entries) >= SEALED_MIN:
            return self.enqueue(
                seal_entries(self.message_seal, entries, signals or ()), len(entries), first_id
            )
        plain, watched, watches = self._format(entries)
        text = "".join(plain) + "".join(watched) + "".join(watch_line(w, self._seal) for w in watches)
        if signals:
            text += signal_lines(signals, self._seal)
        return self.enqueue(text.encode("utf-8", "surrogatepass"), len(entries), first_id)

    def enqueue(self, payload: bytes, n: int, first_id: str) -> int:
        """A message of `n` checks, either form (`append`, or NodeVerifier's batch path), to publish."""
        with self._lock:
            self._ticket = ticket = self._ticket + 1
            self._pending[ticket] = (payload, first_id, n)
            self._appended += n
        self._local.ticket = ticket
        return ticket

    async def recorded(self, ticket: int) -> None:
        with self._lock:
            item = self._pending.pop(ticket, None)
        if item is None:
            return
        payload, first_id, n = item  # n: the checks (a message also holds watch and signal lines)
        if self.disabled:
            self.written += n
            return
        js = self.js
        if js is None:
            raise NotJournaled("the check stream is not connected; retry later")
        try:
            await js.publish(
                self._subject,
                payload,
                timeout=PUBLISH_TIMEOUT,
                headers={"Nats-Msg-Id": first_id, "Idg-Salt": self._salt.hex()},
            )
        except Exception as exc:
            self.failures += 1
            log.warning("check stream publish failed (%s): %d checks answered 503", type(exc).__name__, n)
            raise NotJournaled(
                "the check could not be recorded (check stream unavailable); retry later"
            ) from None
        self.written += n

    def start(self) -> None:
        return

    def stop(self) -> None:
        return


class NodeVerifier(Verifier):
    """The Verifier with a node's runtime: nothing here reads a database."""

    def __init__(self, settings: Settings, *, clock: Clock) -> None:  # no database: no super()
        self.index = self.compact = CompactIndex(index_key(settings))
        self.keyring = KeyRing()
        self.follower = self.node_follower = NodeFollower(
            self.compact, self.keyring, streams.lease_seconds(settings)
        )
        self.limiter = RateLimiter(1)
        self.log = self.stream_log = StreamCheckLog(
            settings.check_hash_key, streams.names(settings).checks_subject
        )
        self.clock = clock
        self.on_signals = []
        self.on_harvesting = []
        self.on_start = []
        self.on_stop = []

    def start(self) -> None:
        return

    def stop(self) -> None:
        return

    def check_items(self, unit: UnitView, items: Sequence[Item]) -> list[str]:
        """Verifier.check_items, answer for answer and row line for row line
        (tests/unit/scaleout/test_batch_fast_path.py), a batch at a time: the index answers the
        whole batch with numpy (CompactIndex.check_many) and each check's answer and row line are
        put together from per-request tables. A watch (its sealed line) and small requests take
        Verifier.check_items."""
        if len(items) < FAST_BATCH_MIN:
            return super().check_items(unit, items)
        ids, names, issued, expires, purposes, operators, chips, watches = zip(*items, strict=True)
        if any(watches) or any(len(n) != 18 for n in ids):  # (every number the API admits has 18)
            return super().check_items(unit, items)
        return self.check_columns(unit, ids, names, issued, expires, purposes, operators, chips)[0]

    def check_columns(
        self,
        unit: UnitView,
        ids: Sequence[str],
        names: Sequence[str],
        issued: Sequence[dt.date],
        expires: Sequence[dt.date | None],
        purposes: Sequence[str],
        operators: Sequence[str],
        chips: Sequence[str | None] | None = None,
    ) -> tuple[list[str], int]:
        """`check_items`' batch path on the batch's fields as columns (no watch; every number 18
        characters; at least FAST_BATCH_MIN checks): the answers, and the check log's ticket."""
        self.follower.current()
        now = self.clock.now()
        if now.tzinfo is None:
            raise ValueError("naive datetime in the check log")
        today = today_cst(now)
        found = self.compact.check_many(ids, names, issued, expires, today, chips)
        numbers = found.tolist()
        cids = check_ids(len(ids))
        answers, extras, signals = self._render(unit, now, today, cids, ids, issued, numbers)
        n = len(ids)
        at = now.isoformat()
        if operators.count(operators[0]) == n and purposes.count(purposes[0]) == n:  # one head
            heads: list[tuple[str, str, str, str]] = [(unit.code, operators[0], purposes[0], at)]
            head_of: list[int] | None = None
        else:
            table: dict[tuple[str, str], int] = {}
            head_of = [table.setdefault(pair, len(table)) for pair in zip(operators, purposes, strict=True)]
            heads = [(unit.code, operator, purpose, at) for operator, purpose in table]
        message = seal_checks(
            self.stream_log.message_seal,
            cids,
            ids,
            heads,
            head_of,
            _OUTCOMES,
            _OUTCOME_OF[found],
            extras,
            signals,
            from_check_ids=True,
        )
        return answers, self.stream_log.enqueue(message, n, cids[0])

    def _render(
        self,
        unit: UnitView,
        now: dt.datetime,
        today: dt.date,
        cids: list[str],
        ids: Sequence[str],
        issued: Sequence[dt.date],
        numbers: list[int],
    ) -> tuple[list[str], list[Extra], list[IndexedSignal]]:
        """The answers, the rare row fields (alerts) and signals of checks answered
        ANSWER_TABLE[numbers[i]], as Verifier.check_items makes them."""
        at_end = f'","checked_at":"{rfc3339(now)}"'
        plain_end = at_end + "}"
        # Per answer number: the answer's text around the check id, and whether the number
        # carries flags or signals a lost card (rare: the loop).
        before: list[str] = []
        after: list[str] = []
        special: list[bool] = []
        for result, reason, flags in ANSWER_TABLE:
            if result is Result.VALID:
                before.append('{"result":"valid","check_id":"')
                after.append(plain_end)
            elif reason is None:
                before.append('{"result":"mismatch","check_id":"')
                after.append(plain_end)
            else:
                before.append('{"result":"invalid","check_id":"')
                after.append(f'{at_end},"reason":"{reason.value}"}}')
            special.append(bool(flags) or reason in _LOST)
        answers = [before[k] + check_id + after[k] for k, check_id in zip(numbers, cids, strict=True)]
        extras: list[Extra] = []
        signals: list[IndexedSignal] = []
        for i in [i for i, k in enumerate(numbers) if special[k]]:
            # As Verifier.check_items: a lost card's signal, the holder's alerts.
            k, id_number = numbers[i], ids[i]
            result, reason, flags = ANSWER_TABLE[k]
            if reason in _LOST:
                signals.append((i, issued[i], _LOST_KINDS, None))
            if not flags:
                continue
            listed = bool(flags & BLACKLISTED) and self.index.blacklisted(id_number, today)
            shown, kept = render_alerts(
                alerts(
                    blacklisted=listed,
                    check_required=bool(flags & CHECK_REQUIRED) and result is Result.VALID,
                    impersonator=False,
                )
            )
            if shown is not None:
                answers[i] = f'{answers[i][:-1]},"alerts":{shown}}}'
            if kept is not None:
                extras.append((i, None, kept, None, 0))
            if listed:
                kinds: tuple[str, ...] = (SignalKind.BLACKLISTED_HOLDER_CHECKED.value,)
                if signals and signals[-1][0] == i:  # also a lost card
                    kinds = signals.pop()[2] + kinds
                signals.append((i, issued[i], kinds, None))
        return answers, extras, signals

    def _person_card(self, q: Query, result: Result) -> tuple[bool | None, str | None]:
        if result is not Result.VALID:
            return None, FingerprintReason.CARD_NOT_VALID
        return None, FingerprintReason.UNAVAILABLE  # the templates are in the registry database


class NodeRuntime:
    """The node's NATS side: snapshot, ledger stream, beats, announcements, the check stream."""

    def __init__(self, settings: Settings, verifier: NodeVerifier) -> None:
        self.settings = settings
        self.names = streams.names(settings)
        self.verifier = verifier
        self.follower = verifier.node_follower
        self.index = verifier.compact
        self.id = f"{os.uname().nodename}-{os.getpid()}-{secrets.token_hex(3)}"
        self.nc: Client | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._announce_due = False
        self._announcing: set[asyncio.Future[None]] = set()
        self.snapshot_seq = 0
        self.snapshot_seconds = 0.0  # the snapshot's fetch and restore, of loaded_in
        self._js: JetStreamContext | None = None
        self._ledger_sub: Any = None
        self._asking: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        started = time.monotonic()
        nc = self.nc = await streams.connect(
            self.settings, name=f"idguard-verifier-{self.id}", reconnected_cb=self._on_reconnected
        )
        js = nc.jetstream()
        await streams.ensure_streams(js, self.names)
        await self._restore(js)
        follower = self.follower
        await nc.subscribe(self.names.core("head"), cb=self._on_head)
        await nc.subscribe(self.names.core("required"), cb=self._on_required)
        self._js = js
        await self._follow()
        self.verifier.stream_log.js = js
        await self._ask_lease()  # with a relay leading, the node answers from the start
        self._tasks.append(asyncio.create_task(self._heartbeat()))
        self._tasks.append(asyncio.create_task(self._leases()))
        follower.loaded_in = time.monotonic() - started
        log.info(
            "verifier node %s ready: %d cards from snapshot seq %d in %.2f s",
            self.id,
            len(follower.index),
            self.snapshot_seq,
            follower.loaded_in,
        )

    async def _follow(self) -> None:
        """Follow the ledger stream after what the index holds (again after a reconnection: the
        server may have restarted and lost the ephemeral consumer)."""
        if self._ledger_sub is not None:
            with contextlib.suppress(Exception):
                await self._ledger_sub.unsubscribe()
        assert self._js is not None  # noqa: S101 - set by start()
        self._ledger_sub = await self._js.subscribe(
            f"{self.names.prefix}.ledger.>",
            stream=self.names.ledger_stream,
            cb=self._on_ledger,
            ordered_consumer=True,
            idle_heartbeat=1.0,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            config=ConsumerConfig(opt_start_seq=self.follower.stream_seq + 1),
        )

    async def _on_reconnected(self) -> None:
        log.info(
            "reconnected to NATS: following the ledger stream after position %d", self.follower.stream_seq
        )
        try:
            await self._follow()
        except Exception:
            log.exception("could not follow the ledger stream again; the node stays stale")

    async def _restore(self, js: JetStreamContext) -> None:
        follower = self.follower
        started = time.monotonic()
        try:
            # Chunks written in place into one buffer, which the index's arrays then use as they
            # are (no copy): streams.fetch_object.
            blob = await streams.fetch_object(js, self.names.snapshots, streams.INDEX_OBJECT)
        except (NotFoundError, ObjectNotFoundError):
            log.info("no snapshot yet: following the ledger stream from its start")
            return
        index, header = await asyncio.to_thread(CompactIndex.restore, index_key(self.settings), blob)
        self.snapshot_seconds = time.monotonic() - started
        verifier = self.verifier
        verifier.index = verifier.compact = follower.index = self.index = index
        version, keys, units = streams.decode_units(header["units"])
        verifier.keyring.install(keys, units, version)
        follower.seq = self.snapshot_seq = int(header["seq"])
        follower.stream_seq = int(header["stream_seq"])

    async def stop(self) -> None:
        for task in [*self._tasks, *self._asking]:
            task.cancel()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.drain()

    # -- messages -------------------------------------------------------------------------------

    async def _on_ledger(self, msg: Msg) -> None:
        follower = self.follower
        if msg.subject == self.names.card_subject:
            seq, number, low, name, chip, until = streams.decode_card(msg.data)
            self.index.upsert_packed(number, low, name, chip, until)
            follower.seq = max(follower.seq, seq)
            follower.applied_events += 1
        elif msg.subject == self.names.units_subject:
            version, keys, units = streams.decode_units(msg.data)
            self.verifier.keyring.install(keys, units, version)
        if msg.metadata.sequence is not None:
            follower.stream_seq = max(follower.stream_seq, msg.metadata.sequence.stream)
        follower.observe(time.monotonic())
        if not self._announce_due:  # one announcement per burst of messages
            self._announce_due = True
            asyncio.get_running_loop().call_soon(self._announce_soon)

    def _announce_soon(self) -> None:
        self._announce_due = False
        task = asyncio.ensure_future(self._announce())
        self._announcing.add(task)  # held until done (the loop keeps only a weak reference)
        task.add_done_callback(self._announcing.discard)

    async def _announce(self) -> None:
        if self.nc is None:
            return
        with contextlib.suppress(Exception):
            await self.nc.publish(self.names.core("applied"), f"{self.id} {self.follower.seq}".encode())

    async def _on_head(self, msg: Msg) -> None:
        """A relay's beat: its head, and from a leader that grants, a lease (NodeFollower.beat)
        once its clock has been read against ours (else a lease request reads it now)."""
        follower = self.follower
        beat = json.loads(msg.data)
        follower.last_beat = now = time.monotonic()
        if "at" not in beat:  # not granting yet (a leader's first round)
            follower.head = max(follower.head, int(beat["seq"]))
            follower.observe(now)
            return
        lease = int(beat["lease_ms"]) / 1000
        if not follower.beat(
            str(beat["relay"]), float(beat["at"]), int(beat["seq"]), int(beat["known"]), lease, now
        ):
            self._ask_lease_soon()

    async def _on_required(self, msg: Msg) -> None:
        follower = self.follower
        follower.required = max(follower.required, int(msg.data))
        follower.observe(time.monotonic())
        await self._announce()  # the writer hears this node at once, applied or not

    async def _leases(self) -> None:
        """Ask for a lease every CALIBRATE_SECONDS (the relay's beats grant the leases between),
        each request on its own (a lost reply delays nothing)."""
        follower = self.follower
        position, moved = follower.stream_seq, time.monotonic()
        asked = moved
        while True:
            await asyncio.sleep(min(follower.bound, 0.5))
            if time.monotonic() - asked >= CALIBRATE_SECONDS:
                asked = time.monotonic()
                self._ask_lease_soon()
            # Behind what the relay says it published, and no ledger message for long: they
            # were lost on the way (a partition that healed without the connection breaking):
            # follow the stream again after what the index holds.
            now = time.monotonic()
            if follower.stream_seq != position:
                position, moved = follower.stream_seq, now
            behind = follower.behind_since
            if behind is not None and min(now - behind, now - moved) > REFOLLOW_SECONDS:
                moved = now
                log.info("behind the ledger for %.1f s: following it again", now - behind)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._follow(), REFOLLOW_SECONDS * 5)

    def _ask_lease_soon(self) -> None:
        if self._asking:  # one request at a time
            return
        task = asyncio.create_task(self._ask_lease())
        self._asking.add(task)
        task.add_done_callback(self._asking.discard)

    async def _ask_lease(self) -> None:
        """One lease request: granted, the node may answer until the lease's length after the
        request left (its own clock: the request's sending precedes the relay's reply, which
        precedes any acknowledgement to a writer of a seq the reply does not name). The reply's
        stamp reads the relay's clock against ours, for its beats (NodeFollower.calibrate)."""
        nc = self.nc
        if nc is None:
            return
        follower = self.follower
        asked = time.monotonic()
        try:
            reply = await nc.request(self.names.core("lease"), self.id.encode(), timeout=follower.bound)
            grant = json.loads(reply.data)
            seq, known, lease = int(grant["seq"]), int(grant["known"]), int(grant["lease_ms"]) / 1000
            relay, at = str(grant["relay"]), float(grant["at"])
        except Exception:  # no reply in time (cut off, no leader): the lease runs out on its own
            return
        follower.calibrate(relay, asked, at)
        follower.grant(asked, seq, known, lease, time.monotonic())

    async def _heartbeat(self) -> None:
        while True:
            await self._announce()
            await asyncio.sleep(ANNOUNCE_SECONDS)


class StaleGuard:
    """Verify requests to a stale node are answered 503 with Retry-After (before anything else)."""

    def __init__(self, app: ASGIApp, follower: NodeFollower) -> None:
        self.app = app
        self.follower = follower

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/v1/verify"):
            why = self.follower.stale(time.monotonic())
            while why is None and self.follower.behind_since is not None:
                # Behind a seq it knows was published (the relay's beat, a writer's required):
                # the index as it is may say `valid` for the card that seq reports lost (a node
                # back from a cut hears beats before its ledger consumer resumes). Answer once
                # it is applied, or refuse once the bound has passed (h4, netns test).
                await asyncio.sleep(0.001)
                why = self.follower.stale(time.monotonic())
            if why is not None:
                response = errors.problem(
                    503,
                    "Service unavailable",
                    why + "; retry, or use another verifier node",
                    headers={"Retry-After": "1", verify.INDEX_AGE: f"{self.follower.age:.3f}"},
                    code="unavailable",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# -- the batch door ----------------------------------------------------------------------------
#
# The common batch (a JSON body of FAST_BATCH_MIN to MAX_BATCH_ITEMS items, each with the six
# fields every check needs, and at most the optional ones with their defaults: `"chip_serial":
# null`, `"watch": false`, `"fingerprint": null`) answered in front of the routes:
# parsed by pydantic's JSON parser without validation, then judged a column at a time instead of
# by pydantic an item at a time (which was a third of the node's CPU). The door accepts only
# values VerifyItem's own types accept *unchanged* (tests/unit/scaleout/test_node_batch_door.py
# holds the two equal on generated bodies): an 18-character ASCII number; a name of 1-60
# characters with no white space at its ends; dates, purposes and operators that the field's own
# pydantic type accepted before (a cache of the values seen, each judged once by that type).
# Anything else (another shape, a bad item, a watch, a chip serial, a fingerprint, an unknown key,
# a purpose the unit may not use, a unit over its rate) goes to the routes as it came, which
# answer it as before: the door never answers differently, it only answers sooner.

BATCH_PATH = "/api/v1/verify/batch"
_ITEM_FIELDS = ("id_number", "name", "issued_on", "expires_on", "purpose", "operator")
_ITEM_COLUMNS = tuple(operator.itemgetter(name) for name in _ITEM_FIELDS)
_ITEM_FIELD_SET = frozenset(_ITEM_FIELDS)
_DEFAULTS: dict[str, bool | None] = {"chip_serial": None, "watch": False, "fingerprint": None}
_ITEM_TYPES = typing.get_type_hints(VerifyItem, include_extras=True)
_NAME_MAX = 60  # VerifyItem's name: 1 to 60 characters (the test reads it off the type)
_SEEN_MAX = 100_000  # values a field's cache holds (valid dates: about 43,000 from 1984 to 2100)
_NINE = np.uint8(9)
_ZERO = np.uint8(48)
_X = np.uint8(ord("X"))
BatchColumns = tuple[
    Sequence[str], Sequence[str], list[dt.date], list[dt.date | None], Sequence[str], Sequence[str]
]


class _Accepted:
    """The values of one of VerifyItem's fields its own type accepts (from JSON), each judged once
    by that type: value as sent -> value as validated."""

    def __init__(self, field: str, *, unchanged: bool) -> None:
        self._adapter: TypeAdapter[Any] = TypeAdapter(_ITEM_TYPES[field])
        self._unchanged = unchanged  # accepted only when validation leaves the value as it is
        self.seen: dict[str | None, Any] = {}

    def column(self, values: Sequence[Any]) -> list[Any] | None:
        """The validated values, or None when the type refuses (or changes) any of them."""
        seen = self.seen
        with contextlib.suppress(KeyError, TypeError):
            return [seen[v] for v in values]
        return self._column(values)

    def accepts(self, values: Sequence[Any]) -> bool:
        try:
            distinct = set(values)
        except TypeError:
            return False
        return distinct <= self.seen.keys() or self._column(list(distinct)) is not None

    def _column(self, values: Sequence[Any]) -> list[Any] | None:
        try:
            new = set(values) - self.seen.keys()
        except TypeError:  # a list or an object
            return None
        if len(self.seen) + len(new) > _SEEN_MAX:
            self.seen.clear()
            new = set(values)
        for value in new:
            if value is not None and type(value) is not str:
                return None
            try:
                valid = self._adapter.validate_json(json.dumps(value))
            except ValueError:  # ValidationError
                return None
            if self._unchanged and valid != value:
                return None
            self.seen[value] = valid
        seen = self.seen
        return [seen[v] for v in values]


_ISSUED = _Accepted("issued_on", unchanged=False)
_EXPIRES = _Accepted("expires_on", unchanged=False)
_PURPOSES = _Accepted("purpose", unchanged=True)
_OPERATORS = _Accepted("operator", unchanged=True)


def _only_defaults(item: Any) -> bool:
    """Whether an item's members besides the six are optional ones sent with the value of not
    sending them (`"chip_serial": null`, `"watch": false`, `"fingerprint": null`: what a client
    that writes every field of the schema sends). Its six fields are judged apart."""
    extra = item.keys() - _ITEM_FIELD_SET  # (AttributeError: not an object)
    return extra <= _DEFAULTS.keys() and all(item[name] is _DEFAULTS[name] for name in extra)


def parse_batch(body: bytes) -> BatchColumns | None:
    """A batch body as its items' columns (id numbers, names, issue and expiry dates, purposes,
    operators), exactly as `VerifyBatchItems` validates them; None for any body the door leaves
    to the routes (see above)."""
    try:
        # pydantic's own JSON parser (the lane's), its member names cached: faster than json.loads
        doc = from_json(body, cache_strings="keys")
    except ValueError:  # not JSON, not UTF-8
        return None
    if type(doc) is not dict or len(doc) != 1:
        return None
    items = doc.get("items")
    if type(items) is not list or not FAST_BATCH_MIN <= len(items) <= MAX_BATCH_ITEMS:
        return None
    n = len(items)
    try:
        if set(map(len, items)) != {len(_ITEM_FIELDS)} and not all(map(_only_defaults, items)):
            return None
        ids, names, issued_sent, expires_sent, purposes, operators = [
            list(map(g, items)) for g in _ITEM_COLUMNS
        ]
        joined = "".join(ids).encode("ascii")
        "".join(names)  # every name a string
    except (KeyError, TypeError, AttributeError, UnicodeEncodeError):  # a field missing, another type…
        return None
    # Numbers: 17 ASCII digits and a digit or X (the shape's first form: pydantic leaves it as it is).
    if len(joined) != 18 * n or set(map(len, ids)) != {18}:
        return None
    raw = np.frombuffer(joined, dtype=np.uint8).reshape(n, 18)
    last = raw[:, 17]
    if not ((raw[:, :17] - _ZERO <= _NINE).all() and ((last - _ZERO <= _NINE) | (last == _X)).all()):
        return None
    # Names: 1 to 60 characters, nothing pydantic's strip would remove (str.strip removes every
    # character it does, and more: the test holds it over every code point).
    lengths = set(map(len, names))
    if min(lengths) < 1 or max(lengths) > _NAME_MAX or not all(map(str.__eq__, names, map(str.strip, names))):
        return None
    issued = _ISSUED.column(issued_sent)
    expires = _EXPIRES.column(expires_sent)
    if (
        issued is None
        or expires is None
        or not _PURPOSES.accepts(purposes)
        or not _OPERATORS.accepts(operators)
    ):
        return None
    return ids, names, issued, expires, purposes, operators


class BatchDoor:
    """The batch door (above): POST /api/v1/verify/batch with a JSON body and a good key, its
    items in the common shape, answered with the same bytes as the routes' batch lane (which
    answers whatever the door does not take). Inside the request and stale guards."""

    def __init__(self, app: ASGIApp, verifier: NodeVerifier, clock: Clock) -> None:
        self.app = app
        self.verifier = verifier
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != BATCH_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        unit = self._unit(scope)
        if unit is None:  # another content type, no key or a refused one: the routes say why
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        chunks: list[bytes] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        answer = (
            self._answer(unit, chunks[0] if len(chunks) == 1 else b"".join(chunks))
            if messages[-1]["type"] == "http.request"
            else None
        )
        del chunks
        if answer is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        del messages  # (nothing of the batch is held while its checks are recorded)
        text, ticket, headers = answer
        try:
            await self.verifier.log.recorded(ticket)
        except LogFull as exc:
            status, raw_headers, body = verify.unavailable(str(exc))
            await send({"type": "http.response.start", "status": status, "headers": raw_headers})
            await send({"type": "http.response.body", "body": body})
            return
        await Response(text, media_type="application/json", headers=headers)(scope, receive, send)

    def _unit(self, scope: Scope) -> UnitView | None:
        """The unit of the bearer key, as the lane finds it (verify._lane_input); None for
        anything else."""
        content_type = authorization = None
        for name, value in scope["headers"]:
            if name == b"content-type" and content_type is None:
                content_type = value
            elif name == b"authorization" and authorization is None:
                authorization = value
        if content_type is None or content_type.partition(b";")[0].strip().lower() != b"application/json":
            return None
        if authorization is None:
            return None
        scheme, _, key = authorization.partition(b" ")
        key = key.strip()
        if scheme.lower() != b"bearer" or not key:
            return None
        return self.verifier.keyring.authenticate(key.decode("latin-1"), self.clock.now())

    def _answer(self, unit: UnitView, body: bytes) -> tuple[bytes, int, dict[str, str]] | None:
        """The batch's answer text, check-log ticket and headers (as verify._answer_batch makes
        them), or None (nothing checked, no token taken) for the routes to answer."""
        columns = parse_batch(body)
        if columns is None:
            return None
        ids, names, issued, expires, purposes, operators = columns
        if not unit.purposes.issuperset(purposes):
            return None
        verifier = self.verifier
        n = len(ids)
        if n > verify.max_batch(verifier, unit):
            return None
        admission = verifier.limiter.admit(unit.code, unit.rate_limit, n)
        if admission.wait:  # (a refusal takes no token: the routes answer the 429)
            return None
        answers, ticket = verifier.check_columns(unit, ids, names, issued, expires, purposes, operators)
        headers = {verify.INDEX_AGE: f"{verifier.follower.age:.3f}", **admission.headers(unit.rate_limit)}
        return ('{"results":[' + ",".join(answers) + "]}").encode(), ticket, headers


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """`receive` giving back the messages the door read first."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


health_router = APIRouter(prefix="/api/v1", tags=["health"])


@health_router.get("/health")
async def node_health(request: Request) -> dict[str, Any]:
    """A node's health, no auth: `ok` while it may answer, `stale` (and why) while it answers
    503; the index's seq, the relay's head, how many events behind, and its age in seconds."""
    runtime: NodeRuntime = request.app.state.runtime
    follower = runtime.follower
    now = time.monotonic()
    why = follower.stale(now)
    nc = runtime.nc
    return {
        "status": "ok" if why is None else "stale",
        "detail": why,
        "node": runtime.id,
        "nats": "connected" if nc is not None and nc.is_connected else "disconnected",
        "lease_seconds": round(max(0.0, follower.lease_until - now), 3),
        "index": {
            "cards": len(follower.index),
            "seq": follower.seq,
            "head": follower.head,
            "lag_events": max(0, follower.known() - follower.seq),
            "age_seconds": round(follower.age, 3),
            "loaded_in_seconds": round(follower.loaded_in, 3),
            "snapshot_seq": runtime.snapshot_seq,
            "snapshot_seconds": round(runtime.snapshot_seconds, 3),
        },
        "check_stream": {
            "acknowledged": runtime.verifier.stream_log.written,
            "failures": runtime.verifier.stream_log.failures,
        },
    }


def create_node_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """The app of a verifier node: the verify routes and a health of its own, no database."""
    settings = settings or Settings()
    clock = clock or SystemClock()
    verifier = NodeVerifier(settings, clock=clock)
    runtime = NodeRuntime(settings, verifier)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        lifespan=lifespan,
        telemetry=TELEMETRY_OFF,
        title="idguard verifier node",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.clock = clock
    app.state.verifier = verifier
    app.state.runtime = runtime
    errors.install(app)
    app.add_middleware(BatchDoor, verifier=verifier, clock=clock)  # innermost: after both guards
    app.add_middleware(RequestGuard, body_limits=verify.BODY_LIMITS)
    app.add_middleware(StaleGuard, follower=runtime.follower)
    app.include_router(health_router)
    app.include_router(verify.router)
    return app
