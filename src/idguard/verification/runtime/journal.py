"""The check log's journal: local append-only files that make an answered check durable before
its answer leaves (group commit), replayed into the database when a worker starts.

Files. Each CheckLog (one per worker process) appends to its own *segments* in the journal
directory, `checks-<pid>-<token>-<n>.journal`, mode 0600 in a directory created 0700. A segment
starts with one header line, `IDGUARD-CHECKLOG 1 <database fingerprint> <salt>\\n`, then holds
records: `<u32 length><u32 CRC-32><payload>` (little-endian), one per group commit. A record
whose header or payload is cut short, or whose CRC does not match, ends the segment: it is a
write torn by a crash, never acknowledged, and it and anything after it are ignored.

Ownership. The writing process holds an exclusive `flock` on every segment it has open, from
the moment the file has its final name (it is created under a dot-name, locked, given its
header and only then renamed), until its rows are all in the database and it is removed. So a
segment whose lock can be taken belongs to a process that is gone: `claim_orphans` takes those
(never a live sibling's) for replay. flock locks belong to the open file, so two CheckLogs of
one process exclude each other too.

Lifetime. A segment's rows are counted when written and counted off as the database commits
them; the current segment is truncated back to its header when all its rows are written, and a
segment rotated out (at SEGMENT_BYTES, or SEGMENT_SECONDS after its first record: under steady
load the current one is never all written) is removed once all its rows are written.

`Waiters` lets the event loop await a ticket (the group holding its checks has been synced)
while the one journal thread writes them: the answer's task sleeps on a future, the loop keeps
serving.

Nothing here knows what a check is: payloads are bytes (runtime/checklog.py encodes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("idguard.checklog")

MAGIC = b"IDGUARD-CHECKLOG 1 "
SEGMENT_BYTES = 16 * 2**20  # rotate to a new segment past this size ...
SEGMENT_SECONDS = 10.0  # ... or this long after its first record (so it goes soon after its rows)
_RECORD = struct.Struct("<II")  # payload length, CRC-32 of the payload
_MAX_HEADER = 256
PATTERN = "checks-*.journal"
_TMP_PATTERN = ".checks-*.journal.tmp"


class JournalError(Exception):
    """A journal segment could not be written or synced."""


def header(fingerprint: str, salt: bytes) -> bytes:
    return MAGIC + f"{fingerprint} {salt.hex()}\n".encode()


def record(payload: bytes) -> bytes:
    return _RECORD.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True, slots=True)
class SegmentData:
    fingerprint: str
    salt: bytes
    records: list[bytes]
    torn: int  # bytes ignored after the last good record (a write cut short by a crash)


def parse_segment(data: bytes) -> SegmentData | None:
    """A segment's header and good records; None if the header itself is not one of ours."""
    end = data.find(b"\n", 0, _MAX_HEADER)
    if end < 0 or not data.startswith(MAGIC):
        return None
    try:
        fingerprint, salt_hex = data[len(MAGIC) : end].decode("ascii").split(" ")
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return None
    records: list[bytes] = []
    at = end + 1
    while at + _RECORD.size <= len(data):
        length, crc = _RECORD.unpack_from(data, at)
        start = at + _RECORD.size
        payload = data[start : start + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        records.append(payload)
        at = start + length
    return SegmentData(fingerprint, salt, records, len(data) - at)


def _write_synced(fd: int, data: bytes) -> None:
    """Append `data` to a segment opened with O_DSYNC: when it returns, the data and the file's
    size are on disk (as write + fdatasync, in one system call and one release of the GIL)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(eq=False)
class _Segment:
    number: int
    path: Path
    fd: int
    size: int
    header_size: int
    rows: int = 0  # written here and not yet committed to the database
    closed: bool = False  # rotated out (or abandoned after a failed write): never written again
    first_record: float | None = None  # time.monotonic() of its first record since the header


class Journal:
    """One writer's segments. `write` is called by one thread at a time (the group committer);
    `committed` by the database writer; both may run at once."""

    def __init__(
        self,
        directory: Path,
        fingerprint: str,
        salt: bytes,
        *,
        segment_bytes: int = SEGMENT_BYTES,
        segment_seconds: float = SEGMENT_SECONDS,
    ):
        self.directory = directory
        self.fingerprint = fingerprint
        self.salt = salt
        self.segment_bytes = segment_bytes
        self.segment_seconds = segment_seconds
        self._token = os.urandom(4).hex()
        self._lock = threading.Lock()  # segment bookkeeping; never held while writing a record
        self._current: _Segment | None = None
        self._open: dict[int, _Segment] = {}
        self._next = 0

    def write(self, payload: bytes, rows: int) -> int:
        """Append one record holding `rows` checks and sync it; returns the segment number to
        pass to `committed` once those rows are in the database. Raises JournalError."""
        now = time.monotonic()
        try:
            with self._lock:
                segment = self._current
                if segment is None or self._full(segment, now):
                    if segment is not None:
                        self._current = None
                        self._close(segment)
                    segment = self._current = self._new_segment()
                # Counted before writing: the writer thread never truncates a segment that is
                # being written.
                segment.rows += rows
                if segment.first_record is None:
                    segment.first_record = now
        except OSError as exc:
            raise JournalError(f"cannot open a journal segment in {self.directory}: {exc}") from exc
        data = record(payload)
        try:
            _write_synced(segment.fd, data)
        except OSError as exc:
            # The segment may now end in a torn record: never append after it (a reader stops
            # there). Its earlier records stay until their rows are written.
            with self._lock:
                segment.rows -= rows
                if self._current is segment:
                    self._current = None
                self._close(segment)
            raise JournalError(f"cannot write the journal segment {segment.path.name}: {exc}") from exc
        with self._lock:
            segment.size += len(data)
        return segment.number

    def committed(self, rows_by_segment: dict[int, int]) -> None:
        """Rows written to the database: a segment rotated out goes when all its rows are, the
        current one is cut back to its header."""
        with self._lock:
            for number, rows in rows_by_segment.items():
                segment = self._open.get(number)
                if segment is None:
                    continue
                segment.rows -= rows
                if segment.rows > 0:
                    continue
                if segment.closed:
                    self._remove(segment)
                elif segment.size > segment.header_size:
                    try:
                        os.ftruncate(segment.fd, segment.header_size)
                        segment.size = segment.header_size
                        segment.first_record = None
                    except OSError:
                        log.exception("cannot truncate journal segment %s", segment.path.name)

    @property
    def files(self) -> list[Path]:
        with self._lock:
            return [s.path for s in self._open.values()]

    def close(self) -> list[Path]:
        """Close every segment: those whose rows are all in the database are removed, the
        others kept for the next start (returned). A later `write` opens a new segment."""
        with self._lock:
            kept = []
            for segment in list(self._open.values()):
                if segment.rows <= 0:
                    self._remove(segment)
                else:
                    kept.append(segment.path)
                    os.close(segment.fd)
                    del self._open[segment.number]
            self._current = None
            with contextlib.suppress(OSError):
                _sync_directory(self.directory)
            return kept

    def _full(self, segment: _Segment, now: float) -> bool:
        """Time to rotate: a segment is removed only once all its rows are written, so under
        steady load (never all written at once) it is rotated by size and by age."""
        if segment.size >= self.segment_bytes:
            return True
        return segment.first_record is not None and now - segment.first_record >= self.segment_seconds

    def _close(self, segment: _Segment) -> None:
        segment.closed = True
        if segment.rows <= 0:
            self._remove(segment)

    def _remove(self, segment: _Segment) -> None:
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
        os.close(segment.fd)
        self._open.pop(segment.number, None)

    def _new_segment(self) -> _Segment:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        number = self._next
        self._next += 1
        name = f"checks-{os.getpid()}-{self._token}-{number:06d}.journal"
        path = self.directory / name
        tmp = self.directory / f".{name}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_DSYNC | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
            head = header(self.fingerprint, self.salt)
            _write_synced(fd, head)
            os.rename(tmp, path)  # appears under its final name already locked
            _sync_directory(self.directory)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        segment = _Segment(number, path, fd, len(head), len(head))
        self._open[number] = segment
        return segment


# ---------------------------------------------------------------------------------------------
# Replay: segments left by processes that are gone


@dataclass(eq=False)
class Orphan:
    """A segment whose writer is gone, locked by us until `remove` or `release`."""

    path: Path
    fd: int
    data: SegmentData

    def remove(self) -> None:
        """Its rows are in the database: delete it."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.release()
        with contextlib.suppress(OSError):
            _sync_directory(self.path.parent)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class Scan:
    """What `claim_orphans` left alone, for the caller's log."""

    other_database: list[Path] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)


