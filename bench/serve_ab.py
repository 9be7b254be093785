"""`idguard serve` from two source trees, side by side: this tree against another (e.g. the code
before a change, `git archive OLD src | tar -x -C /tmp/old`), single checks.

Both servers run at once on a copy of the cached demo database, each with its own journal, and
are loaded in turn by wrk (`-t1 -c16`), the order alternating from round to round, so a
neighbour's burst falls on both alike. Per round: requests/s, the server's CPU per request (all
threads, and the event loop's thread alone, from /proc), p99. Medians and the ratio at the end.

    .venv/bin/python -m bench.serve_ab --other /tmp/old/src [--rounds 6] [--duration 4] [--open RATE]

With `--open RATE` each round also loads both trees in an open loop at RATE requests/s (the
asyncio generator, latency from the scheduled send time: issue 14's p99 at 80 % of the peak), the
order alternating too, and prints p50/p99 per tree and their medians.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import tempfile
from pathlib import Path

from bench.floor import cpu_seconds, idguard_server
from bench.harness import free_port, note, table, uptime
from bench.verify.common import demo_arguments, demo_copy, onboard_bench_unit, query_mix
from bench.verify.loadgen import pyload, wrk
from idguard.core.clock import today_cst

HERE = str(Path(__file__).resolve().parent.parent / "src")


def run(args: argparse.Namespace, url: str, workdir: Path) -> None:
    key = onboard_bench_unit(url, f"BENCH-AB-{os.getpid()}")
    probes = query_mix(url, 4000, today_cst(dt.datetime.now(dt.UTC)), seed=17)
    bodies = [
        json.dumps({**p.body(), "operator": f"bench-teller-{i % 500}"}, ensure_ascii=False)
        for i, p in enumerate(probes)
    ]
    trees = {"this tree": HERE, "other": args.other}
    rows: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in trees}
    opened: dict[str, list[tuple[float, float, float, float, float]]] = {name: [] for name in trees}
    with contextlib.ExitStack() as stack:
        pids, ports = {}, {}
        for name, src in trees.items():
            where = workdir / name.replace(" ", "-")
            where.mkdir()
            ports[name] = free_port()
            pids[name] = stack.enter_context(idguard_server(url, ports[name], where, "auto", None, src))
        for name in trees:  # warm up: imports, caches, connections
            wrk(ports[name], "/api/v1/verify", bodies, key, connections=16, seconds=2, workdir=workdir)
        note(uptime())
        for r in range(args.rounds):
            for name in list(trees) if r % 2 == 0 else list(trees)[::-1]:
                pid = pids[name]
                cpu, loop = cpu_seconds(pid), cpu_seconds(pid, main_thread=True)
                load = wrk(
                    ports[name],
                    "/api/v1/verify",
                    bodies,
                    key,
                    connections=16,
                    seconds=args.duration,
                    workdir=workdir,
                )
                n = max(1, load.requests)
                rows[name].append(
                    (
                        load.rate,
                        (cpu_seconds(pid) - cpu) / n * 1e6,
                        (cpu_seconds(pid, main_thread=True) - loop) / n * 1e6,
                        load.p99_ms,
                    )
                )
            if args.open:
                for name in list(trees)[::-1] if r % 2 == 0 else list(trees):
                    pid = pids[name]
                    cpu = cpu_seconds(pid)
                    load = pyload(
                        ports[name],
                        "/api/v1/verify",
                        bodies,
                        key,
                        connections=64,
                        seconds=args.duration,
                        rate=args.open,
                        workdir=workdir,
                    )
                    n = max(1, load.requests)
                    opened[name].append(
                        (load.rate, load.p50_ms, load.p99_ms, load.max_ms, (cpu_seconds(pid) - cpu) / n * 1e6)
                    )
        note(uptime())
    table(
        f"POST /api/v1/verify, wrk -t1 -c16, {args.rounds} rounds of {args.duration:g} s, one worker each",
        ("tree", "round", "req/s", "CPU us/req", "loop thread us/req", "p99 ms"),
        [(name, i + 1, *row) for name in trees for i, row in enumerate(rows[name])],
    )
    median = {name: [statistics.median(row[k] for row in rows[name]) for k in range(3)] for name in trees}
    this, other = median["this tree"], median["other"]
    print(
        f"medians: this tree {this[0]:,.0f} req/s, {this[1]:.0f} us/req (loop {this[2]:.0f}); "
        f"other {other[0]:,.0f} req/s, {other[1]:.0f} us/req (loop {other[2]:.0f}); "
        f"req/s ratio {this[0] / other[0]:.2f}, CPU ratio {this[1] / other[1]:.2f}"
    )
    if args.open:
        table(
            f"open loop at {args.open:,.0f} req/s offered, {args.duration:g} s a run (64 connections)",
            ("tree", "round", "achieved/s", "p50 ms", "p99 ms", "max ms", "CPU us/req"),
            [(name, i + 1, *row) for name in trees for i, row in enumerate(opened[name])],
        )
        for name in trees:
            got = opened[name]
            print(
                f"open loop medians, {name}: p50 {statistics.median(r[1] for r in got):.2f} ms, "
                f"p99 {statistics.median(r[2] for r in got):.2f} ms, "
                f"CPU {statistics.median(r[4] for r in got):.0f} us/req"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--other", required=True, help="the other tree's `src` directory")
    demo_arguments(parser)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per load run")
    parser.add_argument("--open", type=float, default=None, help="also an open loop at this rate (req/s)")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="idguard-ab-") as tmp,
        demo_copy(args, "idguard_bench_ab") as url,
    ):
        run(args, url, Path(tmp))


if __name__ == "__main__":
    main()
