"""GET /metrics with two real uvicorn workers (`--workers 2`, one port, IDGUARD_METRICS_DIR):
whichever worker answers the scrape, the counts are both workers' (each served some of the
requests, as their own JSON access lines show by pid), each worker's index is there under its
pid, and a worker that stops takes its gauges with it while the counts stay.

The database is a scratch PostgreSQL database when IDGUARD_TEST_POSTGRES_URL is set, else a
SQLite file (tests/integration/databases.py). The server helper here (on a free port) serves
test_backup.py too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest

from idguard import uow
from idguard.core.idnumber import Sex, mask
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.registry.persons import register_person
from tests.conftest import settings_for
from tests.factories import NOW, OFFICE_A, SECRET, actor, auth, id_number
from tests.functional.ops.conftest import Samples, parse, total, value
from tests.integration.databases import scratch_database

POSTGRES_URL = os.environ.get("IDGUARD_TEST_POSTGRES_URL")
ROUTE = "/api/v1/persons/{id_number}"


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A migrated registry with the test world (offices, one account per role)."""
    with scratch_database(tmp_path, POSTGRES_URL, prefix="idguard_ops") as url:
        yield url


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    log: Path
    client: httpx.Client

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        self.client.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(database_url: str, log: Path, *, workers: int = 1, **env: str) -> Iterator[Server]:
    """uvicorn running the app factory (as `idguard serve` does) on a free port; stopped at the end."""
    port = _free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own argv, no shell
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "idguard.app:create_app",
                *("--host", "127.0.0.1"),
                *("--port", str(port)),
                *("--workers", str(workers)),
            ],
            env={
                **os.environ,
                "IDGUARD_DATABASE_URL": database_url,
                "IDGUARD_SECRET_KEY": SECRET,
                "IDGUARD_ENV": "test",
                "IDGUARD_WORKERS": str(workers),
                "PYTHONUNBUFFERED": "1",
                **env,
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with everything it spawned
        )
    server = Server(proc, log, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10))
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{server.output()}")
            with contextlib.suppress(httpx.TransportError):
                if server.client.get("/api/v1/health").status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"server not healthy after 30 s:\n{server.output()}")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()


def scrape(server: Server, **headers: str) -> Samples:
    """GET /metrics on a connection of its own (so either worker may answer it)."""
    with httpx.Client(base_url=str(server.client.base_url), timeout=10) as c:
        r = c.get("/metrics", headers={**headers, "Connection": "close"})
    assert r.status_code == 200, r.text
    return parse(r.text)


def pids(samples: Samples, name: str) -> set[str]:
    return {dict(labels)["pid"] for (n, labels), _ in samples.items() if n == name}


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_counts_from_both_workers_appear_whichever_answers(database_url: str, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    engine = make_engine(settings_for(database_url))
    with uow.transaction(make_sessionmaker(engine)) as session:
        number = id_number(dt.date(1987, 2, 3))
        register_person(
            session,
            actor=actor("clerk_a"),
            now=NOW,
            id_number=number,
            name="钱七",
            sex=Sex.MALE,
            ethnicity="汉",
            birth_date=dt.date(1987, 2, 3),
            address="北京市朝阳区建国路3号",
            hukou_office=OFFICE_A,
        )
    engine.dispose()
    with serve(
        database_url,
        tmp_path / "server.log",
        workers=2,
        IDGUARD_METRICS_DIR=str(metrics_dir),
        IDGUARD_LOG_FORMAT="json",
    ) as server:
        deadline = time.monotonic() + 30
        while len(pids(scrape(server), "idguard_index_cards")) < 2:  # both workers are up
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)

        n = 120
        ids = [f"ops-{k}" for k in range(n)]

        def read(rid: str) -> int:
            # A connection per request, so that the kernel hands them to both workers.
            with httpx.Client(base_url=str(server.client.base_url), timeout=10) as c:
                headers = {**auth("auditor"), "X-Request-Id": rid, "Connection": "close"}
                return c.get(f"/api/v1/persons/{number}", headers=headers).status_code

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(read, ids)) == {200}

        served_by: dict[str, set[object]] = {}
        deadline = time.monotonic() + 10
        while True:  # the access lines of the last answers may still be on their way to the file
            entries = json_lines(server.output())
            served_by = {}
            for e in entries:
                if e["logger"] == "uvicorn.access" and str(e["request_id"]).startswith("ops-"):
                    served_by.setdefault(str(e["request_id"]), set()).add(e["pid"])
            if len(served_by) == n or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(served_by) == n
        workers = set().union(*served_by.values())
        assert len(workers) == 2, f"one worker served every request: {workers}"

        for k in range(10):  # scrapes land on either worker: each shows both workers' counts
            samples = scrape(server, **{"X-Request-Id": f"scrape-{k}"})
            assert value(samples, "idguard_http_requests_total", method="GET", route=ROUTE, status="200") == n
            assert (
                value(samples, "idguard_http_request_duration_seconds_count", method="GET", route=ROUTE) == n
            )
            assert value(samples, "idguard_metrics_multiprocess") == 1
            assert {str(p) for p in workers} == pids(samples, "idguard_index_cards")
            assert total(samples, "idguard_index_cards") == 0  # no cards: 0 in each worker
        scrapers = {
            e["pid"] for e in json_lines(server.output()) if str(e.get("request_id")).startswith("scrape-")
        }
        print(f"{n} requests served by workers {sorted(map(str, workers))}; scrapes answered by {scrapers}")

        access = [e for e in json_lines(server.output()) if e["logger"] == "uvicorn.access"]
        assert access
        sample = next(e for e in access if e["request_id"] == "ops-0")
        assert sample["path"] == f"/api/v1/persons/{mask(number)}"
        assert sample["status"] == 200
        assert number not in server.output()

    # Stopped cleanly: each worker's gauges went with it; the counts it made stay for the sums.
    assert not list(metrics_dir.glob("gauge_live*"))
    assert list(metrics_dir.glob("counter_*.db"))
