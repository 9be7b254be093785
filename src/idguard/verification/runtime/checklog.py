"""The check log (核查记录): every check recorded, without making logging the bottleneck.

Checks are appended to an in-memory buffer and written in batches by one thread per worker,
every FLUSH_INTERVAL or as soon as FLUSH_ROWS are waiting. The bound, documented for units and
auditors: an acknowledged check is written within MAX_UNWRITTEN_SECONDS; when the buffer holds
MAX_BUFFERED checks (the database has been unreachable for a while) new checks are refused with
503 rather than answered unrecorded — every check must be accountable. On shutdown the buffer is
flushed before the process exits.

The bound holds while the database takes checks as fast as they are answered. A worker can answer
batches faster than PostgreSQL indexes their rows (about 30,000 rows/s on a loaded two-core
machine, bench/verify/); under such load the log falls behind (bounded by MAX_BUFFERED), but
the checks that start a watch are written first, and a transaction takes about WRITE_SECONDS, so
watches keep the bound the notifications rely on.

The id number lives in memory only until its batch is written: the row keeps it masked and as
HMAC-SHA256 under the service secret (so a citizen's own checks can be found, nobody else's).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence

import sqlalchemy as sa

from idguard import uow
from idguard.core.idnumber import mask
from idguard.registry.models import Card
from idguard.verification.models import Check, Watch

log = logging.getLogger("idguard.checklog")

FLUSH_INTERVAL = 0.2
FLUSH_ROWS = 5000
# A check counts as written when its transaction commits, so a transaction is sized to take about
# WRITE_SECONDS at the rate the last ones were written (a watch waits for at most one in progress,
# see CheckLog.flush), within [WRITE_ROWS_MIN, WRITE_ROWS_MAX]: big transactions write faster,
# most of all while the requests keep the GIL busy.
WRITE_SECONDS = 0.5
WRITE_ROWS_MIN = 5_000
WRITE_ROWS_MAX = 50_000
WATCH_ROWS = 500  # watched checks per transaction (each also looks up its card and inserts a watch)
MAX_UNWRITTEN_SECONDS = 1.0
MAX_BUFFERED = 500_000


# One check as the hot path records it, until it is written: a plain tuple whose fields are named
# in CHECK_FIELDS, in order; readers unpack it in that order or index it by a named position
# (WATCH_ON). Not a NamedTuple: building one costs 0.29 us more per check, a fifth of the batch
# path's own cost (measured with Verifier.check_items on 1000-check batches, 1.83 vs 1.55 us).
CheckEntry = tuple[str, str, str, str, dt.datetime, str, str | None, str, dt.date | None, int, bool | None]
CHECK_FIELDS = (
    "check_id",  # the answer's check id (a UUID string)
    "unit_code",
    "operator",
    "purpose",
    "at",  # when it was answered (aware UTC)
    "result",
    "reason",
    "id_number",  # kept in memory only until written, masked and hashed
    "watch_on",  # with `watch` (and not a mismatch): the watched card's issue date; else None
    "seq",  # the ledger position the answer was given at
    "fingerprint_match",  # the person-card verdict, when a comparison was made
)
WATCH_ON = CHECK_FIELDS.index("watch_on")


class LogFull(Exception):
    """The buffer is full: the database has not taken checks for a while."""


def id_hash(secret_key: str, id_number: str) -> str:
    return hmac.new(secret_key.encode(), id_number.encode(), hashlib.sha256).hexdigest()


class IdHasher:
    """`id_hash` for many numbers under one key: HMAC-SHA256 (RFC 2104) with the key's inner and
    outer hash states computed once, so each number costs two SHA-256 copies and updates
    (about a quarter of `hmac.new` per call). Same digests as `id_hash`."""

    __slots__ = ("inner", "outer")

    def __init__(self, secret_key: str) -> None:
        key = secret_key.encode()
        block = hashlib.sha256().block_size
        if len(key) > block:
            key = hashlib.sha256(key).digest()
        key = key.ljust(block, b"\0")
        self.inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))  # the states after the padded key
        self.outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def __call__(self, id_number: str) -> str:
        inner = self.inner.copy()
        inner.update(id_number.encode())
        outer = self.outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()


class CheckLog:
    def __init__(self, engine: sa.Engine, secret_key: str) -> None:
        self._engine = engine
        self._id_hash = IdHasher(secret_key)
        self._buffer: deque[CheckEntry] = deque()
        self._watched: deque[CheckEntry] = deque()  # checks that start a watch: written first
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # One writer at a time: a flush() from outside the thread (shutdown, tests) waits for a
        # round in progress, so when it returns everything appended before it is written.
        self._writing = threading.Lock()
        self._in_flight = 0  # taken from the queues, not yet committed
        self._write_rows = WRITE_ROWS_MIN  # rows of the next transaction (see WRITE_SECONDS)
        self.written = 0
        self.failures = 0

    def append(self, entries: list[CheckEntry]) -> None:
        if self.pending + len(entries) > MAX_BUFFERED:
            raise LogFull("the check log is not being written; checks are refused until it is")
        if any(e[WATCH_ON] is not None for e in entries):
            self._watched.extend(e for e in entries if e[WATCH_ON] is not None)
            self._buffer.extend(e for e in entries if e[WATCH_ON] is None)
        else:
            self._buffer.extend(entries)
        if len(self._buffer) >= FLUSH_ROWS:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Checks answered and not yet written."""
        return len(self._buffer) + len(self._watched) + self._in_flight

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="idguard-checklog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and write whatever is buffered (called on shutdown)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        while self.pending:
            self.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            try:
                # With a backlog (checks answered faster than the database takes them), write
                # round after round without waiting.
                while self.flush() and self.pending >= FLUSH_ROWS and not self._stop.is_set():
                    pass
            except Exception:  # the database may be down: keep the buffer, retry next round
                self.failures += 1
                log.exception("check log flush failed; %d checks buffered", self.pending)

    def flush(self) -> int:
        """Write one round, each part in its own transaction: the checks that start a watch
        first, then about WRITE_SECONDS' worth of the others. A watch must be written within
        MAX_UNWRITTEN_SECONDS of its check (notifications.SETTLE_SECONDS relies on it) even
        when the rest of the log has fallen behind, and a check is written only when its
        transaction commits, so transactions stay short. Returns how many were written."""
        with self._writing:
            written = self._write_from(self._watched, WATCH_ROWS)
            started = time.monotonic()
            rows = self._write_from(self._buffer, self._write_rows)
            if rows == self._write_rows:  # a full transaction: its pace sizes the next one
                pace = rows / max(time.monotonic() - started, 1e-3)
                self._write_rows = int(min(WRITE_ROWS_MAX, max(WRITE_ROWS_MIN, pace * WRITE_SECONDS)))
            return written + rows

    def _write_from(self, queue: deque[CheckEntry], limit: int) -> int:
        batch: list[CheckEntry] = []
        while queue and len(batch) < limit:
            batch.append(queue.popleft())
        if not batch:
            return 0
        self._in_flight = len(batch)
        try:
            self._write(batch)
        except Exception:
            queue.extendleft(reversed(batch))  # keep order; nothing is lost
            raise
        else:
            self.written += len(batch)
        finally:
            self._in_flight = 0
        return len(batch)

    def _write(self, batch: list[CheckEntry]) -> None:
        id_hash = self._id_hash
        watched = [e for e in batch if e[WATCH_ON] is not None]
        with uow.connection(self._engine) as conn:
            if conn.dialect.name == "postgresql":
                _copy_checks(conn, batch, id_hash)
            else:
                conn.execute(
                    sa.insert(Check),
                    [
                        {
                            "id": uuid.UUID(check_id),
                            "unit_code": unit_code,
                            "operator": operator,
                            "purpose": purpose,
                            "at": at,
                            "result": str(result),
                            "reason": None if reason is None else str(reason),
                            "id_masked": mask(id_number),
                            "id_hash": id_hash(id_number),
                            "watch": watch_on is not None,
                            "fingerprint_match": match,
                        }
                        for (
                            check_id,
                            unit_code,
                            operator,
                            purpose,
                            at,
                            result,
                            reason,
                            id_number,
                            watch_on,
                            _seq,
                            match,
                        ) in batch
                    ],
                )
            for check_id, unit_code, _op, _purpose, at, _r, _reason, id_number, watch_on, seq, _m in watched:
                card_id = conn.scalar(
                    sa.select(Card.id)
                    .where(Card.id_number == id_number, Card.issued_on == watch_on)
                    .order_by(Card.temporary)
                    .limit(1)
                )
                if card_id is None:
                    continue
                exists = conn.scalar(
                    sa.select(Watch.since_seq).where(Watch.unit_code == unit_code, Watch.card_id == card_id)
                )
                if exists is None:
                    conn.execute(
                        sa.insert(Watch),
                        [
                            {
                                "unit_code": unit_code,
                                "card_id": card_id,
                                "check_id": uuid.UUID(check_id),
                                "since_seq": seq,
                                "created_at": at,
                            }
                        ],
                    )


