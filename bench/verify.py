"""Networked verification: the index, the HTTP path, propagation between workers, memory.

Every figure is printed beside a baseline measured in the same run, on the same data, because
this machine's two cores are shared and absolute numbers move with the neighbours' load (each
part prints `uptime` too).

1. In-process: checks/s through the real `CardIndex.check` vs `CardIndex.bare_lookup` (the dict
   lookup alone) over the same prepared queries (a realistic mix: mostly valid cards, some
   invalid, some mismatches). Target >= 500,000 checks/s per core (one thread = one core).
2. HTTP on loopback: the real app (`_bench_app:create` = `create_app()` plus `POST /bench/noop`)
   under uvicorn in its own process(es) against a PostgreSQL copy of the demo population; the
   load generator in another process (wrk when installed, else an asyncio client). Single
   checks/s and latency vs the no-op route at the same worker count (target >= 80 % of no-op),
   p99 at a fixed 80 % of the measured peak with an open-loop generator (target <= 10 ms), and
   1000-item batches in checks/s (target >= 200,000).
3. Propagation: two server processes on two ports (each its own index, like two uvicorn
   workers); a loss report is committed through the service layer and both servers are polled
   with verify every ~1 ms until both answer `invalid`. Target p99 <= 100 ms.
4. Memory (`--memory`, slow the first time): index bytes per card with ~1,000,000 cards loaded
   in-process by `IndexFollower.load()` (target <= 200 bytes/card), and start-up time to a
   ready index, in-process and for a real server (baseline: the same server on an empty
   registry).

5. In-process: the verify routes called through the ASGI app in this process (no sockets, no
   server), measured in CPU seconds of the calling thread: a single check vs the no-op route, a
   1000-item batch per check vs `CardIndex.check` (the index's own cost), and the check log's
   write per check (which the server pays on the same core, beside the requests). What one
   core can serve follows: 1 / (batch route + log write) per check.

Databases: the demo population is loaded once into `idguard_bench_<citizens>` (a template,
reused while it holds that many persons); each run works on a copy made with CREATE DATABASE
... TEMPLATE and dropped at the end. Part 4 reuses `idguard_bench_1m` likewise.

    .venv/bin/python bench/verify.py [--parts 1,2,3,5] [--memory] [--citizens 100000]
        [--workers 1] [--duration 8] [--reports 200] [--postgres-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import gc
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from _bench_app import add_noop  # beside this file: the product app plus the no-op route
from idguard.app import create_app
from idguard.config import Environment, Settings
from idguard.core.clock import today_cst
from idguard.core.grants import Actor, Role
from idguard.core.idnumber import check_character
from idguard.db import migrate
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.demo.load import load_demo
from idguard.registry.lifecycle import CardStatus, LossReason
from idguard.registry.loss_reports import report_loss
from idguard.verification import units
from idguard.verification.index import CardIndex
from idguard.verification.runtime import follower as follower_module
from idguard.verification.runtime.follower import IndexFollower
from idguard.verification.runtime.keyring import KeyRing

BENCH_DIR = Path(__file__).resolve().parent
SECRET = "bench-secret-0123456789abcdef"  # noqa: S105 - signs nothing outside this bench
# Production mode needs template keys; a fixed bench-only key (it seals nothing real).
TEMPLATE_KEYS = "bench:" + base64.b64encode(bytes(range(32))).decode()
PURPOSE = "account_opening"
# Far above anything this bench can reach, so the limiter never answers 429 while we measure
# (the API caps rate_limit at 100,000/s, which a 1000-item batch run could exceed; the service
# layer does not).
RATE_LIMIT = 10_000_000
TARGET_CHECKS_PER_CORE = 500_000
TARGET_HTTP_RATIO = 0.80
TARGET_P99_MS = 10.0
TARGET_BATCH_CHECKS = 200_000
TARGET_PROPAGATION_P99_MS = 100.0
TARGET_BYTES_PER_CARD = 200
MEMORY_DATABASE = "idguard_bench_1m"
MEMORY_CARDS = 1_000_000


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
# Databases


def admin_engine(admin_url: str) -> sa.Engine:
    return sa.create_engine(
        sa.make_url(admin_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )


def database_url(admin_url: str, name: str) -> str:
    return sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def settings_for(url: str) -> Settings:
    return Settings(database_url=url, env=Environment.TEST, secret_key=SECRET)


def _count(url: str, table_name: str) -> int | None:
    engine = make_engine(settings_for(url))
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table_name}").scalar_one())  # noqa: S608 - constant
    except sa.exc.DBAPIError:
        return None
    finally:
        engine.dispose()


def cached_demo(admin: sa.Engine, admin_url: str, name: str, citizens: int) -> str:
    """The demo database `name` with `citizens` persons: reused if complete, else (re)loaded.

    The PostgreSQL load is one transaction, so a database holding the right number of persons
    is a complete one. A reused database is first migrated to the current schema (a no-op when
    it is already there), so the bench never serves a schema older than the code's."""
    url = database_url(admin_url, name)
    with admin.connect() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
    if exists and _count(url, "persons") == citizens:
        engine = make_engine(settings_for(url))
        try:
            migrate.upgrade(engine)
        finally:
            engine.dispose()
        note(f"reusing demo database {name} ({citizens:,} citizens, {_count(url, 'cards'):,} cards)")
        return url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine = make_engine(settings_for(url))
    try:
        migrate.upgrade(engine)
        note(f"loading {citizens:,} demo citizens into {name} (once; later runs reuse it) ...")
        note(load_demo(engine, citizens=citizens, seed=1, now=dt.datetime.now(dt.UTC)).summary())
    finally:
        engine.dispose()
    return url


