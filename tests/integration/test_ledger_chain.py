"""The tamper-evident ledger and audit log (issue 16), on SQLite and PostgreSQL: a registry's
history verifies; altering, removing or reordering any row is named by its ledger seq or audit
id; a rewrite of the whole chain with every hash recomputed is caught by a kept checkpoint; the
appending statement's hash (computed by PostgreSQL itself) is the one core.chain defines.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from idguard import uow
from idguard.cli.main import app as cli
from idguard.config import Settings
from idguard.core import chain as hash_chain
from idguard.core.chain import ChainName
from idguard.core.idnumber import Sex
from idguard.db import migrate
from idguard.db.common import AuditEntry, ChainCheckpoint
from idguard.registry import cards as card_service
from idguard.registry import chains, ledger, loss_reports
from idguard.registry import persons as person_service
from idguard.registry.lifecycle import EventKind, IssueKind, LossReason
from idguard.registry.models import Card
from tests.factories import NOW, OFFICE_A, SECRET, actor, id_number

PERSONS = 4


def _history(session_factory: sessionmaker[Session]) -> None:
    """Persons and first cards (issue events), loss reports (one cancelled), and staff reads:
    ledger events of every path (PostgreSQL's issue and change statements) and audit entries."""
    clerk = actor("clerk_a")
    for k in range(PERSONS):
        birth = dt.date(1970 + k, 3, 4)
        number = id_number(birth)
        with uow.transaction(session_factory) as session:
            person_service.register_person(
                session,
                actor=clerk,
                now=NOW,
                id_number=number,
                name=f"测试{k}",
                sex=Sex.MALE,
                ethnicity="汉",
                birth_date=birth,
                address="北京",
                hukou_office=OFFICE_A,
            )
            card = card_service.issue_card(
                session, actor=clerk, now=NOW, id_number=number, kind=IssueKind.FIRST, office=OFFICE_A
            )
            card_id = str(card.id)
        if k < 2:
            with uow.transaction(session_factory) as session:
                report, _ = loss_reports.report_loss(
                    session,
                    actor=clerk,
                    now=NOW + dt.timedelta(minutes=k),
                    card_id=card_id,
                    reason=LossReason.LOST,
                    office=OFFICE_A,
                    applicant_id_number=number,
                )
                report_no = report.report_no
        if k == 0:
            with uow.transaction(session_factory) as session:
                loss_reports.cancel_loss_report(
                    session,
                    actor=clerk,
                    now=NOW + dt.timedelta(hours=1),
                    report_no=report_no,
                    office=OFFICE_A,
                )
        with uow.transaction(session_factory) as session:
            person_service.read_person(session, actor=clerk, now=NOW, id_number=number, action="person.read")


@pytest.fixture
def history(engine: sa.Engine, session_factory: sessionmaker[Session], settings: Settings) -> sa.Engine:
    _history(session_factory)
    chains.seal_audit(engine)
    return engine


def _verify(
    engine: sa.Engine, settings: Settings, kept: list[hash_chain.Checkpoint] | None = None
) -> chains.Verification:
    return chains.verify(engine, chains.keyring(settings), kept or [])


def _tamper(engine: sa.Engine, *statements: str) -> None:
    with uow.connection(engine) as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def _head(engine: sa.Engine) -> int:
    with uow.connection(engine) as conn:
        return int(conn.scalar(sa.text("SELECT seq FROM ledger_head WHERE id = 1")))


def test_an_untouched_history_verifies(history: sa.Engine, settings: Settings) -> None:
    result = _verify(history, settings)
    assert result.ok, result.problems()
    head = _head(history)
    assert head >= PERSONS + 3
    assert result.ledger.rows == result.ledger.last_seq == head
    with uow.connection(history) as conn:
        entries = conn.scalar(sa.select(sa.func.count()).select_from(AuditEntry))
        chain_values = conn.scalars(sa.text("SELECT chain FROM ledger_events ORDER BY seq")).all()
    assert result.audit.rows == entries
    assert result.audit.unsealed == 0
    assert len(set(chain_values)) == head
    assert all(len(c) == 64 for c in chain_values)


def test_every_event_links_from_the_one_before(history: sa.Engine) -> None:
    """The stored hashes are core.chain's, whichever path wrote them (PostgreSQL's in SQL)."""
    events = sa.table("ledger_events", *(sa.column(c) for c in ("seq", "chain")))
    with uow.connection(history) as conn:
        rows = conn.execute(
            sa.select(
                sa.literal_column("seq"),
                sa.literal_column("chain"),
                *(ledger._events.c[name] for name in ledger.EVENT_COLUMNS),
            )
            .select_from(ledger._events)
            .order_by(sa.literal_column("seq"))
        ).all()
        head_chain = conn.scalar(sa.text("SELECT chain FROM ledger_head WHERE id = 1"))
    assert events is not None
    previous = hash_chain.GENESIS
    for row in rows:
        previous = hash_chain.link(previous, hash_chain.canonical(row[0], row[2:]))
        assert row[1] == previous, f"seq {row[0]}"
    assert head_chain == previous


def test_an_altered_event_is_named(history: sa.Engine, settings: Settings) -> None:
    _tamper(history, "UPDATE ledger_events SET reason = 'edited' WHERE seq = 3")
    result = _verify(history, settings)
    assert not result.ok
    assert (
        result.ledger.problem
        == "ledger event seq 3 does not match its chain hash (altered, or rows reordered)"
    )
    assert result.ledger.last_seq == 2


def test_an_altered_chain_value_is_named(history: sa.Engine, settings: Settings) -> None:
    _tamper(history, "UPDATE ledger_events SET chain = NULL WHERE seq = 2")
    assert _verify(history, settings).ledger.problem == "ledger event seq 2 has no chain value (altered)"


def test_a_removed_event_is_named(history: sa.Engine, settings: Settings) -> None:
    _tamper(history, "DELETE FROM ledger_events WHERE seq = 4")
    assert _verify(history, settings).ledger.problem == "ledger event seq 4 is missing (removed)"


def test_a_removed_last_event_is_named(history: sa.Engine, settings: Settings) -> None:
    head = _head(history)
    _tamper(history, f"DELETE FROM ledger_events WHERE seq = {head}")  # noqa: S608 - an int
    assert _verify(history, settings).ledger.problem == (
        f"ledger event seq {head} is missing (removed; the head is at {head})"
    )


def test_reordered_events_are_named(history: sa.Engine, settings: Settings) -> None:
    _tamper(
        history,
        "UPDATE ledger_events SET seq = -1 WHERE seq = 3",
        "UPDATE ledger_events SET seq = 3 WHERE seq = 4",
        "UPDATE ledger_events SET seq = 4 WHERE seq = -1",
    )
    assert _verify(history, settings).ledger.problem == (
        "ledger event seq 3 is out of place: the row now at 4 belongs there (rows reordered)"
    )


def test_the_audit_log_altered_removed_reordered(history: sa.Engine, settings: Settings) -> None:
    with uow.connection(history) as conn:
        ids = conn.scalars(sa.text("SELECT id FROM audit_log ORDER BY seq")).all()
    third = ids[2]
    _tamper(history, f"UPDATE audit_log SET detail = 'nothing to see' WHERE id = {third}")  # noqa: S608
    assert _verify(history, settings).audit.problem == (
        f"audit entry id {third} (chain position 3) does not match its chain hash (altered, or rows reordered)"
    )
    _tamper(history, f"DELETE FROM audit_log WHERE id = {third}")  # noqa: S608
    assert _verify(history, settings).audit.problem == "audit chain position 3 is missing (removed)"
    _tamper(
        history,
        f"UPDATE audit_log SET seq = -1 WHERE id = {ids[3]}",  # noqa: S608
        f"UPDATE audit_log SET seq = 3 WHERE id = {ids[4]}",  # noqa: S608
        f"UPDATE audit_log SET seq = 4 WHERE id = {ids[3]}",  # noqa: S608
        "UPDATE audit_log SET seq = 5 WHERE seq = -1",
    )
    problem = _verify(history, settings).audit.problem
    assert problem is not None
    assert problem.startswith(f"audit entry id {ids[4]} (chain position 3)")


def test_entries_written_after_a_seal_wait_for_the_next(
    history: sa.Engine, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    with uow.transaction(session_factory) as session:
        session.add(AuditEntry(at=NOW, action="test.read", detail="late"))
    result = _verify(history, settings)
    assert result.ok
    assert result.audit.unsealed == 1
    assert chains.seal_audit(history) == 1
    result = _verify(history, settings)
    assert result.ok
    assert result.audit.unsealed == 0


def _rewrite_history(engine: sa.Engine) -> None:
    """What an insider with the database does: edit an old event and recompute every hash."""
    with uow.connection(engine) as conn:
        conn.exec_driver_sql("UPDATE ledger_events SET reason = 'rewritten' WHERE seq = 2")
        chains.chain_ledger_from(conn, 1)


def test_a_rewrite_with_recomputed_hashes_is_caught_by_a_kept_checkpoint(
    history: sa.Engine, settings: Settings
) -> None:
    ring = chains.keyring(settings)
    kept = chains.write_checkpoints(history, ring, now=NOW)
    exported = [hash_chain.Checkpoint.from_json(c.to_json()) for c in kept]  # the auditor's copy
    _rewrite_history(history)
    result = _verify(history, settings)
    assert result.ledger.problem is None  # the chain alone holds: it was recomputed
    head = _head(history)
    expected = (
        f"checkpoint of the ledger at seq {head} ({hash_chain.utc_text(NOW)}): the chain there is no "
        "longer what was signed (the ledger was rewritten up to that point, with its hashes recomputed)"
    )
    assert result.checkpoint_problems == [expected]
    # The insider deletes the stored checkpoints too: the exported ones still catch it.
    _tamper(history, "DELETE FROM chain_checkpoints")
    assert _verify(history, settings).ok
    assert _verify(history, settings, exported).checkpoint_problems == [expected]


def test_a_forged_checkpoint_fails_its_signature(history: sa.Engine, settings: Settings) -> None:
    chains.write_checkpoints(history, chains.keyring(settings), now=NOW)
    _rewrite_history(history)
    with uow.connection(history) as conn:
        new_head = conn.scalar(sa.text("SELECT chain FROM ledger_head WHERE id = 1"))
    _tamper(history, f"UPDATE chain_checkpoints SET chain = '{new_head}' WHERE chain_name = 'ledger'")  # noqa: S608
    problems = _verify(history, settings).checkpoint_problems
    assert len(problems) == 1
    assert "the signature does not verify" in problems[0]


def test_a_checkpoint_past_the_end_names_the_removal(history: sa.Engine, settings: Settings) -> None:
    kept = chains.write_checkpoints(history, chains.keyring(settings), now=NOW)
    head = _head(history)
    _tamper(
        history,
        f"DELETE FROM ledger_events WHERE seq = {head}",  # noqa: S608
        f"UPDATE ledger_head SET seq = {head - 1}, chain = "  # noqa: S608
        f"(SELECT chain FROM ledger_events WHERE seq = {head - 1})",
        "DELETE FROM chain_checkpoints",
    )
    result = _verify(history, settings, kept)
    assert result.ledger.problem is None
    assert result.checkpoint_problems == [
        f"checkpoint of the ledger at seq {head} ({hash_chain.utc_text(NOW)}): the ledger now ends at "
        f"seq {head - 1}, before the checkpoint (rows at the end were removed)"
    ]


@pytest.fixture
def card_id(session_factory: sessionmaker[Session]) -> str:
    """One issued card (from a short history), for events of any text."""
    _history(session_factory)
    with uow.transaction(session_factory) as session:
        return str(session.scalars(sa.select(Card.id).limit(1)).one())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    reason=st.one_of(st.none(), st.text(max_size=60)),
    reference=st.one_of(st.none(), st.text(max_size=40)),
    microseconds=st.integers(0, 10**6 - 1),
)
def test_any_text_chains_alike_in_sql_and_in_python(
    engine: sa.Engine,
    session_factory: sessionmaker[Session],
    card_id: str,
    reason: str | None,
    reference: str | None,
    microseconds: int,
) -> None:
    """PostgreSQL hashes the text it builds from the bound values; it must be core.chain's,
    whatever the characters (quotes, backslashes, newlines, astral planes) and the time."""
    reason = None if reason is None else reason.replace("\x00", "")  # PostgreSQL text holds no NUL
    reference = None if reference is None else reference.replace("\x00", "")
    at = NOW.replace(microsecond=microseconds)
    with uow.transaction(session_factory) as session:
        card = session.get_one(Card, uuid.UUID(card_id))
        seq = ledger.record(
            session,
            card,
            event=EventKind.BLACKLISTED,
            actor=None,
            office=None,
            at=at,
            reason=reason,
            reference=reference,
        )
    with uow.connection(engine) as conn:
        head = conn.execute(sa.text("SELECT seq, chain FROM ledger_head WHERE id = 1")).one()
        result = chains.verify_ledger(chains._on(conn), (head[0], head[1]))
    assert result.problem is None
    assert result.last_seq == seq == head[0]


def test_the_migration_chains_a_populated_registry(
    engine: sa.Engine, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    _history(session_factory)
    with uow.connection(engine) as conn:
        before = conn.execute(sa.text("SELECT seq, chain FROM ledger_events ORDER BY seq")).all()
    migrate.downgrade(engine, "0010")
    migrate.upgrade(engine)
    with uow.connection(engine) as conn:
        after = conn.execute(sa.text("SELECT seq, chain FROM ledger_events ORDER BY seq")).all()
        sealed = conn.scalar(sa.text("SELECT count(*) FROM audit_log WHERE seq IS NULL"))
    assert after == before  # the backfill computes what the appends computed
    assert sealed == 0
    assert _verify(engine, settings).ok


def test_ledger_commands(
    history: sa.Engine, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDGUARD_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("IDGUARD_ENV", "test")
    monkeypatch.setenv("IDGUARD_SECRET_KEY", SECRET)
    kept = tmp_path / "kept.jsonl"
    made = CliRunner().invoke(cli, ["ledger", "checkpoint", "--out", str(kept)])
    assert made.exit_code == 0, made.output
    lines = kept.read_text().splitlines()
    assert [json.loads(line)["chain_name"] for line in lines] == ["ledger", "audit"]
    assert made.stdout.splitlines() == lines
    verified = CliRunner().invoke(cli, ["ledger", "verify", "--checkpoints", str(kept)])
    assert verified.exit_code == 0, verified.output
    assert "ok: both chains hold" in verified.stdout
    _tamper(history, "UPDATE ledger_events SET office = NULL WHERE seq = 2")
    broken = CliRunner().invoke(cli, ["ledger", "verify", "--checkpoints", str(kept)])
    assert broken.exit_code == 1
    assert "ledger event seq 2 does not match its chain hash" in broken.stderr
    kept.write_text(lines[0] + "\n{not json\n")
    refused = CliRunner().invoke(cli, ["ledger", "verify", "--checkpoints", str(kept)])
    assert refused.exit_code == 1
    assert f"--checkpoints {kept} line 2: not JSON" in refused.stderr.replace("\n", "")
    assert ChainName.AUDIT.value == "audit"


def test_a_loaded_demo_verifies_and_the_ledger_carries_on(
    engine: sa.Engine, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    """The demo loader writes its events in bulk, unchained, then chains them in seq order: a
    demo registry verifies, and the events appended after it link from its last one."""
    from idguard.demo.load import load_demo

    load_demo(engine, citizens=60, seed=3, now=NOW, fingerprint_persons=0)
    chains.seal_audit(engine)
    result = _verify(engine, settings)
    assert result.ok, result.problems()
    assert result.ledger.rows == _head(engine) > 60
    with uow.transaction(session_factory) as session:
        card = session.scalars(sa.select(Card).where(Card.status == "valid").limit(1)).one()
        ledger.record(session, card, event=EventKind.BLACKLISTED, actor=None, office=None, at=NOW)
    assert _verify(engine, settings).ok


def test_the_keeper_seals_and_checkpoints_once_per_interval(
    engine: sa.Engine, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    from idguard.ops.chains import ChainKeeper

    _history(session_factory)
    clock = [NOW]
    keeper = ChainKeeper(engine, chains.keyring(settings), now=lambda: clock[0], checkpoint_seconds=600)
    keeper.tick()
    with uow.connection(engine) as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM audit_log WHERE seq IS NULL")) == 0
        assert conn.scalar(sa.text("SELECT count(*) FROM chain_checkpoints")) == 2
    clock[0] = NOW + dt.timedelta(seconds=599)
    keeper.tick()
    with uow.transaction(session_factory) as session:
        session.add(AuditEntry(at=NOW, action="test.read"))
    clock[0] = NOW + dt.timedelta(seconds=600)
    keeper.tick()
    with uow.connection(engine) as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM audit_log WHERE seq IS NULL")) == 0
        written = conn.execute(
            sa.select(ChainCheckpoint.chain_name, ChainCheckpoint.at).order_by(ChainCheckpoint.id)
        ).all()
    assert [tuple(r) for r in written] == [
        ("ledger", NOW),
        ("audit", NOW),
        ("ledger", clock[0]),
        ("audit", clock[0]),
    ]
    assert _verify(engine, settings).ok


def test_concurrent_appends_form_one_chain(
    engine: sa.Engine, session_factory: sessionmaker[Session], settings: Settings, card_id: str
) -> None:
    """Writers racing for the head each link from the event committed just before theirs."""
    import threading

    failures: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(15):
                with uow.transaction(session_factory) as session:
                    card = session.get_one(Card, uuid.UUID(card_id))
                    ledger.record(
                        session,
                        card,
                        event=EventKind.PROTECTION_SET,
                        actor=None,
                        office=None,
                        at=NOW,
                        reason=f"{k}/{i}",
                    )
        except BaseException as exc:  # reported below
            failures.append(exc)

    before = _head(engine)
    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    result = _verify(engine, settings)
    assert result.ok, result.problems()
    assert result.ledger.last_seq == before + 60


def test_an_audit_entry_committed_late_takes_a_later_position(
    engine: sa.Engine, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    """PostgreSQL: a transaction holding a smaller id commits after a seal; it is sealed at the
    next one, after the entries sealed before it, and the chain holds."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: no entry can commit behind a seal")
    chains.seal_audit(engine)
    with session_factory() as slow:
        early = AuditEntry(at=NOW, action="test.slow")
        slow.add(early)
        slow.flush()  # its id is taken; not committed
        with uow.transaction(session_factory) as session:
            late = AuditEntry(at=NOW, action="test.fast")
            session.add(late)
            session.flush()
            fast_id = late.id
        assert chains.seal_audit(engine) == 1
        slow_id = early.id
        uow.commit(slow)
    assert slow_id < fast_id
    assert _verify(engine, settings).audit.unsealed == 1
    assert chains.seal_audit(engine) == 1
    with uow.connection(engine) as conn:
        rows = conn.execute(
            sa.text("SELECT id, seq FROM audit_log WHERE id IN (:a, :b)"), {"a": slow_id, "b": fast_id}
        ).all()
    positions: dict[int, int] = {row[0]: row[1] for row in rows}
    assert positions[slow_id] == positions[fast_id] + 1
    result = _verify(engine, settings)
    assert result.ok, result.problems()


def test_an_append_stays_one_statement_on_postgresql(
    engine: sa.Engine, session_factory: sessionmaker[Session], card_id: str
) -> None:
    """The chain adds no round trip: PostgreSQL changes the status, takes the seq, hashes and
    appends in one statement; SQLite runs the three statements it ran before the chain."""
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    with uow.transaction(session_factory) as session:
        card = session.get_one(Card, uuid.UUID(card_id))
        session.flush()
        sa.event.listen(engine, "before_cursor_execute", count)
        try:
            ledger.record(session, card, event=EventKind.BLACKLISTED, actor=None, office=None, at=NOW)
        finally:
            sa.event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == (1 if engine.dialect.name == "postgresql" else 3), statements


def test_a_head_moved_back_is_named(history: sa.Engine, settings: Settings) -> None:
    """Rows past their head are not new appends: the head was moved back to hide them."""
    head = _head(history)
    _tamper(
        history,
        "UPDATE ledger_head SET seq = 2, chain = (SELECT chain FROM ledger_events WHERE seq = 2)",
        "DELETE FROM audit_head",
    )
    result = _verify(history, settings)
    assert (
        result.ledger.problem
        == f"ledger events run to position {head}, past the head at 2 (the head was moved back)"
    )
    assert result.audit.problem is not None
    assert result.audit.problem.startswith("sealed audit entries run to position ")
    assert result.audit.problem.endswith("past the head at 0 (the head was moved back)")


def test_the_keeper_thread_seals_until_stopped(
    engine: sa.Engine, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    import time

    from idguard.ops.chains import ChainKeeper

    keeper = ChainKeeper(engine, chains.keyring(settings), now=lambda: NOW, seal_seconds=0.05)
    keeper.start()
    try:
        with uow.transaction(session_factory) as session:
            session.add(AuditEntry(at=NOW, action="test.read"))
        deadline = time.monotonic() + 20
        while _verify(engine, settings).audit.unsealed and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        keeper.stop()
    result = _verify(engine, settings)
    assert result.audit.unsealed == 0
    assert result.ok, result.problems()
    assert result.checkpoints_checked == 2  # one checkpoint of each chain: the interval is an hour
