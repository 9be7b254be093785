"""Personal data sealed at rest (issue 16): a stolen copy of the database — the raw SQLite files,
a PostgreSQL dump — shows no name, address or finder's contact, and none of the free text staff,
units and citizens wrote (blacklist notes and reasons, protection reasons, incidents' closing
notes, cases' findings, statements and decisions); the key ring rotates under load with nothing
lost; a wrong key is a clear error, never garbage."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from idguard import uow
from idguard.accountability.models import Case, CaseEvent
from idguard.app import create_app
from idguard.config import Environment, Settings
from idguard.core.clock import FixedClock
from idguard.core.sealing import KeyRingError
from idguard.db import migrate
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.demo.load import load_demo
from idguard.registry import keys_cli, sealed
from idguard.registry.models import Card, FoundCard, LossReport, Office, Person
from idguard.verification.models import Unit as UnitRow
from idguard.verification.models import WebhookMessage
from idguard.watchlist import incidents
from idguard.watchlist.models import BlacklistEntry, BlacklistEvent, Incident, ProtectionEvent
from tests.factories import NOW, OFFICE_A, OFFICE_B, SECRET, auth, id_number
from tests.functional.accountability.conftest import Unit
from tests.functional.conftest import Counter

K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 32).decode()


def keyed(settings: Settings, data_keys: str) -> Settings:
    return Settings(
        database_url=settings.database_url, env=Environment.TEST, secret_key=SECRET, data_keys=data_keys
    )


def clear_values(engine: sa.Engine) -> set[str]:
    """Every personal value the registry holds, opened through the models (the key ring)."""
    with Session(engine) as session:
        values: set[str] = set()
        for person in session.scalars(sa.select(Person)):
            values |= {person.name, person.address}
        for card in session.scalars(sa.select(Card)):
            values |= {card.name, card.address}
        for found in session.scalars(sa.select(FoundCard)):
            values.add(found.finder_name)
            if found.finder_phone:
                values.add(found.finder_phone)
        values |= {v for v in free_text(session) if v is not None}
    return values


def free_text(session: Session) -> list[str | None]:
    """Every sealed free-text value (registry/sealed.py, migration 0014), opened."""
    return [
        *(e.note for e in session.scalars(sa.select(BlacklistEntry))),
        *(e.reason for e in session.scalars(sa.select(BlacklistEvent))),
        *(e.reason for e in session.scalars(sa.select(ProtectionEvent))),
        *(i.note for i in session.scalars(sa.select(Incident))),
        *(c.finding for c in session.scalars(sa.select(Case))),
        *(e.text for e in session.scalars(sa.select(CaseEvent))),
        *(u.status_reason for u in session.scalars(sa.select(UnitRow))),
        *(m.body for m in session.scalars(sa.select(WebhookMessage))),
    ]


def public_text(engine: sa.Engine) -> list[str]:
    """Clear text that is not personal (office names): a personal value found only inside one
    of these is not a leak (a short name can be part of a place name)."""
    with engine.connect() as conn:
        return list(conn.scalars(sa.select(Office.name)))


def stolen_copy(engine: sa.Engine, settings: Settings, tmp_path: Path) -> bytes:
    """What a thief takes: the SQLite file with its WAL as they lie on disk, or a pg_dump."""
    if engine.dialect.name == "sqlite":
        path = Path(sa.make_url(settings.database_url).database or "")
        return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")) if p.is_file())
    url = sa.make_url(settings.database_url)
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        pytest.fail("pg_dump is not installed: the PostgreSQL dump cannot be scanned")
    dump = subprocess.run(  # noqa: S603 - a fixed command on the test's own database
        [
            pg_dump,
            "--no-owner",
            "-h",
            url.host or "127.0.0.1",
            "-p",
            str(url.port or 5432),
            "-U",
            url.username or "postgres",
            url.database or "",
        ],
        capture_output=True,
        check=True,
        env={**os.environ, "PGPASSWORD": url.password or ""},
    )
    return dump.stdout


def scenario(client: TestClient) -> None:
    """A day at the counters: registrations, cards, a loss report, found cards handed in and
    returned, a citizen's lookup."""
    counter = Counter(client)
    for i, (name, address) in enumerate(
        [("欧阳明镜", "北京市朝阳区光华路甲8号院3单元1701"), ("司马青岚", "上海市黄浦区南京东路299号弄12号")]
    ):
        born = dt.date(1980 + i, 3, 14)
        number = id_number(born)
        body = {
            "id_number": number,
            "name": name,
            "sex": "male",
            "ethnicity": "汉",
            "birth_date": born.isoformat(),
            "address": address,
            "hukou_office": OFFICE_A,
        }
        assert counter.post("/api/v1/persons", body).status_code == 201
        card = counter.card(number)
        assert counter.report(card).status_code == 201
        found = counter.post(
            "/api/v1/found-cards",
            {
                "id_number": number,
                "issued_on": card["issued_on"],
                "office": OFFICE_B,
                "finder": {"name": f"拾得人{name}", "phone": f"1390000{i:04d}"},
            },
            as_="clerk_b",
        )
        assert found.status_code == 201, found.text
        lookup = client.get("/api/v1/found-cards/lookup", params={"id_number": number, "name": name})
        assert lookup.json()["held"] is True
        wrong = client.get("/api/v1/found-cards/lookup", params={"id_number": number, "name": name + "x"})
        assert wrong.json()["held"] is False
        back = counter.post(
            f"/api/v1/found-cards/{found.json()['found_no']}/return",
            {"claimant_id_number": number, "claimant_name": name},
            as_="clerk_b",
        )
        assert back.status_code == 200, back.text
        person = counter.get(f"/api/v1/persons/{number}", as_="auditor")
        assert (person.json()["name"], person.json()["address"]) == (name, address)  # as before


