"""The check log's journal, without a database: the row line and the journal record formats
(round trip, escapes, sealed watches), torn and corrupt records, segment files (permissions,
rotation, truncation, removal), ownership by file lock, and the tickets answers wait for."""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import os
import stat
import struct
import threading
import time
import uuid
import zlib
from pathlib import Path

import pytest
import sqlalchemy as sa

from idguard.verification.runtime import journal as journal_module
from idguard.verification.runtime.checklog import (
    CheckEntry,
    CheckLog,
    WatchSeal,
    decode_payload,
    id_hash,
    row_values,
    sqlite_row,
    watch_line,
)
from idguard.verification.runtime.journal import (
    Doorbell,
    Journal,
    JournalError,
    Scan,
    Waiters,
    claim_orphans,
    header,
    parse_segment,
    record,
)
from tests.factories import SECRET

AT = dt.datetime(2026, 6, 15, 2, 0, 0, 123456, tzinfo=dt.UTC)
NUMBER = "11010519900101123X"
OPERATORS = ["teller-7", "a\tb", "back\\slash", "line\nbreak\r", "\\N", "nul\x00byte", "柜员\u2028七", "\\0"]


def entry(
    check_id: str,
    operator: str = "teller-7",
    *,
    watch_on: dt.date | None = None,
    match: bool | None = None,
    alerts: str | None = None,
) -> CheckEntry:
    return (
        check_id,
        "BANK-1",
        operator,
        "account_opening",
        AT,
        "valid",
        None,
        NUMBER,
        watch_on,
        42,
        match,
        alerts,
    )


def check_id(n: int) -> str:
    return f"0b9f1c1e-5d0c-4a8e-9d5e-{n:012x}"


def log_for(dialect: str) -> CheckLog:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none" if dialect == "postgresql" else "sqlite://"
    return CheckLog(sa.create_engine(url), SECRET)  # never connects


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_a_row_line_holds_what_the_row_stores_and_reads_back(dialect: str) -> None:
    entries = [
        entry(check_id(i), op, match=[None, True, False][i % 3], alerts=[None, "blacklisted"][i % 2])
        for i, op in enumerate(OPERATORS)
    ]
    entries.append(
        (
            check_id(99),
            "BANK-1",
            "teller-7",
            "account_opening",
            AT,
            "invalid",
            "reported_lost",
            NUMBER,
            None,
            1,
            None,
            "blacklisted,person_check_required",
        )
    )
    plain, watched, watches = log_for(dialect)._format(entries)
    assert (watched, watches) == ([], [])
    assert len(plain) == len(entries)
    for line, (cid, unit, operator, purpose, at, result, reason, number, _, _, match, alerts) in zip(
        plain, entries, strict=True
    ):
        assert line.endswith("\n")
        assert line.count("\n") == 1
        assert line.count("\t") == 11
        assert number not in line
        assert number[:14] not in line
        expected_operator = operator.replace("\0", "\ufffd") if dialect == "postgresql" else operator
        assert row_values(line) == {
            "id": uuid.UUID(cid),
            "unit_code": unit,
            "operator": expected_operator,
            "purpose": purpose,
            "at": at,
            "result": result,
            "reason": reason,
            "id_masked": "110105********123X",
            "id_hash": id_hash(SECRET, number),
            "watch": False,
            "fingerprint_match": match,
            "alerts": alerts,
        }


def test_a_line_journaled_before_alerts_existed_reads_back_without_alerts() -> None:
    """A journal left by a worker of the previous version (11 fields a line) replays: no alerts."""
    line = log_for("sqlite")._format([entry(check_id(1), alerts="blacklisted")])[0][0]
    old = line.rsplit("\t", 1)[0] + "\n"
    assert row_values(old)["alerts"] is None
    assert sqlite_row(old, {})[-1] is None
    assert row_values(line)["alerts"] == "blacklisted"


def test_a_watched_check_is_journaled_with_its_number_sealed() -> None:
    log = log_for("sqlite")
    watched_on = dt.date(2020, 1, 2)
    plain, watched_lines, watches = log._format([entry(check_id(1)), entry(check_id(2), watch_on=watched_on)])
    assert len(plain) == 1
    assert len(watched_lines) == 1
    assert watches == [(check_id(2), "BANK-1", AT, NUMBER, watched_on, 42)]
    assert row_values(watched_lines[0])["watch"] is True
    seal = WatchSeal(SECRET, b"salt" * 4)
    payload = "".join([*plain, *watched_lines, watch_line(watches[0], seal)]).encode()
    assert NUMBER.encode() not in payload
    assert NUMBER[:14].encode() not in payload
    assert decode_payload(payload, seal) == ([*plain, *watched_lines], watches, 0)
    # Another secret (or salt) cannot open the watch: the checks still read back, the watch is counted off.
    assert decode_payload(payload, WatchSeal("another-secret-0123456789", b"salt" * 4)) == (
        [*plain, *watched_lines],
        [],
        1,
    )


