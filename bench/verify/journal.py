"""Part 6: the check log's journal, side by side. Servers that differ only in
IDGUARD_CHECKLOG_JOURNAL (and, with --before-src, a server running another source tree, e.g. the
code before the journal) serve the same 1000-item batches and single checks in interleaved
rounds, the order rotated every round; each run ends when the server has written its check log,
so the log's cost is in the run. On the PostgreSQL copy of the demo and, with --journal-sqlite,
on a SQLite file loaded with the same number of citizens (the single-node default).

Two measures: checks/s (wall clock: moves with the neighbours' load on a shared machine), and
the server process's CPU seconds per check, answered and written (user + system time of all its
threads from /proc, which a neighbour's burst barely moves). A server that is CPU-bound serves
1 / (CPU per check). Target: batch checks/s with the journal >= 90 % of without."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from bench.harness import met, note, server, settings_for, table
from bench.verify.common import onboard_bench_unit, query_mix
from bench.verify.http_load import drain_check_log
from bench.verify.loadgen import Load, peak
from idguard.core.clock import today_cst
from idguard.db import migrate
from idguard.db.engine import make_engine
from idguard.demo.load import load_demo

TARGET_JOURNAL_RATIO = 0.90
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process, all threads (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass
class Run:
    load: Load
    checks: int
    cpu: float  # server CPU seconds for the run and writing its checks

    @property
    def rate(self) -> float:
        return self.checks / self.load.seconds

    @property
    def us_per_check(self) -> float:
        return self.cpu / max(1, self.checks) * 1e6


def run(url: str, args: argparse.Namespace, workdir: Path) -> None:
    side_by_side(url, "PostgreSQL", args, workdir)
    if args.journal_sqlite:
        path = workdir / "part6-sqlite" / "idguard.db"
        path.parent.mkdir()
        sqlite_url = f"sqlite:///{path}"
        engine = make_engine(settings_for(sqlite_url))
        try:
            migrate.upgrade(engine)
            note(f"loading {args.citizens:,} demo citizens into a SQLite file ...")
            note(load_demo(engine, citizens=args.citizens, seed=1, now=dt.datetime.now(dt.UTC)).summary())
        finally:
            engine.dispose()
        side_by_side(sqlite_url, "SQLite", args, workdir)


def side_by_side(url: str, database: str, args: argparse.Namespace, workdir: Path) -> None:
    key = onboard_bench_unit(url, f"BENCH-JOURNAL-{database[:2].upper()}")
    today = today_cst(dt.datetime.now(dt.UTC))
    # Many tellers, as a bank's branches have: one operator sending thousands of distinct numbers
    # a minute is what harvesting detection throttles (verification/harvesting.py).
    bodies = [
        {**p.body(), "operator": f"bench-teller-{i % 500}"}
        for i, p in enumerate(query_mix(url, 20_000, today, seed=17))
    ]
    singles = [json.dumps(b, ensure_ascii=False) for b in bodies[:4000]]
    batches = [json.dumps({"items": bodies[i : i + 1000]}, ensure_ascii=False) for i in range(0, 8000, 1000)]
    journal_dir = workdir / f"part6-journal-{database}"
    variants: list[tuple[str, dict[str, str]]] = [
        ("journal off", {"IDGUARD_CHECKLOG_JOURNAL": "false"}),
        ("journal on", {"IDGUARD_CHECKLOG_JOURNAL": "true", "IDGUARD_CHECKLOG_DIR": str(journal_dir)}),
    ]
    if args.before_src:
        src = str(Path(args.before_src).resolve())
        path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
        variants.insert(0, (f"before ({args.before_src})", {"PYTHONPATH": path}))
    d = args.duration
    batch_runs: dict[str, list[Run]] = {name: [] for name, _ in variants}
    single_runs: dict[str, list[Run]] = {name: [] for name, _ in variants}
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(
                server(url, workdir / f"part6-{database}-{i}.log", app="_bench_app:create", extra_env=env)
            )
            for i, (_, env) in enumerate(variants)
        ]
        for srv in servers:  # warm up: imports, caches, connections
            peak(srv.port, "/api/v1/verify/batch", batches, key, connections=2, seconds=2, workdir=workdir)
            peak(srv.port, "/api/v1/verify", singles, key, connections=4, seconds=1, workdir=workdir)
            drain_check_log(srv.port)

        def measured(pid: int, port: int, path: str, bodies: list[str], connections: int, per: int) -> Run:
            started = cpu_seconds(pid)
            load = peak(port, path, bodies, key, connections=connections, seconds=d, workdir=workdir)
            drain_check_log(port)
            return Run(load, load.requests * per, cpu_seconds(pid) - started)

        order = list(range(len(variants)))
        for _ in range(args.journal_rounds):
            for i in order:
                name, srv = variants[i][0], servers[i]
                pid = srv.proc.pid
                batch_runs[name].append(
                    measured(pid, srv.port, "/api/v1/verify/batch", batches, args.batch_connections, 1000)
                )
                single_runs[name].append(
                    measured(pid, srv.port, "/api/v1/verify", singles, args.connections, 1)
                )
            order = order[1:] + order[:1]
    base = "journal off"

    def med(runs: list[Run], attr: str) -> float:
        return statistics.median(float(getattr(r, attr)) for r in runs)

    batch_rate = {name: med(runs, "rate") for name, runs in batch_runs.items()}
    batch_cpu = {name: med(runs, "us_per_check") for name, runs in batch_runs.items()}
    single_rate = {name: med(runs, "rate") for name, runs in single_runs.items()}
    single_cpu = {name: med(runs, "us_per_check") for name, runs in single_runs.items()}
    rows: list[tuple[object, ...]] = []
    for name, _ in variants:
        b, s = batch_runs[name], single_runs[name]
        rows.append(
            (
                name,
                ", ".join(f"{r.rate:,.0f}" for r in b),
                batch_rate[name],
                batch_cpu[name],
                batch_cpu[base] / batch_cpu[name],
                single_rate[name],
                single_cpu[name],
                single_cpu[base] / single_cpu[name],
                statistics.median(r.load.p50_ms for r in s),
                statistics.median(r.load.p99_ms for r in s),
                sum(r.load.bad for r in b + s),
            )
        )
    table(
        f"Part 6 - the check journal side by side on {database} ({args.journal_rounds} interleaved rounds of "
        f"{d:g} s; batch x1000 on {args.batch_connections} connections, single checks on {args.connections}; "
        "CPU = the server process's user + system time per check, answered and written; capacity = 1 / CPU)",
        (
            "server",
            "batch checks/s per round",
            "median",
            "CPU us/check",
            "capacity vs off",
            "single req/s",
            "CPU us/req",
            "capacity vs off",
            "p50 ms",
            "p99 ms",
            "bad",
        ),
        rows,
    )
    on = "journal on"
    wall, capacity = batch_rate[on] / batch_rate[base], batch_cpu[base] / batch_cpu[on]
    note(
        f"{database}: batch, journal on / off: checks/s {batch_rate[on]:,.0f} / {batch_rate[base]:,.0f} = {wall:.2f}, "
        f"capacity (1 / server CPU per check) {capacity:.2f}; target >= {TARGET_JOURNAL_RATIO:.2f}: "
        f"{met(min(wall, capacity) >= TARGET_JOURNAL_RATIO)}"
    )
    if args.before_src:
        before = variants[0][0]
        note(
            f"{database}: journal on / before: batch checks/s {batch_rate[on] / batch_rate[before]:.2f}, batch capacity "
            f"{batch_cpu[before] / batch_cpu[on]:.2f}; single req/s {single_rate[on] / single_rate[before]:.2f}, "
            f"single capacity {single_cpu[before] / single_cpu[on]:.2f}"
        )
