"""`python -m bench.verify`: the command line; runs the parts it is asked for (see __init__)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from pathlib import Path

import sqlalchemy as sa

import bench.verify
from bench.harness import admin_engine, scratch_database, uptime
from bench.verify import blacklist, dates, http_load, index, inprocess_routes, journal, memory, propagation
from bench.verify.common import cached_demo


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.verify",
        description=bench.verify.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("IDGUARD_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument(
        "--parts", default="1,2,3,5,6", help="comma-separated parts to run (4 also with --memory)"
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
    parser.add_argument("--journal-rounds", type=int, default=3, help="part 6: interleaved rounds")
    parser.add_argument(
        "--journal-sqlite", action="store_true", help="part 6: also on a SQLite file (loads the demo)"
    )
    parser.add_argument(
        "--before-src",
        default=None,
        help="part 6: also serve this source tree (a `src` directory, e.g. the code before the journal)",
    )
    parser.add_argument(
        "--blacklist-persons", type=int, default=100_000, help="part 7: listed persons (two fingers each)"
    )
    args = parser.parse_args()
    parts = {int(p) for p in args.parts.split(",") if p}
    if args.memory:
        parts.add(4)

    print(
        f"bench/verify - {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, Python {sys.version.split()[0]}"
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
        if parts & {1, 2, 3, 5, 6}:
            template = f"idguard_bench_{args.citizens}"
            cached_demo(admin, args.postgres_url, template, args.citizens)
            with scratch_database(
                admin, args.postgres_url, f"idguard_bench_run_{os.getpid()}", template=template
            ) as url:
                if 1 in parts:
                    index.run(url, args.queries, reps=5)
                    dates.run()
                if 2 in parts:
                    http_load.run(url, args, workdir)
                if 3 in parts:
                    propagation.run(url, args.reports, workdir)
                if 5 in parts:
                    inprocess_routes.run(url, args.inprocess_rounds)
                if 6 in parts:
                    journal.run(url, args, workdir)
        if 4 in parts:
            memory.run(admin, args.postgres_url, args.memory_citizens, workdir)
        if 7 in parts:
            blacklist.run(workdir, args.blacklist_persons)
    admin.dispose()


if __name__ == "__main__":
    main()