def test_segment_records_round_trip_and_a_torn_or_corrupt_last_record_is_ignored() -> None:
    payloads = [b"first\n", b"", "第二\n".encode() * 100, b"last record\n" * 7]
    data = header("0123456789abcdef", b"s" * 16) + b"".join(record(p) for p in payloads)
    parsed = parse_segment(data)
    assert parsed is not None
    assert (parsed.fingerprint, parsed.salt, parsed.records, parsed.torn) == (
        "0123456789abcdef",
        b"s" * 16,
        payloads,
        0,
    )
    last = len(record(payloads[-1]))
    for cut in range(1, last):  # a write cut short anywhere in the last record
        torn = parse_segment(data[:-cut])
        assert torn is not None
        assert torn.records == payloads[:-1]
        assert torn.torn == last - cut
    flipped = bytearray(data)
    flipped[-3] ^= 0x20  # a byte of the last payload changed: its CRC fails
    corrupt = parse_segment(bytes(flipped))
    assert corrupt is not None
    assert corrupt.records == payloads[:-1]
    assert corrupt.torn == last
    assert parse_segment(b"not a journal\n" + data) is None
    assert parse_segment(b"") is None


def test_segments_are_private_rotate_and_go_once_written(tmp_path: Path) -> None:
    directory = tmp_path / "journal"
    journal = Journal(directory, "f" * 16, b"s" * 16, segment_bytes=100)
    first = journal.write(b"x" * 80, rows=2)
    [path] = journal.files
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = journal.write(b"y" * 10, rows=1)  # the first segment is past 100 bytes: a new one
    assert second != first
    assert len(journal.files) == 2
    journal.committed({first: 1})
    assert path.exists()  # one of its rows is not written yet
    journal.committed({first: 1})
    assert not path.exists()  # rotated out and all written: removed
    [current] = journal.files
    journal.committed({second: 1})  # the current segment, all written: starts again at its header
    third = journal.write(b"z", rows=1)
    assert journal.close() == [current]  # a row not yet written: kept for the next start
    assert third == second
    assert parse_segment(current.read_bytes()).records == [b"z"]  # type: ignore[union-attr]
    journal.write(b"again", rows=1)  # a closed journal opens a new segment when written again
    assert len(journal.files) == 1
    assert journal.files[0] != current


def test_a_segment_started_again_never_reads_back_its_earlier_records(tmp_path: Path) -> None:
    """All its rows written, the current segment starts again at its header with the next
    generation, over the same bytes: what the earlier generation left past the new records is
    never read back (even where a record boundary lines up). Until the first new record, a reader
    still finds the earlier records, whose checks are all in the database (a replay skips them)."""
    journal = Journal(tmp_path, "f" * 16, b"s" * 16)
    number = journal.write(b"a" * 40, rows=1)
    journal.write(b"b" * 40, rows=1)
    journal.write(b"c" * 40, rows=1)
    [path] = journal.files
    journal.committed({number: 3})
    assert journal.write(b"d" * 40, rows=1) == number  # the same size as the first: boundaries line up
    parsed = parse_segment(path.read_bytes())
    assert parsed is not None
    assert (parsed.records, parsed.torn) == ([b"d" * 40], 0)


def test_writes_overwrite_zeros_and_a_written_out_segment_is_the_next_ones_file(tmp_path: Path) -> None:
    """Records overwrite zeros written ahead (a synced append would also commit the file
    system's journal); a rotated-out segment whose rows are all written becomes the next
    segment's file, read as empty until its new records arrive."""
    journal = Journal(tmp_path, "f" * 16, b"s" * 16, segment_bytes=8192, prepare_bytes=4096)
    first = journal.write(b"x" * 3000, rows=1)
    [first_path] = journal.files
    assert first_path.stat().st_size >= 3000 + 4096  # zeros ahead of the next record
    inode = first_path.stat().st_ino
    assert journal.write(b"x" * 5200, rows=1) == first  # now past segment_bytes
    second = journal.write(b"y" * 100, rows=1)  # rotated
    assert second != first
    journal.committed({first: 2})
    assert not first_path.exists()
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(".")]) == 1  # kept, dot-named
    journal.committed({second: 1})  # the current one: started again, not rotated
    assert journal.write(b"z" * 8200, rows=1) == second  # now past segment_bytes
    third = journal.write(b"w" * 10, rows=1)
    assert third not in (first, second)
    reused = [p for p in journal.files if p.stat().st_ino == inode]
    assert len(reused) == 1  # the first segment's file, under the third's name
    parsed = parse_segment(reused[0].read_bytes())
    assert parsed is not None
    assert (parsed.records, parsed.torn) == ([b"w" * 10], 0)  # nothing of the first segment
    journal.committed({second: 1, third: 1})
    assert journal.close() == []
    assert list(tmp_path.iterdir()) == []  # the spare goes with the rest