@contextlib.contextmanager
def scratch_copy(admin: sa.Engine, admin_url: str, template: str, name: str) -> Iterator[str]:
    """A throw-away copy of `template` (parts 2 and 3 write loss reports and checks into it)."""
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield database_url(admin_url, name)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def onboard_bench_unit(url: str, code: str) -> str:
    engine = make_engine(settings_for(url))
    try:
        with make_sessionmaker(engine)() as session:
            issued = units.onboard(
                session,
                actor=None,
                now=dt.datetime.now(dt.UTC),
                secret_key=SECRET,
                code=code,
                name="bench bank",
                sector="bank",
                purposes=[PURPOSE],
                rate_limit=RATE_LIMIT,
            )
            session.commit()
            return issued.api_key
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------
# The query mix


@dataclass(frozen=True, slots=True)
class Probe:
    id_number: str
    name: str
    issued_on: dt.date
    expires_on: dt.date | None

    def body(self) -> dict[str, Any]:
        return {
            "id_number": self.id_number,
            "name": self.name,
            "issued_on": self.issued_on.isoformat(),
            "expires_on": self.expires_on.isoformat() if self.expires_on else None,
            "purpose": PURPOSE,
            "operator": "bench-teller",
        }


def query_mix(url: str, n: int, today: dt.date, seed: int = 7) -> list[Probe]:
    """n probes: 90 % cards valid today, 5 % invalid ones (reported, superseded, revoked,
    expired), 5 % mismatches (half a wrong name on a real number, half an unknown number)."""
    engine = make_engine(settings_for(url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT id_number, name, issued_on, expires_on, status FROM cards")
            ).all()
    finally:
        engine.dispose()
    valid = [
        r for r in rows if r.status == CardStatus.VALID and (r.expires_on is None or r.expires_on >= today)
    ]
    invalid = [
        r
        for r in rows
        if not (r.status == CardStatus.VALID and (r.expires_on is None or r.expires_on >= today))
    ]
    known = {r.id_number for r in rows}
    rng = random.Random(seed)
    probes = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.90:
            r = rng.choice(valid)
            probes.append(Probe(r.id_number, r.name, r.issued_on, r.expires_on))
        elif roll < 0.95:
            r = rng.choice(invalid)
            probes.append(Probe(r.id_number, r.name, r.issued_on, r.expires_on))
        elif roll < 0.975:
            r = rng.choice(valid)
            probes.append(Probe(r.id_number, r.name + "某", r.issued_on, r.expires_on))
        else:
            r = rng.choice(valid)
            probes.append(Probe(_unknown_number(r.id_number, known, rng), r.name, r.issued_on, r.expires_on))
    return probes


def _unknown_number(near: str, known: set[str], rng: random.Random) -> str:
    """A well-formed number (right check character) that no card carries."""
    while True:
        body = near[:14] + f"{rng.randrange(1000):03d}"
        number = body + check_character(body)
        if number not in known:
            return number


# ---------------------------------------------------------------------------------------------
# Part 1: in-process


def part1(url: str, queries: int, reps: int) -> None:
    engine = make_engine(settings_for(url))
    index = CardIndex()
    IndexFollower(make_sessionmaker(engine), index, KeyRing()).load()
    engine.dispose()
    today = today_cst(dt.datetime.now(dt.UTC))
    probes = query_mix(url, queries, today)

    def fresh() -> list[tuple[str, str, dt.date, dt.date | None]]:
        # New string objects each round, as parsed from a request: their hashes are not cached
        # yet, so both loops pay for hashing the number (and check for hashing the name).
        return [
            (p.id_number.encode().decode(), p.name.encode().decode(), p.issued_on, p.expires_on)
            for p in probes
        ]

    check, bare = index.check, index.bare_lookup

    def run_check(qs: list[tuple[str, str, dt.date, dt.date | None]]) -> float:
        start = time.perf_counter()
        for number, name, issued_on, expires_on in qs:
            check(number, name, issued_on, expires_on, today)
        return time.perf_counter() - start

    def run_bare(qs: list[tuple[str, str, dt.date, dt.date | None]]) -> float:
        start = time.perf_counter()
        for number, _name, _issued_on, _expires_on in qs:
            bare(number)
        return time.perf_counter() - start

    results = Counter(
        (r.value, s.value if s else "")
        for r, s in (check(p.id_number, p.name, p.issued_on, p.expires_on, today) for p in probes)
    )
    check_rates, bare_rates = [], []
    for _ in range(reps):  # interleaved, so a neighbour's burst hits both alike
        bare_rates.append(queries / run_bare(fresh()))
        check_rates.append(queries / run_check(fresh()))
    c_med, b_med = statistics.median(check_rates), statistics.median(bare_rates)
    c_best, b_best = max(check_rates), max(bare_rates)
    table(
        f"Part 1 - in-process checks/s, one core ({len(index):,} cards indexed, {queries:,} queries x {reps} rounds)",
        ("path", "median/s", "best/s", "ns/check (best)", "vs bare (median)"),
        [
            ("bare_lookup (baseline)", b_med, b_best, 1e9 / b_best, 1.0),
            ("CardIndex.check", c_med, c_best, 1e9 / c_best, c_med / b_med),
        ],
    )
    mix = ", ".join(f"{r}{'/' + s if s else ''} {n / queries:.1%}" for (r, s), n in sorted(results.items()))
    note(f"answers in the mix: {mix}")
    note(
        f"target >= {TARGET_CHECKS_PER_CORE:,} checks/s per core: {met(c_best >= TARGET_CHECKS_PER_CORE)} "
        f"(best {c_best:,.0f}, median {c_med:,.0f}; the bare lookup itself reaches {b_best:,.0f})"
    )


# ---------------------------------------------------------------------------------------------
# Servers


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
) -> Iterator[Server]:
    """`idguard serve` equivalent in its own process group; always terminated on the way out."""
    port = free_port()
    env = {
        **os.environ,
        "IDGUARD_DATABASE_URL": url,
        "IDGUARD_SECRET_KEY": SECRET,
        "IDGUARD_TEMPLATE_KEYS": TEMPLATE_KEYS,
        "IDGUARD_ENV": "production",
        "IDGUARD_WORKERS": str(workers),
    }
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


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def drain_check_log(port: int, timeout: float = 90) -> tuple[float, int]:
    """Wait until the server has written every answered check; (seconds waited, written)."""
    start = time.perf_counter()
    written = 0
    while time.perf_counter() - start < timeout:
        status, body = http_json(port, "GET", "/api/v1/health")
        log = body["extra"]["check_log"] if status == 200 else {"pending": 1, "written": 0}
        written = log["written"]
        if log["pending"] == 0:
            break
        time.sleep(0.1)
    return time.perf_counter() - start, written


