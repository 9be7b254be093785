"""Issue 14: a single check over HTTP against the bare ASGI floor, side by side in one run.

The floor is the least any Python ASGI service can do per request: `_floor_app.app`, a bare
callable that reads the body and answers a constant ~100-byte JSON, under uvicorn with httptools
and uvloop, one worker, uvicorn's access log on. Against it, `idguard serve` (its default server,
one worker, its own masked access log) answering `POST /api/v1/verify` for a PostgreSQL copy of
the demo population. Both servers run at once and are loaded in turn (interleaved rounds, so a
neighbour's burst hits both alike); both write their access log to a file.

1. Closed-loop peak (wrk, `-t1 -c16`, 5 s a run): verify req/s / floor req/s, target >= 0.8.
2. Open loop at 80 % of verify's measured peak (asyncio generator in its own process, latency
   from the scheduled send time, so a stall is not hidden): p99 target <= 5 ms, the floor at the
   same rate beside it. The latency is also split in two legs: scheduled -> written (`wait`: a
   request waiting for a free connection, or the generator for the CPU) and written -> answer
   read (`answer`). With N connections and answers of L seconds the generator carries at most
   N / L requests a second: 16 connections and a check's ~1.7 ms (a synced journal write, or two)
   carry ~9,400/s, so near 80 % of verify's peak the requests queue in the generator for a
   connection; `--open-connections 128` offers the same rate on more.

    .venv/bin/python -m bench.floor [--rounds 3] [--duration 5] [--serve-http auto] [--open-connections N]

`--serve-http h11` serves idguard with uvicorn's pure-Python parser (as it was before issue 14);
`--floor-only-h11` is not offered: the floor is what the issue defines.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from bench.harness import (
    BENCH_DIR,
    free_port,
    met,
    note,
    server_env,
    table,
    uptime,
)
from bench.verify.common import demo_arguments, demo_copy, onboard_bench_unit, query_mix
from bench.verify.loadgen import Load, pyload, wrk
from idguard.core.clock import today_cst

TARGET_RATIO = 0.8
TARGET_P99_MS = 5.0


def cpu_seconds(pid: int, *, main_thread: bool = False) -> float:
    """User + system CPU of a process and all its threads so far (/proc/PID/stat), or with
    `main_thread` of its main thread alone (a server's event loop: /proc/PID/task/PID/stat)."""
    stat = Path(f"/proc/{pid}/task/{pid}/stat" if main_thread else f"/proc/{pid}/stat")
    fields = stat.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _process(cmd: list[str], env: dict[str, str], port: int, log: Path, ready: str) -> Iterator[int]:
    """A server process in its own group, ready once `ready` answers on `port`; stopped after."""
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own argv, no shell
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{cmd[:4]} not ready (exit {proc.returncode}):\n{tail}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
                s.sendall(f"GET {ready} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(12).startswith(b"HTTP/1.1 200"):
                    break
            time.sleep(0.1)
        yield proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def disk_sync(directory: Path, writes: int = 500, size: int = 256) -> tuple[float, float, float]:
    """The disk's floor under the journal: `writes` appends of `size` bytes (about a group of
    one check) to a file opened O_DSYNC in `directory`, as the journal writes them; p50, p99 and
    max in ms. A single check waits for at most the group being written and then its own."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f".sync-probe-{os.getpid()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_DSYNC, 0o600)
    samples = []
    try:
        payload = b"x" * size
        for _ in range(writes):
            started = time.perf_counter()
            os.write(fd, payload)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return statistics.median(samples), q[98], max(samples)


def journal_writes(port: int) -> float:
    """The server's synced journal writes so far (its /metrics; one worker)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found = re.search(r"^idguard_checklog_journal_writes_total ([0-9.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def floor_server(port: int, workdir: Path) -> contextlib.AbstractContextManager[int]:
    cmd = [sys.executable, "-m", "uvicorn", "_floor_app:app", "--app-dir", str(BENCH_DIR)]
    cmd += ["--http", "httptools", "--loop", "uvloop", "--host", "127.0.0.1", "--port", str(port)]
    return _process(cmd, dict(os.environ), port, workdir / "floor.log", "/")


def idguard_server(
    url: str, port: int, workdir: Path, http: str, journal: str | None, src: str | None = None
) -> contextlib.AbstractContextManager[int]:
    env = server_env(url, IDGUARD_CHECKLOG_DIR=journal or str(workdir / "checklog"))
    if src is not None:  # another source tree (e.g. the code before issue 14), `src` directory
        env["PYTHONPATH"] = src
    cmd = [sys.executable, "-c", "from idguard.cli.main import app; app()", "serve", "--port", str(port)]
    if http != "auto":
        cmd += ["--http", http]
    return _process(cmd, env, port, workdir / "idguard.log", "/api/v1/health")


def run(args: argparse.Namespace, url: str, workdir: Path) -> None:
    key = onboard_bench_unit(url, f"BENCH-FLOOR-{os.getpid()}")
    probes = query_mix(url, 4000, today_cst(dt.datetime.now(dt.UTC)), seed=17)
    # Many tellers, as a bank's branches have (one operator with thousands of numbers a minute is
    # throttled as harvesting: verification/harvesting.py).
    bodies = [
        json.dumps({**p.body(), "operator": f"bench-teller-{i % 500}"}, ensure_ascii=False)
        for i, p in enumerate(probes)
    ]
    d, conns = args.duration, args.connections
    open_conns = args.open_connections or conns
    floor_port, idguard_port = free_port(), free_port()
    targets = (("floor", floor_port, "/"), ("verify", idguard_port, "/api/v1/verify"))
    with (
        floor_server(floor_port, workdir) as floor_pid,
        idguard_server(
            url, idguard_port, workdir, args.serve_http, args.journal_dir, args.serve_src
        ) as idguard_pid,
    ):
        pids = {"floor": floor_pid, "verify": idguard_pid}
        for _, port, path in targets:  # warm up: imports, caches, connections
            wrk(port, path, bodies, key, connections=conns, seconds=2, workdir=workdir)
        peaks: dict[str, list[Load]] = {"floor": [], "verify": []}
        cpu_us: dict[str, list[float]] = {"floor": [], "verify": []}  # server CPU per request
        per_write: list[float] = []  # verify's checks per synced journal write, per round
        for _ in range(args.rounds):
            for name, port, path in targets:
                before = cpu_seconds(pids[name])
                writes = journal_writes(idguard_port) if name == "verify" else 0.0
                load = wrk(port, path, bodies, key, connections=conns, seconds=d, workdir=workdir)
                cpu_us[name].append((cpu_seconds(pids[name]) - before) / max(1, load.requests) * 1e6)
                peaks[name].append(load)
                if name == "verify":
                    per_write.append(load.requests / max(1.0, journal_writes(idguard_port) - writes))
        verify_peak = statistics.median(r.rate for r in peaks["verify"])
        rate = 0.8 * verify_peak
        journal_dir = Path(args.journal_dir) if args.journal_dir else workdir / "checklog"
        syncs = [disk_sync(journal_dir)]
        open_runs: list[tuple[str, Load]] = []
        open_cpu: list[float] = []  # the server's CPU per request in the open loop
        for name, port, path in targets:
            before = cpu_seconds(pids[name])
            load = pyload(
                port, path, bodies, key, connections=open_conns, seconds=d, rate=rate, workdir=workdir
            )
            open_cpu.append((cpu_seconds(pids[name]) - before) / max(1, load.requests) * 1e6)
            open_runs.append((name, load))
        syncs.append(disk_sync(journal_dir))
    floor_rate = statistics.median(r.rate for r in peaks["floor"])
    rows: list[tuple[object, ...]] = []
    for i in range(args.rounds):
        f, v = peaks["floor"][i], peaks["verify"][i]
        fc, vc = cpu_us["floor"][i], cpu_us["verify"][i]
        rows.append(
            (
                f"round {i + 1}",
                f.rate,
                v.rate,
                v.rate / f.rate,
                fc,
                vc,
                fc / vc,
                f.p99_ms,
                v.p99_ms,
                f.bad + v.bad,
            )
        )
    table(
        f"1 - closed-loop peak (wrk -t1 -c{conns}, {d:g} s a run; floor: uvicorn+httptools+uvloop, access "
        f"log on; idguard serve --http {args.serve_http}, one worker)",
        (
            "run",
            "floor req/s",
            "verify req/s",
            "verify / floor",
            "floor CPU us/req",
            "verify CPU us/req",
            "floor / verify CPU",
            "floor p99 ms",
            "verify p99 ms",
            "bad",
        ),
        rows,
    )
    note(f"verify's checks per synced journal write, per round: {', '.join(f'{g:.1f}' for g in per_write)}")
    ratio = verify_peak / floor_rate
    cpu_ratio = statistics.median(cpu_us["floor"]) / statistics.median(cpu_us["verify"])
    note(
        f"medians: verify {verify_peak:,.0f} / floor {floor_rate:,.0f} req/s = {ratio:.2f}; "
        f"target >= {TARGET_RATIO}: {met(ratio >= TARGET_RATIO)}"
    )
    note(
        f"server CPU per request (all threads; what a loaded machine distorts least): floor "
        f"{statistics.median(cpu_us['floor']):.0f} us, verify {statistics.median(cpu_us['verify']):.0f} us: "
        f"ratio {cpu_ratio:.2f}"
    )
    table(
        f"2 - open loop at 80 % of verify's peak ({rate:,.0f}/s offered, {open_conns} connections, {d:g} s)",
        (
            "server",
            "offered/s",
            "achieved/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "wait p99",
            "answer p50",
            "answer p99",
            "bad",
            "server CPU us/req",
            "generator CPU us/req",
        ),
        [
            (
                name,
                r.offered,
                r.rate,
                r.p50_ms,
                r.p99_ms,
                r.max_ms,
                r.wait_p99_ms,
                r.answer_p50_ms,
                r.answer_p99_ms,
                r.bad,
                cpu,
                r.client_cpu_us,
            )
            for (name, r), cpu in zip(open_runs, open_cpu, strict=True)
        ]
        + [
            (
                f"disk: one O_DSYNC append ({when} the open loop)",
                "",
                "",
                p50,
                p99,
                top,
                "",
                "",
                "",
                "",
                "",
                "",
            )
            for when, (p50, p99, top) in zip(("before", "after"), syncs, strict=True)
        ],
    )
    p99 = open_runs[1][1].p99_ms
    sync_p99 = max(s[1] for s in syncs)
    note(
        f"verify p99 at 80 % of its peak: {p99:.2f} ms; target <= {TARGET_P99_MS:g} ms: {met(p99 <= TARGET_P99_MS)}"
    )
    note(
        "wait: scheduled -> written (a request waiting for a free connection, or the generator for the "
        "CPU); answer: written -> answer read"
    )
    note(
        f"the journal's disk: one synced append p99 {sync_p99:.2f} ms; a check waits for the group being "
        f"written and then its own, so up to ~{2 * sync_p99:.1f} ms of verify's p99 is the disk's"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.floor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo_arguments(parser)
    parser.add_argument(
        "--template", default=None, help="copy this existing database instead of the cached demo"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--open-connections",
        type=int,
        default=0,
        help="the open loop's connections (default: --connections); with N connections and answers "
        "of L seconds the generator carries at most N / L requests a second",
    )
    parser.add_argument(
        "--serve-http", default="auto", help="`idguard serve --http` (auto: its default; h11: as before)"
    )
    parser.add_argument(
        "--serve-src", default=None, help="serve idguard from this `src` directory (e.g. the code before)"
    )
    parser.add_argument(
        "--journal-dir",
        default=None,
        help="the check log's journal (default: on this disk, in the run's directory; /dev/shm/... "
        "leaves out the disk's sync latency, to see the CPU's share alone)",
    )
    parser.add_argument(
        "--sync-only",
        action="store_true",
        help="only the disk's floor: synced appends in the journal's directory (--journal-dir, "
        "default a temporary directory here), p50/p99/max",
    )
    args = parser.parse_args()
    print(f"bench/floor - {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores")
    print(f"  {uptime()}")
    if args.sync_only:
        with tempfile.TemporaryDirectory(prefix="idguard-floor-", dir=".") as tmp:
            where = Path(args.journal_dir) if args.journal_dir else Path(tmp)
            p50, p99, top = disk_sync(where, writes=2000)
        table(
            f"one O_DSYNC append of 256 bytes in {where} (2,000 in a row)",
            ("p50 ms", "p99 ms", "max ms"),
            [(p50, p99, top)],
        )
        return
    with (
        tempfile.TemporaryDirectory(prefix="idguard-floor-") as tmp,
        demo_copy(args, "idguard_bench_floor", args.template) as url,
    ):
        run(args, url, Path(tmp))


if __name__ == "__main__":
    main()
