"""Networked verification: the index, the HTTP path, propagation between workers, memory.

Every figure is printed beside a baseline measured in the same run, on the same data, because
this machine's two cores are shared and absolute numbers move with the neighbours' load (each
part prints `uptime` too).

1. In-process: checks/s through the real `CardIndex.check` vs `CardIndex.bare_lookup` (the dict
   lookup alone) over the same prepared queries (a realistic mix: mostly valid cards, some
   invalid, some mismatches). Target >= 500,000 checks/s per core (one thread = one core).
   [index.py]
2. HTTP on loopback: the real app (`_bench_app:create` = `create_app()` plus `POST /bench/noop`)
   under uvicorn in its own process(es) against a PostgreSQL copy of the demo population; the
   load generator in another process (wrk when installed, else an asyncio client). Single
   checks/s and latency vs the no-op route at the same worker count (target >= 80 % of no-op),
   p99 at a fixed 80 % of the measured peak with an open-loop generator (target <= 10 ms), and
   1000-item batches in checks/s (target >= 200,000). [http_load.py, loadgen.py]
3. Propagation: two server processes on two ports (each its own index, like two uvicorn
   workers); a loss report is committed through the service layer and both servers are polled
   with verify every ~1 ms until both answer `invalid`. Target p99 <= 100 ms. [propagation.py]
4. Memory (`--memory`, slow the first time): index bytes per card with ~1,000,000 cards loaded
   in-process by `IndexFollower.load()` (target <= 200 bytes/card), and start-up time to a
   ready index, in-process and for a real server (baseline: the same server on an empty
   registry). [memory.py]

5. In-process: the verify routes called through the ASGI app in this process (no sockets, no
   server), measured in CPU seconds of the calling thread: a single check vs the no-op route, a
   1000-item batch per check vs `CardIndex.check` (the index's own cost), and the check log's
   write per check (which the server pays on the same core, beside the requests). What one
   core can serve follows: 1 / (batch route + log write) per check. The route includes the check
   log's journal (each check's row formatted when appended and, with no journal thread here,
   each request's group synced by the route itself). [inprocess_routes.py]
6. The check log's journal side by side: servers differing only in IDGUARD_CHECKLOG_JOURNAL
   (plus, with `--before-src DIR`, one running another source tree, e.g. the code before the
   journal) serve the same batches and single checks in interleaved rounds. Target: batch
   checks/s with the journal >= 90 % of without. [journal.py]
7. A blacklist of N persons (`--blacklist-persons`, default 100,000) loads into a worker: the
   index with every card's flags vs without (baseline), and the blacklist gallery (two fingers
   a person opened and added to the 1:N gallery). Target <= 10 s. Not in the default parts (it
   builds its SQLite registries first: minutes). [blacklist.py]

Databases: the demo population is loaded once into `idguard_bench_<citizens>` (a template,
reused while it holds that many persons); each run works on a copy made with CREATE DATABASE
... TEMPLATE and dropped at the end. Part 4 reuses `idguard_bench_1m` likewise.

    .venv/bin/python -m bench.verify [--parts 1,2,3,5,6] [--memory] [--citizens 100000]
        [--workers 1] [--duration 8] [--reports 200] [--journal-rounds 3] [--before-src DIR]
        [--postgres-url URL]

from the repository root. Each part is a module of this package (named in brackets above);
common.py holds what the parts share, bench/harness.py what every bench script shares.
"""
