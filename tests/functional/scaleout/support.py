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
