"""No answered check is lost (issue 9, item 2): real servers (uvicorn running the app factory, as
`idguard serve` does) on SQLite and PostgreSQL.

- Killed with SIGKILL under load (two worker processes, each with its own journal), then started
  again: every check id a unit was answered is in the `checks` table, and the watch it started
  exists. Some were not in the table when the server died: the journal brought them back.
- Stopped (SIGTERM) while the database is unreachable: the stop completes without the error the
  log used to end with, says the checks are kept in the journal, and the next start writes them.

A unit "was answered" when the response reached the client: that is the acknowledgement.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import sqlalchemy as sa

from idguard.config import Environment, Settings
from idguard.db.engine import make_engine
from idguard.verification.models import Check, Watch
from tests import servers as processes
from tests.factories import OFFICE_A, SECRET, auth, id_number

POSTGRES_URL = os.environ.get("IDGUARD_TEST_POSTGRES_URL")
READY_SECONDS = 90.0  # a guard against a server that never starts, not a performance bound
STOPPED = (0, -signal.SIGTERM)  # uvicorn ends a graceful stop by re-raising the signal


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    workers: int
    clients: list[httpx.Client] = field(default_factory=list)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def client(self) -> httpx.Client:
        client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        self.clients.append(client)
        return client

    def close_clients(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.close_clients()
        if server.proc.poll() is None:
            server.signal(signal.SIGKILL)
            server.proc.wait()


def start(
    servers: list[Server], url: str, journal: Path, log: Path, *, workers: int = 1, **env: str
) -> Server:
    before = _startups(log)
    with processes.listening_socket() as sock:
        port = processes.port_of(sock)
        proc = processes.spawn(
            processes.uvicorn_argv(sock, workers=workers),
            sock=sock,
            database_url=url,
            log=log,
            env={"IDGUARD_WORKERS": str(workers), "IDGUARD_CHECKLOG_DIR": str(journal), **env},
        )
    server = Server(proc, port, log, workers)
    servers.append(server)
    # Ready when every worker has started (each replays the journals it can claim first).
    deadline = time.monotonic() + READY_SECONDS
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{server.output()}")
        text = server.output()
        if text.count("Application startup complete") >= before + workers:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"server not ready after {READY_SECONDS} s:\n{text}")
        time.sleep(0.05)
    return server


def _startups(log: Path) -> int:
    return log.read_text(errors="replace").count("Application startup complete") if log.exists() else 0


@dataclass
class Unit:
    key: str
    card: dict[str, Any]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def setup_unit(server: Server) -> Unit:
    """A person with a valid card, and a bank unit, through the staff API."""
    client = server.client()
    number = id_number(dt.date(1985, 7, 1))
    r = client.post(
        "/api/v1/persons",
        json={
            "id_number": number,
            "name": "钱学文",
            "sex": "male",
            "ethnicity": "汉",
            "birth_date": "1985-07-01",
            "address": "北京市朝阳区建国路1号",
            "hukou_office": OFFICE_A,
        },
        headers=auth("clerk_a"),
    )
    assert r.status_code == 201, r.text
    r = client.post(
        f"/api/v1/persons/{number}/cards", json={"kind": "first", "office": OFFICE_A}, headers=auth("clerk_a")
    )
    assert r.status_code == 201, r.text
    card = {**r.json(), "id_number": number, "name": "钱学文"}
    r = client.post(
        "/api/v1/units",
        json={
            "code": "BANK-J",
            "name": "测试银行",
            "sector": "bank",
            "purposes": ["account_opening"],
            "rate_limit": 100_000,
        },
        headers=auth("supervisor"),
    )
    assert r.status_code == 201, r.text
    unit = Unit(r.json()["api_key"], card)
    # Every worker follows the ledger to the unit and the card (401, then mismatch, until it has).
    valid_in_a_row = 0
    deadline = time.monotonic() + READY_SECONDS
    while valid_in_a_row < 10 * server.workers:
        r = client.post("/api/v1/verify", json=item(unit), headers=unit.headers())
        valid_in_a_row = valid_in_a_row + 1 if r.status_code == 200 and r.json()["result"] == "valid" else 0
        if time.monotonic() > deadline:
            pytest.fail(f"the servers never answered valid: {r.status_code} {r.text}")
        time.sleep(0.01)
    return unit


def item(unit: Unit, *, watch: bool = False, number: str | None = None) -> dict[str, Any]:
    card = unit.card
    return {
        "id_number": number or card["id_number"],
        "name": card["name"],
        "issued_on": card["issued_on"],
        "expires_on": card["expires_on"],
        "purpose": "account_opening",
        "operator": "teller-9",
        "watch": watch,
    }


class Acknowledged:
    """The check ids of the answers that reached us, from any thread."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.watches = 0
        self._lock = threading.Lock()

    def add(self, r: httpx.Response, *, watch: bool = False) -> None:
        if r.status_code != 200:
            return
        body = r.json()
        answers = body.get("results", [body])
        with self._lock:
            self.ids.update(a["check_id"] for a in answers)
            self.watches += watch

    def __len__(self) -> int:
        with self._lock:
            return len(self.ids)


