"""The chain keeper: a worker's thread that seals the audit log every few seconds and writes a
signed checkpoint of both chains every hour (registry/chains.py; docs/operations.md).

Every worker runs one; they need no coordination. Sealers queue on the audit head's row lock
(and find nothing left to seal after the first), and a worker writes a checkpoint only when the
newest one in the database is older than the interval, so several workers add at most a few
extra checkpoints, never a wrong one. A failure (the database away) is logged and retried at the
next tick: the keeper never stops the worker, and entries sealed late are sealed all the same.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

import sqlalchemy as sa

from idguard import uow
from idguard.core.signing import KeyRing
from idguard.registry import chains

log = logging.getLogger("idguard.ops.chains")

SEAL_SECONDS = 5.0
CHECKPOINT_SECONDS = 3600.0


class ChainKeeper:
    def __init__(
        self,
        engine: sa.Engine,
        ring: KeyRing,
        *,
        now: Callable[[], dt.datetime],
        seal_seconds: float = SEAL_SECONDS,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
    ) -> None:
        self.engine = engine
        self.ring = ring
        self.now = now
        self.seal_seconds = seal_seconds
        self.checkpoint_every = dt.timedelta(seconds=checkpoint_seconds)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> None:
        """Seal the audit log; write checkpoints when the last is older than the interval."""
        chains.seal_audit(self.engine)
        now = self.now()
        with uow.connection(self.engine) as conn:
            last = chains.last_checkpoint_at(conn)
        if last is None or now - last >= self.checkpoint_every:
            made = chains.write_checkpoints(self.engine, self.ring, now=now)
            log.info("checkpoint written: %s", ", ".join(f"{c.name.value} at seq {c.seq}" for c in made))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="idguard-chain-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.seal_seconds):
            try:
                self.tick()
            except Exception:  # the next tick retries; a worker must not die of it
                log.exception("sealing the audit log failed; retrying in %.0f s", self.seal_seconds)
