"""The check log (核查记录): every check recorded, durably before its answer leaves, without making
logging the bottleneck.

Each check a worker answers is appended to this log (`append`, on the hot path, in memory) and
then, before the answer is sent, made durable in the worker's local journal (runtime/journal.py):
one journal thread writes the checks appended since its last round as one record, synced to
disk (the file is opened O_DSYNC) — a group commit of what the event loop appended in one turn
(see `_kick`) — and only then are that group's answers released (the answer, routes/verify.py's
RecordedResponse, awaits `recorded(ticket)` before it is sent; the event loop keeps serving
meanwhile). A check whose group cannot be written is answered 503 instead (LogFull). Once
synced, checks are written to the database in batches by one thread per worker, every
FLUSH_INTERVAL or as soon as FLUSH_ROWS are waiting; a journal segment is cut back (or removed)
once all its checks are in the database. When a worker starts, it first replays the journal
segments left by processes that are gone (kill -9, a power cut, a stop while the database was
unreachable) into the database, idempotently (a check id already there is skipped), before it
serves; a running worker adopts a dead sibling's segments every ADOPT_SECONDS. So an answered
check is never lost: it is in the database, or in a journal the next start writes there.
docs/checklog.md is the operators' page (where the journal lives, what it holds, crash and
restart).

The bounds, documented for units and auditors: an answered check is written to the database
within MAX_UNWRITTEN_SECONDS while the database takes checks as fast as they are answered; when
MAX_BUFFERED checks are waiting (the database has been unreachable for a while) new checks are
refused with 503 rather than answered unrecorded — every check must be accountable. On shutdown
what is waiting is written; if the database is unreachable then, it stays in the journal.

A worker can answer batches faster than PostgreSQL indexes their rows (about 30,000 rows/s on a
loaded two-core machine, bench/verify/); under such load the log falls behind (bounded by
MAX_BUFFERED), but the checks that start a watch are written first, and a transaction takes
about WRITE_SECONDS, so watches keep the bound the notifications rely on (the journal adds its
few milliseconds).

Personal data: a check is formatted once, when appended, into the row the database keeps — the
id number masked and as HMAC-SHA256 under the log's key (so a citizen's own checks can be
found, nobody else's) — and that line is what the journal holds and what is written (COPY text
on PostgreSQL; on SQLite the values SQLAlchemy would store, `sqlite_row`). A check that starts
a watch also needs the card (id number and issue date) to create its Watch row: the journal
holds that id number sealed with AES-256-GCM under a key derived from the log's key, never in
the clear; the clear number stays in memory only until the watch is written.
IDGUARD_CHECKLOG_JOURNAL=false turns the journal off (checks are then only in memory until
written, as before; for comparisons, not for production).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import itertools
import logging
import os
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from idguard import uow
from idguard.core.clock import isoformat
from idguard.core.idnumber import mask
from idguard.registry.models import Card
from idguard.verification.models import Watch
from idguard.verification.runtime.journal import (
    Doorbell,
    Journal,
    JournalError,
    Orphan,
    Scan,
    Waiters,
    claim_orphans,
)

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
OBSERVED_SLICE = 256  # written checks handed to `on_written` at a time (see CheckLog._tell_written)
ADOPT_SECONDS = 30.0  # how often a running worker looks for segments of workers that are gone
REPLAY_ROWS = 20_000  # checks per transaction when replaying a journal
JOURNAL_IDLE_SECONDS = 0.5  # the journal thread wakes at least this often (to notice a stop)
# A group is what the event loop appended in one turn: the first append of a group asks the loop
# (call_soon) to wake the journal thread once it has served every request that was ready, so the
# requests that arrived together share one synced write (whose fixed cost, ~0.1 ms of CPU, would
# otherwise be paid per request), and none waits for a timer. While a write is in flight the next
# group gathers. An append made off any event loop wakes the thread at once. (It was a group at
# most every 2 ms: with 16 connections that capped the single check near 8,000/s whatever the
# CPU, and the timer's sleep cost the journal thread one more hand-over of the GIL a group.)


# One check as the hot path records it, until it is written: a plain tuple whose fields are named
# in CHECK_FIELDS, in order; readers unpack it in that order or index it by a named position
# (WATCH_ON). Not a NamedTuple: building one costs 0.29 us more per check, a fifth of the batch
# path's own cost (measured with Verifier.check_items on 1000-check batches, 1.83 vs 1.55 us).
CheckEntry = tuple[
    str, str, str, str, dt.datetime, str, str | None, str, dt.date | None, int, bool | None, str | None
]
CHECK_FIELDS = (
    "check_id",  # the answer's check id (a UUID string)
    "unit_code",
    "operator",
    "purpose",
    "at",  # when it was answered (aware UTC)
    "result",
    "reason",
    "id_number",  # formatted at once into the row (masked and hashed); kept only for a watch
    "watch_on",  # with `watch` (and not a mismatch): the watched card's issue date; else None
    "seq",  # the ledger position the answer was given at
    "fingerprint_match",  # the person-card verdict, when a comparison was made
    "alerts",  # the answer's alerts, comma-joined in a fixed order (index.ALERT_ORDER); None: none
)
WATCH_ON = CHECK_FIELDS.index("watch_on")

# A check worth an incident (the watchlist's, off the request path): what the verifier saw, kept
# in memory only (never journaled) and handed to `CheckLog.on_durable` once the check is synced:
# (check_id, unit_code, at, id_number, issued_on, incident kinds, detail: the matched card of a
# known impersonator, else None).
Signal = tuple[str, str, dt.datetime, str, dt.date, tuple[str, ...], str | None]

# What a Watch row needs, kept in memory until written (sealed in the journal):
# (check_id, unit_code, at, id_number, watch_on, seq).
Watched = tuple[str, str, dt.datetime, str, dt.date, int]
# Checks on their way to the database: (journal segment or -1, their row lines as one string, how
# many, and for the watched queue their watches, one per line in order). One string per request,
# not a list of lines: a list is a container the garbage collector traverses, line by line, at
# every collection for as long as it waits.
Chunk = tuple[int, str, int, list[Watched]]
# One append waiting for the journal: its lines without a watch (joined) and how many, those with
# one (joined) and their watches.
Appended = tuple[str, int, str, list[Watched]]


class LogFull(Exception):
    """The check log cannot take the check: its buffer is full (the database has not taken
    checks for a while), or its journal cannot be written. Answered 503."""


NOT_RECORDED = "the check could not be recorded (journal unavailable); retry later"


class NotJournaled(LogFull):
    """The journal group holding the check could not be written: its answer must not go out."""


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


class WatchSeal:
    """The id number of a watched check, sealed for the journal: AES-256-GCM under a key derived
    (HMAC-SHA256) from the log's key and the journal's salt, the check id as associated data.
    A replay with another key cannot open it: that watch is skipped (the check row is
    still written)."""

    def __init__(self, secret_key: str, salt: bytes) -> None:
        key = hmac.new(
            secret_key.encode(), b"idguard check journal: watched id numbers\0" + salt, hashlib.sha256
        )
        self._aead = AESGCM(key.digest())

    def seal(self, check_id: str, id_number: str) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(
            nonce + self._aead.encrypt(nonce, id_number.encode(), check_id.encode())
        ).decode()

    def open(self, check_id: str, sealed: str) -> str:
        raw = base64.b64decode(sealed)
        return self._aead.decrypt(raw[:12], raw[12:], check_id.encode()).decode()


def database_fingerprint(url: sa.URL) -> str:
    """Which database a journal belongs to (in its header): a journal is replayed only into it."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        ident = f"sqlite:{os.path.realpath(url.database or '')}"
    else:
        ident = f"{backend}://{(url.host or '').lower()}:{url.port or 5432}/{url.database or ''}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# The row line: one check as COPY text (PostgreSQL's text format), the form it is journaled in

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
    "alerts",
)
_N_COLUMNS = len(_COLUMNS)
_NULL = "\\N"
_BOOL = {None: _NULL, True: "t", False: "f"}
# COPY's text format: backslash, tab, newline and carriage return are escaped. PostgreSQL text
# cannot hold NUL at all: a NUL in a unit's free text (the operator) would fail every flush and
# wedge the log, so it is written as U+FFFD there; SQLite keeps it (escaped as \0 in the line).
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_ESCAPES_POSTGRES = str.maketrans({**_ESCAPES, "\0": "\ufffd"})
_ESCAPES_SQLITE = str.maketrans({**_ESCAPES, "\0": "\\0"})
_UNESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", "0": "\0"}
_ESCAPED = re.compile(r"\\(.)", re.DOTALL)
_COPY_BYTES = 1 << 20  # bytes per write to the COPY stream
_WATCH_TAG = "W\t"  # a journal line holding a watch (a row line starts with its check id, hex)


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    return _ESCAPED.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(1)), text)


