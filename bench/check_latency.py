"""Issue 14: where a single check's latency goes inside `idguard serve`, in an open loop.

`idguard serve` runs under bench/_traced_serve.py (timing probes around the check log, nothing
else changed) on a copy of the cached demo database; its closed-loop peak is measured with wrk
(`-t1 -c16`), then each rate (default 50 % and 80 % of that peak) is offered by the asyncio
generator (bench/verify/loadgen.py, latency from each request's scheduled send time), one fresh
server per rate. For each rate it prints the clients' p50/p99 and, from inside the server, the
distributions that make up a check's wait once it is read:

- `loop lag`: how late a 1 ms timer of the event loop fires (the loop was busy, or waited for
  the GIL);
- `kick -> round`: from the loop's kick at the end of the turn that appended a group to the
  journal thread's round starting (the thread woken, the GIL taken);
- `synced write`: the journal's O_DSYNC write (the disk, and the GIL taken back after it);
- `round -> settled`, `settled -> released`: the rest of the journal's round, then the loop
  running the answers' release;
- `gc gen N`: the garbage collector's pauses while serving.

The clients' latency runs from each request's scheduled time; it is also split in two legs:
scheduled -> written (a request waits for a free connection: with N connections and answers of L
seconds at most N / L requests a second are carried; or the generator waits for the CPU) and
written -> answer read (the server, the sockets and the generator reading).

    .venv/bin/python bench/check_latency.py [--rates 0.5,0.8] [--seconds 6] [--journal-dir DIR] [--src OLD/src]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench` as a package

from bench.floor import _process, cpu_seconds
from bench.harness import free_port, note, server_env, table, uptime
from bench.verify.common import demo_arguments, demo_copy, onboard_bench_unit, query_mix
from bench.verify.loadgen import pyload, wrk
from idguard.core.clock import today_cst

HERE = Path(__file__).resolve().parent
PARTS = (
    "loop lag",
    "kick -> round",
    "synced write",
    "round -> settled",
    "settled -> released",
    "gc gen 0",
    "gc gen 1",
    "gc gen 2",
)


def _quantiles(values: list[float]) -> tuple[int, float, float, float]:
    """n, p50, p99, max in milliseconds."""
    if not values:
        return 0, 0.0, 0.0, 0.0
    ordered = sorted(values)
    n = len(ordered)
    return n, ordered[n // 2] * 1e3, ordered[min(n - 1, int(n * 0.99))] * 1e3, ordered[-1] * 1e3


def serve(url: str, port: int, workdir: Path, journal: str | None, src: str | None, trace: Path) -> object:
    env = server_env(
        url,
        IDGUARD_CHECKLOG_DIR=str(Path(journal or workdir) / f"checklog-{port}"),
        IDGUARD_TRACE_OUT=str(trace),
    )
    if src is not None:  # another source tree (its probes must find the same names)
        env["PYTHONPATH"] = src
    cmd = [sys.executable, str(HERE / "_traced_serve.py"), "serve", "--port", str(port)]
    return _process(cmd, env, port, workdir / "idguard.log", "/api/v1/health")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="bench/check_latency.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo_arguments(parser)
    parser.add_argument("--rates", default="0.5,0.8", help="shares of the closed-loop peak to offer")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds of open loop per rate")
    parser.add_argument(
        "--journal-dir", default=None, help="the check log's journal (default: here, on disk)"
    )
    parser.add_argument("--src", default=None, help="serve another tree's `src` directory")
    parser.add_argument(
        "--connections", type=int, default=16, help="the open loop's connections (wrk's closed loop keeps 16)"
    )
    args = parser.parse_args()
    print(f"bench/check_latency - {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores")
    note(uptime())
    with (
        tempfile.TemporaryDirectory(prefix="idguard-lat-", dir=".") as tmp,
        demo_copy(args, "idguard_bench_lat") as url,
    ):
        workdir = Path(tmp)
        key = onboard_bench_unit(url, f"BENCH-LAT-{os.getpid()}")
        today = today_cst(dt.datetime.now(dt.UTC))
        bodies = [
            json.dumps({**p.body(), "operator": f"bench-teller-{i % 500}"}, ensure_ascii=False)
            for i, p in enumerate(query_mix(url, 4000, today, seed=17))
        ]
        peak = 0.0
        for share in [float(s) for s in args.rates.split(",")]:
            port = free_port()
            trace = workdir / f"trace-{port}.json"
            with serve(url, port, workdir, args.journal_dir, args.src, trace) as pid:  # type: ignore[attr-defined]
                wrk(port, "/api/v1/verify", bodies, key, connections=16, seconds=2, workdir=workdir)
                if not peak:
                    cpu, loop_cpu = cpu_seconds(pid), cpu_seconds(pid, main_thread=True)
                    runs = [
                        wrk(port, "/api/v1/verify", bodies, key, connections=16, seconds=4, workdir=workdir)
                    ]
                    runs += [
                        wrk(port, "/api/v1/verify", bodies, key, connections=16, seconds=4, workdir=workdir)
                    ]
                    peak = statistics.median(r.requests / r.seconds for r in runs)
                    checks = max(1, sum(r.requests for r in runs))
                    note(
                        f"closed-loop peak (wrk -t1 -c16, two runs of 4 s): {peak:,.0f} req/s; server CPU "
                        f"{(cpu_seconds(pid) - cpu) / checks * 1e6:.0f} us a check, of which the event loop's "
                        f"thread {(cpu_seconds(pid, main_thread=True) - loop_cpu) / checks * 1e6:.0f}"
                    )
                rate = share * peak
                cpu, loop_cpu = cpu_seconds(pid), cpu_seconds(pid, main_thread=True)
                load = pyload(
                    port,
                    "/api/v1/verify",
                    bodies,
                    key,
                    connections=args.connections,
                    seconds=args.seconds,
                    rate=rate,
                    workdir=workdir,
                )
                cpu = (cpu_seconds(pid) - cpu) / max(1, load.requests) * 1e6
                loop_cpu = (cpu_seconds(pid, main_thread=True) - loop_cpu) / max(1, load.requests) * 1e6
            parts = json.loads(trace.read_text(encoding="utf-8")) if trace.exists() else {}
            note(uptime())
            note(
                f"{share:.0%} of the peak: {rate:,.0f}/s offered, {load.requests / load.seconds:,.0f}/s achieved, "
                f"p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms, max {load.max_ms:.1f} ms, "
                f"{load.bad} bad, server CPU {cpu:.0f} us a check, of which the event loop's thread "
                f"{loop_cpu:.0f}"
            )
            note(
                f"the clients' latency in two legs: scheduled -> written p99 {load.wait_p99_ms:.2f} ms "
                f"(waiting for one of the {args.connections} connections, or for the generator's turn "
                f"on the CPU); written -> answer p50 {load.answer_p50_ms:.2f}, p99 {load.answer_p99_ms:.2f} ms"
            )
            table(
                f"inside the server at {share:.0%} of the peak (milliseconds)",
                ("part", "n", "p50", "p99", "max"),
                [(name, *_quantiles(parts.get(name, []))) for name in PARTS],
            )


if __name__ == "__main__":
    main()
