"""What the scale-out tests share: the NATS server to use, a prefix of their own, a relay or sink
on its own event loop, a verifier node as a real process, and small helpers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx2 as httpx
import pytest
import sqlalchemy as sa

from idguard.config import Settings
from idguard.registry.models import LedgerHead
from idguard.scaleout import streams
from tests.factories import SECRET

NATS_URL = os.environ.get("IDGUARD_TEST_NATS_URL", "nats://127.0.0.1:4222")


def reachable(url: str) -> bool:
    host, port = url.removeprefix("nats://").split(":")
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1):
        return True
    return False


# In CI (.ci/run makes sure NATS is up) a missing server fails the tests instead.
needs_nats = pytest.mark.skipif(
    not reachable(NATS_URL) and not os.environ.get("CI"), reason=f"no NATS server at {NATS_URL}"
)


@contextlib.contextmanager
def scaled(settings: Settings, url: str = NATS_URL) -> Iterator[Settings]:
    """`settings` with NATS and a random prefix; the prefix's streams are deleted afterwards."""
    out = settings.model_copy(update={"nats_url": url, "nats_prefix": f"t{secrets.token_hex(5)}"})
    try:
        yield out
    finally:

        async def clean() -> None:
            nc = await streams.connect(out, name="idguard-test-cleanup", max_reconnect_attempts=1)
            await streams.delete_all(nc.jetstream(), streams.names(out))
            await nc.close()

        with contextlib.suppress(Exception):
            asyncio.run(asyncio.wait_for(clean(), 10))


class Background:
    """A relay or a sink running on its own event loop in a thread; `wait()` returns once the relay
    is caught up (its `ready`) or the sink idle (its `idle`)."""

    running: ClassVar[list[Background]] = []  # closed after each test, whatever happened (conftest)

    def __init__(self, runner: Any, signal_name: str) -> None:
        Background.running.append(self)
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.signal = asyncio.Event()
        self.runner = runner
        self._signal_name = signal_name
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.runner.run(self.stop, **{self._signal_name: self.signal}))
        except BaseException as exc:  # shown by close()
            self.error = exc

    def wait(self, timeout: float = 30) -> None:
        asyncio.run_coroutine_threadsafe(self._cleared_then_set(), self.loop).result(timeout)

    async def _cleared_then_set(self) -> None:
        self.signal.clear()
        await self.signal.wait()

    def close(self) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.stop.set)
            self.thread.join(15)
            assert not self.thread.is_alive()
            self.loop.close()


def head(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(sa.select(LedgerHead.seq).where(LedgerHead.id == 1)) or 0)


def body(card: dict[str, Any]) -> dict[str, Any]:
    return {
        "id_number": card["id_number"],
        "name": card["name"],
        "issued_on": card["issued_on"],
        "expires_on": card["expires_on"],
        "purpose": "account_opening",
        "operator": "teller-7",
    }


def births(n: int, start: dt.date = dt.date(1980, 1, 1)) -> list[dt.date]:
    return [start + dt.timedelta(days=37 * i) for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NodeProcess:
    """`idguard verifier` as a real process, with an unreachable database URL: it must need none."""

    def __init__(self, settings: Settings, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "IDGUARD_NATS_URL": settings.nats_url or "",
            "IDGUARD_NATS_PREFIX": settings.nats_prefix,
            "IDGUARD_SECRET_KEY": SECRET,
            "IDGUARD_ENV": "test",
            "IDGUARD_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/nothing",
        }
        idguard = Path(sys.executable).parent / "idguard"
        self.log = tempfile.NamedTemporaryFile(prefix="idguard-node-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(  # noqa: S603 - our own command
            [str(idguard), "verifier", "--port", str(self.port)], env=env, stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + 90  # imports alone take 10-15 s on a loaded machine
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/api/v1/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        self.kill()
        raise AssertionError("the verifier node did not start: " + Path(self.log.name).read_text()[-3000:])

    def health(self) -> dict[str, Any]:
        return dict(httpx.get(self.url + "/api/v1/health", timeout=2).json())

    def kill(self) -> None:
        """kill -9."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()


class RelayProcess:
    """`idguard relay` as a real process (leadership lock on), against the test's database."""

    def __init__(self, settings: Settings) -> None:
        env = {
            **os.environ,
            "IDGUARD_NATS_URL": settings.nats_url or "",
            "IDGUARD_NATS_PREFIX": settings.nats_prefix,
            "IDGUARD_SECRET_KEY": SECRET,
            "IDGUARD_ENV": "test",
            "IDGUARD_DATABASE_URL": settings.database_url,
        }
        idguard = Path(sys.executable).parent / "idguard"
        self.log = tempfile.NamedTemporaryFile(prefix="idguard-relay-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(  # noqa: S603 - our own command
            [str(idguard), "relay"], env=env, stdout=self.log, stderr=self.log
        )
        self.pid = self.process.pid

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 90) -> None:
        """Until the relay's log says `text` (imports alone take 10-15 s on a loaded machine)."""
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.process.poll() is None, self.output()[-3000:]
            assert time.monotonic() < deadline, f"the relay never said {text!r}: " + self.output()[-3000:]
            time.sleep(0.05)

    def kill(self) -> None:
        """kill -9."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


class Beats:
    """Every relay beat on {P}.head, as (wall time heard, relay id, ledger seq), heard on a
    connection of the test's own (its own event loop in a thread)."""

    def __init__(self, settings: Settings) -> None:
        self.heard: list[tuple[float, str, int]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._nc = asyncio.run_coroutine_threadsafe(self._listen(settings), self._loop).result(10)

    async def _listen(self, settings: Settings) -> Any:
        import json

        nc = await streams.connect(settings, name="idguard-test-beats")

        async def on_beat(msg: Any) -> None:
            beat = json.loads(msg.data)
            self.heard.append((time.time(), str(beat.get("relay", "")), int(beat["seq"])))

        await nc.subscribe(streams.names(settings).core("head"), cb=on_beat)
        return nc

    def relays(self, since: float = 0.0) -> set[str]:
        return {relay for heard, relay, _ in list(self.heard) if heard >= since}

    def first_from(self, pid: int, since: float = 0.0) -> float | None:
        return next((h for h, relay, _ in list(self.heard) if f"-{pid}-" in relay and h >= since), None)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._nc.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


async def _card_seqs(settings: Settings) -> list[int]:
    nc = await streams.connect(settings, name="idguard-test-reader")
    js = nc.jetstream()
    n = streams.names(settings)
    info = await js.stream_info(n.ledger_stream)
    seqs = []
    for position in range(1, info.state.last_seq + 1):
        msg = await js.get_msg(n.ledger_stream, position)
        if msg.subject == n.card_subject:
            seqs.append(streams.decode_card(msg.data or b"")[0])
    await nc.close()
    return seqs


def card_seqs(settings: Settings) -> list[int]:
    """The ledger seq of every card message in the ledger stream, in stream order."""
    return asyncio.run(_card_seqs(settings))
