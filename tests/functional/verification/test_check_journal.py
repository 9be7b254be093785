"""The check log's journal in the app (TestClient) and its replay into the database, on SQLite and
PostgreSQL: an answer leaves only once its check is synced to the journal; a check whose journal
write fails is refused (503); the in-memory bound still refuses (503); a journal left by a
process that is gone is replayed once (idempotent), a live process's is left alone.

Real servers killed with SIGKILL, or stopped while the database is unreachable, are in
tests/integration/test_check_journal_crash.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from idguard.verification.models import Check, Watch
from idguard.verification.runtime import checklog
from idguard.verification.runtime import journal as journal_module
from idguard.verification.runtime.checklog import CheckEntry, CheckLog
from tests.factories import SECRET
from tests.functional.conftest import Counter
from tests.functional.verification.test_verify import Bank, sync


@pytest.fixture
def bank(counter: Counter) -> Bank:
    return Bank(counter)


def test_an_answer_leaves_only_once_its_check_is_synced(
    counter: Counter, bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    card = counter.card(counter.person())
    sync(counter)
    journal = counter.client.app.state.verifier.log.journal  # type: ignore[attr-defined]
    assert journal is not None
    assert bank.verify(card).status_code == 200  # the journal has its segment now
    entered, release = threading.Event(), threading.Event()
    synced_bytes: list[bytes] = []
    real_write = journal_module._write_synced

    def held_write(fd: int, data: bytes, offset: int) -> None:
        real_write(fd, data, offset)  # written and synced: the answer may leave once this returns
        synced_bytes.append(b"".join(p.read_bytes() for p in journal.files))
        entered.set()
        release.wait()

    monkeypatch.setattr(journal_module, "_write_synced", held_write)
    answer: dict[str, Any] = {}
    request = threading.Thread(target=lambda: answer.update(r=bank.verify(card, watch=True)))
    request.start()
    assert entered.wait(timeout=60), "the journal was never written"
    time.sleep(0.2)  # time enough for an answer that did not wait to arrive
    assert request.is_alive(), "the answer left before its journal write returned"
    assert "r" not in answer
    release.set()
    request.join()
    r = answer["r"]
    assert r.status_code == 200, r.text
    check_id = r.json()["check_id"]
    assert any(check_id.encode() in data for data in synced_bytes)
    # The journal holds the masked number and the keyed hash; the watched card's number is sealed.
    for data in synced_bytes:
        assert card["id_number"].encode() not in data
        assert card["id_number"][:14].encode() not in data


def test_a_check_whose_journal_write_fails_is_refused(
    counter: Counter, bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    card = counter.card(counter.person())
    sync(counter)
    assert bank.verify(card).status_code == 200
    real_write = journal_module._write_synced
    failures = [OSError(28, "No space left on device")]

    def failing_write(fd: int, data: bytes, offset: int) -> None:
        if failures:
            raise failures.pop()
        real_write(fd, data, offset)

    monkeypatch.setattr(journal_module, "_write_synced", failing_write)
    r = bank.verify(card)
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == "5"
    assert "could not be recorded" in r.text
    r = bank.verify(card)  # the next group goes to a new segment
    assert r.status_code == 200, r.text
    assert counter.client.app.state.verifier.log.journal_failures == 1  # type: ignore[attr-defined]


def test_a_full_log_still_refuses_checks(
    counter: Counter, bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    card = counter.card(counter.person())
    sync(counter)
    verifier = counter.client.app.state.verifier  # type: ignore[attr-defined]
    verifier.log.stop()  # nothing is written from here: the buffer fills
    monkeypatch.setattr(checklog, "MAX_BUFFERED", 2)
    assert bank.verify(card).status_code == 200
    assert bank.verify(card).status_code == 200
    r = bank.verify(card)
    assert r.status_code == 503, r.text
    assert verifier.log.pending == 2


# --- replay -------------------------------------------------------------------------------------


def entries_for(bank: Bank, card: dict[str, Any], n: int) -> list[CheckEntry]:
    """`n` checks of the card, the last one starting a watch."""
    at = dt.datetime.now(dt.UTC)
    issued_on = dt.date.fromisoformat(card["issued_on"])
    return [
        (
            str(uuid.uuid4()),
            bank.code,
            "teller-7",
            "account_opening",
            at,
            "valid",
            None,
            card["id_number"],
            issued_on if i == n - 1 else None,
            1,
            None,
            None,
        )
        for i in range(n)
    ]


def journaled(engine: sa.Engine, directory: Path, entries: list[CheckEntry]) -> CheckLog:
    """A check log that has synced `entries` to its journal and written none of them."""
    log = CheckLog(engine, SECRET, journal_dir=directory)
    asyncio.run(log.recorded(log.append(entries)))  # no journal thread: synced by the caller
    return log


def gone(log: CheckLog) -> None:
    """As after kill -9: the process's file locks are released, its segments stay."""
    assert log.journal is not None
    assert log.journal.close()  # kept: none of its checks is written


