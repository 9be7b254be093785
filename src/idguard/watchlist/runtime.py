"""The watchlist's thread in every worker: it turns the checks' signals into incidents and ends
blacklist entries after their last day, off the request path.

The check log hands it the signals of checks it has made durable (verification's
`Verifier.on_signals` hook, called on the journal's thread: here they are only queued); the
thread writes them in one transaction per round, at once when they arrive, so an incident is in
the database (and on every worker's stream, which polls it) well within a second of the check.
If the database is down, the signals wait (up to MAX_WAITING, then the oldest are dropped with an
error in the log) and are written when it is back.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import deque

from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.core.clock import Clock
from idguard.verification.runtime.checklog import Signal
from idguard.watchlist import blacklist, incidents

log = logging.getLogger("idguard.watchlist")

SWEEP_SECONDS = 60.0  # how often ended blacklist entries are written as ended
# A round at most every ROUND_SECONDS while signals keep coming (the first after a quiet spell is
# written at once): a round is a transaction and a few statements whatever it holds, and on the
# loaded single check (10 % signals) one round per journal group cost ~25 us of CPU a check,
# fighting the event loop for the GIL (issue 14, bench/protocol_cpu.py). With the stream's
# 0.2 s poll an incident still reaches it well within a second of its check.
ROUND_SECONDS = 0.25
MAX_WAITING = 100_000
RETRY_SECONDS = 1.0


class IncidentWriter:
    def __init__(self, sessions: sessionmaker[Session], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock
        self._signals: deque[Signal] = deque()
        self._harvesting: deque[tuple[str, str, dt.datetime]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one round at a time (the thread, or a test's flush)
        self._queue = threading.Lock()  # the queues' trimming and a round's taking
        self.written = 0
        self.dropped = 0
        self._next_round = 0.0  # time.monotonic() before which the thread starts no round

    # hooks (called on other threads: queue and wake, nothing else)

    def on_signals(self, signals: list[Signal]) -> None:
        with self._queue:
            self._signals.extend(signals)
            overflow = len(self._signals) - MAX_WAITING
            for _ in range(max(0, overflow)):
                self._signals.popleft()
                self.dropped += 1
        if overflow > 0:
            log.error("incidents: the database has not taken signals for a while; %d dropped", overflow)
        self._wake.set()

    def on_harvesting(self, unit_code: str, reason: str, at: dt.datetime) -> None:
        self._harvesting.append((unit_code, reason, at))
        self._wake.set()

    # the thread

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="idguard-incidents", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        try:
            self.flush()
        except Exception:
            log.exception("incidents: %d signals could not be written at shutdown", len(self._signals))

    def _run(self) -> None:
        sweep_at = 0.0
        while not self._stop.is_set():
            self._wake.wait(SWEEP_SECONDS)
            self._wake.clear()
            self._stop.wait(max(0.0, self._next_round - time.monotonic()))  # pace the rounds
            self._next_round = time.monotonic() + ROUND_SECONDS
            try:
                self.flush()
            except Exception:
                log.exception("incidents: %d signals waiting; retried", len(self._signals))
                self._stop.wait(RETRY_SECONDS)
                self._wake.set()
            if time.monotonic() >= sweep_at:
                sweep_at = time.monotonic() + SWEEP_SECONDS
                try:
                    self.sweep()
                except Exception:
                    log.exception("blacklist: ending entries after their last day failed; retried")

    def flush(self) -> int:
        """Write what is waiting (one transaction); returns the signals written."""
        with self._lock:
            with self._queue:
                batch = [self._signals.popleft() for _ in range(len(self._signals))]
                units = [self._harvesting.popleft() for _ in range(len(self._harvesting))]
            if not batch and not units:
                return 0
            try:
                with uow.transaction(self._sessions) as session:
                    incidents.record_signals(session, batch)
                    for unit_code, reason, at in units:
                        incidents.harvesting_suspected(session, unit_code=unit_code, reason=reason, at=at)
            except Exception:
                with self._queue:  # back in front, in order: nothing is lost
                    self._signals.extendleft(reversed(batch))
                    self._harvesting.extendleft(reversed(units))
                raise
            self.written += len(batch)
            return len(batch)

    def sweep(self) -> int:
        with uow.transaction(self._sessions) as session:
            ended = blacklist.expire_due(session, now=self._clock.now())
        if ended:
            log.info("blacklist: %d entries ended after their last day", ended)
        return ended
