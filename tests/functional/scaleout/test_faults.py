"""Faults (issue 15): a verifier node killed with kill -9 under load and restarted; the NATS
server stopped and started again; the database unreachable while nodes answer and the sink
waits. Each against real processes or servers the test starts itself (never the shared NATS
server: a second nats-server on a random port when the binary exists)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import sqlalchemy as sa

from idguard.config import Settings
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.scaleout.node import create_node_app
from idguard.scaleout.relay import Relay
from idguard.scaleout.sink import Sink
from idguard.verification.models import Check
from tests.functional.conftest import Counter
from tests.functional.scaleout.support import (
    Background,
    NodeProcess,
    births,
    body,
    free_port,
    needs_nats,
    scaled,
)
from tests.functional.verification.test_verify import Bank

pytestmark = needs_nats


def _check_ids(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return {str(i) for i in conn.scalars(sa.select(Check.id))}


def test_a_node_killed_under_load_loses_no_acknowledged_check_and_catches_up_on_restart(
    counter: Counter, nats_settings: Settings, session_factory: Any, engine: sa.Engine
) -> None:
    cards = [counter.card(counter.person(birth=b, name=f"乙{i}")) for i, b in enumerate(births(5))]
    bank = Bank(counter, rate_limit=100_000)
    relay = Background(Relay(nats_settings, session_factory), "ready")
    relay.wait()
    node = NodeProcess(nats_settings)
    acked: list[str] = []
    stop = threading.Event()

    def load() -> None:
        items = [body(c) for c in cards] * 40
        with httpx.Client(timeout=5) as client:
            while not stop.is_set():
                try:
                    r = client.post(
                        node.url + "/api/v1/verify/batch", json={"items": items}, headers=bank.headers()
                    )
                except httpx.HTTPError:
                    continue  # the node is gone: nothing was acknowledged
                if r.status_code == 200:
                    acked.extend(x["check_id"] for x in r.json()["results"])

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    node.kill()  # kill -9 in the middle of the load
    stop.set()
    for t in threads:
        t.join(10)
    assert len(acked) >= 200
    # While it is dead, a card is reported lost; the restarted node catches up and says so.
    assert counter.report(cards[0]).status_code == 201
    node = NodeProcess(nats_settings, port=node.port)
    try:
        deadline = time.monotonic() + 5
        while True:
            r = httpx.post(node.url + "/api/v1/verify", json=body(cards[0]), headers=bank.headers())
            if (r.status_code == 200 and r.json()["result"] == "invalid") or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert r.json()["reason"] == "reported_lost", r.text
    finally:
        node.stop()
        relay.close()
    # Every acknowledged check reaches the database through the sink.
    sink = Background(Sink(nats_settings, engine), "idle")
    sink.wait()
    sink.close()
    missing = set(acked) - _check_ids(engine)
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged checks lost"


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """A nats-server of this test's own (JetStream, its own store), and a way to stop and start
    it again on the same port."""
    binary = shutil.which("nats-server")
    if binary is None:
        pytest.skip("nats-server is not installed: the NATS restart test needs a server of its own")
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(
            subprocess.Popen(  # noqa: S603 - a fixed binary
                [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(tmp_path / "js")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        time.sleep(0.5)

    def stop() -> None:
        procs[-1].terminate()
        procs[-1].wait(10)

    start()
    yield f"nats://127.0.0.1:{port}", (start, stop)
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        p.wait(10)


def test_nats_stopped_the_node_refuses_within_the_bound_and_answers_again_after_restart(
    counter: Counter, settings: Settings, session_factory: Any, private_nats: tuple[str, Any]
) -> None:
    from fastapi.testclient import TestClient

    url, (start, stop) = private_nats
    cards = [counter.card(counter.person(birth=b, name=f"丙{i}")) for i, b in enumerate(births(3))]
    bank = Bank(counter)
    with scaled(settings, url) as nats_settings:
        relay = Background(Relay(nats_settings, session_factory), "ready")
        relay.wait()
        with TestClient(create_node_app(nats_settings)) as node:
            assert (
                node.post("/api/v1/verify", json=body(cards[0]), headers=bank.headers()).json()["result"]
                == "valid"
            )
            stop()
            time.sleep(1.3)  # past the lease (0.25 s) and the client's ping timeout
            r = node.post("/api/v1/verify", json=body(cards[0]), headers=bank.headers())
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"] == "1"
            # A report made while NATS is down reaches the node once NATS is back.
            assert counter.report(cards[1]).status_code == 201
            start()
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                r = node.post("/api/v1/verify", json=body(cards[1]), headers=bank.headers())
                if r.status_code == 200:
                    break
                time.sleep(0.1)
            assert r.status_code == 200, r.text
            assert r.json()["reason"] == "reported_lost"
        relay.close()


class Proxy:
    """A TCP forwarder to PostgreSQL that the test can cut (the database 'unreachable')."""

    def __init__(self, target_port: int) -> None:
        import socket

        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self.conns: list[Any] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: Any, b: Any) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.close()

    def cut(self) -> None:
        self.open.clear()
        import socket

        for c in self.conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)  # wakes the pipes' blocked recv, sends FIN
            with contextlib.suppress(OSError):
                c.close()
        self.conns.clear()

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_database_unreachable_nodes_keep_answering_and_the_sink_catches_up(
    counter: Counter, nats_settings: Settings, session_factory: Any, engine: sa.Engine
) -> None:
    from fastapi.testclient import TestClient

    if engine.dialect.name != "postgresql":
        pytest.skip("the database is cut through a TCP proxy: PostgreSQL only")
    cards = [counter.card(counter.person(birth=b, name=f"丁{i}")) for i, b in enumerate(births(3))]
    bank = Bank(counter)
    proxy = Proxy(engine.url.port or 5432)
    proxied_url = engine.url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    proxied = make_engine(nats_settings.model_copy(update={"database_url": proxied_url}))
    try:
        relay = Background(Relay(nats_settings, make_sessionmaker(proxied)), "ready")
        relay.wait()
        sink = Background(Sink(nats_settings, proxied), "idle")
        with TestClient(create_node_app(nats_settings)) as node:
            proxy.cut()
            answered = []
            for _ in range(5):
                r = node.post(
                    "/api/v1/verify/batch", json={"items": [body(c) for c in cards]}, headers=bank.headers()
                )
                assert r.status_code == 200, r.text
                answered += [x["check_id"] for x in r.json()["results"]]
            time.sleep(1.5)  # the sink tries and fails meanwhile; the checks wait in the stream
            assert not set(answered) & _check_ids(engine)
            assert sink.runner.failures >= 1
            proxy.restore()
            sink.wait()
            assert set(answered) <= _check_ids(engine)
        sink.close()
        relay.close()
    finally:
        proxy.close()
        proxied.dispose()
