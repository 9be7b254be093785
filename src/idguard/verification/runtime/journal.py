"""The check log's journal: local append-only files that make an answered check durable before
its answer leaves (group commit), replayed into the database when a worker starts.

Files. Each CheckLog (one per worker process) appends to its own *segments* in the journal
directory, `checks-<pid>-<token>-<n>.journal`, mode 0600 in a directory created 0700. A segment
starts with one header line, `IDGUARD-CHECKLOG 2 <database fingerprint> <salt>\\n`, then holds
records: `<u32 length><u32 CRC-32><u32 generation><payload>` (little-endian), one per group
commit, the CRC over the generation and the payload. The records of a segment are those of the
first record's generation, up to the first record that is cut short, fails its CRC, or belongs to
another generation (zeros included: generations start at 1): a write torn by a crash, never
acknowledged, or what an earlier generation left behind, ignored. Segments of format 1 (records
without a generation, appended) are still read, for a replay after an upgrade.

Writes overwrite zeros (issue 14). A record appended at the end of a file changes the file's size,
so every synced append also commits the file system's journal (measured on this ext4: ~95 us of
system CPU and 0.17-0.28 ms p50 per synced 256-byte append, against ~50 us and 0.08-0.10 ms for
the same write over blocks already written). So a segment is zero-filled ahead of its records
(PREPARE_BYTES at a time, once fewer than PREPARE_LOW remain), a segment whose rows are all in
the database starts again at its header with the next generation instead of being truncated,
and a rotated-out segment whose rows are all written is kept (one at a time) as the next
segment's file instead of being removed: after warming up, no write extends a file.

Lifetime. A segment's rows are counted when written and counted off as the database commits
them; the current segment starts again at its header (next generation) when all its rows are
written, and a segment rotated out (at SEGMENT_BYTES, or SEGMENT_SECONDS after its first record:
under steady load the current one is never all written) is removed, or kept as the spare, once
all its rows are written.

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
import select
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("idguard.checklog")

MAGIC = b"IDGUARD-CHECKLOG 2 "
MAGIC_1 = b"IDGUARD-CHECKLOG 1 "  # records without a generation (read for replay only)
SEGMENT_BYTES = 16 * 2**20  # rotate to a new segment past this size ...
SEGMENT_SECONDS = 10.0  # ... or this long after its first record (so it goes soon after its rows)
PREPARE_BYTES = 2**20  # zeros written ahead of the records at a time ...
PREPARE_LOW = 256 * 2**10  # ... once fewer than this many are left
_RECORD = struct.Struct("<III")  # payload length, CRC-32 of generation and payload, generation
_RECORD_1 = struct.Struct("<II")  # format 1: payload length, CRC-32 of the payload
_GENERATION = struct.Struct("<I")
_MAX_HEADER = 256
PATTERN = "checks-*.journal"
_TMP_PATTERN = ".checks-*.journal.tmp"


class JournalError(Exception):
    """A journal segment could not be written or synced."""


def header(fingerprint: str, salt: bytes) -> bytes:
    return MAGIC + f"{fingerprint} {salt.hex()}\n".encode()


def record(payload: bytes, generation: int = 1) -> bytes:
    """One record of `generation` (1 or more: zeros are never a record)."""
    crc = zlib.crc32(payload, zlib.crc32(_GENERATION.pack(generation)))
    return _RECORD.pack(len(payload), crc, generation) + payload


@dataclass(frozen=True, slots=True)
class SegmentData:
    fingerprint: str
    salt: bytes
    records: list[bytes]
    torn: int  # bytes ignored after the last good record (a write cut short by a crash)


def parse_segment(data: bytes) -> SegmentData | None:
    """A segment's header and good records; None if the header itself is not one of ours."""
    end = data.find(b"\n", 0, _MAX_HEADER)
    if end < 0 or not data.startswith((MAGIC, MAGIC_1)):
        return None
    try:
        fingerprint, salt_hex = data[len(MAGIC) : end].decode("ascii").split(" ")
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return None
    if data.startswith(MAGIC_1):
        return _parse_records_1(data, end + 1, fingerprint, salt)
    records: list[bytes] = []
    generation = 0
    at = end + 1
    while at + _RECORD.size <= len(data):
        length, crc, found = _RECORD.unpack_from(data, at)
        if found == 0 or (generation and found != generation):
            return SegmentData(fingerprint, salt, records, 0)  # zeros ahead, or an older generation's
        start = at + _RECORD.size
        payload = data[start : start + length]
        if len(payload) < length or zlib.crc32(payload, zlib.crc32(_GENERATION.pack(found))) != crc:
            return SegmentData(fingerprint, salt, records, min(len(data) - at, _RECORD.size + length))
        generation = found
        records.append(payload)
        at = start + length
    rest = data[at:]
    return SegmentData(fingerprint, salt, records, len(rest) if rest.strip(b"\0") else 0)