def _lock_if_orphaned(path: Path) -> int | None:
    """An open descriptor of `path` holding its lock, if no live process holds it (and it is
    still the file of that name: another process may have replayed and removed it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path).st_ino != os.fstat(fd).st_ino:
            raise FileNotFoundError(path)
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def claim_orphans(directory: Path, fingerprint: str, scan: Scan | None = None) -> Iterator[Orphan]:
    """The segments in `directory` written for this database by processes that are gone, oldest
    writer first, each locked while the caller replays it (the caller removes or releases it).
    A live process's segments are skipped (their lock is held), and so are another database's
    (listed in `scan`). Half-created files (a crash before the rename) are removed."""
    scan = scan if scan is not None else Scan()
    if not directory.is_dir():
        return
    for tmp in directory.glob(_TMP_PATTERN):
        fd = _lock_if_orphaned(tmp)
        if fd is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            os.close(fd)
    for path in sorted(directory.glob(PATTERN)):  # a writer's segments in the order written
        fd = _lock_if_orphaned(path)
        if fd is None:
            continue
        try:
            with open(fd, "rb", closefd=False) as f:
                data = parse_segment(f.read())
        except BaseException:
            os.close(fd)
            raise
        if data is None or data.fingerprint != fingerprint:
            (scan.unreadable if data is None else scan.other_database).append(path)
            os.close(fd)
            continue
        orphan = Orphan(path, fd, data)
        try:
            yield orphan
        finally:
            orphan.release()


# ---------------------------------------------------------------------------------------------
# Tickets: the event loop waits for its group to be synced


class Waiters:
    """Tickets are numbered in append order; `settle(end, ok)` says every ticket up to `end` is
    synced (or, with ok=False, failed: its answers must not go out). A coroutine awaits the
    future `register` gives it; the settling thread wakes each event loop once per group."""

    FAILURES_KEPT = 1024

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.done = 0  # every ticket <= done is settled
        self._failed: deque[tuple[int, int]] = deque(maxlen=self.FAILURES_KEPT)  # (after, upto]
        self._waiting: dict[asyncio.AbstractEventLoop, deque[tuple[int, asyncio.Future[None]]]] = {}
        self.closed = True  # no thread settles tickets: the caller syncs itself

    def failed(self, ticket: int) -> bool:
        """Whether the ticket's group failed (called without the lock: the copy is atomic)."""
        failures = self._failed
        return bool(failures) and any(after < ticket <= upto for after, upto in tuple(failures))

    def register(self, ticket: int) -> asyncio.Future[None] | bool:
        """A future of the running loop settled with the ticket, or the outcome at once when
        it is settled already (True: synced, False: failed). Raises LookupError when no thread
        settles tickets (the caller then syncs itself)."""
        with self._lock:
            if ticket <= self.done:
                return not self.failed(ticket)
            if self.closed:
                raise LookupError("no journal thread")
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()
            self._waiting.setdefault(loop, deque()).append((ticket, future))
            return future

    def settle(self, end: int, *, ok: bool) -> None:
        with self._lock:
            if not ok:
                self._failed.append((self.done, end))
            self.done = max(self.done, end)
            loops = [loop for loop, waiting in self._waiting.items() if waiting]
        for loop in loops:
            try:
                loop.call_soon_threadsafe(self._release, loop)
            except RuntimeError:  # the loop is closed: nobody waits there any more
                with self._lock:
                    self._waiting.pop(loop, None)

    def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            waiting = self._waiting.get(loop)
            if not waiting:
                return
            ready = [(future, self.failed(ticket)) for ticket, future in waiting if ticket <= self.done]
            if len(ready) == len(waiting):
                del self._waiting[loop]
            else:  # registered out of ticket order (an append off the loop): the rest wait on
                self._waiting[loop] = deque((t, f) for t, f in waiting if t > self.done)
        for future, failed in ready:
            if not future.done():
                if failed:
                    future.set_exception(JournalError("the check could not be written to the journal"))
                else:
                    future.set_result(None)

    def open(self) -> None:
        with self._lock:
            self.closed = False

    def close(self) -> None:
        with self._lock:
            self.closed = True