_COLUMNS = (
    "id",
    "unit_code",
    "operator",
    "purpose",
    "at",
    "result",
    "reason",
    "id_masked",
    "id_hash",
    "watch",
    "fingerprint_match",
)
_NULL = "\\N"
_BOOL = {None: _NULL, True: "t", False: "f"}
# COPY's text format: backslash, tab, newline and carriage return are escaped. PostgreSQL text
# cannot hold NUL at all: a NUL in a unit's free text (the operator) would fail every flush and
# wedge the log, so it is written as U+FFFD instead.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\ufffd"})
_COPY_CHUNK = 5000  # rows per write to the COPY stream


def _copy_checks(conn: sa.Connection, batch: Sequence[CheckEntry], id_hash: IdHasher) -> None:
    """COPY instead of an INSERT per row, with the rows formatted here as COPY text: this runs in
    the serving process, beside the requests, so every microsecond per row is taken from them.

    Only the unit code, operator and purpose are free text (escaped); the rest is formatted here
    (a UUID string, an ISO time, fixed words, the masked number, a hex digest). A request's
    checks share the unit, the time and mostly the operator and purpose, so those columns are
    formatted once per run of equal values."""
    inner0, outer0 = id_hash.inner, id_hash.outer
    head = ""
    last: tuple[str, str, str, dt.datetime] | None = None
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY checks ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
        for start in range(0, len(batch), _COPY_CHUNK):
            lines = []
            for (
                check_id,
                unit_code,
                operator,
                purpose,
                at,
                result,
                reason,
                id_number,
                watch_on,
                _,
                match,
            ) in batch[start : start + _COPY_CHUNK]:
                if (
                    last is None
                    or at is not last[3]
                    or operator != last[1]
                    or purpose != last[2]
                    or unit_code != last[0]
                ):
                    if at.tzinfo is None:
                        raise ValueError("naive datetime in the check log")
                    last = (unit_code, operator, purpose, at)
                    head = "\t".join(
                        (
                            "",
                            unit_code.translate(_ESCAPES),
                            operator.translate(_ESCAPES),
                            purpose.translate(_ESCAPES),
                            at.isoformat(),
                            "",
                        )
                    )
                inner = inner0.copy()
                inner.update(id_number.encode())
                outer = outer0.copy()
                outer.update(inner.digest())
                masked = (
                    id_number[:6] + "********" + id_number[14:] if len(id_number) == 18 else mask(id_number)
                )
                lines.append(
                    f"{check_id}{head}{result}\t{_NULL if reason is None else reason}\t{masked}\t"
                    f"{outer.hexdigest()}\t{'f' if watch_on is None else 't'}\t{_BOOL[match]}\n"
                )
            copy.write("".join(lines))