def in_database(engine: sa.Engine, entries: list[CheckEntry]) -> tuple[int, int]:
    """(checks among `entries` in the table, watches started by them)."""
    ids = [uuid.UUID(e[0]) for e in entries]
    with engine.connect() as conn:
        checks = conn.scalar(sa.select(sa.func.count()).select_from(Check).where(Check.id.in_(ids)))
        watches = conn.scalar(sa.select(sa.func.count()).select_from(Watch).where(Watch.check_id.in_(ids)))
    return int(checks or 0), int(watches or 0)


def test_a_journal_left_behind_is_replayed_once(counter: Counter, bank: Bank, tmp_path: Path) -> None:
    card = counter.card(counter.person())
    engine = counter.client.app.state.engine  # type: ignore[attr-defined]
    directory = tmp_path / "journal"
    entries = entries_for(bank, card, 5)
    crashed = journaled(engine, directory, entries)
    assert crashed.journal is not None
    [segment] = crashed.journal.files
    saved = segment.read_bytes()
    gone(crashed)
    assert in_database(engine, entries) == (0, 0)

    restarted = CheckLog(engine, SECRET, journal_dir=directory)
    assert restarted.replay() == 5
    assert in_database(engine, entries) == (5, 1)
    assert not segment.exists()
    # The same segment once more, as if the replaying process had died before removing it.
    segment.write_bytes(saved)
    assert restarted.replay() == 5
    assert in_database(engine, entries) == (5, 1)  # nothing written twice
    assert list(directory.glob("checks-*")) == []


def test_a_live_workers_journal_is_not_replayed_by_its_sibling(
    counter: Counter, bank: Bank, tmp_path: Path
) -> None:
    card = counter.card(counter.person())
    engine = counter.client.app.state.engine  # type: ignore[attr-defined]
    directory = tmp_path / "journal"
    entries = entries_for(bank, card, 3)
    alive = journaled(engine, directory, entries)
    sibling = CheckLog(engine, SECRET, journal_dir=directory)
    assert sibling.replay() == 0  # its owner holds the lock
    assert in_database(engine, entries) == (0, 0)
    gone(alive)
    assert sibling.replay() == 3  # the sibling adopts it (at start, or every ADOPT_SECONDS)
    assert in_database(engine, entries) == (3, 1)


def test_stop_writes_everything_and_leaves_no_journal(counter: Counter, bank: Bank, tmp_path: Path) -> None:
    card = counter.card(counter.person())
    engine = counter.client.app.state.engine  # type: ignore[attr-defined]
    directory = tmp_path / "journal"
    entries = entries_for(bank, card, 4)
    log = journaled(engine, directory, entries)
    log.stop()
    assert in_database(engine, entries) == (4, 1)
    assert list(directory.glob("checks-*")) == []


def test_sqlite_rows_are_stored_as_sqlalchemy_stores_them(counter: Counter, bank: Bank) -> None:
    """The SQLite writer skips SQLAlchemy's type processing (checklog.sqlite_row): what it
    stores must be byte for byte what SQLAlchemy stores for the same check."""
    engine = counter.client.app.state.engine  # type: ignore[attr-defined]
    if engine.dialect.name != "sqlite":
        pytest.skip("the SQLite writer's own row format")
    log = CheckLog(engine, SECRET)
    entries: list[CheckEntry] = [
        (
            str(uuid.uuid4()),
            bank.code,
            operator,
            "account_opening",
            at,
            result,
            reason,
            number,
            watch_on,
            3,
            match,
            "blacklisted" if match else None,
        )
        for operator, at, result, reason, number, watch_on, match in [
            (
                "teller-7",
                dt.datetime(2026, 6, 15, 2, 0, 0, 123456, tzinfo=dt.UTC),
                "valid",
                None,
                "11010519900101123X",
                None,
                None,
            ),
            (
                "a\tb\\c\nd\re\x00f",
                dt.datetime(2026, 6, 15, 2, 0, tzinfo=dt.UTC),
                "invalid",
                "reported_lost",
                "110105199001011232",
                dt.date(2020, 1, 2),
                True,
            ),
            (
                "\\N",
                dt.datetime(2026, 6, 15, 10, 0, 0, 7, tzinfo=dt.timezone(dt.timedelta(hours=8))),
                "mismatch",
                None,
                "1234",
                None,
                False,
            ),
        ]
    ]
    plain, watched, _ = log._format(entries)
    with engine.connect() as conn:
        for line in [*plain, *watched]:
            conn.execute(sa.insert(Check), [checklog.row_values(line)])
            stored = conn.exec_driver_sql(
                "SELECT * FROM checks WHERE id = ?",
                (checklog.row_values(line)["id"].hex,),  # type: ignore[attr-defined]
            ).one()
            assert tuple(stored) == checklog.sqlite_row(line, {})
        conn.rollback()


def test_the_writer_tells_what_it_wrote_without_the_number(counter: Counter, bank: Bank) -> None:
    card = counter.card(counter.person())
    sync(counter)
    log = counter.client.app.state.verifier.log  # type: ignore[attr-defined]
    seen: list[tuple[str, str, str, str]] = []
    log.on_written = seen.extend
    assert bank.verify(card, operator="a\tb").status_code == 200
    counter.client.app.state.verifier.log.flush()  # type: ignore[attr-defined]
    [(unit, operator, digest, result)] = seen
    assert (unit, operator, result) == (bank.code, "a\tb", "valid")
    assert len(digest) == 64
    assert card["id_number"] not in digest