def row_values(line: str, times: dict[str, dt.datetime] | None = None) -> dict[str, object]:
    """A row line as the values of a `checks` row, as SQLAlchemy takes them (tests, diagnosis)."""
    check_id, unit_code, operator, purpose, at, result, reason, masked, digest, watch, match, alerts = (
        _fields(line)
    )
    if times is None:
        when = dt.datetime.fromisoformat(at)
    elif (when_or_none := times.get(at)) is None:
        when = times[at] = dt.datetime.fromisoformat(at)
    else:
        when = when_or_none
    return {
        "id": uuid.UUID(check_id),
        "unit_code": _unescape(unit_code),
        "operator": _unescape(operator),
        "purpose": _unescape(purpose),
        "at": when,
        "result": result,
        "reason": None if reason == _NULL else reason,
        "id_masked": masked,
        "id_hash": digest,
        "watch": watch == "t",
        "fingerprint_match": None if match == _NULL else match == "t",
        "alerts": None if alerts == _NULL else alerts,
    }


def _fields(line: str) -> list[str]:
    """A row line's fields; a line journaled before `alerts` existed (11 fields) has none."""
    fields = line.rstrip("\n").split("\t")
    if len(fields) == _N_COLUMNS - 1:
        fields.append(_NULL)
    return fields