# What staff, a unit and a holder write in free text, naming people (scenario_free_text).
FREE_TEXT = {
    "listing note": "在工商银行望京支行柜台冒用欧阳明镜的身份证开户",
    "lifting reason": "经复核系误列：当事人司马青岚已到所说明情况",
    "protection reason": "持证人反映其身份证曾被前同事诸葛小虎冒用",
    "closing note": "已电话联系持证人欧阳明镜本人核实，确认冒用",
    "finding": "望京支行柜员上官婉清五月未经核查为十二人开户",
    "statement": "柜员上官婉清已停岗培训，读卡器已更换",
    "decision": "警告：请望京支行负责人慕容复于十日内提交整改报告",
    "suspension": "暂停：望京支行负责人慕容复拒不整改",
    "reinstatement": "恢复：慕容复已提交整改报告并经复查",
    "webhook notice": "通知望京支行：柜员上官婉清的开户业务须复查",
}


def scenario_free_text(client: TestClient) -> None:
    """The watchlist and accountability at work: a listing with a note, lifted with a reason; a
    protection with a reason; an incident closed with a note; a case with a finding, the unit's
    statement and a decision. Each text is shown again where staff (or the unit) read it."""
    counter = Counter(client)
    first = counter.person(dt.date(1979, 1, 2), name="令狐冲")
    second = counter.person(dt.date(1979, 2, 3), name="任盈盈")
    counter.card(second)
    r = counter.post(
        "/api/v1/blacklist",
        {
            "id_number": first,
            "reason": "impersonation",
            "case_no": "2026-0042",
            "note": FREE_TEXT["listing note"],
        },
        as_="supervisor",
    )
    assert r.status_code == 201, r.text
    entry_no = r.json()["entry_no"]
    r = counter.post(
        f"/api/v1/blacklist/{entry_no}/lift", {"reason": FREE_TEXT["lifting reason"]}, as_="supervisor"
    )
    assert r.status_code == 200, r.text
    r = client.put(
        f"/api/v1/persons/{second}/protection",
        json={"person_check_required": True, "reason": FREE_TEXT["protection reason"]},
        headers=client.headers | auth("clerk_a"),
    )
    assert r.status_code in (200, 201), r.text
    app: Any = client.app
    with uow.transaction(app.state.sessionmaker) as session:
        incident_no = incidents.open_incident(
            session, kind="disputed_by_holder", id_number=second, unit_code=None, check_id=None, at=NOW
        )
    r = counter.post(
        f"/api/v1/incidents/{incident_no}/close",
        {"outcome": "confirmed", "note": FREE_TEXT["closing note"]},
        as_="supervisor",
    )
    assert r.status_code == 200, r.text
    bank = Unit(counter, "BANK-SEAL")
    r = counter.post(
        f"/api/v1/units/{bank.code}/cases",
        {"month": "2026-05", "finding": FREE_TEXT["finding"]},
        as_="supervisor",
    )
    assert r.status_code == 201, r.text
    case_no = r.json()["case_no"]
    r = bank.post(f"/api/v1/cases/{case_no}/responses", {"statement": FREE_TEXT["statement"]})
    assert r.status_code == 201, r.text
    r = counter.post(
        f"/api/v1/cases/{case_no}/decision",
        {"decision": "warning", "note": FREE_TEXT["decision"]},
        as_="supervisor",
    )
    assert r.status_code == 200, r.text
    # A second case suspends the unit, then the supervisor reinstates it with a note (kept as the
    # unit's status reason); a case notice waits in a webhook message for delivery.
    r = counter.post(
        f"/api/v1/units/{bank.code}/cases",
        {"month": "2026-06", "finding": FREE_TEXT["finding"]},
        as_="supervisor",
    )
    assert r.status_code == 201, r.text
    second_case = r.json()["case_no"]
    r = bank.post(f"/api/v1/cases/{second_case}/responses", {"statement": FREE_TEXT["statement"]})
    assert r.status_code == 201, r.text
    r = counter.post(
        f"/api/v1/cases/{second_case}/decision",
        {"decision": "suspension", "note": FREE_TEXT["suspension"]},
        as_="supervisor",
    )
    assert r.status_code == 200, r.text
    r = counter.post(
        f"/api/v1/units/{bank.code}/reinstate", {"note": FREE_TEXT["reinstatement"]}, as_="supervisor"
    )
    assert r.status_code == 200, r.text
    with uow.transaction(app.state.sessionmaker) as session:
        message = WebhookMessage(
            id=uuid.uuid4(),
            unit_code=bank.code,
            kind="cases",
            last_cursor=1,
            body=json.dumps(
                {"unit": bank.code, "cases": [{"text": FREE_TEXT["webhook notice"]}]}, ensure_ascii=False
            ),
            created_at=NOW,
            delivered_at=None,
        )
        session.add(message)
    with uow.transaction(app.state.sessionmaker) as session:
        stored = session.get(WebhookMessage, message.id)
        assert stored is not None
        assert FREE_TEXT["webhook notice"] in stored.body
        unit = session.get(UnitRow, bank.code)
        assert unit is not None
        assert unit.status_reason == FREE_TEXT["reinstatement"]
    # Read back where they are read: opened in memory, as written.
    [entry] = [
        e
        for e in counter.get("/api/v1/blacklist", as_="supervisor").json()["items"]
        if e["entry_no"] == entry_no
    ]
    assert entry["note"] == FREE_TEXT["listing note"]
    assert [h["reason"] for h in entry["history"]][-1] == FREE_TEXT["lifting reason"]
    [incident] = [
        i
        for i in counter.get("/api/v1/incidents", as_="supervisor").json()["items"]
        if i["incident_no"] == incident_no
    ]
    assert incident["note"] == FREE_TEXT["closing note"]
    [case] = [c for c in bank.get("/api/v1/cases").json()["items"] if c["case_no"] == case_no]
    assert case["finding"] == FREE_TEXT["finding"]
    texts = [h["text"] for h in case["history"]]
    assert texts[0] == FREE_TEXT["finding"]
    assert texts[1] == FREE_TEXT["statement"]
    assert texts[2].startswith(FREE_TEXT["decision"])