def _parse_records_1(data: bytes, at: int, fingerprint: str, salt: bytes) -> SegmentData:
    records: list[bytes] = []
    while at + _RECORD_1.size <= len(data):
        length, crc = _RECORD_1.unpack_from(data, at)
        start = at + _RECORD_1.size
        payload = data[start : start + length]
        if len(payload) < length or zlib.crc32(payload) != crc:
            break
        records.append(payload)
        at = start + length
    return SegmentData(fingerprint, salt, records, len(data) - at)


def _write_synced(fd: int, data: bytes, offset: int) -> None:
    """Write `data` at `offset` of a segment opened with O_DSYNC: when it returns, the data (and
    the file's size, if it grew) are on disk (as write + fdatasync, in one system call and one
    release of the GIL)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


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
    size: int  # where the next record goes
    header_size: int
    prepared: int  # the file's size: zeros (or an earlier generation's records) past `size`
    generation: int = 1  # of the records written since the header
    rows: int = 0  # written here and not yet committed to the database
    closed: bool = False  # rotated out (or abandoned after a failed write): never written again
    first_record: float | None = None  # time.monotonic() of its first record since the header
    failed: bool = False  # a write failed: it may end in a torn record (never kept as a spare)


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
        prepare_bytes: int = PREPARE_BYTES,
    ):
        self.directory = directory
        self.fingerprint = fingerprint
        self.salt = salt
        self.segment_bytes = segment_bytes
        self.segment_seconds = segment_seconds
        self.prepare_bytes = prepare_bytes
        self._token = os.urandom(4).hex()
        self._lock = threading.Lock()  # segment bookkeeping; never held while writing a record
        self._current: _Segment | None = None
        self._open: dict[int, _Segment] = {}
        self._spare: _Segment | None = None  # a written-out segment's file, for the next segment
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
                # Counted before writing: the writer thread never starts a segment again while
                # it is being written.
                segment.rows += rows
                if segment.first_record is None:
                    segment.first_record = now
                offset, generation = segment.size, segment.generation
        except OSError as exc:
            raise JournalError(f"cannot open a journal segment in {self.directory}: {exc}") from exc
        data = record(payload, generation)
        try:
            _write_synced(segment.fd, data, offset)
        except OSError as exc:
            # The segment may now end in a torn record: never append after it (a reader stops
            # there). Its earlier records stay until their rows are written.
            with self._lock:
                segment.rows -= rows
                segment.failed = True
                if self._current is segment:
                    self._current = None
                self._close(segment)
            raise JournalError(f"cannot write the journal segment {segment.path.name}: {exc}") from exc
        with self._lock:
            segment.size += len(data)
            segment.prepared = max(segment.prepared, segment.size)  # a record past the zeros
        if segment.prepared - segment.size < PREPARE_LOW and segment.prepared < self.segment_bytes:
            self._prepare(segment)
        return segment.number

    def _prepare(self, segment: _Segment) -> None:
        """Zeros past the file's end, for the next records to overwrite (the journal thread's,
        between two groups; only this thread writes past `size`). A failure costs only speed."""
        try:
            _write_synced(segment.fd, bytes(self.prepare_bytes), segment.prepared)
        except OSError as exc:
            log.warning("cannot prepare journal segment %s: %s", segment.path.name, exc)
            return
        segment.prepared += self.prepare_bytes

    def committed(self, rows_by_segment: dict[int, int]) -> None:
        """Rows written to the database: a segment rotated out goes (or is kept as the spare)
        when all its rows are, the current one starts again at its header."""
        with self._lock:
            for number, rows in rows_by_segment.items():
                segment = self._open.get(number)
                if segment is None:
                    continue
                segment.rows -= rows
                if segment.rows > 0:
                    continue
                if segment.closed:
                    self._retire(segment)
                elif segment.size > segment.header_size:
                    self._restart(segment)

    @staticmethod
    def _restart(segment: _Segment) -> None:
        """The segment's records are all in the database: the next generation starts at its
        header. Nothing is written: until the next record overwrites the first one, a reader
        still finds the earlier generation's records, all in the database already, which a
        replay skips (a check id already there is skipped)."""
        segment.generation = segment.generation % 0xFFFFFFFF + 1
        segment.size = segment.header_size
        segment.first_record = None

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
            if self._spare is not None:
                self._remove(self._spare)
                self._spare = None
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
            self._retire(segment)

    def _retire(self, segment: _Segment) -> None:
        """A rotated-out segment whose rows are all written: kept (under a dot-name, locked) as
        the next segment's file when there is no spare yet, else removed."""
        if self._spare is None and not segment.failed:
            spare = self.directory / f".{segment.path.name}.tmp"
            try:
                os.rename(segment.path, spare)
            except OSError:
                log.exception("cannot keep journal segment %s as a spare", segment.path.name)
            else:
                self._open.pop(segment.number, None)
                segment.path = spare
                self._spare = segment
                return
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
        segment = self._spare
        if segment is not None:  # its header is this journal's; its records are all written
            self._spare = None
            self._restart(segment)
            try:
                os.rename(segment.path, path)
                _sync_directory(self.directory)
            except BaseException:
                self._remove(segment)
                raise
            segment.number, segment.path, segment.rows, segment.closed = number, path, 0, False
            self._open[number] = segment
            return segment
        tmp = self.directory / f".{name}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_DSYNC | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
            head = header(self.fingerprint, self.salt)
            _write_synced(fd, head, 0)
            os.rename(tmp, path)  # appears under its final name already locked
            _sync_directory(self.directory)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        segment = _Segment(number, path, fd, len(head), len(head), len(head))
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
# The journal thread's wake-up


