"""Personal data sealed at rest (issue 16): a stolen copy of the database — the raw SQLite files,
a PostgreSQL dump — shows no name, address or finder's contact; the key ring rotates under load
with nothing lost; a wrong key is a clear error, never garbage."""

from __future__ import annotations

import base64
import datetime as dt
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
from idguard.app import create_app
from idguard.config import Environment, Settings
from idguard.core.clock import FixedClock
from idguard.core.sealing import KeyRingError
from idguard.db import migrate
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.demo.load import load_demo
from idguard.registry import keys_cli
from idguard.registry.models import Card, FoundCard, LossReport, Office, Person
from tests.factories import NOW, OFFICE_A, OFFICE_B, SECRET, id_number
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
    return values


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


def test_a_stolen_copy_shows_no_personal_data(settings: Settings, tmp_path: Path) -> None:
    engine = make_engine(settings)
    try:
        load_demo(engine, citizens=120, seed=7, now=NOW)
        app = create_app(settings, clock=FixedClock(NOW))
        with TestClient(app) as client:
            scenario(client)
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
    assert len(secrets) > 200  # and the demo's
    raw = stolen_copy(engine, settings, tmp_path)
    # The scan can see clear text: the office names (not personal) are there as written.
    assert all(name.encode() in raw for name in public)
    leaked = sorted(
        value for value in secrets if value.encode() in raw and not any(value in text for text in public)
    )
    assert leaked == []


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
        assert done == {"persons": 24, "cards": 24, "found_cards": 0}
        assert keys_cli.rows_by_key(engine) == {"persons": {"k2": 25}, "cards": {"k2": 24}, "found_cards": {}}
        assert keys_cli.rekey_all(engine, batch=3) == {"persons": 0, "cards": 0, "found_cards": 0}
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