def test_a_stolen_copy_shows_no_personal_data(settings: Settings, tmp_path: Path) -> None:
    engine = make_engine(settings)
    try:
        load_demo(engine, citizens=120, seed=7, now=NOW)
        app = create_app(settings, clock=FixedClock(NOW))
        with TestClient(app) as client:
            scenario(client)
            scenario_free_text(client)
        app.state.engine.dispose()
        secrets = clear_values(engine)
        public = public_text(engine)
    finally:
        engine.dispose()
    assert {
        "欧阳明镜",
        "上海市黄浦区南京东路299号弄12号",
        "拾得人司马青岚",
        "13900000001",
    } <= secrets  # the scenario's, opened
    # The free text as written (a decision is stored with its outcome, a webhook body as JSON).
    assert all(any(text in value for value in secrets) for text in FREE_TEXT.values())
    secrets |= set(FREE_TEXT.values())
    assert len(secrets) > 200  # and the demo's
    raw = stolen_copy(engine, settings, tmp_path)
    # The scan can see clear text: the office names (not personal) are there as written.
    assert all(name.encode() in raw for name in public)
    leaked = sorted(
        value for value in secrets if value.encode() in raw and not any(value in text for text in public)
    )
    assert leaked == []


NOTHING = dict.fromkeys(sealed.SEALED_TABLES, 0)  # every sealed table, nothing re-sealed


