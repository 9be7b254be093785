"""Offline verification end to end: a unit's reader fetches the signed set over the API (the
reader's HTTP goes through the test client), keeps it current with deltas, answers exactly for
every card of the registry, refuses what does not verify, and its checks reach the check log."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from idguard.core.clock import FixedClock, today_cst
from idguard.db.common import AuditEntry
from idguard.offline import service, sets
from idguard.offline.reader import Reader, Transport
from idguard.registry.lifecycle import CardStatus, effective_status
from idguard.registry.models import Card
from idguard.verification.models import Check
from idguard.verification.runtime.checklog import id_hash
from tests.factories import CHECK_HASH_KEY, NOW, OFFICE_A, id_number
from tests.functional.citizens.conftest import Citizens
from tests.functional.conftest import Counter, assert_problem
from tests.functional.offline.conftest import OfflineUnit, transport

BASE = "http://testserver"


def expiry(card: dict[str, Any]) -> dt.date | None:
    return dt.date.fromisoformat(card["expires_on"]) if card["expires_on"] else None


def universe(
    sessions: sessionmaker[Session], now: dt.datetime
) -> list[tuple[str, str, dt.date | None, bool]]:
    """Every card ever issued, and whether it is valid now (the registry's own rule)."""
    with sessions() as session:
        rows = session.execute(
            sa.select(Card.id_number, Card.chip_serial, Card.expires_on, Card.status)
        ).all()
    today = today_cst(now)
    return [
        (n, chip, exp, effective_status(status, exp, today) is CardStatus.VALID)
        for n, chip, exp, status in rows
    ]


def assert_exact(reader: Reader, sessions: sessionmaker[Session], now: dt.datetime) -> None:
    current = reader.load()
    wrong = [
        (n, exp, valid)
        for n, chip, exp, valid in universe(sessions, now)
        if current.check(n, chip, exp, today_cst(now)) != valid
    ]
    assert wrong == []


OPS = ("card", "child", "lost", "stolen", "cancel", "replace", "temporary", "revoke", "years")


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 1000)), min_size=1, max_size=14))
def test_exact_over_the_whole_universe(
    ops: list[tuple[str, int]],
    counter: Counter,
    clock: FixedClock,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    """Random registries — cards issued, reported lost or stolen, re-validated (report cancelled),
    replaced, temporary cards, persons revoked, years passing so cards expire — and after each
    run every card ever issued is answered right by a reader that follows with deltas, and by one
    that starts from a snapshot."""
    if not hasattr(counter, "offline_unit"):
        counter.offline_unit = OfflineUnit(counter)  # type: ignore[attr-defined]
    unit: OfflineUnit = counter.offline_unit  # type: ignore[attr-defined]
    send = transport(counter.client)
    kept = Reader(tmp_path / "kept")
    if (tmp_path / "kept" / "snapshot.bin").exists():
        kept.fetch(BASE, unit.key, transport=send)
    persons: list[str] = getattr(counter, "persons", [])
    reports: list[str] = getattr(counter, "reports", [])
    for op, pick in ops:
        if op in ("card", "child") or not persons:
            birth = dt.date(2015, 3, 1) if op == "child" else dt.date(1990, 5, 4)
            number = counter.person(birth)
            counter.issue(number)
            persons.append(number)
            continue
        number = persons[pick % len(persons)]
        cards = counter.cards(number)
        card = max(cards, key=lambda c: (c["issued_on"], not c["temporary"]))
        if op in ("lost", "stolen"):
            r = counter.report(card, op)
            if r.status_code == 201:
                reports.append(r.json()["report_no"])
        elif op == "cancel" and reports:
            counter.post(f"/api/v1/loss-reports/{reports[pick % len(reports)]}/cancel", {"office": OFFICE_A})
        elif op == "replace":
            counter.issue(number, "replacement")
        elif op == "temporary":
            counter.post(f"/api/v1/persons/{number}/temporary-cards", {"office": OFFICE_A})
        elif op == "revoke":
            counter.post(f"/api/v1/persons/{number}/revocations", {"reason": "deceased", "office": OFFICE_A})
        elif op == "years":
            clock.advance(dt.timedelta(days=365 * 3))
    counter.persons, counter.reports = persons, reports  # type: ignore[attr-defined]
    kept.fetch(BASE, unit.key, transport=send)
    note(f"ops {ops}, now {clock.now()}")
    assert_exact(kept, session_factory, clock.now())
    fresh = Reader(tmp_path / f"fresh-{uuid.uuid4().hex}")
    assert fresh.fetch(BASE, unit.key, transport=send).kind == "snapshot"
    assert_exact(fresh, session_factory, clock.now())


def test_current_within_one_fetch_and_checks_reach_the_log(
    counter: Counter, tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    unit = OfflineUnit(counter)
    a = counter.card(counter.person())
    b = counter.card(counter.person())
    reader = Reader(tmp_path)
    send = transport(counter.client)
    first = reader.fetch(BASE, unit.key, transport=send)
    assert first.kind == "snapshot"
    assert reader.check(a["id_number"], a["chip_serial"], expiry(a), now=NOW).valid
    # a loss report: invalid at the next fetch (a delta of one card, a few dozen bytes)
    r = counter.report(a)
    assert r.status_code == 201
    report = reader.fetch(BASE, unit.key, transport=send)
    assert (report.kind, report.changes) == ("delta", 1)
    assert report.version > first.version
    assert report.size < 64 + 300 + 9
    assert report.uploaded == 1
    answer = reader.check(a["id_number"], a["chip_serial"], expiry(a), now=NOW, operator="gate-7")
    assert not answer.valid
    assert answer.version == report.version
    # cancelled: valid again
    counter.post(f"/api/v1/loss-reports/{r.json()['report_no']}/cancel", {"office": OFFICE_A})
    reader.fetch(BASE, unit.key, transport=send)
    assert reader.check(a["id_number"], a["chip_serial"], expiry(a), now=NOW).valid
    # a forged chip serial, an expiry date not the card's
    assert not reader.check(a["id_number"], "00" * 16, expiry(a), now=NOW).valid
    assert not reader.check(b["id_number"], b["chip_serial"], dt.date(2099, 1, 1), now=NOW).valid
    reader.fetch(BASE, unit.key, transport=send)
    # the offline checks are in the unit's history, and findable by the holder (the id hash)
    counter.client.app.state.verifier.log.flush()  # type: ignore[attr-defined]
    history = unit.get("/api/v1/checks").json()["items"]
    mine = [c for c in history if c["operator"] == "gate-7"]
    assert len(mine) == 1
    assert mine[0]["result"] == "invalid"
    assert mine[0]["purpose"] == "ticketing"
    assert mine[0]["id_number"] != a["id_number"]  # masked
    assert len(history) == 5
    with session_factory() as session:
        holder = session.scalars(
            sa.select(Check).where(Check.id_hash == id_hash(CHECK_HASH_KEY, a["id_number"]))
        )
        assert sorted(c.result for c in holder) == ["invalid", "invalid", "valid", "valid"]
    assert not (tmp_path / "checks.jsonl").read_text().strip()  # uploaded, not kept


def test_a_unit_without_offline_is_refused(counter: Counter, tmp_path: Path) -> None:
    unit = OfflineUnit(counter, offline=False)
    item = {
        "check_id": str(uuid.uuid4()),
        "at": NOW.isoformat(),
        "id_number": "11010519491231002X",
        "result": "valid",
        "version": 1,
    }
    assert_problem(unit.get("/api/v1/offline/snapshot"), 403, says="not granted offline")
    assert_problem(unit.get("/api/v1/offline/deltas", after=0), 403)
    r = counter.client.post("/api/v1/offline/checks", json={"items": [item]}, headers=unit.headers)
    assert_problem(r, 403)
    assert counter.client.get("/api/v1/offline/keys").status_code == 200  # public
    unit.grant(True)
    assert unit.get("/api/v1/offline/snapshot").status_code == 200
    unit.grant(False)
    assert_problem(unit.get("/api/v1/offline/snapshot"), 403)
    with pytest.raises(Exception, match="403"):
        Reader(tmp_path).fetch(BASE, unit.key, transport=transport(counter.client))


def _tampering(client: TestClient, path: str, *, at: int = -100) -> Transport:
    """The reader's transport, with one byte of `path`'s answers altered."""
    send = transport(client)

    def altered(method: str, url: str, headers: Any, body: bytes | None) -> Any:
        status, answer_headers, answer = send(method, url, headers, body)
        if path in url and status == 200:
            flipped = bytearray(answer)
            flipped[at] ^= 0x01
            answer = bytes(flipped)
        return status, answer_headers, answer

    return altered


@pytest.mark.parametrize("at", [20, 200, -70, -1])
def test_a_tampered_snapshot_or_delta_is_refused(counter: Counter, tmp_path: Path, at: int) -> None:
    unit = OfflineUnit(counter)
    card = counter.card(counter.person())
    reader = Reader(tmp_path)
    with pytest.raises(sets.BadFile):
        reader.fetch(BASE, unit.key, transport=_tampering(counter.client, "/snapshot", at=at))
    assert not (tmp_path / "snapshot.bin").exists()
    first = reader.fetch(BASE, unit.key, transport=transport(counter.client))
    counter.report(card)
    with pytest.raises(sets.BadFile):
        reader.fetch(BASE, unit.key, transport=_tampering(counter.client, "/deltas", at=at))
    assert reader.load().version == first.version  # nothing applied
    assert reader.check(card["id_number"], card["chip_serial"], expiry(card), now=NOW).valid
    reader.fetch(BASE, unit.key, transport=transport(counter.client))
    assert not reader.check(card["id_number"], card["chip_serial"], expiry(card), now=NOW).valid
    # a file altered where it is kept: the set is refused, not used
    stored = tmp_path / "snapshot.bin"
    data = bytearray(stored.read_bytes())
    data[at] ^= 0x01
    stored.write_bytes(bytes(data))
    with pytest.raises(sets.BadFile):
        reader.load()


def test_a_delta_out_of_order_is_refused(counter: Counter, tmp_path: Path) -> None:
    unit = OfflineUnit(counter)
    card = counter.card(counter.person())
    other = counter.card(counter.person())
    reader = Reader(tmp_path)
    send = transport(counter.client)
    reader.fetch(BASE, unit.key, transport=send)
    counter.report(card)
    kept: list[bytes] = []

    def keep(method: str, url: str, headers: Any, body: bytes | None) -> Any:
        status, answer_headers, answer = send(method, url, headers, body)
        if "/deltas" in url:
            kept.append(answer)
        return status, answer_headers, answer

    second = reader.fetch(BASE, unit.key, transport=keep)
    counter.report(other)

    def replay(method: str, url: str, headers: Any, body: bytes | None) -> Any:
        # the old delta again (a replay, or a server mix-up): it starts before the set's version
        status, answer_headers, answer = send(method, url, headers, body)
        return (status, answer_headers, kept[0]) if "/deltas" in url else (status, answer_headers, answer)

    with pytest.raises(sets.BadFile, match="starts at version"):
        reader.fetch(BASE, unit.key, transport=replay)
    assert reader.load().version == second.version
    assert reader.check(other["id_number"], other["chip_serial"], expiry(other), now=NOW).valid
    reader.fetch(BASE, unit.key, transport=send)
    assert not reader.check(other["id_number"], other["chip_serial"], expiry(other), now=NOW).valid


def test_deltas_too_old_410_and_ahead_422(counter: Counter, tmp_path: Path) -> None:
    unit = OfflineUnit(counter)
    counter.card(counter.person())
    version = int(unit.get("/api/v1/offline/snapshot").headers["X-Offline-Version"])
    assert version > 0
    r = unit.get("/api/v1/offline/deltas", after=version)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["X-Offline-Version"] == str(version)
    assert_problem(unit.get("/api/v1/offline/deltas", after=version - 1), 410, says="snapshot")
    assert_problem(unit.get("/api/v1/offline/deltas", after=version + 5), 422, field="after")
    assert_problem(unit.get("/api/v1/offline/deltas", after=-1), 422, field="after")


def test_a_delta_longer_than_the_limit_is_gone(
    counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    """Past IDGUARD_OFFLINE_MAX_DELTA_EVENTS events, a snapshot is smaller than the delta: 410."""
    for _ in range(3):
        counter.card(counter.person())
    with session_factory() as session:
        until = service.head(session)
        assert len(service.changes(session, after=0, until=until, limit=until)) == 3
        with pytest.raises(service.Gone, match="fetch a snapshot"):
            service.changes(session, after=0, until=until, limit=until - 1)


def test_uploads_are_idempotent_and_judged_per_item(counter: Counter) -> None:
    unit = OfflineUnit(counter)
    other = OfflineUnit(counter, "HOTEL-9")
    card = counter.card(counter.person())

    def item(**extra: Any) -> dict[str, Any]:
        return {
            "check_id": str(uuid.uuid4()),
            "at": NOW.isoformat(),
            "id_number": card["id_number"],
            "result": "valid",
            "version": 3,
            **extra,
        }

    def upload(who: OfflineUnit, *items: dict[str, Any]) -> list[str]:
        r = counter.client.post("/api/v1/offline/checks", json={"items": list(items)}, headers=who.headers)
        assert r.status_code == 200, r.text
        return [
            res["status"] + "".join(f":{e['field']}" for e in res["errors"]) for res in r.json()["results"]
        ]

    first = item()
    assert upload(unit, first, first) == ["recorded", "duplicate"]
    assert upload(unit, first) == ["duplicate"]
    assert upload(other, first) == ["rejected:check_id"]
    assert upload(unit, item(purpose="account_opening")) == ["rejected:purpose"]
    later = (NOW + dt.timedelta(hours=1)).isoformat()
    assert upload(unit, item(at=later), item(result="invalid")) == ["rejected:at", "recorded"]
    r = counter.client.post(
        "/api/v1/offline/checks", json={"items": [item(result="maybe")]}, headers=unit.headers
    )
    assert_problem(r, 422, field="items.0.result")
    counter.client.app.state.verifier.log.flush()  # type: ignore[attr-defined]
    assert len(unit.get("/api/v1/checks").json()["items"]) == 2


def test_supervisor_grants_offline_others_may_not(
    counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    unit = OfflineUnit(counter, offline=False)
    for who in ("clerk_a", "auditor", "admin"):
        r = counter.client.put(
            f"/api/v1/units/{unit.code}/offline", json={"offline": True}, headers=unit.counter_auth(who)
        )
        assert_problem(r, 403)
    r = counter.client.put(
        "/api/v1/units/NOPE/offline", json={"offline": True}, headers=unit.counter_auth("supervisor")
    )
    assert_problem(r, 404)
    unit.grant(True)
    unit.grant(True)  # unchanged, no error
    unit.grant(False)
    with session_factory() as session:
        audited = session.scalars(
            sa.select(AuditEntry.action)
            .where(AuditEntry.detail == unit.code, AuditEntry.action.like("unit.offline%"))
            .order_by(AuditEntry.id)
        ).all()
    assert audited == ["unit.offline", "unit.offline_withdrawn"]  # the unchanged grant recorded nothing


def test_the_holder_sees_the_offline_check_in_their_own_view(counter: Counter, tmp_path: Path) -> None:
    unit = OfflineUnit(counter)
    citizen = Citizens(counter).new(name="张三")
    card = citizen.card
    reader = Reader(tmp_path)
    send = transport(counter.client)
    reader.fetch(BASE, unit.key, transport=send)
    answer = reader.check(card["id_number"], card["chip_serial"], expiry(card), now=NOW, purpose="ticketing")
    assert answer.valid
    assert reader.fetch(BASE, unit.key, transport=send).uploaded == 1
    mine = citizen.get("/me/checks").json()["items"]
    assert [(c["check_id"], c["result"], c["purpose"]) for c in mine] == [
        (answer.check_id, "valid", "ticketing")
    ]


def test_a_new_generation_makes_the_reader_start_again(
    counter: Counter, tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    """When idguard starts a new generation of the set (a new salt), a reader's next fetch takes
    a snapshot of it, whether its version is before the new generation's start (410) or not."""
    from idguard import uow

    unit = OfflineUnit(counter)
    card = counter.card(counter.person())
    reader = Reader(tmp_path)
    send = transport(counter.client)
    first = reader.fetch(BASE, unit.key, transport=send)
    with uow.transaction(session_factory) as session:
        service.start_generation(session, version=first.version, now=NOW)
    counter.client.app.state.offline._snapshot = None  # type: ignore[attr-defined]
    counter.report(card)
    report = reader.fetch(BASE, unit.key, transport=send)
    assert report.kind == "snapshot"
    assert reader.load().generation == 2
    assert not reader.check(card["id_number"], card["chip_serial"], expiry(card), now=NOW).valid


def test_an_upload_of_many_checks_is_not_taken_for_harvesting(counter: Counter) -> None:
    """A gate's morning of offline checks, uploaded at once by one operator (hundreds of
    distinct numbers written within a second), is not judged by harvesting detection: they were
    made one by one at the gate. The unit keeps its rate."""
    unit = OfflineUnit(counter)
    born = dt.date(1980, 1, 1)
    items = [
        {
            "check_id": str(uuid.uuid4()),
            "at": (NOW - dt.timedelta(minutes=i)).isoformat(),
            "id_number": id_number(born + dt.timedelta(days=i % 300)),
            "result": "valid",
            "version": 1,
        }
        for i in range(450)
    ]
    r = counter.client.post("/api/v1/offline/checks", json={"items": items}, headers=unit.headers)
    assert r.status_code == 200, r.text
    assert {res["status"] for res in r.json()["results"]} == {"recorded"}
    counter.client.app.state.verifier.log.flush()  # type: ignore[attr-defined]
    units = counter.get("/api/v1/units", as_="supervisor").json()
    listed = units["items"] if isinstance(units, dict) else units
    mine = next(u for u in listed if u["code"] == unit.code)
    assert mine["harvesting"] is None