def load(server: Server, unit: Unit, acked: Acknowledged, stop: threading.Event, n: int) -> None:
    """Batches of valid and mismatching checks, and single checks that start a watch, until `stop`."""
    client = server.client()
    unknown = id_number(dt.date(1966, 7, 8))
    batch = {"items": [item(unit, number=unknown if i % 4 == 0 else None) for i in range(100)]}
    while not stop.is_set():
        try:
            if n % 5 == 0:
                acked.add(
                    client.post("/api/v1/verify", json=item(unit, watch=True), headers=unit.headers()),
                    watch=True,
                )
            else:
                acked.add(client.post("/api/v1/verify/batch", json=batch, headers=unit.headers()))
        except httpx.TransportError:
            return  # the server is gone
        n += 1


def recorded_ids(url: str, ids: set[str]) -> set[str]:
    engine = make_engine(Settings(database_url=url, env=Environment.TEST, secret_key=SECRET))
    try:
        with engine.connect() as conn:
            found = conn.scalars(sa.select(Check.id).where(Check.id.in_([uuid.UUID(i) for i in ids]))).all()
    finally:
        engine.dispose()
    return {str(i) for i in found}


def watches_of(url: str, card_id: str) -> int:
    engine = make_engine(Settings(database_url=url, env=Environment.TEST, secret_key=SECRET))
    try:
        with engine.connect() as conn:
            count = conn.scalar(
                sa.select(sa.func.count()).select_from(Watch).where(Watch.card_id == uuid.UUID(card_id))
            )
    finally:
        engine.dispose()
    return int(count or 0)


def orphaned_segments(journal: Path) -> list[Path]:
    """Segments whose lock nobody holds (their process is gone)."""
    orphans = []
    for path in journal.glob("checks-*.journal"):
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            orphans.append(path)
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
    return orphans


def test_kill_9_under_load_loses_no_answered_check(
    database_url: str, servers: list[Server], tmp_path: Path
) -> None:
    journal, log = tmp_path / "journal", tmp_path / "server.log"
    server = start(servers, database_url, journal, log, workers=2)
    unit = setup_unit(server)
    acked = Acknowledged()
    stop = threading.Event()
    threads = [threading.Thread(target=load, args=(server, unit, acked, stop, n)) for n in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + READY_SECONDS
    while len(acked) < 3000 and time.monotonic() < deadline:
        time.sleep(0.005)
    server.signal(signal.SIGKILL)  # in the middle of the load
    server.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    server.close_clients()
    assert len(acked) >= 3000, f"only {len(acked)} checks answered before the guard timeout"
    assert acked.watches > 0

    missing_at_kill = acked.ids - recorded_ids(database_url, acked.ids)
    assert missing_at_kill, "every answered check was written before the kill: the test proves nothing"
    assert orphaned_segments(journal)

    again = start(servers, database_url, journal, tmp_path / "restart.log", workers=2)
    lost = acked.ids - recorded_ids(database_url, acked.ids)
    print(
        f"{len(acked.ids)} checks answered; {len(missing_at_kill)} not in the database at the kill; "
        f"{len(lost)} lost after the restart"
    )
    assert not lost, f"{len(lost)} of {len(acked.ids)} answered checks lost"
    assert watches_of(database_url, unit.card["card_id"]) == 1
    assert orphaned_segments(journal) == []
    assert "replayed" in again.output()

    again.signal(signal.SIGTERM)
    assert again.proc.wait(timeout=120) in STOPPED
    assert list(journal.glob("checks-*.journal")) == []  # a clean stop leaves no journal


@contextlib.contextmanager
def unreachable(url: str) -> Iterator[None]:
    """The database unusable for the server (see test_multiworker.unreachable): PostgreSQL refuses
    connections and ends the open ones; SQLite's write lock is held (every idguard transaction
    begins with BEGIN IMMEDIATE and gives up after the busy timeout)."""
    if url.startswith("postgresql"):
        assert POSTGRES_URL
        name = sa.make_url(url).database
        admin = sa.create_engine(
            sa.make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
        )
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                )
            yield
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            admin.dispose()
    else:
        lock = sqlite3.connect(sa.make_url(url).database or "", isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            lock.execute("ROLLBACK")
            lock.close()


def test_a_stop_while_the_database_is_unreachable_loses_no_answered_check(
    database_url: str, servers: list[Server], tmp_path: Path
) -> None:
    journal, log = tmp_path / "journal", tmp_path / "server.log"
    # A short busy timeout: SQLite gives up on the locked database quickly.
    server = start(servers, database_url, journal, log, IDGUARD_SQLITE_BUSY_TIMEOUT_MS="200")
    unit = setup_unit(server)
    acked = Acknowledged()
    client = server.client()
    with unreachable(database_url):
        for watch in (False, True, False):
            r = client.post("/api/v1/verify", json=item(unit, watch=watch), headers=unit.headers())
            assert r.status_code == 200, r.text
            acked.add(r, watch=watch)
        r = client.post("/api/v1/verify/batch", json={"items": [item(unit)] * 50}, headers=unit.headers())
        assert r.status_code == 200, r.text
        acked.add(r)
        server.close_clients()
        server.signal(signal.SIGTERM)
        returncode = server.proc.wait(timeout=120)
    output = server.output()
    assert returncode in STOPPED, output
    assert "Application shutdown failed" not in output, output
    assert "kept in the journal" in output, output
    assert len(acked.ids) == 53
    assert recorded_ids(database_url, acked.ids) == set()  # the database was unreachable all along
    assert orphaned_segments(journal)

    start(servers, database_url, journal, tmp_path / "restart.log")
    assert recorded_ids(database_url, acked.ids) == acked.ids
    assert watches_of(database_url, unit.card["card_id"]) == 1
    assert orphaned_segments(journal) == []