def test_rekey_under_load_loses_nothing(settings: Settings) -> None:
    """Rows sealed under k1; the service moves to k2 (k1 still listed) and takes loss reports
    while `idguard keys rekey` runs in small batches. Afterwards every row is under k2 and opens
    with k2 alone, each value as written, and every loss report is there."""
    old, new = keyed(settings, f"k1:{K1}"), keyed(settings, f"k2:{K2},k1:{K1}")
    before = create_app(old, clock=FixedClock(NOW))
    cards: list[dict[str, Any]] = []
    with TestClient(before) as client:
        counter = Counter(client)
        for i in range(24):
            number = counter.person(dt.date(1970, 1, 1) + dt.timedelta(days=400 * i), name=f"轮换{i}号")
            cards.append(counter.card(number))
    before.state.engine.dispose()

    after = create_app(new, clock=FixedClock(NOW))
    engine = make_engine(new)
    statuses: list[int] = []
    try:
        with TestClient(after) as client:
            counter = Counter(client)

            def report_all() -> None:
                for card in cards[::2]:
                    statuses.append(counter.report(card).status_code)

            writer = threading.Thread(target=report_all)
            writer.start()
            done = keys_cli.rekey_all(engine, batch=3)
            writer.join(timeout=120)
            registered = counter.person(dt.date(2001, 2, 3), name="新钥匙")  # written under k2
        assert statuses == [201] * 12
        assert done == {**NOTHING, "persons": 24, "cards": 24}
        assert keys_cli.rows_by_key(engine) == {
            **{table: {} for table in NOTHING},
            "persons": {"k2": 25},
            "cards": {"k2": 24},
        }
        assert keys_cli.rekey_all(engine, batch=3) == NOTHING
    finally:
        after.state.engine.dispose()
        engine.dispose()
    only_new = make_engine(keyed(settings, f"k2:{K2}"))
    try:
        with Session(only_new) as session:
            names = {p.id_number: p.name for p in session.scalars(sa.select(Person))}
            card_names = sorted(c.name for c in session.scalars(sa.select(Card)))
            reports = session.scalar(sa.select(sa.func.count()).select_from(LossReport))
    finally:
        only_new.dispose()
    assert names[registered] == "新钥匙"
    assert sorted(n for k, n in names.items() if k != registered) == sorted(f"轮换{i}号" for i in range(24))
    assert card_names == sorted(f"轮换{i}号" for i in range(24))
    assert reports == 12


def test_a_wrong_key_is_a_clear_error_never_garbage(settings: Settings) -> None:
    app = create_app(keyed(settings, f"k1:{K1}"), clock=FixedClock(NOW))
    with TestClient(app) as client:
        number = Counter(client).person(name="钥匙错")
    app.state.engine.dispose()
    for keys, says in [
        (f"k1:{K2}", "failed authentication"),  # another key under the same id
        (f"k2:{K2}", "'k1' cannot be opened: that key is not in IDGUARD_DATA_KEYS"),
    ]:
        engine = make_engine(keyed(settings, keys))
        try:
            with Session(engine) as session:
                person = session.scalars(sa.select(Person).where(Person.id_number == number)).one()
                with pytest.raises(KeyRingError, match=says) as caught:
                    _ = person.name
                assert "钥匙错" not in str(caught.value)
        finally:
            engine.dispose()


def test_a_value_moved_to_another_row_does_not_open(settings: Settings) -> None:
    """The associated data binds a value to its row: a thief with database access who copies one
    person's sealed name onto another row gets an error, not that name under another number."""
    app = create_app(settings, clock=FixedClock(NOW))
    with TestClient(app) as client:
        counter = Counter(client)
        first = counter.person(dt.date(1990, 1, 1), name="甲某")
        second = counter.person(dt.date(1991, 1, 1), name="乙某")
    app.state.engine.dispose()
    engine = make_engine(settings)
    try:
        with uow.connection(engine) as conn:  # the attacker's own connection, outside the service
            sealed = conn.scalar(sa.select(Person.name_sealed).where(Person.id_number == first))
            conn.execute(sa.update(Person).where(Person.id_number == second).values(name_sealed=sealed))
        with Session(engine) as session:
            person = session.scalars(sa.select(Person).where(Person.id_number == second)).one()
            with pytest.raises(KeyRingError, match="moved from another row"):
                _ = person.name
    finally:
        engine.dispose()


