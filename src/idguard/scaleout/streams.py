"""Names on the NATS server, the connection, and what the ledger stream's messages hold.

Every name starts with IDGUARD_NATS_PREFIX, so that deployments (and test runs) sharing a server
never touch each other's streams, subjects, consumers or buckets:

    {P}_LEDGER      stream (file), subjects {P}.ledger.card (one message per ledger event, its
                    message id `c<seq>`) and {P}.ledger.units (the units' keys, states and
                    suspensions, message id `u<version>`), in ledger order, written by the relay
    {P}_CHECKS      stream (file), subject {P}.checks: every check a node answered, as the check
                    log's row lines (one message per request); read by the sink, durable
                    consumer {P}_sink
    {P}_snapshots   object store: `index`, the relay's latest snapshot of the compact index
    {P}.head        core subject: the relay's heartbeat, the ledger seq it has published; the
                    leader's beats are the nodes' leases (the seq it knows of, the lease's
                    length, its clock: scaleout/node.py)
    {P}.lease       core request: a node's lease request, answered by the leading relay
    {P}.applied     core subject: each node's applied ledger seq (on change and as a heartbeat)
    {P}.required    core request: a writer waiting for a seq (read-your-write); the nodes hear
                    it, the leading relay records it and acknowledges
    {P}.nudge       core subject: asks the relay to read the ledger at once

A card event carries no name and no chip serial: only the keyed hashes the compact index keeps
(scaleout/compact.py), the packed status, flags and dates, and the id number.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import logging
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    ObjectMeta,
    ObjectMetaOptions,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadObjectMetaError, DigestMismatchError, NotFoundError

from idguard.config import Settings
from idguard.verification.runtime.keyring import UnitView

DUPLICATE_WINDOW_SECONDS = 120.0  # JetStream drops a message id seen within this window
INDEX_OBJECT = "index"
# A snapshot's chunks: near the server's default max payload (1 MiB), not the client's 128 KiB
# default, so a node fetches a 300 MB snapshot in ~320 messages instead of ~2,400.
SNAPSHOT_CHUNK_BYTES = 1000 * 1024
FETCH_CHUNKS = 16  # chunks (1 MB) a request when a node reads a snapshot: under the server's 64 MB
# a client may have pending (a slow consumer is cut off)
FETCH_PARALLEL = 2  # consumers reading a snapshot's chunks at once (FETCH_CHUNKS each in flight)
FETCH_TIMEOUT_SECONDS = 10.0
log = logging.getLogger("idguard.scaleout")
_CARD = struct.Struct("<QQQIi")  # seq, low, name hash, chip hash, listing's last day (-1: none)
_EPOCH = dt.date(1900, 1, 1).toordinal()


@dataclass(frozen=True, slots=True)
class Names:
    prefix: str

    @property
    def ledger_stream(self) -> str:
        return f"{self.prefix}_LEDGER"

    @property
    def card_subject(self) -> str:
        return f"{self.prefix}.ledger.card"

    @property
    def units_subject(self) -> str:
        return f"{self.prefix}.ledger.units"

    @property
    def checks_stream(self) -> str:
        return f"{self.prefix}_CHECKS"

    @property
    def checks_subject(self) -> str:
        return f"{self.prefix}.checks"

    @property
    def sink_consumer(self) -> str:
        return f"{self.prefix}_sink"

    @property
    def snapshots(self) -> str:
        return f"{self.prefix}_snapshots"

    def core(self, name: str) -> str:
        """{P}.head, {P}.lease, {P}.applied, {P}.required, {P}.nudge."""
        return f"{self.prefix}.{name}"


def names(settings: Settings) -> Names:
    return Names(settings.nats_prefix)


MIN_LEASE_MS = 50  # a deployment whose writers do not wait (a bound of 0) still needs leases


def lease_seconds(settings: Settings) -> float:
    """The one setting behind read-your-write on the nodes: the writers' bound
    (`propagation_wait_ms`) is the length of a node's lease, which the relay grants, and the time
    a node may stay behind a seq it knows of (docs/scaling.md, "The node's cut-off")."""
    return max(settings.propagation_wait_ms, MIN_LEASE_MS) / 1000


def nats_url(settings: Settings) -> str:
    if not settings.nats_url:
        raise RuntimeError("IDGUARD_NATS_URL is not set: scale-out needs a NATS server with JetStream")
    return settings.nats_url


async def connect(settings: Settings, *, name: str, **options: Any) -> Client:
    """A connection that notices a dead link within about two seconds (ping every second) and
    reconnects for ever: a node or relay outlives a NATS restart."""
    defaults: dict[str, Any] = {
        "name": name,
        "ping_interval": 1,
        "max_outstanding_pings": 2,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.2,
        "connect_timeout": 2,
    }
    defaults.update(options)
    return await nats.connect(nats_url(settings), **defaults)


async def ensure_streams(js: JetStreamContext, n: Names) -> None:
    """The two streams (file storage) and the snapshot bucket, created when missing."""
    configs = (
        StreamConfig(
            name=n.ledger_stream,
            subjects=[f"{n.prefix}.ledger.>"],
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
        ),
        StreamConfig(
            name=n.checks_stream,
            subjects=[n.checks_subject],
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            discard=DiscardPolicy.OLD,
        ),
    )
    for config in configs:
        try:
            await js.stream_info(config.name or "")
        except NotFoundError:
            await js.add_stream(config)
    try:
        await js.object_store(n.snapshots)
    except NotFoundError:
        await js.create_object_store(n.snapshots, storage=StorageType.FILE)
    except Exception:  # the bucket's stream is missing: same as not found
        await js.create_object_store(n.snapshots, storage=StorageType.FILE)


def snapshot_meta() -> ObjectMeta:
    return ObjectMeta(name=INDEX_OBJECT, options=ObjectMetaOptions(max_chunk_size=SNAPSHOT_CHUNK_BYTES))


async def fetch_object(
    js: JetStreamContext, bucket: str, name: str, parallel: int | None = None
) -> bytearray:
    """An object of the store `bucket`, read the fast way into one buffer of its size.

    The client's `get` reads through an ordered push consumer whose flow control stalls the
    server every few chunks (7 s for a 300 MB snapshot here, under a second of it the node's
    CPU). Here the object's chunks, published one after the other by one `put`, are read by
    `parallel` pull consumers without acks, each over its own range of stream positions,
    FETCH_CHUNKS a request, and written in place at their offsets; the SHA-256 of the whole is
    then checked as the client's `get` checks it. Chunks not where they should be (another
    writer's messages between them) fail that check: then one consumer reads them all in order.
    ObjectNotFoundError when there is none; DigestMismatchError when what came is not it."""
    store = await js.object_store(bucket)
    info = await store.get_info(name)
    size, chunks = info.size or 0, info.chunks or 0
    out = bytearray(size)
    if size == 0:
        return out
    if info.nuid is None or info.digest is None:
        raise BadObjectMetaError
    expected = base64.urlsafe_b64decode(info.digest.replace("SHA-256=", "").replace("sha-256=", ""))
    stream, subject = f"OBJ_{bucket}", f"$O.{bucket}.C.{info.nuid}"
    parallel = FETCH_PARALLEL if parallel is None else parallel
    if parallel > 1 and chunks >= 2 * parallel:
        first = await js.get_msg(stream, seq=1, subject=subject, next=True, direct=True)
        chunk_bytes = len(first.data or b"")
        if first.seq is not None and chunk_bytes and -(-size // chunk_bytes) == chunks:
            try:
                await _fetch_ranges(js, stream, subject, out, first.seq, chunks, chunk_bytes, parallel)
            except (ValueError, NatsTimeoutError):
                log.warning("snapshot chunks not in one run: reading them in order")
            else:
                if await asyncio.to_thread(lambda: hashlib.sha256(out).digest()) == expected:
                    return out
                log.warning("snapshot chunks read by position do not make the object: reading them in order")
    digest = hashlib.sha256()
    view = memoryview(out)
    offset = 0
    async for data, _seq in _chunks(js, stream, subject, None, chunks):
        view[offset : offset + len(data)] = data
        digest.update(data)
        offset += len(data)
    if offset != size or digest.digest() != expected:
        raise DigestMismatchError
    return out


async def _fetch_ranges(
    js: JetStreamContext,
    stream: str,
    subject: str,
    out: bytearray,
    first: int,
    chunks: int,
    chunk_bytes: int,
    parallel: int,
) -> None:
    """Chunk k at stream position first + k, written at k * chunk_bytes; ValueError for a
    message that does not fit there."""
    view = memoryview(out)

    async def one(start: int, count: int) -> None:
        async for data, seq in _chunks(js, stream, subject, first + start, count):
            k = seq - first
            if not start <= k < start + count or len(data) > len(out) - k * chunk_bytes:
                raise ValueError("a chunk out of its place")
            view[k * chunk_bytes : k * chunk_bytes + len(data)] = data

    bounds = [chunks * j // parallel for j in range(parallel + 1)]
    await asyncio.gather(*(one(a, b - a) for a, b in itertools.pairwise(bounds)))


async def _chunks(
    js: JetStreamContext, stream: str, subject: str, start: int | None, count: int
) -> AsyncIterator[tuple[bytes, int]]:
    """`count` messages of `subject` from stream position `start` (None: the first), in order,
    with their positions."""
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.ALL if start is None else DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start,
        inactive_threshold=FETCH_TIMEOUT_SECONDS,
        mem_storage=True,
        num_replicas=1,
    )
    sub = await js.pull_subscribe(
        subject, stream=stream, config=config, pending_bytes_limit=(FETCH_CHUNKS + 2) * (2 << 20)
    )
    received = 0
    try:
        while received < count:
            for msg in await sub.fetch(min(FETCH_CHUNKS, count - received), timeout=FETCH_TIMEOUT_SECONDS):
                received += 1
                yield msg.data, msg.metadata.sequence.stream
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def delete_all(js: JetStreamContext, n: Names) -> None:
    """Remove every stream and bucket of the prefix (tests clean up after themselves)."""
    for stream in (n.ledger_stream, n.checks_stream, f"OBJ_{n.snapshots}"):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(stream)


# --- card events ---------------------------------------------------------------------------------


def encode_card(
    seq: int, id_number: str, low: int, name: int, chip: int, blacklisted_until: dt.date | None
) -> bytes:
    until = -1 if blacklisted_until is None else blacklisted_until.toordinal() - _EPOCH
    return _CARD.pack(seq, low, name, chip, until) + id_number.encode("utf-8", "surrogatepass")


def decode_card(data: bytes) -> tuple[int, str, int, int, int, dt.date | None]:
    seq, low, name, chip, until = _CARD.unpack_from(data)
    number = data[_CARD.size :].decode("utf-8", "surrogatepass")
    return seq, number, low, name, chip, None if until < 0 else dt.date.fromordinal(until + _EPOCH)


# --- the units' keys and states -------------------------------------------------------------------

Keys = list[tuple[str, str, str, dt.datetime | None]]


def encode_units(version: int, keys: Keys, units: list[UnitView]) -> bytes:
    return json.dumps(
        {
            "version": version,
            "keys": [[p, d, c, None if e is None else e.isoformat()] for p, d, c, e in keys],
            "units": [
                [
                    u.code,
                    u.name,
                    sorted(u.purposes),
                    u.rate_limit,
                    u.active,
                    u.webhook_url,
                    u.harvesting_suspected,
                    u.suspension_note,
                ]
                for u in units
            ],
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def decode_units(data: bytes | dict[str, Any]) -> tuple[int, Keys, list[UnitView]]:
    raw: dict[str, Any] = json.loads(data) if isinstance(data, bytes) else data
    keys: Keys = [
        (p, d, c, None if e is None else dt.datetime.fromisoformat(e)) for p, d, c, e in raw["keys"]
    ]
    units = [
        UnitView(code, name, frozenset(purposes), rate, active, webhook, suspected, note)
        for code, name, purposes, rate, active, webhook, suspected, note in raw["units"]
    ]
    return int(raw["version"]), keys, units