def test_a_segment_of_format_1_is_still_read() -> None:
    """Segments written before records carried a generation (appended, no zeros ahead): a replay
    after an upgrade reads them, a torn last record ignored as before."""
    payloads = [b"first\n", "第二\n".encode() * 10]
    legacy = b"IDGUARD-CHECKLOG 1 0123456789abcdef " + (b"s" * 16).hex().encode() + b"\n"
    for p in payloads:
        legacy += struct.pack("<II", len(p), zlib.crc32(p)) + p
    parsed = parse_segment(legacy + b"\x05\x00")
    assert parsed is not None
    assert (parsed.fingerprint, parsed.records, parsed.torn) == ("0123456789abcdef", payloads, 2)


def test_a_failed_write_abandons_its_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(tmp_path, "f" * 16, b"s" * 16)
    good = journal.write(b"good", rows=1)

    def fail(fd: int, data: bytes, offset: int) -> None:
        os.pwrite(fd, data[: len(data) // 2], offset)  # torn, then the error
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(journal_module, "_write_synced", fail)
    with pytest.raises(JournalError):
        journal.write(b"lost", rows=1)
    monkeypatch.undo()
    after = journal.write(b"after", rows=1)
    assert after != good  # never appended after a record that may be torn
    first, second = journal.files
    assert parse_segment(first.read_bytes()).records == [b"good"]  # type: ignore[union-attr]
    assert parse_segment(second.read_bytes()).records == [b"after"]  # type: ignore[union-attr]


def test_only_segments_of_processes_that_are_gone_are_claimed(tmp_path: Path) -> None:
    live = Journal(tmp_path, "a" * 16, b"s" * 16)
    live.write(b"live", rows=1)
    other_database = Journal(tmp_path, "b" * 16, b"s" * 16)
    other_database.write(b"other", rows=1)
    other_database.close()  # gone, but written for another database
    (tmp_path / ".checks-1-dead-000000.journal.tmp").write_bytes(b"half-created")
    scan = Scan()
    assert list(claim_orphans(tmp_path, "a" * 16, scan)) == []  # the live one's lock is held
    assert scan.other_database == other_database_files(tmp_path, "b" * 16)
    assert not (tmp_path / ".checks-1-dead-000000.journal.tmp").exists()
    [path] = live.files
    live.close()  # the writer is gone (as after kill -9: its lock is released)
    claimed = list_claimed(tmp_path, "a" * 16)
    assert claimed == [(path, [b"live"])]


def other_database_files(directory: Path, fingerprint: str) -> list[Path]:
    return sorted(
        p
        for p in directory.glob("checks-*.journal")
        if (d := parse_segment(p.read_bytes())) and d.fingerprint == fingerprint
    )


def list_claimed(directory: Path, fingerprint: str) -> list[tuple[Path, list[bytes]]]:
    out = []
    for orphan in claim_orphans(directory, fingerprint):
        # While claimed, nobody else can take it.
        fd = os.open(orphan.path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        out.append((orphan.path, orphan.data.records))
    return out


def test_tickets_wake_their_waiters_in_order_and_report_failures() -> None:
    async def scenario() -> list[str]:
        waiters = Waiters()
        with pytest.raises(LookupError):  # no thread settles tickets yet
            waiters.register(1)
        waiters.open()
        first, second, third = (waiters.register(t) for t in (1, 2, 3))
        assert isinstance(first, asyncio.Future)
        assert isinstance(second, asyncio.Future)
        assert isinstance(third, asyncio.Future)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: waiters.settle(1, ok=True))
        await first
        assert not second.done()
        await loop.run_in_executor(None, lambda: waiters.settle(3, ok=False))
        with pytest.raises(JournalError):
            await second
        with pytest.raises(JournalError):
            await third
        assert waiters.register(1) is True  # settled already
        assert waiters.register(2) is False  # failed
        waiters.close()
        assert waiters.register(3) is False
        return ["ok"]

    assert asyncio.run(scenario()) == ["ok"]


def test_a_segment_is_rotated_by_age_too(tmp_path: Path) -> None:
    """Under steady load the current segment is never all written at once: rotating it by age
    lets it go soon after its rows are in the database."""
    journal = Journal(tmp_path, "f" * 16, b"s" * 16, segment_seconds=0.0)
    first = journal.write(b"a", rows=1)
    second = journal.write(b"b", rows=1)
    assert second != first
    journal.committed({first: 1})
    assert len(journal.files) == 1
    patient = Journal(tmp_path / "patient", "f" * 16, b"s" * 16, segment_seconds=3600.0)
    assert patient.write(b"a", rows=1) == patient.write(b"b", rows=1)


def test_a_ticket_registered_out_of_order_is_released_with_its_group() -> None:
    async def scenario() -> None:
        waiters = Waiters()
        waiters.open()
        later, earlier = waiters.register(3), waiters.register(2)
        assert isinstance(later, asyncio.Future)
        assert isinstance(earlier, asyncio.Future)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: waiters.settle(2, ok=True))
        await earlier
        assert not later.done()
        await loop.run_in_executor(None, lambda: waiters.settle(3, ok=True))
        await later

    asyncio.run(scenario())


def test_the_checks_of_one_loop_turn_share_one_journal_write(tmp_path: Path) -> None:
    """The group commit: what the event loop appends in one turn (here two callbacks' worth) is
    synced in one write once the loop has served them; an append off any loop is written
    without waiting for a loop."""
    log = CheckLog(sa.create_engine("sqlite://"), SECRET, journal_dir=tmp_path)  # never connects
    log._tickets.open()
    thread = threading.Thread(target=log._journal_run, daemon=True)
    thread.start()
    try:

        async def one_turn() -> None:
            loop = asyncio.get_running_loop()
            tickets: list[int] = []
            loop.call_soon(lambda: tickets.extend(log.append([entry(check_id(i))]) for i in range(3)))
            loop.call_soon(lambda: tickets.extend(log.append([entry(check_id(i))]) for i in range(3, 5)))
            await asyncio.sleep(0)
            await asyncio.gather(*(log.recorded(t) for t in tickets))

        asyncio.run(one_turn())
        assert log.journal_writes == 1
        log.append([entry(check_id(9))])  # on this thread, no loop: the journal thread is woken now
        deadline = time.monotonic() + 60
        while log.journal_writes < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert log.journal_writes == 2
    finally:
        log._journal_stop.set()
        assert log._bell is not None
        log._bell.ring()
        thread.join(timeout=30)


# --- the journal thread's doorbell ---------------------------------------------------------------


def test_a_ring_before_the_wait_is_kept_and_every_ring_so_far_is_taken_at_once() -> None:
    bell = Doorbell()
    try:
        assert not bell.wait(0.01)  # nobody rang: the timeout
        for _ in range(100_000):  # far more than the pipe holds: never blocks, never raises
            bell.ring()
        assert bell.wait(5)
        assert not bell.wait(0.01)  # all those rings were one wake-up
    finally:
        bell.close()


def test_a_ring_wakes_a_thread_waiting_on_another() -> None:
    bell = Doorbell()
    woken: list[float] = []
    waiter = threading.Thread(target=lambda: woken.append(time.monotonic()) if bell.wait(30) else None)
    waiter.start()
    time.sleep(0.05)
    assert not woken
    rung = time.monotonic()
    bell.ring()
    waiter.join(timeout=30)
    assert woken
    assert woken[0] - rung < 5
    bell.close()


def test_a_closed_doorbell_ignores_rings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kick the loop still had queued when the log stopped writes nothing: its fd number may
    belong to another file by then."""
    bell = Doorbell()
    bell.close()
    writes: list[int] = []
    monkeypatch.setattr(journal_module.os, "write", lambda fd, data: writes.append(fd) or len(data))
    bell.ring()
    bell.close()
    assert writes == []


def test_stopping_the_log_closes_the_journal_threads_doorbell(tmp_path: Path) -> None:
    log = CheckLog(sa.create_engine("sqlite://"), SECRET, journal_dir=tmp_path)
    bell = log._bell
    assert bell is not None
    log.start()
    log.stop()
    assert log._bell is None
    assert bell._write < 0
