"""A verifier node cut off from NATS by the network (issue 15's last fault): the node runs as a
real process inside a network namespace the test makes (`ip netns`), reaching a nats-server of the
test's own through one veth pair and answering the test's requests through a second. Cutting the
first pair (its end inside the namespace set down: the packets go nowhere, no connection is
closed) leaves the node answering HTTP but deaf to the relay: it must go stale within the bound,
answer 503 with Retry-After, and never answer `valid` for a card whose loss report was
acknowledged after the cut; once the link is back it catches up and answers again.

Only loopback, the namespace and the veth pairs the test makes itself: the node reaches the tests'
NATS server (on loopback) through a forwarder listening on the host's end of the first pair only.
Skipped, with the reason, only where namespaces cannot be made (not root, no iproute2; .ci/run
installs iproute2) or, outside CI, where there is no NATS server."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import sqlalchemy as sa

from idguard.config import Settings
from idguard.scaleout import propagation
from idguard.scaleout.relay import Relay
from tests.factories import SECRET
from tests.functional.conftest import Counter
from tests.functional.scaleout.support import NATS_URL, Background, births, body, head, reachable, scaled
from tests.functional.verification.test_verify import Bank

WATCH_SECONDS = 1.5  # how long the test keeps asking the cut-off node (the lease is 0.25 s)


def _ip(*args: str, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.run(  # noqa: S603 - iproute2 with the test's own names
        [*prefix, "ip", *args], capture_output=True, text=True, check=False
    )


def _must(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{result.args}: {result.stderr.strip()}"


@dataclass
class Namespace:
    name: str
    nats_host: str  # the host's end of the NATS link: where the test's nats-server listens
    node_host: str  # the namespace's end of the client link: where the node listens
    nats_link: str  # the namespace's end of the NATS link (the one the test cuts)

    def cut(self) -> None:
        _must(_ip("link", "set", self.nats_link, "down", netns=self.name))

    def restore(self) -> None:
        _must(_ip("link", "set", self.nats_link, "up", netns=self.name))


def _free_subnet() -> str:
    """A 10.x.y.0/24 no address or route of this machine touches (two /30s of it are used)."""
    used = _ip("-o", "-4", "addr").stdout + _ip("-4", "route").stdout
    for _ in range(100):
        subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}"
        if f"{subnet}." not in used:
            return subnet
    raise AssertionError("no free 10.x.y.0/24 for the test's veth pairs")


def _cannot(why: str) -> None:
    """Skip on a newcomer's laptop; in CI (.ci/run runs as root with iproute2) it is a failure."""
    if os.environ.get("CI"):
        raise AssertionError(f"the network-namespace test must run in CI: {why}")
    pytest.skip(why)


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    """A network namespace with two veth pairs to the host: 10.x.y.1 <-> .2 (NATS) and
    10.x.y.5 <-> .6 (clients). Deleted afterwards whatever happened (its veth ends go with it,
    and with them their host ends)."""
    if os.geteuid() != 0:
        _cannot("network namespaces need root (ip netns add)")
    if shutil.which("ip") is None:
        _cannot("iproute2 is not installed (no `ip`): apt-get install iproute2")
    token = secrets.token_hex(3)
    name = f"idguard-{token}"
    made = _ip("netns", "add", name)
    if made.returncode != 0:
        _cannot(f"cannot make a network namespace here: {made.stderr.strip()}")
    try:
        subnet = _free_subnet()
        for link, (host, inside) in {"n": (1, 2), "c": (5, 6)}.items():
            outer, inner = f"ig{token}{link}0", f"ig{token}{link}1"
            _must(_ip("link", "add", outer, "type", "veth", "peer", "name", inner))
            _must(_ip("link", "set", inner, "netns", name))
            _must(_ip("addr", "add", f"{subnet}.{host}/30", "dev", outer))
            _must(_ip("link", "set", outer, "up"))
            _must(_ip("addr", "add", f"{subnet}.{inside}/30", "dev", inner, netns=name))
            _must(_ip("link", "set", inner, "up", netns=name))
        _must(_ip("link", "set", "lo", "up", netns=name))
        yield Namespace(name, f"{subnet}.1", f"{subnet}.6", f"ig{token}n1")
    finally:
        _ip("netns", "del", name)
        for link in "nc":
            _ip("link", "del", f"ig{token}{link}0")  # already gone with the namespace, normally
        assert name not in _ip("netns", "list").stdout


