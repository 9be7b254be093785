"""`idguard checklog-sink`: the check stream ({P}_CHECKS) into the database's check log.

A durable pull consumer ({P}_sink) fetches up to FETCH messages (each one node request's checks,
as the check log's row lines), writes them in one transaction — COPY on PostgreSQL through a
temporary table, then INSERT … ON CONFLICT (id, at) DO NOTHING, skipping checks already there (a
check's id and time are fixed when it is made, so the pair is exact; the table's key, partitioned
by month on PostgreSQL), the same INSERT on SQLite (CheckLog._write, idempotent) — and only then
acknowledges them. So a check is in the stream until
it is in the database: a sink killed between the write and the acknowledgement writes the batch
again on its next fetch, changing nothing; a database that is unreachable makes the sink retry the
same batch every RETRY_SECONDS while the checks wait in the stream (file storage) and nodes keep
answering. Watched checks also get their Watch rows (id numbers sealed in the stream, opened here
with the check log's key).

Incidents from node checks: a node's message ends with the signals of its checks worth an
incident (a lost card presented, a failed person-card check…: the Verifier's signals, the same
an API server hands its watchlist thread), one line each, `S\t<check id>\t<sealed>`, the signal
sealed whole (it holds the id number) with the message's WatchSeal. The sink hands them to the
watchlist's derivation (`incidents.record_signals`), in a transaction of its own before it
writes the checks, skipping the signals of checks the database already holds (a redelivered
message: counted when first written). So an incident is opened at least once for every signal;
only a sink that dies between the incidents' commit and the checks' counts those signals again
on the day's incident (never a second incident: one per card, kind, unit and day).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterable

import sqlalchemy as sa
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig

from idguard import uow
from idguard.config import Settings
from idguard.db.engine import make_sessionmaker
from idguard.scaleout import streams
from idguard.verification.models import Check
from idguard.verification.runtime.checklog import (
    CheckLog,
    Signal,
    Watched,
    WatchSeal,
    decode_payload,
)
from idguard.watchlist import incidents

log = logging.getLogger("idguard.sink")

FETCH = 256  # messages per transaction (each up to a batch of 1000 checks)
RETRY_SECONDS = 1.0
SIGNAL_TAG = "S\t"  # a line holding a check's signal, after every row and watch line


def signal_lines(signals: Iterable[Signal], seal: WatchSeal) -> str:
    """The lines a node appends to a check message for its checks' signals (sealed whole)."""
    out = []
    for check_id, unit_code, at, id_number, issued_on, kinds, detail in signals:
        plain = json.dumps([unit_code, at.isoformat(), id_number, issued_on.isoformat(), list(kinds), detail])
        out.append(f"{SIGNAL_TAG}{check_id}\t{seal.seal(check_id, plain)}\n")
    return "".join(out)


def split_signals(data: bytes, seal: WatchSeal) -> tuple[bytes, list[Signal], int]:
    """A check message's rows and watches (for `decode_payload`), and its signals; the count is
    signals that could not be opened (another secret): skipped."""
    tag = SIGNAL_TAG.encode()
    at = 0 if data.startswith(tag) else data.find(b"\n" + tag) + 1
    if at <= 0 and not data.startswith(tag):
        return data, [], 0
    signals: list[Signal] = []
    sealed_off = 0
    for line in data[at:].decode().split("\n"):
        if not line:
            continue
        _, check_id, sealed = line.split("\t")
        try:
            unit_code, when, id_number, issued_on, kinds, detail = json.loads(seal.open(check_id, sealed))
        except Exception:  # another secret, or not ours
            sealed_off += 1
            continue
        signals.append(
            (
                check_id,
                unit_code,
                dt.datetime.fromisoformat(when),
                id_number,
                dt.date.fromisoformat(issued_on),
                tuple(kinds),
                detail,
            )
        )
    return data[:at], signals, sealed_off


class Sink:
    def __init__(self, settings: Settings, engine: sa.Engine) -> None:
        self.settings = settings
        self.names = streams.names(settings)
        self._key = settings.check_hash_key
        self._writer = CheckLog(engine, self._key)  # its writer only: no journal, no thread
        self._sessions = make_sessionmaker(engine)
        self.written = 0  # check rows handed to the database (duplicates skipped there)
        self.signals = 0  # signals handed to the incidents' derivation
        self.failures = 0

    def decode(self, data: bytes, salt_hex: str) -> tuple[list[str], list[Watched]]:
        lines, watches, _signals = self.decode_all(data, salt_hex)
        return lines, watches

    def decode_all(self, data: bytes, salt_hex: str) -> tuple[list[str], list[Watched], list[Signal]]:
        seal = WatchSeal(self._key, bytes.fromhex(salt_hex))
        rows, signals, _ = split_signals(data, seal)
        lines, watches, _ = decode_payload(rows, seal)
        return lines, watches, signals

    def _record_signals(self, signals: list[Signal]) -> None:
        """The incidents of the signals whose checks are not in the database yet (one transaction)."""
        if not signals:
            return
        with uow.transaction(self._sessions) as session:
            ids = {uuid.UUID(s[0]) for s in signals}
            present = {str(i) for i in session.scalars(sa.select(Check.id).where(Check.id.in_(ids)))}
            new = [s for s in signals if str(uuid.UUID(s[0])) not in present]
            incidents.record_signals(session, new)
        self.signals += len(new)

    async def run(self, stop: asyncio.Event, *, idle: asyncio.Event | None = None) -> None:
        nc = await streams.connect(self.settings, name="idguard-checklog-sink")
        js = nc.jetstream()
        try:
            await streams.ensure_streams(js, self.names)
            sub = await js.pull_subscribe(
                self.names.checks_subject,
                durable=self.names.sink_consumer,
                stream=self.names.checks_stream,
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=120, max_ack_pending=-1),
            )
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(FETCH, timeout=0.5)
                except (TimeoutError, NatsTimeout):
                    if idle is not None:
                        idle.set()
                    continue
                if idle is not None:
                    idle.clear()
                lines: list[str] = []
                watches: list[Watched] = []
                signals: list[Signal] = []
                for msg in msgs:
                    got, watched, signalled = self.decode_all(
                        msg.data, (msg.headers or {}).get("Idg-Salt", "00")
                    )
                    lines += got
                    watches += watched
                    signals += signalled
                while not stop.is_set():
                    try:
                        await asyncio.to_thread(self._record_signals, signals)
                        signals = []  # recorded: a retry of the checks' write does not repeat them
                        await asyncio.to_thread(self._writer._write, lines, watches, idempotent=True)
                        break
                    except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as exc:
                        self.failures += 1
                        log.warning(
                            "check log write failed (%s); %d checks wait in the stream",
                            type(exc).__name__,
                            len(lines),
                        )
                        await asyncio.sleep(RETRY_SECONDS)
                else:
                    break  # stopped before written: not acknowledged, redelivered to the next sink
                for msg in msgs:
                    await msg.ack()
                self.written += len(lines)
        finally:
            await nc.close()