class Doorbell:
    """Wakes a thread waiting in `wait` from any thread, through a pipe: the waiter sleeps in one
    system call (poll, the GIL released) and takes the GIL once to return; `ring` is one write.

    It replaced a threading.Event, whose Condition is Python code taking Python locks on both
    sides, each contended acquire a hand-over of the GIL: a journal round trip (the loop rings,
    the thread writes and settles) cost about twice the CPU and latency (issue 14; with three
    other Python threads about, a round's p99 28 us against 340). A ring before `wait` is kept:
    the next wait returns at once, as a set Event's would."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # ring and close: never a write into a closed, reused fd
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._poll = select.poll()
        self._poll.register(self._read, select.POLLIN)

    def ring(self) -> None:
        with self._lock:
            if self._write < 0:  # closed: nobody waits any more
                return
            with contextlib.suppress(BlockingIOError):  # the pipe is full of rings: it will wake
                os.write(self._write, b"\0")

    def wait(self, timeout: float) -> bool:
        """Until rung (every ring so far is taken) or `timeout` seconds; whether it was rung.
        Only the one thread that is woken calls it, and never after `close`."""
        if not self._poll.poll(timeout * 1000):
            return False
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 65536):
                pass
        return True

    def close(self) -> None:
        with self._lock:
            if self._write < 0:
                return
            os.close(self._write)
            os.close(self._read)
            self._write = self._read = -1

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


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

    def register(
        self, ticket: int, loop: asyncio.AbstractEventLoop | None = None
    ) -> asyncio.Future[None] | bool:
        """A future of the running loop (`loop` when the caller knows it: asking costs a system
        call) settled with the ticket, or the outcome at once when it is settled already (True:
        synced, False: failed). Raises LookupError when no thread settles tickets (the caller
        then syncs itself)."""
        with self._lock:
            if ticket <= self.done:
                return not self.failed(ticket)
            if self.closed:
                raise LookupError("no journal thread")
            if loop is None:
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