# ---------------------------------------------------------------------------------------------
# Load generation: wrk when installed (closed loop, peak), an asyncio client otherwise and for
# the open-loop latency run (wrk2 is not available; wrk's latencies at peak suffer coordinated
# omission, so the p99 target is measured open-loop with latency counted from the scheduled
# send time).


@dataclass
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    bad: int  # non-2xx answers and socket errors
    offered: float = 0.0  # open loop: the scheduled rate

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def _lua(s: str) -> str:
    assert "]==]" not in s
    return "[==[" + s + "]==]"


def wrk(
    port: int, path: str, bodies: list[str], key: str, *, connections: int, seconds: float, workdir: Path
) -> Load:
    script = workdir / f"wrk-{abs(hash((path, len(bodies))))}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
        "local bodies = {\n" + ",\n".join(_lua(b) for b in bodies) + "\n}\n"
        "local n = #bodies\nlocal i = 0\n"
        "function request()\n  i = i % n + 1\n  return wrk.format(nil, nil, nil, bodies[i])\nend\n"
        "function done(summary, latency, requests)\n"
        "  local e = summary.errors\n"
        '  io.write(string.format("WRK %d %d %d %d %d %d %d\\n", summary.requests, summary.duration,\n'
        "    e.status, e.connect + e.read + e.write + e.timeout,\n"
        "    latency:percentile(50), latency:percentile(99), latency.max))\n"
        "end\n",
        encoding="utf-8",
    )
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
    ]
    out = subprocess.run(  # noqa: S603 - our own argv, no shell
        [*cmd, f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    match = re.search(r"^WRK (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$", out.stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"unexpected wrk output:\n{out.stdout}\n{out.stderr}")
    n, us, status, sock, p50, p99, mx = map(int, match.groups())
    return Load(n, us / 1e6, p50 / 1e3, p99 / 1e3, mx / 1e3, status + sock)


def pyload(
    port: int,
    path: str,
    bodies: list[str],
    key: str,
    *,
    connections: int,
    seconds: float,
    rate: float | None,
    workdir: Path,
) -> Load:
    """Run the asyncio generator below in its own process (so it does not share our GIL)."""
    spec = workdir / "load.json"
    spec.write_text(
        json.dumps(
            {
                "port": port,
                "path": path,
                "bodies": bodies,
                "key": key,
                "connections": connections,
                "seconds": seconds,
                "rate": rate,
            }
        ),
        encoding="utf-8",
    )
    out = subprocess.run(  # noqa: S603 - our own argv, no shell
        [sys.executable, __file__, "--loadgen", str(spec)],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=True,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return Load(r["requests"], r["seconds"], r["p50_ms"], r["p99_ms"], r["max_ms"], r["bad"], rate or 0.0)


def peak(
    port: int, path: str, bodies: list[str], key: str, *, connections: int, seconds: float, workdir: Path
) -> Load:
    if shutil.which("wrk"):
        return wrk(port, path, bodies, key, connections=connections, seconds=seconds, workdir=workdir)
    return pyload(
        port, path, bodies, key, connections=connections, seconds=seconds, rate=None, workdir=workdir
    )


async def _generate(spec: dict[str, Any]) -> dict[str, Any]:
    """Closed loop (rate None: every connection sends back to back) or open loop (requests are
    scheduled at a fixed rate whatever the answers do; latency runs from the scheduled time, so
    a stall shows up in the latencies instead of silently lowering the offered load). Raw
    HTTP/1.1 over keep-alive connections: a full client library would cost more CPU than the
    server under test."""
    loop = asyncio.get_running_loop()
    port, rate, seconds = spec["port"], spec["rate"], spec["seconds"]
    head = (
        f"POST {spec['path']} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {spec['key']}\r\n"
    )
    requests = [
        (head + f"Content-Length: {len(b.encode())}\r\n\r\n").encode() + b.encode() for b in spec["bodies"]
    ]
    warmup = min(1.0, seconds / 4)  # answers to requests scheduled in the first second are not counted
    latencies: list[float] = []
    stats = {"bad": 0, "done": 0, "last": 0.0}
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    start = loop.time() + 0.2
    end = start + seconds

    async def connection(offset: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = offset
        try:
            while True:
                if rate is None:
                    scheduled = loop.time()
                    if scheduled >= end:
                        return
                else:
                    got = await queue.get()
                    if got is None:
                        return
                    scheduled = got
                writer.write(requests[i % len(requests)])
                i += 1
                response_head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", response_head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                done = loop.time()
                if scheduled >= start + warmup:
                    latencies.append(done - scheduled)
                    stats["done"] += 1
                    stats["last"] = done
                    if not response_head.startswith(b"HTTP/1.1 2"):
                        stats["bad"] += 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(connection(i * 7919)) for i in range(spec["connections"])]
    if rate is not None:
        total, k = int(rate * seconds), 0
        while k < total:
            now = loop.time()
            while k < total and start + k / rate <= now:
                queue.put_nowait(start + k / rate)
                k += 1
            if k < total:
                await asyncio.sleep(max(0.0, start + k / rate - loop.time()))
        for _ in tasks:
            queue.put_nowait(None)
    else:
        await asyncio.sleep(max(0.0, end - loop.time()))
    await asyncio.gather(*tasks)
    latencies.sort()
    if not latencies:
        return {"requests": 0, "seconds": 1.0, "p50_ms": 0, "p99_ms": 0, "max_ms": 0, "bad": stats["bad"]}
    return {
        "requests": stats["done"],
        "seconds": stats["last"] - (start + warmup),
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
        "max_ms": latencies[-1] * 1e3,
        "bad": stats["bad"],
    }


# ---------------------------------------------------------------------------------------------
# Part 2: HTTP


def part2(url: str, args: argparse.Namespace, workdir: Path) -> None:
    key = onboard_bench_unit(url, "BENCH-HTTP")
    today = today_cst(dt.datetime.now(dt.UTC))
    probes = query_mix(url, 20_000, today, seed=11)
    singles = [json.dumps(p.body(), ensure_ascii=False) for p in probes[:4000]]
    batches = [
        json.dumps({"items": [p.body() for p in probes[i : i + 1000]]}, ensure_ascii=False)
        for i in range(0, 8000, 1000)
    ]
    d, conns = args.duration, args.connections
    with server(url, workdir / "part2-server.log", app="_bench_app:create", workers=args.workers) as srv:
        # Warm both routes (imports, caches, connection setup) before anything is measured.
        for path in ("/bench/noop", "/api/v1/verify"):
            peak(srv.port, path, singles, key, connections=conns, seconds=2, workdir=workdir)
        drain_check_log(srv.port)
        noop_runs: list[Load] = []
        verify_runs: list[Load] = []
        batch_runs: list[Load] = []
        drains: list[tuple[float, int, int]] = []  # (seconds, checks answered, written in total)
        for _ in range(args.rounds):  # interleaved rounds: a neighbour's burst hits every route
            noop_runs.append(
                peak(srv.port, "/bench/noop", singles, key, connections=conns, seconds=d, workdir=workdir)
            )
            verify_runs.append(
                peak(srv.port, "/api/v1/verify", singles, key, connections=conns, seconds=d, workdir=workdir)
            )
            drain_check_log(srv.port)
            batch = peak(
                srv.port,
                "/api/v1/verify/batch",
                batches,
                key,
                connections=args.batch_connections,
                seconds=d,
                workdir=workdir,
            )
            batch_runs.append(batch)
            waited, written = drain_check_log(srv.port)
            drains.append((waited, batch.requests * 1000, written))
        noop_rate = statistics.median(r.rate for r in noop_runs)
        verify_rate = statistics.median(r.rate for r in verify_runs)
        batch_rate = statistics.median(r.rate for r in batch_runs) * 1000
        # Same connection count as the peak runs: the 80 % is of the peak at that concurrency (more
        # connections means more requests in flight in the server, which changes its capacity).
        # Lower fractions too, to show where the latency turns: this generator is Python and
        # takes more of the shared CPU than wrk did at the peak.
        open_runs: list[tuple[str, Load]] = []
        for path, label, fraction in (
            ("/bench/noop", "no-op (baseline)", 0.8),
            ("/api/v1/verify", "verify", 0.5),
            ("/api/v1/verify", "verify", 0.65),
            ("/api/v1/verify", "verify", 0.8),
        ):
            drain_check_log(srv.port)
            run = pyload(
                srv.port,
                path,
                singles,
                key,
                connections=conns,
                seconds=d,
                rate=fraction * verify_rate,
                workdir=workdir,
            )
            open_runs.append((f"{label} at {fraction:.0%} of verify peak", run))
        open_noop, open_verify = open_runs[0][1], open_runs[-1][1]
        server_rss = rss_bytes(srv.proc.pid)

    tool = "wrk" if shutil.which("wrk") else "asyncio client"
    rows: list[tuple[object, ...]] = []
    for name, runs in (("no-op (baseline)", noop_runs), ("verify", verify_runs)):
        for i, r in enumerate(runs):
            rows.append((f"{name} #{i + 1}", r.rate, r.rate / noop_runs[i].rate, r.p50_ms, r.p99_ms, r.bad))
    for i, r in enumerate(batch_runs):
        rows.append(
            (
                f"batch x1000 #{i + 1}",
                r.rate * 1000,
                r.rate * 1000 / noop_runs[i].rate,
                r.p50_ms,
                r.p99_ms,
                r.bad,
            )
        )
    table(
        f"Part 2a - HTTP peak, closed loop ({tool}, {conns} connections, batch {args.batch_connections}; "
        f"{d:g} s per run; {args.workers} server worker(s); {len(probes):,}-query mix)",
        ("route", "req/s (batch: checks/s)", "vs no-op req/s", "p50 ms", "p99 ms", "bad"),
        rows,
    )
    note(
        f"verify / no-op (medians): {verify_rate:,.0f} / {noop_rate:,.0f} = {verify_rate / noop_rate:.2f}; "
        f"target >= {TARGET_HTTP_RATIO:.0%}: {met(verify_rate / noop_rate >= TARGET_HTTP_RATIO)}"
    )
    note(
        f"batch checks/s (median): {batch_rate:,.0f}; target >= {TARGET_BATCH_CHECKS:,}: "
        f"{met(batch_rate >= TARGET_BATCH_CHECKS)} ({batch_rate / TARGET_BATCH_CHECKS:.0%} of target)"
    )
    for i, (waited, answered, _written) in enumerate(drains):
        note(
            f"check log after batch run #{i + 1}: {answered:,} checks answered, backlog written {waited:.1f} s later"
        )
    table(
        f"Part 2b - latency at fixed rates, open loop (asyncio, {conns} connections, {d:g} s each, latency "
        "from the scheduled send time)",
        ("route and rate", "offered/s", "achieved/s", "p50 ms", "p99 ms", "max ms", "bad"),
        [(label, r.offered, r.rate, r.p50_ms, r.p99_ms, r.max_ms, r.bad) for label, r in open_runs],
    )
    note(
        f"verify p99 at 80 % of peak: {open_verify.p99_ms:.1f} ms (no-op at the same rate: {open_noop.p99_ms:.1f} ms); "
        f"target <= {TARGET_P99_MS:g} ms: {met(open_verify.p99_ms <= TARGET_P99_MS)}"
        + (
            f" - the server kept up with {open_verify.rate / open_verify.offered:.0%} of the offered rate only"
            if open_verify.rate < 0.98 * open_verify.offered
            else ""
        )
    )
    note(f"server RSS at the end: {server_rss / 2**20:,.0f} MiB")


# ---------------------------------------------------------------------------------------------
# Part 5: the verify handlers in-process (no sockets, no HTTP server)


class AsgiClient:
    """Calls the app as uvicorn would, minus the socket and the HTTP parsing: the cost of the
    route itself (routing, body parsing and validation, the handler, the response)."""

    def __init__(self, app: Any, key: str) -> None:
        self.app = app
        self.headers = [(b"content-type", b"application/json"), (b"authorization", f"Bearer {key}".encode())]
        self.loop = asyncio.new_event_loop()

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        return self.loop.run_until_complete(self._post(path, body))

    async def _post(self, path: str, body: bytes) -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [*self.headers, (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        status, chunks = 0, []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)

    def close(self) -> None:
        self.loop.close()


def part5(url: str, rounds: int) -> None:
    """CPU seconds of this (the serving) thread per check, so a neighbour's load counts less than
    in wall time; the check log is written between rounds and its CPU measured the same way."""
    key = onboard_bench_unit(url, "BENCH-INPROCESS")
    settings = Settings(database_url=url, env=Environment.TEST, secret_key=SECRET)
    app = add_noop(create_app(settings))
    verifier = app.state.verifier
    verifier.follower.load()  # the index and the keys, as the lifespan does (no threads started)
    today = today_cst(dt.datetime.now(dt.UTC))
    probes = query_mix(url, 8000, today, seed=13)
    batches = [
        json.dumps({"items": [p.body() for p in probes[i : i + 1000]]}, ensure_ascii=False).encode()
        for i in range(0, len(probes), 1000)
    ]
    singles = [json.dumps(p.body(), ensure_ascii=False).encode() for p in probes[:2000]]
    client = AsgiClient(app, key)
    check = verifier.index.check

    def cpu(fn: Any) -> float:
        started = time.thread_time()
        fn()
        return time.thread_time() - started

    def index_round() -> None:
        for p in probes:  # fresh strings, as parsed from a request (part 1 does the same)
            check(p.id_number.encode().decode(), p.name.encode().decode(), p.issued_on, p.expires_on, today)

    def requests(path: str, bodies: list[bytes]) -> None:
        for body in bodies:
            status, _ = client.post(path, body)
            assert status == 200, status

    def log_round() -> int:
        written = 0
        while verifier.log.pending:
            written += verifier.log.flush()
        return written

    status, answer = client.post("/api/v1/verify/batch", batches[0])  # warm up, and look once
    assert status == 200, answer[:300]
    assert len(json.loads(answer)["results"]) == 1000
    requests("/api/v1/verify", singles[:200])
    requests("/bench/noop", singles[:200])
    log_round()
    us: dict[str, list[float]] = {k: [] for k in ("index", "noop", "single", "batch", "log")}
    for _ in range(rounds):  # interleaved: a neighbour's burst hits every measure alike
        us["index"].append(cpu(index_round) / len(probes) * 1e6)
        us["noop"].append(cpu(lambda: requests("/bench/noop", singles)) / len(singles) * 1e6)
        us["single"].append(cpu(lambda: requests("/api/v1/verify", singles)) / len(singles) * 1e6)
        log_round()
        us["batch"].append(cpu(lambda: requests("/api/v1/verify/batch", batches)) / len(probes) * 1e6)
        started = time.thread_time()
        written = log_round()
        us["log"].append((time.thread_time() - started) / max(1, written) * 1e6)
    client.close()
    verifier.log.flush()
    app.state.engine.dispose()
    med = {k: statistics.median(v) for k, v in us.items()}
    table(
        f"Part 5 - the verify routes in-process, CPU of the serving thread (ASGI calls, no sockets; "
        f"{rounds} interleaved rounds, medians; {len(probes):,}-query mix)",
        ("measure", "us (CPU)", "per", "vs baseline", "baseline"),
        [
            ("CardIndex.check (baseline)", med["index"], "check", 1.0, "itself"),
            ("no-op route (baseline)", med["noop"], "request", 1.0, "itself"),
            (
                "POST /verify",
                med["single"],
                "request",
                med["noop"] / med["single"],
                "no-op rate / verify rate",
            ),
            (
                "POST /verify/batch x1000",
                med["batch"],
                "check",
                med["batch"] / med["index"],
                "x CardIndex.check",
            ),
            (
                "check log write (client side)",
                med["log"],
                "check",
                med["log"] / med["index"],
                "x CardIndex.check",
            ),
        ],
    )
    ceiling = 1e6 / (med["batch"] + med["log"])
    note(
        f"batch: {med['batch']:.2f} us/check in the route + {med['log']:.2f} us/check writing the log = one core "
        f"serves at most {ceiling:,.0f} checks/s (target {TARGET_BATCH_CHECKS:,} over HTTP); the index "
        f"check alone is {med['index']:.2f} us"
    )
    note(
        f"single check: the route costs {med['single']:.1f} us vs {med['noop']:.1f} us for the no-op "
        f"(rate ratio {med['noop'] / med['single']:.2f}; uvicorn's own per-request cost is not in either)"
    )


# ---------------------------------------------------------------------------------------------
# Part 3: propagation


def part3(url: str, reports: int, workdir: Path) -> None:
    key = onboard_bench_unit(url, "BENCH-PROPAGATION")
    engine = make_engine(settings_for(url))
    sessions = make_sessionmaker(engine)
    now = dt.datetime.now(dt.UTC)
    today = today_cst(now)
    with engine.connect() as conn:
        clerk_id, office = conn.execute(
            sa.text("SELECT id, office_code FROM staff WHERE username = 'clerk1'")
        ).one()
        # Cards a clerk may report at once: valid today, no registered fingerprints (those need an
        # on-site comparison), an adult holder reporting in person.
        cards = conn.execute(
            sa.text(
                "SELECT c.id, c.id_number, c.name, c.issued_on, c.expires_on FROM cards c"
                " JOIN persons p ON p.id = c.person_id"
                " WHERE c.status = 'valid' AND NOT c.fingerprints_registered AND NOT c.temporary"
                " AND (c.expires_on IS NULL OR c.expires_on > :today) AND p.revoked_reason IS NULL"
                " AND p.birth_date < :adult ORDER BY md5(c.id::text) LIMIT :n"
            ),
            {"today": today, "adult": today - dt.timedelta(days=366 * 19), "n": reports},
        ).all()
    clerk = Actor(staff_id=clerk_id, username="clerk1", role=Role.CLERK, office=office)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    propagation: list[float] = []
    per_server: list[list[float]] = [[], []]
    round_trips: list[float] = []
    commits: list[float] = []
    with (
        server(url, workdir / "part3-a.log") as a,
        server(url, workdir / "part3-b.log") as b,
    ):
        conns = [http.client.HTTPConnection("127.0.0.1", s.port, timeout=10) for s in (a, b)]

        def ask(conn: http.client.HTTPConnection, body: bytes) -> str:
            started = time.perf_counter()
            conn.request("POST", "/api/v1/verify", body, headers)
            result = str(json.loads(conn.getresponse().read())["result"])
            round_trips.append(time.perf_counter() - started)
            return result

        for card_id, number, name, issued_on, expires_on in cards:
            body = json.dumps(
                {
                    "id_number": number,
                    "name": name,
                    "issued_on": issued_on.isoformat(),
                    "expires_on": expires_on.isoformat() if expires_on else None,
                    "purpose": PURPOSE,
                    "operator": "bench",
                }
            ).encode()
            assert [ask(c, body) for c in conns] == ["valid", "valid"]
            started = time.perf_counter()
            with sessions() as session:
                report_loss(
                    session,
                    actor=clerk,
                    now=dt.datetime.now(dt.UTC),
                    card_id=str(card_id),
                    reason=LossReason.LOST,
                    office=office,
                    applicant_id_number=number,
                )
                session.commit()
            t0 = time.perf_counter()  # the report is committed: from here every check must say invalid
            commits.append(t0 - started)
            seen: list[float | None] = [None, None]
            tick = t0
            while None in seen and time.perf_counter() - t0 < 2.0:
                for j, conn in enumerate(conns):
                    if seen[j] is None and ask(conn, body) == "invalid":
                        seen[j] = time.perf_counter() - t0
                tick += 0.001  # poll every ~1 ms
                time.sleep(max(0.0, tick - time.perf_counter()))
            if None in seen:
                raise RuntimeError(
                    f"report not seen within 2 s by server(s) {[i for i, s in enumerate(seen) if s is None]}"
                )
            for j in (0, 1):
                per_server[j].append(seen[j] or 0.0)
            propagation.append(max(s or 0.0 for s in seen))
        for c in conns:
            c.close()
    engine.dispose()

    def pct(xs: list[float], p: float) -> float:
        s = sorted(xs)
        return s[min(len(s) - 1, int(len(s) * p))] * 1e3

    table(
        f"Part 3 - loss report to `invalid` on both of 2 server processes ({len(propagation)} reports; "
        f"each follower polls every {follower_module.POLL_INTERVAL * 1e3:g} ms; verify every ~1 ms)",
        ("measure", "p50 ms", "p99 ms", "max ms"),
        [
            (
                "verify round trip (floor)",
                pct(round_trips, 0.5),
                pct(round_trips, 0.99),
                pct(round_trips, 1.0),
            ),
            ("report_loss + commit", pct(commits, 0.5), pct(commits, 0.99), pct(commits, 1.0)),
            ("seen by server A", pct(per_server[0], 0.5), pct(per_server[0], 0.99), pct(per_server[0], 1.0)),
            ("seen by server B", pct(per_server[1], 0.5), pct(per_server[1], 0.99), pct(per_server[1], 1.0)),
            ("seen by both", pct(propagation, 0.5), pct(propagation, 0.99), pct(propagation, 1.0)),
        ],
    )
    p99 = pct(propagation, 0.99)
    note(
        f"p99 {p99:.1f} ms; target <= {TARGET_PROPAGATION_P99_MS:g} ms: {met(p99 <= TARGET_PROPAGATION_P99_MS)}"
    )


# ---------------------------------------------------------------------------------------------
# Part 4: memory and start-up


def index_bytes(index: CardIndex) -> int:
    """Every object the index owns: the dict, its keys, packed ints and tuples of them."""
    entries = index._entries  # measurement only
    total = sys.getsizeof(entries)
    for number, value in entries.items():
        total += sys.getsizeof(number)
        if isinstance(value, tuple):
            total += sys.getsizeof(value) + sum(sys.getsizeof(p) for p in value)
        else:
            total += sys.getsizeof(value)
    return total


def self_rss() -> int:
    return rss_bytes(os.getpid())


def part4(admin: sa.Engine, admin_url: str, citizens: int, workdir: Path) -> None:
    url = cached_demo(admin, admin_url, MEMORY_DATABASE, citizens)
    engine = make_engine(settings_for(url))
    sessions = make_sessionmaker(engine)

    def load() -> tuple[IndexFollower, float]:
        f = IndexFollower(sessions, CardIndex(), KeyRing())
        started = time.perf_counter()
        f.load()
        return f, time.perf_counter() - started

    # The timed load first, in a fresh process: its RSS delta is not flattered by arenas an
    # earlier load freed. tracemalloc then counts the same load exactly (it runs ~5x slower).
    gc.collect()
    rss0 = self_rss()
    follower, seconds = load()
    gc.collect()
    rss_delta = self_rss() - rss0
    cards = len(follower.index)
    owned = index_bytes(follower.index)
    del follower
    gc.collect()
    tracemalloc.start()
    traced, traced_seconds = load()
    gc.collect()
    current, peak_traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del traced
    engine.dispose()

    # A real server: spawn to healthy, and its RSS, against the 1M registry and an empty one.
    empty = "idguard_bench_empty"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{empty}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{empty}"')
    try:
        empty_engine = make_engine(settings_for(database_url(admin_url, empty)))
        migrate.upgrade(empty_engine)
        empty_engine.dispose()
        with server(database_url(admin_url, empty), workdir / "part4-empty.log") as s:
            empty_start, empty_rss = s.started_in, rss_bytes(s.proc.pid)
        with server(url, workdir / "part4-1m.log") as s:
            full_start, full_rss = s.started_in, rss_bytes(s.proc.pid)
            health = http_json(s.port, "GET", "/api/v1/health")[1]["extra"]["index"]
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{empty}" WITH (FORCE)')

    table(
        f"Part 4 - index memory and start-up ({cards:,} cards, {citizens:,} citizens)",
        ("measure", "bytes", "bytes/card", "seconds"),
        [
            ("objects the index owns (getsizeof walk)", owned, owned / cards, ""),
            ("tracemalloc around IndexFollower.load()", current, current / cards, traced_seconds),
            ("  peak during that load", peak_traced, peak_traced / cards, ""),
            ("process RSS delta around load()", rss_delta, rss_delta / cards, seconds),
            ("server on an empty registry (baseline)", empty_rss, "", empty_start),
            ("server on this registry", full_rss, (full_rss - empty_rss) / cards, full_start),
        ],
    )
    note(
        f"bytes/card (tracemalloc) {current / cards:.0f}; target <= {TARGET_BYTES_PER_CARD}: "
        f"{met(current / cards <= TARGET_BYTES_PER_CARD)}; RSS says {rss_delta / cards:.0f} in-process, "
        f"{(full_rss - empty_rss) / cards:.0f} in a server"
    )
    note(
        f"start-up to a ready index: {seconds:.1f} s in-process ({cards / seconds:,.0f} cards/s); server spawn "
        f"to healthy {full_start:.1f} s vs {empty_start:.1f} s empty (index load as the server logs it: "
        f"{health['loaded_in_seconds']:.1f} s, {health['cards']:,} cards)"
    )


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("IDGUARD_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument(
        "--parts", default="1,2,3,5", help="comma-separated parts to run (4 also with --memory)"
    )
    parser.add_argument(
        "--memory", action="store_true", help="run part 4 (first run loads ~1M cards: minutes)"
    )
    parser.add_argument("--citizens", type=int, default=100_000, help="demo population for parts 1-3")
    parser.add_argument(
        "--memory-citizens", type=int, default=400_000, help="population for part 4 (~2.5 cards each)"
    )
    parser.add_argument("--queries", type=int, default=200_000, help="part 1: queries per round")
    parser.add_argument("--rounds", type=int, default=2, help="part 2: interleaved no-op/verify/batch rounds")
    parser.add_argument("--duration", type=float, default=8.0, help="part 2: seconds per load run")
    parser.add_argument("--connections", type=int, default=16, help="part 2: connections for single checks")
    parser.add_argument("--batch-connections", type=int, default=4, help="part 2: connections for batches")
    parser.add_argument(
        "--workers", type=int, default=1, help="part 2: uvicorn workers (the no-op uses the same)"
    )
    parser.add_argument("--reports", type=int, default=200, help="part 3: loss reports")
    parser.add_argument("--inprocess-rounds", type=int, default=7, help="part 5: interleaved rounds")
    args = parser.parse_args()
    parts = {int(p) for p in args.parts.split(",") if p}
    if args.memory:
        parts.add(4)

    print(
        f"bench/verify.py - {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, Python {sys.version.split()[0]}"
    )
    print(f"  {uptime()}")
    admin = admin_engine(args.postgres_url)
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as exc:
        sys.exit(f"PostgreSQL unreachable at {args.postgres_url}: {type(exc.orig).__name__}")
    with tempfile.TemporaryDirectory(prefix="idguard-bench-") as tmp:
        workdir = Path(tmp)
        if parts & {1, 2, 3, 5}:
            template = f"idguard_bench_{args.citizens}"
            cached_demo(admin, args.postgres_url, template, args.citizens)
            with scratch_copy(admin, args.postgres_url, template, f"idguard_bench_run_{os.getpid()}") as url:
                if 1 in parts:
                    part1(url, args.queries, reps=5)
                if 2 in parts:
                    part2(url, args, workdir)
                if 3 in parts:
                    part3(url, args.reports, workdir)
                if 5 in parts:
                    part5(url, args.inprocess_rounds)
        if 4 in parts:
            part4(admin, args.postgres_url, args.memory_citizens, workdir)
    admin.dispose()


def _loadgen_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    print(json.dumps(asyncio.run(_generate(spec))))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--loadgen"]:
        _loadgen_main(sys.argv[2])
    else:
        main()
