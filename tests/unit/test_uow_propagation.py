"""The unit of work's part in "invalid at once": what a transaction changed reaches the
propagation hook only once it has committed, and a request's answer says how far it got."""

from __future__ import annotations

import contextlib
import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.core.errors import RecordedRefusal
from idguard.core.sealing import Sealer

NOW = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


def _sessions(calls: list[tuple[int, int]]) -> sessionmaker[Session]:
    def hook(seq: int, units: int) -> dict[str, int | float]:
        calls.append((seq, units))
        return {"workers": 2, "confirmed": 2, "ms": 0.5}

    engine = sa.create_engine("sqlite://")
    return sessionmaker(engine, info={uow.PROPAGATE: hook})


def test_the_hook_hears_of_a_committed_change_with_its_highest_position() -> None:
    calls: list[tuple[int, int]] = []
    with uow.transaction(_sessions(calls)) as session:
        uow.changed(session, ledger_seq=7)
        uow.changed(session, ledger_seq=5)  # a lower one does not lower it
        uow.changed(session, units_version=3)
    assert calls == [(7, 3)]


def test_a_rolled_back_change_is_never_published() -> None:
    calls: list[tuple[int, int]] = []
    sessions = _sessions(calls)
    try:
        with uow.transaction(sessions) as session:
            uow.changed(session, ledger_seq=9)
            raise RuntimeError("the write failed")
    except RuntimeError:
        pass
    with uow.transaction(sessions) as session:
        session.execute(sa.text("SELECT 1"))  # a later commit of nothing changed publishes nothing
    assert calls == []


def test_a_commit_that_changed_nothing_waits_for_nothing() -> None:
    calls: list[tuple[int, int]] = []
    with uow.transaction(_sessions(calls)) as session:
        session.execute(sa.text("SELECT 1"))
    assert calls == []


def test_the_answer_of_a_write_that_changed_answers_says_how_far_it_got() -> None:
    calls: list[tuple[int, int]] = []
    with _sessions(calls)() as session:
        work = uow.UnitOfWork(session, NOW, Sealer(b"k" * 32))

        def report() -> str:
            uow.changed(session, ledger_seq=11)
            return '{"report_no":"R1"}'

        answer = work.write(report, status=201, idempotency=None, refusal_body=str)
        assert answer.body == '{"report_no":"R1","propagation":{"workers":2,"confirmed":2,"ms":0.5}}'
        plain = work.write(lambda: '{"ok":true}', status=200, idempotency=None, refusal_body=str)
        assert plain.body == '{"ok":true}'  # nothing changed: nothing added
    assert calls == [(11, 0)]


def test_a_refused_write_commits_its_record_without_publishing_what_it_rolled_back() -> None:
    """A failed fingerprint comparison: the use-case may have appended an event before the
    refusal; the unit of work rolls that back and commits only the record of the refusal, which
    must not publish the rolled-back sequence number (workers would wait for an event that never
    exists)."""
    calls: list[tuple[int, int]] = []
    with _sessions(calls)() as session:
        work = uow.UnitOfWork(session, NOW, Sealer(b"k" * 32))

        def refused() -> str:
            session.execute(sa.text("SELECT 1"))  # the append (registry/ledger.py) is a statement
            uow.changed(session, ledger_seq=12)
            raise RecordedRefusal("the finger does not match", records=())

        with contextlib.suppress(RecordedRefusal):
            work.write(refused, status=201, idempotency=None, refusal_body=str)
    assert calls == []
