"""Real servers for the tests that need one: a process on a socket the test bound itself.

The port is not guessed: the test binds a listening socket on port 0 (the kernel picks a free
port and it stays ours), and the server inherits it (`--fd`), so no other process can take the
port between choosing and serving — the race of "find a free port, close it, tell the server".
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.factories import SECRET


def listening_socket() -> socket.socket:
    """A socket bound to a free loopback port and listening, inheritable by a child process."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def uvicorn_argv(sock: socket.socket, *, workers: int = 1) -> list[str]:
    """The app under uvicorn on `sock` (the protocol the tests that need ours start `serve`)."""
    return [
        sys.executable,
        *("-m", "uvicorn", "--factory", "idguard.app:create_app"),
        *("--fd", str(sock.fileno())),
        *(("--workers", str(workers)) if workers > 1 else ()),
    ]


def serve_argv(sock: socket.socket) -> list[str]:
    """`idguard serve` (uvicorn with api/server.py's protocol) on `sock`."""
    return [
        sys.executable,
        *("-c", "from idguard.cli.main import app; app()"),
        *("serve", "--fd", str(sock.fileno())),
    ]


def spawn(
    argv: Sequence[str],
    *,
    sock: socket.socket,
    database_url: str,
    log: Path,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server process (its own process group, output appended to `log`) that inherits
    `sock`; the test closes its own copy once the server has started."""
    with log.open("ab") as out:
        return subprocess.Popen(  # noqa: S603 - our own argv, no shell
            list(argv),
            env={
                **os.environ,
                "IDGUARD_DATABASE_URL": database_url,
                "IDGUARD_SECRET_KEY": SECRET,
                "IDGUARD_ENV": "test",
                "PYTHONUNBUFFERED": "1",  # the log must hold what was printed when the test reads it
                **(env or {}),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=(sock.fileno(),),
            start_new_session=True,  # its own process group: a signal reaches every worker
        )


def stop(proc: subprocess.Popen[bytes], *, sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal the server's process group; SIGKILL after 10 s if it has not exited."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_healthy(
    base: str, proc: subprocess.Popen[bytes], output: Callable[[], str], *, timeout: float = 30.0
) -> None:
    """Until `GET /api/v1/health` answers 200; fails the test with the server's output if it
    exits or is not healthy in time."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{output()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            pytest.fail(f"server not healthy in {timeout} s:\n{output()}")
        time.sleep(0.05)
