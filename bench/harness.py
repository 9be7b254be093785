"""What more than one bench script needs: printed tables, settings, scratch databases, servers.

Imported as `harness` by the scripts beside it (`python bench/<script>.py` puts bench/ on the
path) and as `bench.harness` by the `bench.verify` package (`python -m bench.verify`).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from idguard.config import Environment, Settings

BENCH_DIR = Path(__file__).resolve().parent
SECRET = "bench-secret-0123456789abcdef"  # noqa: S105 - signs nothing outside the benches
# Production mode needs template keys; a fixed bench-only key (it seals nothing real).
TEMPLATE_KEYS = "bench:" + base64.b64encode(bytes(range(32))).decode()
# Production refuses to start without its signing keys (declarations, offline sets): bench ones.
SIGNING_KEYS = "bench:" + base64.b64encode(bytes(range(32, 64))).decode()
# Personal data is sealed (IDGUARD_DATA_KEYS): the key that test mode derives from SECRET, so a
# database seeded in test mode opens in a production-mode server, and the other way round.
DATA_KEYS = "derived:" + base64.b64encode(Settings(secret_key=SECRET).personal_data_keys["derived"]).decode()


# ---------------------------------------------------------------------------------------------
# Output


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()  # noqa: S607 - a coreutils command, looked up on PATH on purpose
    except OSError:
        return "load average: {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def table(title: str, header: tuple[str, ...], rows: list[tuple[object, ...]]) -> None:
    cells = [[str(c) for c in header], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    print(f"  ({uptime()})")
    for n, row in enumerate(cells):
        print(
            "  "
            + "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))
    sys.stdout.flush()


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def met(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def note(text: str) -> None:
    print(f"  {text}", flush=True)


# ---------------------------------------------------------------------------------------------
# Settings and databases


def settings_for(url: str, *, production: bool = False) -> Settings:
    """Settings for a bench database: test mode, or production as `server()` runs it."""
    if production:
        return Settings(
            database_url=url,
            env=Environment.PRODUCTION,
            secret_key=SECRET,
            template_keys=TEMPLATE_KEYS,
            declaration_keys=SIGNING_KEYS,
            offline_keys=SIGNING_KEYS,
            ledger_keys=SIGNING_KEYS,
            data_keys=DATA_KEYS,
        )
    return Settings(database_url=url, env=Environment.TEST, secret_key=SECRET)


def admin_engine(admin_url: str) -> sa.Engine:
    return sa.create_engine(
        sa.make_url(admin_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )


def database_url(admin_url: str, name: str) -> str:
    return sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def recreate_database(admin: sa.Engine, name: str, *, template: str | None = None) -> None:
    """Drop `name` if it exists and create it anew, empty or as a copy of `template`."""
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))


def drop_database(admin: sa.Engine, name: str) -> None:
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def scratch_database(
    admin: sa.Engine, admin_url: str, name: str, *, template: str | None = None
) -> Iterator[str]:
    """A throw-away database `name` (empty, or a copy of `template`), dropped on the way out."""
    recreate_database(admin, name, template=template)
    try:
        yield database_url(admin_url, name)
    finally:
        drop_database(admin, name)


# ---------------------------------------------------------------------------------------------
# Servers


def server_env(url: str, **extra: str) -> dict[str, str]:
    """The environment of a production-mode idguard server on `url` with the benches' keys,
    and `extra` added (or overriding)."""
    return {
        **os.environ,
        "IDGUARD_DATABASE_URL": url,
        "IDGUARD_SECRET_KEY": SECRET,
        "IDGUARD_TEMPLATE_KEYS": TEMPLATE_KEYS,
        "IDGUARD_DECLARATION_KEYS": SIGNING_KEYS,
        "IDGUARD_OFFLINE_KEYS": SIGNING_KEYS,
        "IDGUARD_LEDGER_KEYS": SIGNING_KEYS,
        "IDGUARD_DATA_KEYS": DATA_KEYS,
        "IDGUARD_ENV": "production",
        **extra,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, data, {"Content-Type": "application/json", **(headers or {})})
        r = conn.getresponse()
        raw = r.read()
        return r.status, json.loads(raw) if raw else None
    finally:
        conn.close()


@dataclass
class Server:
    port: int
    proc: subprocess.Popen[bytes]
    started_in: float  # seconds from spawn to the first healthy answer


@contextlib.contextmanager
def server(
    url: str,
    log_path: Path,
    *,
    app: str = "idguard.app:create_app",
    workers: int = 1,
    timeout: float = 300,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """`idguard serve` equivalent in its own process group; always terminated on the way out.

    `app` is a factory; bench/ is on the server's path, so `_bench_app:create` works too.
    `extra_env` adds to (or overrides) the server's environment."""
    port = free_port()
    env = server_env(url, IDGUARD_WORKERS=str(workers), **(extra_env or {}))
    cmd = [sys.executable, "-m", "uvicorn", "--factory", app, "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", str(workers), "--app-dir", str(BENCH_DIR)]
    with log_path.open("ab") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(  # noqa: S603 - our own argv, no shell
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}; see {log_path}")
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"server not ready after {timeout} s; see {log_path}")
            with contextlib.suppress(OSError):
                if http_json(port, "GET", "/api/v1/health")[0] == 200:
                    break
            time.sleep(0.05)
        yield Server(port, proc, time.perf_counter() - started)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