_SQLITE_INSERT = f"INSERT INTO checks ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"  # noqa: S608 - constant
_SQLITE_INSERT_NEW = _SQLITE_INSERT + " ON CONFLICT (id, at) DO NOTHING"
_SQLITE_FLAGS: dict[str, int | None] = {"t": 1, "f": 0, _NULL: None}


def sqlite_row(line: str, times: dict[str, str]) -> tuple[str | int | None, ...]:
    """A row line as the values SQLAlchemy stores in SQLite's `checks` (the UUID as 32 hex
    digits, the time as UTC text, booleans as 0 and 1), for an executemany without SQLAlchemy's
    per-row type processing: two thirds of the SQLite write's cost otherwise. A test holds the
    stored rows equal to SQLAlchemy's. `times` caches the formatted times (a request's checks
    share theirs)."""
    check_id, unit_code, operator, purpose, at, result, reason, masked, digest, watch, match, alerts = (
        _fields(line)
    )
    stored_at = times.get(at)
    if stored_at is None:
        utc = dt.datetime.fromisoformat(at).astimezone(dt.UTC)
        stored_at = times[at] = utc.strftime("%Y-%m-%d %H:%M:%S.%f")
    return (
        check_id.replace("-", ""),
        _unescape(unit_code),
        _unescape(operator),
        _unescape(purpose),
        stored_at,
        result,
        None if reason == _NULL else reason,
        masked,
        digest,
        _SQLITE_FLAGS[watch],
        _SQLITE_FLAGS[match],
        None if alerts == _NULL else alerts,
    )


def _observed(line: str) -> tuple[str, str, str, str]:
    """(unit code, operator, id hash, result) of a row line."""
    fields = line.split("\t", 9)
    return _unescape(fields[1]), _unescape(fields[2]), fields[8], fields[5]


def watch_line(watched: Watched, seal: WatchSeal) -> str:
    check_id, unit_code, at, id_number, watch_on, seq = watched
    escaped = unit_code.translate(_ESCAPES_SQLITE)
    return (
        f"{_WATCH_TAG}{check_id}\t{escaped}\t{at.isoformat()}\t{seq}\t{watch_on.isoformat()}\t"
        f"{seal.seal(check_id, id_number)}\n"
    )