def test_migration_seals_existing_clear_rows_and_downgrade_opens_them(settings: Settings) -> None:
    engine = make_engine(settings)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    try:
        migrate.downgrade(engine, "0011")
        number = id_number(dt.date(1975, 6, 1))
        with uow.connection(engine) as conn:
            meta = sa.MetaData()
            persons = sa.Table(
                "persons", meta, sa.Column("id", sa.Uuid, primary_key=True), autoload_with=conn
            )
            person_id = uuid.uuid4()
            conn.execute(
                sa.insert(persons),
                {
                    "id": person_id,
                    "id_number": number,
                    "name": "迁移前",
                    "sex": "male",
                    "ethnicity": "汉",
                    "birth_date": dt.date(1975, 6, 1),
                    "address": "旧地址一号",
                    "hukou_office": OFFICE_A,
                    "created_at": now,
                },
            )
        migrate.upgrade(engine)
        with engine.connect() as conn:
            columns = {c["name"] for c in sa.inspect(conn).get_columns("persons")}
        assert {"name", "address"}.isdisjoint(columns)
        with Session(engine) as session:
            person = session.get(Person, person_id)
            assert person is not None
            assert (person.name, person.address) == ("迁移前", "旧地址一号")
        migrate.downgrade(engine, "0011")
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT name, address FROM persons")).one()
        assert tuple(row) == ("迁移前", "旧地址一号")
        migrate.upgrade(engine)
    finally:
        engine.dispose()


def test_production_requires_the_data_keys() -> None:
    with pytest.raises(ValueError, match="IDGUARD_DATA_KEYS must be set in production"):
        Settings(env=Environment.PRODUCTION, secret_key=SECRET)


