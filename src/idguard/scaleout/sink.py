"""`idguard checklog-sink`: the check stream ({P}_CHECKS) into the database's check log.

A durable pull consumer ({P}_sink) fetches up to FETCH messages (each one node request's checks,
as the check log's row lines), writes them in one transaction — COPY on PostgreSQL through a
temporary table, skipping check ids already there, an INSERT … ON CONFLICT DO NOTHING on SQLite
(CheckLog._write, idempotent) — and only then acknowledges them. So a check is in the stream until
it is in the database: a sink killed between the write and the acknowledgement writes the batch
again on its next fetch, changing nothing; a database that is unreachable makes the sink retry the
same batch every RETRY_SECONDS while the checks wait in the stream (file storage) and nodes keep
answering. Watched checks also get their Watch rows (id numbers sealed in the stream, opened here
with the check log's key).
"""

from __future__ import annotations

import asyncio
import logging

import sqlalchemy as sa
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig

from idguard.config import Settings
from idguard.scaleout import streams
from idguard.verification.runtime.checklog import CheckLog, Watched, WatchSeal, decode_payload

log = logging.getLogger("idguard.sink")

FETCH = 256  # messages per transaction (each up to a batch of 1000 checks)
RETRY_SECONDS = 1.0


class Sink:
    def __init__(self, settings: Settings, engine: sa.Engine) -> None:
        self.settings = settings
        self.names = streams.names(settings)
        self._key = settings.check_hash_key
        self._writer = CheckLog(engine, self._key)  # its writer only: no journal, no thread
        self.written = 0  # check rows handed to the database (duplicates skipped there)
        self.failures = 0

    def decode(self, data: bytes, salt_hex: str) -> tuple[list[str], list[Watched]]:
        lines, watches, _ = decode_payload(data, WatchSeal(self._key, bytes.fromhex(salt_hex)))
        return lines, watches

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
                for msg in msgs:
                    got, watched = self.decode(msg.data, (msg.headers or {}).get("Idg-Salt", "00"))
                    lines += got
                    watches += watched
                while not stop.is_set():
                    try:
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
