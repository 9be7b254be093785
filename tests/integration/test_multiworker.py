"""Verification across worker processes, with real servers.

Every worker holds its own verification index and follows the ledger; these tests start real
uvicorn processes (the app factory, as `idguard serve` runs it) against one database and check
what a unit sees from outside:

- a loss report accepted through one worker is answered `invalid` by another within 2 s;
- with the database unreachable (PostgreSQL only), a worker keeps answering checks from its
  index, says in `X-Index-Age` how stale that index is, and reports itself degraded in health;
- the access log (written by uvicorn, which TestClient never runs) masks id numbers.

The database is a scratch PostgreSQL database when IDGUARD_TEST_POSTGRES_URL is set (created
from that URL, migrated, dropped afterwards), else a SQLite file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import sqlalchemy as sa

from idguard import uow
from idguard.config import Environment, Settings
from idguard.core.grants import Role
from idguard.core.idnumber import mask
from idguard.db import migrate
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.registry.staff import add_office, add_staff
from tests import servers as processes
from tests.factories import OFFICE_A, PASSWORD, SECRET, id_number

POSTGRES_URL = os.environ.get("IDGUARD_TEST_POSTGRES_URL")
CLERK, SUPERVISOR = "mw_clerk", "mw_supervisor"
PROPAGATION_LIMIT = 2.0  # seconds; the follower polls every 20 ms, so this only fails when broken
STALE = 0.5  # seconds of X-Index-Age that show the index is no longer being refreshed


@dataclass
class Database:
    url: str
    name: str | None  # the PostgreSQL database's name; None for SQLite
    admin: sa.Engine | None


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    """A migrated registry with one office, a clerk and a supervisor (added by the services)."""
    if POSTGRES_URL:
        name = f"idguard_mw_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(
            sa.make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        db = Database(
            sa.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False), name, admin
        )
    else:
        db = Database(f"sqlite:///{tmp_path / 'idguard.db'}", None, None)
    try:
        engine = make_engine(Settings(database_url=db.url, env=Environment.TEST, secret_key=SECRET))
        migrate.upgrade(engine)
        now = dt.datetime.now(dt.UTC)
        with make_sessionmaker(engine)() as session:
            add_office(session, now=now, code=OFFICE_A, name="朝阳区建国门派出所", region=OFFICE_A[:6])
            add_staff(session, now=now, username=CLERK, password=PASSWORD, role=Role.CLERK, office=OFFICE_A)
            add_staff(
                session, now=now, username=SUPERVISOR, password=PASSWORD, role=Role.SUPERVISOR, office=None
            )
            uow.commit(session)
        engine.dispose()
        yield db
    finally:
        if db.admin is not None:
            with db.admin.connect() as conn:
                # ALLOW_CONNECTIONS may have been left false by a failed test; FORCE ends our servers'
                # connections if any survived.
                conn.exec_driver_sql(f'ALTER DATABASE "{db.name}" ALLOW_CONNECTIONS true')
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')
            db.admin.dispose()


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    client: httpx.Client

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def servers(database: Database, tmp_path: Path) -> Iterator[Callable[..., list[Server]]]:
    """Start uvicorn processes, each on a socket bound here, against the test database; all are terminated (and
    their clients closed) when the test ends, whatever happened."""
    started: list[Server] = []

    def start(*names: str, **env: str) -> list[Server]:
        batch = []
        for name in names:  # spawn all first: they import and load their indexes in parallel
            log = tmp_path / f"server-{name}.log"
            with processes.listening_socket() as sock:
                port = processes.port_of(sock)
                proc = processes.spawn(
                    processes.uvicorn_argv(sock), sock=sock, database_url=database.url, log=log, env=env
                )
            server = Server(
                name, port, proc, log, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
            )
            started.append(server)
            batch.append(server)
        for server in batch:
            _wait_healthy(server)
        return batch

    try:
        yield start
    finally:
        for server in started:
            server.client.close()
            processes.stop(server.proc)


def _wait_healthy(server: Server, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"server {server.name} exited with {server.proc.returncode}:\n{server.output()}")
        with contextlib.suppress(httpx.TransportError):
            if server.client.get("/api/v1/health").status_code == 200:
                return
        time.sleep(0.05)
    pytest.fail(f"server {server.name} not healthy after {timeout} s:\n{server.output()}")


def _until(what: str, probe: Callable[[], Any], *, timeout: float) -> tuple[Any, float]:
    """Call `probe` every ~1 ms until it returns something truthy; (that value, seconds taken)."""
    started = time.monotonic()
    while True:
        value = probe()
        elapsed = time.monotonic() - started
        if value:
            return value, elapsed
        if elapsed > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.001)


class Counter:
    """Staff and a bank talking to whichever server they are given."""

    def __init__(self, server: Server) -> None:
        self.tokens = {user: _login(server, user) for user in (CLERK, SUPERVISOR)}

    def auth(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def onboard(self, server: Server, code: str) -> str:
        r = server.client.post(
            "/api/v1/units",
            json={
                "code": code,
                "name": "测试银行",
                "sector": "bank",
                "purposes": ["account_opening"],
                "rate_limit": 1000,
            },
            headers=self.auth(SUPERVISOR),
        )
        assert r.status_code == 201, r.text
        return str(r.json()["api_key"])

    def person_with_card(self, server: Server, name: str) -> dict[str, Any]:
        number = id_number(dt.date(1988, 3, 9))
        r = server.client.post(
            "/api/v1/persons",
            json={
                "id_number": number,
                "name": name,
                "sex": "male",
                "ethnicity": "汉",
                "birth_date": "1988-03-09",
                "address": "北京市朝阳区建国路1号",
                "hukou_office": OFFICE_A,
            },
            headers=self.auth(CLERK),
        )
        assert r.status_code == 201, r.text
        r = server.client.post(
            f"/api/v1/persons/{number}/cards",
            json={"kind": "first", "office": OFFICE_A},
            headers=self.auth(CLERK),
        )
        assert r.status_code == 201, r.text
        return {**r.json(), "id_number": number, "name": name}

    def report_lost(self, server: Server, card: dict[str, Any]) -> None:
        r = server.client.post(
            "/api/v1/loss-reports",
            json={
                "card_id": card["card_id"],
                "reason": "lost",
                "office": OFFICE_A,
                "applicant_id_number": card["id_number"],
            },
            headers=self.auth(CLERK),
        )
        assert r.status_code == 201, r.text


def _login(server: Server, username: str) -> str:
    r = server.client.post("/api/v1/auth/token", json={"username": username, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def verify(server: Server, key: str, card: dict[str, Any]) -> httpx.Response:
    return server.client.post(
        "/api/v1/verify",
        json={
            "id_number": card["id_number"],
            "name": card["name"],
            "issued_on": card["issued_on"],
            "expires_on": card["expires_on"],
            "purpose": "account_opening",
            "operator": "teller-9",
        },
        headers={"Authorization": f"Bearer {key}"},
    )


def _answer(server: Server, key: str, card: dict[str, Any]) -> dict[str, Any] | None:
    r = verify(server, key, card)
    # 401 until this worker's key ring has followed the onboarding (one ledger poll).
    return dict(r.json()) if r.status_code == 200 else None


def _result(server: Server, key: str, card: dict[str, Any]) -> str | None:
    answer = _answer(server, key, card)
    return None if answer is None else str(answer["result"])


def test_loss_report_through_one_worker_is_seen_by_another(servers: Callable[..., list[Server]]) -> None:
    a, b = servers("a", "b")
    counter = Counter(a)
    key = counter.onboard(a, "BANK-MW")
    card = counter.person_with_card(a, "王小明")

    # B learns the unit and the card by following the ledger: nothing was sent to it. (Until it
    # has, B answers 401 for the key, then `mismatch` for the card.)
    _until(
        "B answers valid for the new card",
        lambda: _result(b, key, card) == "valid",
        timeout=PROPAGATION_LIMIT,
    )
    # A staff read with the id number in the path, for the access log below.
    assert (
        a.client.get(f"/api/v1/persons/{card['id_number']}", headers=counter.auth(CLERK)).status_code == 200
    )

    counter.report_lost(a, card)  # committed when this returns
    answer, elapsed = _until(
        "B answers invalid after the report through A",
        lambda: (x := _answer(b, key, card)) is not None and x["result"] == "invalid" and x,
        timeout=PROPAGATION_LIMIT,
    )
    assert answer["reason"] == "reported_lost", answer
    assert elapsed < PROPAGATION_LIMIT, f"seen by B after {elapsed * 1000:.0f} ms"
    print(f"loss report through A answered invalid by B after {elapsed * 1000:.1f} ms")

    # uvicorn's access log (the servers' own output) masks every id number in a path.
    for server in (a, b):
        server.client.close()
        processes.stop(server.proc)  # flushes and closes its output
    logs = {s.name: s.output() for s in (a, b)}
    assert f"/api/v1/persons/{mask(card['id_number'])}" in logs["a"], logs["a"]
    for name, text in logs.items():
        assert card["id_number"] not in text, f"server {name} logged a full id number:\n{text}"
        assert card["id_number"][:14] not in text, f"server {name} logged an id number's birth date:\n{text}"
        assert card["name"] not in text, f"server {name} logged a name:\n{text}"


@contextlib.contextmanager
def unreachable(database: Database) -> Iterator[None]:
    """Make the registry database unusable for the servers, and restore it afterwards:
    PostgreSQL refuses new connections and ends the existing ones (as a network partition or a
    stopped server looks to the pool). Only a database server can become unreachable (see
    `test_verification_answers_from_the_index_while_the_database_is_unreachable`)."""
    assert database.admin is not None, "only a PostgreSQL database can be made unreachable"
    with database.admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{database.name}" ALLOW_CONNECTIONS false')
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": database.name},
        )
    try:
        yield
    finally:
        with database.admin.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{database.name}" ALLOW_CONNECTIONS true')


def _age(r: httpx.Response) -> float:
    return float(r.headers["X-Index-Age"])


def _stale_answer(server: Server, key: str, card: dict[str, Any]) -> tuple[httpx.Response] | None:
    r = verify(server, key, card)
    assert r.status_code == 200, r.text
    return (r,) if _age(r) > STALE else None


def test_verification_answers_from_the_index_while_the_database_is_unreachable(
    database: Database, servers: Callable[..., list[Server]]
) -> None:
    if database.admin is None:
        # Nothing can cut a SQLite worker off its database: the file stays open in its pool, and
        # under WAL the index follower's deferred reads (db.engine.read_only) pass any lock.
        pytest.skip("a database server becoming unreachable: needs PostgreSQL (IDGUARD_TEST_POSTGRES_URL)")
    (b,) = servers("b")
    counter = Counter(b)
    key = counter.onboard(b, "BANK-DOWN")
    good = counter.person_with_card(b, "李晓华")
    lost = counter.person_with_card(b, "赵建国")
    counter.report_lost(b, lost)
    _until(
        "the report is in B's index",
        lambda: (x := _answer(b, key, lost)) and x["result"] == "invalid",
        timeout=2,
    )
    assert _age(verify(b, key, good)) < STALE

    with unreachable(database):
        # The index stops being refreshed: the age grows past STALE, and every answer says so.
        # Checks keep being answered (200) all along; we wait only for the age to pass STALE.
        (stale,), waited = _until("X-Index-Age grows", lambda: _stale_answer(b, key, good), timeout=10)
        assert stale.json()["result"] == "valid"
        r = verify(b, key, lost)
        assert r.status_code == 200, r.text
        assert (r.json()["result"], r.json()["reason"]) == ("invalid", "reported_lost")
        assert _age(r) > STALE
        health = b.client.get("/api/v1/health")
        assert health.status_code == 200, health.text
        assert health.json()["status"] == "degraded", health.json()
        assert health.json()["extra"]["index"]["age_seconds"] > STALE
        print(
            f"index {_age(r):.2f} s old after {waited:.2f} s unreachable; health {health.json()['database']}"
        )

    # Back: the follower catches up on its next poll and health recovers.
    _until("X-Index-Age recovers", lambda: _age(verify(b, key, good)) < STALE, timeout=10)
    _until("health ok again", lambda: b.client.get("/api/v1/health").json()["status"] == "ok", timeout=10)