def test_keys_cli_reports_rows_under_a_key_it_does_not_hold(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from idguard.cli.main import app as cli

    app = create_app(keyed(settings, f"k1:{K1}"), clock=FixedClock(NOW))
    with TestClient(app) as client:
        Counter(client).person(name="状态")
    app.state.engine.dispose()
    monkeypatch.setenv("IDGUARD_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("IDGUARD_SECRET_KEY", SECRET)
    monkeypatch.setenv("IDGUARD_ENV", "test")
    monkeypatch.setenv("IDGUARD_DATA_KEYS", f"k2:{K2}")
    result = CliRunner().invoke(cli, ["keys", "rekey", "--batch", "2"])
    assert result.exit_code == 1
    assert "'k1' cannot be opened" in result.output
    monkeypatch.setenv("IDGUARD_DATA_KEYS", f"k2:{K2},k1:{K1}")
    result = CliRunner().invoke(cli, ["keys", "rekey", "--batch", "2"])
    assert result.exit_code == 0, result.output
    assert "persons: 1 rows re-sealed under key k2" in result.output
    result = CliRunner().invoke(cli, ["keys", "status"])
    assert result.exit_code == 0, result.output
    assert "persons: k2: 1" in result.output


def test_a_field_written_later_is_sealed_at_flush_and_its_row_under_the_new_key(settings: Settings) -> None:
    """Writing one sealed field of a row sealed under an older key re-seals the whole row under
    the active key (one key id per row), so the old key can go once `keys status` says so."""
    app = create_app(keyed(settings, f"k1:{K1}"), clock=FixedClock(NOW))
    with TestClient(app) as client:
        number = Counter(client).person(name="改址人")
    app.state.engine.dispose()
    engine = make_engine(keyed(settings, f"k2:{K2},k1:{K1}"))
    try:
        with uow.transaction(make_sessionmaker(engine)) as session:
            person = session.scalars(sa.select(Person).where(Person.id_number == number)).one()
            person.address = "天津市和平区新址9号"
        with engine.connect() as conn:
            row = conn.execute(
                sa.select(Person.seal_key, Person.address_sealed).where(Person.id_number == number)
            ).one()
        assert row.seal_key == "k2"
        assert "天津".encode() not in row.address_sealed
    finally:
        engine.dispose()
    only_new = make_engine(keyed(settings, f"k2:{K2}"))
    try:
        with Session(only_new) as session:
            person = session.scalars(sa.select(Person).where(Person.id_number == number)).one()
        assert (person.name, person.address) == ("改址人", "天津市和平区新址9号")  # read after close
    finally:
        only_new.dispose()


def test_rekey_covers_the_sealed_free_text(settings: Settings) -> None:
    """Free text written under k1 is re-sealed by `idguard keys rekey` under k2 (rows with nothing
    sealed, such as an open incident, are left alone) and then opens with k2 alone, as written."""
    before = create_app(keyed(settings, f"k1:{K1}"), clock=FixedClock(NOW))
    with TestClient(before) as client:
        scenario_free_text(client)
    before.state.engine.dispose()
    engine = make_engine(keyed(settings, f"k2:{K2},k1:{K1}"))
    try:
        before_counts = keys_cli.rows_by_key(engine)
        done = keys_cli.rekey_all(engine, batch=2)
        after_counts = keys_cli.rows_by_key(engine)
    finally:
        engine.dispose()
    written = {
        "blacklist_entries": 1,
        "blacklist_events": 2,
        "protection_events": 1,
        "incidents": 1,
        "cases": 2,
        "units": 1,
        "webhook_messages": 1,
    }
    for table, rows in written.items():
        assert before_counts[table] == {"k1": rows}, table
        assert done[table] == rows, table
        assert after_counts[table] == {"k2": rows}, table
    # finding, statement, decision; finding, statement, suspension, reinstatement
    assert before_counts["case_events"] == {"k1": 7}
    assert after_counts["case_events"] == {"k2": 7}
    only_new = make_engine(keyed(settings, f"k2:{K2}"))
    try:
        with Session(only_new) as session:
            opened = {v for v in free_text(session) if v is not None}
    finally:
        only_new.dispose()
    decisions = {FREE_TEXT["decision"], FREE_TEXT["suspension"], FREE_TEXT["webhook notice"]}
    assert set(FREE_TEXT.values()) - decisions <= opened
    for text in decisions:
        assert any(text in v for v in opened), text


def test_a_free_text_moved_to_another_row_does_not_open(settings: Settings) -> None:
    """A case event's text is bound to its own id (given by the database at the INSERT): copied
    onto the unit's other event it fails to open, instead of showing another statement."""
    app = create_app(settings, clock=FixedClock(NOW))
    with TestClient(app) as client:
        scenario_free_text(client)
    app.state.engine.dispose()
    engine = make_engine(settings)
    try:
        with uow.connection(engine) as conn:
            first, second = conn.execute(
                sa.select(CaseEvent.id, CaseEvent.text_sealed).order_by(CaseEvent.id)
            ).all()[:2]
            conn.execute(
                sa.update(CaseEvent).where(CaseEvent.id == second.id).values(text_sealed=first.text_sealed)
            )
        with Session(engine) as session:
            event = session.get(CaseEvent, second.id)
            assert event is not None
            with pytest.raises(KeyRingError, match="moved from another row"):
                _ = event.text
    finally:
        engine.dispose()


def test_migration_0014_seals_existing_free_text_and_downgrade_opens_it(settings: Settings) -> None:
    """Rows written while the free text was clear (0013) are sealed by the upgrade, open through
    the models as written, and come back clear on the downgrade."""
    engine = make_engine(settings)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    texts = {
        "note": "旧备注：冒用人皇甫铁牛",
        "reason": "旧理由：经本人申请",
        "finding": "旧结论：柜员东方不败未核查",
        "text": "旧陈述：东方不败已离职",
    }
    try:
        app = create_app(settings, clock=FixedClock(NOW))
        with TestClient(app) as client:
            number = Counter(client).person(dt.date(1966, 6, 6), name="迁移人")
            Unit(Counter(client), "BANK-MIG")
        app.state.engine.dispose()
        migrate.downgrade(engine, "0013")
        with uow.connection(engine) as conn:
            meta = sa.MetaData()
            tables = {
                name: sa.Table(name, meta, autoload_with=conn)
                for name in (
                    "persons",
                    "staff",
                    "blacklist_entries",
                    "blacklist_events",
                    "protection_events",
                    "incidents",
                    "cases",
                    "case_events",
                )
            }
            person_id = conn.scalar(
                sa.select(tables["persons"].c.id).where(tables["persons"].c.id_number == number)
            )
            staff_id = conn.scalar(sa.select(tables["staff"].c.id).limit(1))
            conn.execute(
                sa.insert(tables["blacklist_entries"]),
                {
                    "entry_no": "BL-MIG-1",
                    "person_id": person_id,
                    "reason": "impersonation",
                    "case_no": "2026-0001",
                    "note": texts["note"],
                    "listed_on": now.date(),
                    "until": None,
                    "status": "lifted",
                    "listed_by": staff_id,
                    "listed_at": now,
                    "ended_at": now,
                },
            )
            conn.execute(
                sa.insert(tables["blacklist_events"]),
                [
                    {
                        "entry_no": "BL-MIG-1",
                        "action": "listed",
                        "at": now,
                        "staff_id": staff_id,
                        "reason": None,
                    },
                    {
                        "entry_no": "BL-MIG-1",
                        "action": "lifted",
                        "at": now,
                        "staff_id": staff_id,
                        "reason": texts["reason"],
                    },
                ],
            )
            conn.execute(
                sa.insert(tables["protection_events"]),
                {
                    "person_id": person_id,
                    "required": True,
                    "reason": texts["reason"],
                    "by": "holder",
                    "at": now,
                },
            )
            conn.execute(
                sa.insert(tables["incidents"]),
                [
                    {
                        "incident_no": f"INC-MIG-{i}",
                        "kind": "disputed_by_holder",
                        "status": "confirmed" if i else "open",
                        "dedup_key": f"mig-{i}",
                        "person_id": person_id,
                        "count": 1,
                        "opened_at": now,
                        "last_at": now,
                        "note": texts["note"] if i else None,
                    }
                    for i in range(2)
                ],
            )
            conn.execute(
                sa.insert(tables["cases"]),
                {
                    "case_no": "AC-MIG-1",
                    "unit_code": "BANK-MIG",
                    "month": "2026-05",
                    "finding": texts["finding"],
                    "status": "open",
                    "opened_at": now,
                    "opened_by": staff_id,
                },
            )
            conn.execute(
                sa.insert(tables["case_events"]),
                {
                    "case_no": "AC-MIG-1",
                    "unit_code": "BANK-MIG",
                    "kind": "response",
                    "at": now,
                    "text": texts["text"],
                },
            )
        migrate.upgrade(engine)
        with engine.connect() as conn:
            for table, column in [
                ("blacklist_entries", "note"),
                ("blacklist_events", "reason"),
                ("protection_events", "reason"),
                ("incidents", "note"),
                ("cases", "finding"),
                ("case_events", "text"),
            ]:
                columns = {c["name"] for c in sa.inspect(conn).get_columns(table)}
                assert column not in columns, table
                assert f"{column}_sealed" in columns, table
            open_incident_key = conn.scalar(
                sa.text("SELECT seal_key FROM incidents WHERE incident_no = 'INC-MIG-0'")
            )
        assert open_incident_key is None  # nothing to seal: left for the application
        with Session(engine) as session:
            assert [e.note for e in session.scalars(sa.select(BlacklistEntry))] == [texts["note"]]
            assert [
                e.reason for e in session.scalars(sa.select(BlacklistEvent).order_by(BlacklistEvent.id))
            ] == [
                None,
                texts["reason"],
            ]
            assert [e.reason for e in session.scalars(sa.select(ProtectionEvent))] == [texts["reason"]]
            assert {i.incident_no: i.note for i in session.scalars(sa.select(Incident))} == {
                "INC-MIG-0": None,
                "INC-MIG-1": texts["note"],
            }
            assert [c.finding for c in session.scalars(sa.select(Case))] == [texts["finding"]]
            assert [e.text for e in session.scalars(sa.select(CaseEvent))] == [texts["text"]]
        migrate.downgrade(engine, "0013")
        with engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT note FROM blacklist_entries")) == texts["note"]
            assert (
                conn.scalar(sa.text("SELECT reason FROM blacklist_events WHERE action = 'lifted'"))
                == texts["reason"]
            )
            assert conn.scalar(sa.text("SELECT reason FROM protection_events")) == texts["reason"]
            assert (
                conn.scalar(sa.text("SELECT note FROM incidents WHERE incident_no = 'INC-MIG-1'"))
                == texts["note"]
            )
            assert conn.scalar(sa.text("SELECT finding FROM cases")) == texts["finding"]
            assert conn.scalar(sa.text("SELECT text FROM case_events")) == texts["text"]
        migrate.upgrade(engine)
    finally:
        engine.dispose()