class Forwarder:
    """TCP from the host's end of the NATS link to the NATS server the tests use (it listens on
    loopback, which the namespace cannot reach): the node's only way to NATS."""

    def __init__(self, host: str, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server((host, 0))
        self.url = f"nats://{host}:{self.listener.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()


@pytest.fixture
def nats_on_the_link(namespace: Namespace) -> Iterator[str]:
    """The URL of the tests' NATS server as the node reaches it: through the NATS link only."""
    host, port = NATS_URL.removeprefix("nats://").rsplit(":", 1)
    if not reachable(NATS_URL):
        if os.environ.get("CI"):
            raise AssertionError(f"no NATS server at {NATS_URL} (CI starts one: .ci/run)")
        pytest.skip(f"no NATS server at {NATS_URL}")
    forwarder = Forwarder(namespace.nats_host, (host, int(port)))
    try:
        yield forwarder.url
    finally:
        forwarder.close()


class NodeInNamespace:
    """`idguard verifier` as a process inside the namespace (no database: an unreachable URL)."""

    def __init__(self, settings: Settings, namespace: Namespace) -> None:
        self.url = f"http://{namespace.node_host}:8100"
        env = {
            **os.environ,
            "IDGUARD_NATS_URL": settings.nats_url or "",
            "IDGUARD_NATS_PREFIX": settings.nats_prefix,
            "IDGUARD_SECRET_KEY": SECRET,
            "IDGUARD_ENV": "test",
            "IDGUARD_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/nothing",
        }
        idguard = Path(sys.executable).parent / "idguard"
        self.log = tempfile.NamedTemporaryFile(prefix="idguard-netns-node-", suffix=".log", delete=False)  # noqa: SIM115
        command = ["ip", "netns", "exec", namespace.name, str(idguard), "verifier"]
        self.process = subprocess.Popen(  # noqa: S603 - our own command
            [*command, "--host", namespace.node_host, "--port", "8100"],
            env=env,
            stdout=self.log,
            stderr=self.log,
        )
        self.client = httpx.Client(base_url=self.url, timeout=3, trust_env=False)
        deadline = time.monotonic() + 90  # imports alone take 10-15 s on a loaded machine
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if self.client.get("/api/v1/health").status_code == 200:
                    return
            assert self.process.poll() is None, Path(self.log.name).read_text()[-3000:]
            time.sleep(0.1)
        output = Path(self.log.name).read_text()[-3000:]
        self.stop()
        raise AssertionError("the verifier node did not start: " + output)

    def verify(self, card: dict[str, Any], bank: Bank) -> httpx.Response:
        return self.client.post("/api/v1/verify", json=body(card), headers=bank.headers())

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()
        Path(self.log.name).unlink()


def test_a_node_cut_off_from_nats_goes_stale_within_the_bound_and_never_answers_valid_for_a_later_report(
    counter: Counter,
    settings: Settings,
    session_factory: Any,
    engine: sa.Engine,
    namespace: Namespace,
    nats_on_the_link: str,
) -> None:
    cards = [counter.card(counter.person(birth=b, name=f"戊{i}")) for i, b in enumerate(births(2))]
    bank = Bank(counter, rate_limit=100_000)
    with scaled(settings) as nats_settings:
        relay = Background(Relay(nats_settings, session_factory), "ready")
        relay.wait()
        node = NodeInNamespace(nats_settings.model_copy(update={"nats_url": nats_on_the_link}), namespace)
        try:
            for card in cards:
                r = node.verify(card, bank)
                assert (r.status_code, r.json()["result"]) == (200, "valid"), r.text
            assert propagation.wait_for_nodes(nats_settings, head(engine), 0.25)["confirmed"] == 1

            namespace.cut()
            cut = time.monotonic()
            # A loss report right after the cut: its answer leaves after the bounded wait, the
            # node counted live but not confirming (it cannot hear the report).
            assert counter.report(cards[1]).status_code == 201
            waited = propagation.wait_for_nodes(nats_settings, head(engine), 0.25)
            answered = time.monotonic() - cut
            assert waited["confirmed"] == 0, waited  # (the node counted live unless the report took 1 s)
            assert waited["nodes"] <= 1, waited
            # From the acknowledgement on, the node never says `valid` for the reported card: a
            # client keeps asking (each answer a 503 with Retry-After: until the node knows it is
            # cut off, because JetStream cannot take the check; after, because it is stale) while
            # /health shows when the node marked itself stale.
            answers: list[tuple[float, int, str | None, str]] = []  # (asked, status, Retry-After, body)
            stop = threading.Event()

            def keep_asking() -> None:
                with httpx.Client(base_url=node.url, timeout=5, trust_env=False) as client:
                    while not stop.is_set():
                        asked = time.monotonic() - cut
                        r = client.post("/api/v1/verify", json=body(cards[1]), headers=bank.headers())
                        answers.append((asked, r.status_code, r.headers.get("Retry-After"), r.text))

            asker = threading.Thread(target=keep_asking)
            asker.start()
            stale_at = None
            statuses: list[str] = []
            try:
                while time.monotonic() - cut < WATCH_SECONDS:
                    asked = time.monotonic() - cut  # the node judges when it answers: after this
                    health = node.client.get("/api/v1/health").json()
                    statuses.append(health["status"])
                    if health["status"] == "stale" and stale_at is None:
                        stale_at = asked
                        assert "lost contact" in health["detail"], health
                    if stale_at is not None:
                        assert health["status"] == "stale", health  # and stays so while cut off
                    time.sleep(0.02)
            finally:
                stop.set()
                asker.join(10)
            assert stale_at is not None
            print(
                f"writer answered {answered * 1000:.0f} ms after the cut; node stale at the first "
                f"look after it ({stale_at * 1000:.0f} ms); {len(answers)} answers, none valid"
            )
            # Stale before the writer answered (its lease, asked for before the cut, ran out no
            # later than the writer's bound after the relay's acknowledgement): no slack needed.
            assert statuses[0] == "stale", statuses[:5]
            assert answers
            for after, status, retry_after, text in answers:
                assert status == 503, f"{after:.3f} s after the cut: {text}"
                assert retry_after is not None
            # Asked once stale, the refusal is at once, from the staleness (not JetStream's timeout).
            refusals = [a for a in answers if a[0] > stale_at + 0.1]
            assert len(refusals) >= 10, answers[:5]
            assert all(a[2] == "1" and '"unavailable"' in a[3] for a in refusals), refusals[:3]

            namespace.restore()  # the node catches up and answers again: the report included
            deadline = time.monotonic() + 30
            while True:
                lost = node.verify(cards[1], bank)
                if lost.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert lost.status_code == 200, lost.text
            assert (lost.json()["result"], lost.json()["reason"]) == ("invalid", "reported_lost")
            other = node.verify(cards[0], bank)
            assert (other.status_code, other.json()["result"]) == (200, "valid"), other.text
            assert node.client.get("/api/v1/health").json()["status"] == "ok"
        finally:
            node.stop()
            relay.close()
            watch = propagation._watches.pop((NATS_URL, nats_settings.nats_prefix), None)
            if watch is not None:
                watch.close()