def decode_payload(payload: bytes, seal: WatchSeal) -> tuple[list[str], list[Watched], int]:
    """A journal record's row lines and watches; the last count is watches that could not be
    opened (another secret): skipped."""
    lines: list[str] = []
    watches: list[Watched] = []
    sealed_off = 0
    for line in payload.decode("utf-8", "surrogatepass").split("\n"):
        if not line:
            continue
        if not line.startswith(_WATCH_TAG):
            if line.count("\t") == _N_COLUMNS - 2:  # journaled before `alerts` existed
                line += "\t" + _NULL
            lines.append(line + "\n")
            continue
        _, check_id, unit_code, at, seq, watch_on, sealed = line.split("\t")
        try:
            id_number = seal.open(check_id, sealed)
        except (InvalidTag, ValueError):
            sealed_off += 1
            continue
        watches.append(
            (
                check_id,
                _unescape(unit_code),
                dt.datetime.fromisoformat(at),
                id_number,
                dt.date.fromisoformat(watch_on),
                int(seq),
            )
        )
    return lines, watches, sealed_off


# ---------------------------------------------------------------------------------------------


class CheckLog:
    def __init__(self, engine: sa.Engine, secret_key: str, *, journal_dir: Path | None = None) -> None:
        self._engine = engine
        self._secret_key = secret_key
        self._id_hash = IdHasher(secret_key)
        self._escapes = _ESCAPES_POSTGRES if engine.dialect.name == "postgresql" else _ESCAPES_SQLITE
        self._buffer: deque[Chunk] = deque()
        self._watched: deque[Chunk] = deque()  # checks that start a watch: written first
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # One writer at a time: a flush() from outside the thread (shutdown, tests) waits for a
        # round in progress, so when it returns everything appended before it is written.
        self._writing = threading.Lock()
        self._write_rows = WRITE_ROWS_MIN  # rows of the next transaction (see WRITE_SECONDS)
        self._appended = 0  # checks appended since start; pending = appended - written
        self.written = 0
        self.failures = 0
        self.replayed = 0  # checks written from journals of processes that were gone
        # The journal (None: off). Appends wait in _unjournaled until the journal thread (or a
        # flush) writes and syncs them as one group; tickets number the appends.
        self._journal: Journal | None = None
        self._salt = os.urandom(16)
        self._seal = WatchSeal(secret_key, self._salt)
        if journal_dir is not None:
            self._journal = Journal(journal_dir.absolute(), database_fingerprint(engine.url), self._salt)
        self._lock = threading.Lock()  # appends and the journal's swap of them
        self._journal_lock = threading.Lock()  # one group commit at a time
        self._unjournaled: list[Appended] = []
        self._ticket = 0
        self._tickets = Waiters()
        self._local = threading.local()
        self._bell: Doorbell | None = Doorbell() if self._journal is not None else None  # wakes it
        self._kicked = False  # the loop is asked to wake the journal thread (see _kick)
        self._journal_stop = threading.Event()
        self._journal_thread: threading.Thread | None = None
        self.journal_failures = 0
        self.journal_writes = 0  # synced groups (checks per write: how well the group commit gathers)
        self._warned: set[Path] = set()
        # Told, by the writer thread, of the checks it has just written (off the request path; for
        # anomaly detection): (unit code, operator, id hash, result) each. The id number itself
        # is not kept past the answer, so distinct numbers show as distinct keyed hashes.
        self.on_written: Callable[[list[tuple[str, str, str, str]]], None] | None = None
        # Told, by the thread that made them durable (the journal's, or the appender's without a
        # journal), of the checks worth an incident (`Signal`s): the watchlist derives incidents
        # from them off the request path. Must only hand them on (a queue), never block.
        self.on_durable: Callable[[list[Signal]], None] | None = None
        self._unjournaled_signals: list[Signal] = []

    @property
    def journal(self) -> Journal | None:
        """The journal (None when it is off)."""
        return self._journal

    # --- the hot path ---------------------------------------------------------------------------

    def append(self, entries: Sequence[CheckEntry], signals: list[Signal] | None = None) -> int:
        """Record answered checks (in memory); returns their ticket for `recorded`, which the
        answer must await before it leaves. Raises LogFull when MAX_BUFFERED are waiting.
        `signals`: those of these checks worth an incident, for `on_durable`."""
        n = len(entries)
        if self._appended - self.written + n > MAX_BUFFERED:
            raise LogFull("the check log is not being written; checks are refused until it is")
        plain, watched_lines, watches = self._format(entries)
        appended = ("".join(plain), len(plain), "".join(watched_lines), watches)
        journal = self._journal
        with self._lock:
            self._appended += n
            if journal is None:
                ticket = 0
            else:
                self._ticket = ticket = self._ticket + 1
                self._unjournaled.append(appended)
                if signals:
                    self._unjournaled_signals += signals
        self._local.ticket = ticket
        if journal is None:
            self._enqueue([appended], -1, signals or [])
        elif not self._kicked:
            self._kicked = True
            try:
                asyncio.get_running_loop().call_soon(self._kick)  # after the loop's ready requests
            except RuntimeError:  # not on an event loop: now
                self._kick()
        return ticket

    def _kick(self) -> None:
        """Wake the journal thread for the group appended so far."""
        self._kicked = False
        bell = self._bell
        if bell is not None:
            bell.ring()

    def last_ticket(self) -> int:
        """The ticket of this thread's last `append` (the routes' way to it through the Verifier)."""
        ticket: int = getattr(self._local, "ticket", 0)
        return ticket

    async def recorded(self, ticket: int) -> None:
        """Return once the checks of `ticket` are synced to the journal (at once without one);
        raise NotJournaled if their group could not be written. Awaited on the event loop: the
        loop serves other requests meanwhile."""
        future = self.recorded_soon(ticket)
        if future is None:
            return
        try:
            await future
        except JournalError:
            raise NotJournaled(NOT_RECORDED) from None

    def recorded_soon(
        self, ticket: int, loop: asyncio.AbstractEventLoop | None = None
    ) -> asyncio.Future[None] | None:
        """`recorded` for a caller on the event loop that cannot await (the HTTP protocol's single
        check, api/server.py): None when the checks of `ticket` are synced already, else a future
        of the running loop, settled when they are (its exception a JournalError when their group
        failed). Raises NotJournaled at once for a group known to have failed. `loop`: the
        running loop, when the caller knows it (asyncio.get_running_loop costs a getpid call)."""
        tickets = self._tickets
        if ticket <= tickets.done and not tickets.failed(ticket):
            return None
        try:
            outcome = tickets.register(ticket, loop)
        except LookupError:  # no journal thread (not started, or stopped): sync here
            self._sync()
            outcome = tickets.register(ticket, loop)
        if outcome is True:
            return None
        if outcome is False:
            raise NotJournaled(NOT_RECORDED)
        return outcome

    def _format(self, entries: Iterable[CheckEntry]) -> tuple[list[str], list[str], list[Watched]]:
        """Each check as its row line (COPY text: the form journaled and written), formatted once
        here: the unit, the time and mostly the operator and purpose are shared by a request's
        checks, so they are escaped once per run of equal values; the rest is a UUID, fixed
        words, the masked number and a hex digest. Returns the lines of checks without a watch,
        those with one, and their watches."""
        inner0, outer0 = self._id_hash.inner, self._id_hash.outer
        escapes = self._escapes
        head = ""
        last: tuple[str, str, str, dt.datetime] | None = None
        plain: list[str] = []
        watched_lines: list[str] = []
        watches: list[Watched] = []
        add = plain.append
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
            seq,
            match,
            alerts,
        ) in entries:
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
                        unit_code.translate(escapes),
                        operator.translate(escapes),
                        purpose.translate(escapes),
                        isoformat(at),
                        "",
                    )
                )
            inner = inner0.copy()
            inner.update(id_number.encode())
            outer = outer0.copy()
            outer.update(inner.digest())
            masked = id_number[:6] + "********" + id_number[14:] if len(id_number) == 18 else mask(id_number)
            line = (
                f"{check_id}{head}{result}\t{_NULL if reason is None else reason}\t{masked}\t"
                f"{outer.hexdigest()}\t{'f' if watch_on is None else 't'}\t{_BOOL[match]}\t"
                f"{_NULL if alerts is None else alerts}\n"
            )
            if watch_on is None:
                add(line)
            else:
                watched_lines.append(line)
                watches.append((check_id, unit_code, at, id_number, watch_on, seq))
        return plain, watched_lines, watches

    # --- the journal (group commit) -----------------------------------------------------------

    def _sync(self) -> None:
        """Write and sync everything appended so far as one journal record, then hand it to the
        database writer and release its answers. The journal thread's round; also a flush's."""
        journal = self._journal
        if journal is None:
            return
        with self._journal_lock:
            with self._lock:
                group = self._unjournaled
                if not group:
                    return
                self._unjournaled = []
                signals = self._unjournaled_signals
                if signals:
                    self._unjournaled_signals = []
                end = self._ticket
            rows = sum(n + len(watches) for _, n, _, watches in group)
            seal = self._seal
            try:
                parts = [
                    *(plain for plain, _, _, _ in group),
                    *(watched for _, _, watched, _ in group),
                    *(watch_line(w, seal) for _, _, _, watches in group for w in watches),
                ]
                segment = journal.write("".join(parts).encode("utf-8", "surrogatepass"), rows)
                self.journal_writes += 1
                ok = True
            except Exception:  # JournalError, or anything else: the group is settled all the same
                # Its checks are answered 503 (never acknowledged); they are still written to the
                # database when it can be. The next group opens a new segment.
                self.journal_failures += 1
                log.exception("check journal write failed; %d checks refused", rows)
                segment, ok = -1, False
            self._enqueue(group, segment, signals)
            self._tickets.settle(end, ok=ok)

    def _enqueue(self, group: list[Appended], segment: int, signals: list[Signal]) -> None:
        for plain, n, watched_lines, watches in group:
            if n:
                self._buffer.append((segment, plain, n, []))
            if watches:
                self._watched.append((segment, watched_lines, len(watches), watches))
        if self._appended - self.written >= FLUSH_ROWS:
            self._wake.set()
        # A check refused 503 because its journal group failed is still written to the database
        # (above): it was made, so its signal counts too.
        if signals and self.on_durable is not None:
            try:
                self.on_durable(signals)
            except Exception:
                log.exception("check log: the observer of durable checks failed")

    def _journal_run(self) -> None:
        while True:
            bell = self._bell
            if bell is None:
                return
            bell.wait(JOURNAL_IDLE_SECONDS)
            # This round takes whatever is appended: a later append asks for a round of its own
            # (never stuck behind a kick whose loop closed before running it).
            self._kicked = False
            try:
                self._sync()
            except Exception:  # never expected (write errors are handled): keep the thread alive
                log.exception("check journal round failed")
            if self._journal_stop.is_set():
                with self._lock:
                    if not self._unjournaled:
                        self._tickets.close()  # later appends are synced by their own caller
                        return

    # --- start, stop, replay ---------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Checks answered and not yet written to the database."""
        return self._appended - self.written

    def start(self) -> None:
        """Replay the journals of processes that are gone (before serving), then start the
        threads. Raises if the database cannot take the replay: the journals stay."""
        self._stop.clear()
        if self._journal is not None:
            self.replay()
            self._journal_stop.clear()
            if self._bell is None:
                self._bell = Doorbell()
            self._tickets.open()
            self._journal_thread = threading.Thread(
                target=self._journal_run, name="idguard-journal", daemon=True
            )
            self._journal_thread.start()
        self._thread = threading.Thread(target=self._run, name="idguard-checklog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the threads and write whatever is waiting (called on shutdown). If the database
        cannot take it, it stays in the journal for the next start (without a journal, the
        error is raised: those checks are lost)."""
        self._stop.set()
        self._wake.set()
        if self._journal_thread is not None:
            self._journal_stop.set()
            bell = self._bell
            if bell is not None:
                bell.ring()
            self._journal_thread.join(timeout=30)
            if not self._journal_thread.is_alive() and bell is not None:
                self._bell = None
                bell.close()
            self._journal_thread = None
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._sync()
        try:
            while self.pending and self._flush():
                pass
        except Exception:
            if self._journal is None:
                log.exception("check log: %d answered checks could not be written and are lost", self.pending)
                raise
            log.exception("check log: the database cannot take the checks at shutdown")
        if self._journal is not None:
            kept = self._journal.close()
            if kept:
                log.warning(
                    "check log: %d answered checks are not in the database yet; they are kept in the "
                    "journal (%s in %s) and written when a worker starts again",
                    self.pending,
                    ", ".join(p.name for p in kept),
                    self._journal.directory,
                )

    def replay(self) -> int:
        """Write the checks of journal segments whose process is gone into the database and
        remove those segments; returns how many checks they held. Idempotent: a check id
        already in the database is skipped (a segment written but not yet removed), a watch
        that exists is kept. A live process's segments are left alone (their lock is held)."""
        journal = self._journal
        if journal is None:
            return 0
        scan = Scan()
        total = 0
        for orphan in claim_orphans(journal.directory, journal.fingerprint, scan):
            total += self._replay_segment(orphan)
            orphan.remove()
        for path in scan.other_database + scan.unreadable:
            if path not in self._warned:
                self._warned.add(path)
                log.warning(
                    "check journal %s is %s: left in place (see docs/checklog.md)",
                    path,
                    "not a journal" if path in scan.unreadable else "another database's",
                )
        return total

    def _replay_segment(self, orphan: Orphan) -> int:
        seal = WatchSeal(self._secret_key, orphan.data.salt)
        lines: list[str] = []
        watches: list[Watched] = []
        sealed_off = 0
        for payload in orphan.data.records:
            more_lines, more_watches, skipped = decode_payload(payload, seal)
            lines += more_lines
            watches += more_watches
            sealed_off += skipped
        for start in range(0, max(len(lines), len(watches)), REPLAY_ROWS):
            self._write(
                ["".join(lines[start : start + REPLAY_ROWS])],
                watches[start : start + REPLAY_ROWS],
                idempotent=True,
            )
        self.replayed += len(lines)
        log.info(
            "check journal %s replayed: %d checks, %d watches%s",
            orphan.path.name,
            len(lines),
            len(watches),
            f" ({orphan.data.torn} bytes of a torn last write ignored)" if orphan.data.torn else "",
        )
        if sealed_off:
            log.warning(
                "check journal %s: %d watches could not be opened (the check hash key changed?); their "
                "checks are recorded, the watches are not",
                orphan.path.name,
                sealed_off,
            )
        return len(lines)

    # --- the database writer --------------------------------------------------------------------

    def _run(self) -> None:
        adopt_at = time.monotonic() + ADOPT_SECONDS
        while not self._stop.is_set():
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            try:
                # With a backlog (checks answered faster than the database takes them), write
                # round after round without waiting.
                while self._flush() and self.pending >= FLUSH_ROWS and not self._stop.is_set():
                    pass
            except Exception:  # the database may be down: keep the buffer, retry next round
                self.failures += 1
                log.exception("check log flush failed; %d checks buffered", self.pending)
            if self._journal is not None and time.monotonic() >= adopt_at:
                adopt_at = time.monotonic() + ADOPT_SECONDS
                try:
                    self.replay()  # a sibling worker that died (its journal is unlocked now)
                except Exception:
                    log.exception("check journal replay failed; retried in %.0f s", ADOPT_SECONDS)

    def flush(self) -> int:
        """Write one round, each part in its own transaction: the checks that start a watch
        first, then about WRITE_SECONDS' worth of the others. A watch must be written within
        MAX_UNWRITTEN_SECONDS of its check (notifications.SETTLE_SECONDS relies on it) even
        when the rest of the log has fallen behind, and a check is written only when its
        transaction commits, so transactions stay short. Checks appended and not yet in the
        journal are synced first. Returns how many were written."""
        self._sync()
        return self._flush()

    def _flush(self) -> int:
        with self._writing:
            written = self._write_from(self._watched, WATCH_ROWS)
            started = time.monotonic()
            rows = self._write_from(self._buffer, self._write_rows)
            if rows == self._write_rows:  # a full transaction: its pace sizes the next one
                pace = rows / max(time.monotonic() - started, 1e-3)
                self._write_rows = int(min(WRITE_ROWS_MAX, max(WRITE_ROWS_MIN, pace * WRITE_SECONDS)))
            return written + rows

    def _write_from(self, queue: deque[Chunk], limit: int) -> int:
        taken: list[Chunk] = []
        rows = 0
        while queue and rows < limit:
            segment, text, n, watches = queue.popleft()
            room = limit - rows
            if n > room:  # split: the rest goes back first in line
                text, rest = _split_lines(text, room)
                queue.appendleft((segment, rest, n - room, watches[room:]))
                n, watches = room, watches[:room]
            taken.append((segment, text, n, watches))
            rows += n
        if not taken:
            return 0
        texts = [text for _, text, _, _ in taken]
        watches = [w for _, _, _, chunk_watches in taken for w in chunk_watches]
        try:
            try:
                self._write(texts, watches)
            except sa.exc.IntegrityError:
                # Rows already there: a commit whose outcome the client never heard (a
                # connection lost at COMMIT) is retried. Write the rest, skipping those.
                self._write(texts, watches, idempotent=True)
        except Exception:
            queue.extendleft(reversed(taken))  # keep order; nothing is lost
            raise
        self.written += rows
        if self.on_written is not None:
            self._tell_written(texts)
        if self._journal is not None:
            by_segment: dict[int, int] = {}
            for segment, _, n, _ in taken:
                if segment >= 0:
                    by_segment[segment] = by_segment.get(segment, 0) + n
            self._journal.committed(by_segment)
        return rows

    def _tell_written(self, texts: list[str]) -> None:
        """Hand the written checks to `on_written` OBSERVED_SLICE at a time, offering the GIL to
        the event loop between slices: the observers' Python work (harvesting, metrics: a few
        microseconds a check, a thousand or more checks a round) is not done in one stretch of
        several milliseconds while requests wait on the loop. (Measured: no change of the single
        check's open-loop p99 either way, issue 14; kept as the cheaper neighbour.)"""
        observer = self.on_written
        lines = _lines(texts)
        first = True
        while observer is not None:
            observed = [_observed(line) for line in itertools.islice(lines, OBSERVED_SLICE)]
            if not observed:
                return
            if not first:
                time.sleep(0)  # the loop's thread takes the GIL if it is waiting for it
            first = False
            try:
                observer(observed)
            except Exception:
                log.exception("check log: the observer of written checks failed")

    def _write(self, texts: list[str], watches: list[Watched], *, idempotent: bool = False) -> None:
        """Write row lines (`texts`, each any number of whole lines) and watches, in one
        transaction."""
        with uow.connection(self._engine) as conn:
            if conn.dialect.name == "postgresql":
                _copy_checks(conn, texts, idempotent=idempotent)
            elif texts:
                times: dict[str, str] = {}
                conn.exec_driver_sql(
                    _SQLITE_INSERT_NEW if idempotent else _SQLITE_INSERT,
                    [sqlite_row(line, times) for line in _lines(texts)],
                )
            _add_watches(conn, watches)


def _add_watches(conn: sa.Connection, watches: list[Watched]) -> None:
    """The Watch rows of watched checks: the card they checked, from their id number and issue
    date. A unit already watching that card keeps its watch (so writing twice changes nothing)."""
    for check_id, unit_code, at, id_number, watch_on, seq in watches:
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


def _split_lines(text: str, k: int) -> tuple[str, str]:
    """The first `k` lines of `text`, and the rest."""
    at = -1
    for _ in range(k):
        at = text.index("\n", at + 1)
    return text[: at + 1], text[at + 1 :]


def _lines(texts: list[str]) -> Iterator[str]:
    """The lines of `texts` (each a run of whole lines), without their newlines."""
    for text in texts:
        yield from text.split("\n")[:-1]


def _copy_checks(conn: sa.Connection, texts: list[str], *, idempotent: bool) -> None:
    """COPY instead of an INSERT per row: the lines are COPY text already (formatted when the
    checks were appended), written about a megabyte at a time. Idempotent (a replay): through a
    temporary table, skipping checks whose (id, at) is already in `checks`."""
    if not any(texts):
        return
    columns = ", ".join(_COLUMNS)
    table = "checks"
    if idempotent:
        table = "checks_replay"
        conn.exec_driver_sql("CREATE TEMPORARY TABLE checks_replay (LIKE checks) ON COMMIT DROP")
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    statement = f"COPY {table} ({columns}) FROM STDIN"
    try:
        with cursor.copy(statement) as copy:
            pending: list[str] = []
            size = 0
            for text in texts:
                pending.append(text)
                size += len(text)
                if size >= _COPY_BYTES:
                    copy.write("".join(pending))
                    pending, size = [], 0
            if pending:
                copy.write("".join(pending))
    except conn.dialect.loaded_dbapi.IntegrityError as exc:
        # The driver's own error (COPY bypasses SQLAlchemy's wrapping): a row already there is
        # SQLAlchemy's IntegrityError to the writer, which then writes idempotently.
        raise sa.exc.IntegrityError(statement, None, exc) from exc
    if idempotent:
        conn.exec_driver_sql(
            f"INSERT INTO checks ({columns}) SELECT {columns} FROM checks_replay ON CONFLICT (id, at) DO NOTHING"  # noqa: S608 - constant
        )
