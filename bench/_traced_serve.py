"""`idguard serve` with timing probes, for bench/check_latency.py (issue 14): where a single
check's latency goes once it is in the server. Run as `python bench/_traced_serve.py serve
--port P`; at shutdown it writes a JSON report to $IDGUARD_TRACE_OUT.

Probes (wrapped around the check log's functions, nothing else changed):
- the event loop's lag: a 1 ms timer, each firing's lateness;
- each journal group's path: the loop's kick at the end of its turn -> the journal thread's
  round starting (`_sync`) -> the group settled (`Waiters.settle`) -> its answers released on
  the loop (`Waiters._release`);
- each synced write (`_write_synced`), and the garbage collector's pauses by generation.
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import json
import os
import sys
import time
from typing import Any

import uvicorn.server

from idguard.verification.runtime import checklog, journal

clock = time.perf_counter
events: dict[str, list[float]] = {"kick": [], "sync": [], "settle": [], "release": []}
lags: list[float] = []
writes: list[float] = []
pauses: list[tuple[int, float]] = []
_gc_started = [0.0]


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_started[0] = clock()
    else:
        pauses.append((info["generation"], clock() - _gc_started[0]))


def _stamped(owner: Any, name: str, key: str) -> None:
    real = getattr(owner, name)

    def stamped(*args: Any, **kwargs: Any) -> Any:
        events[key].append(clock())
        return real(*args, **kwargs)

    setattr(owner, name, stamped)


def _install() -> None:
    gc.callbacks.append(_on_gc)
    _stamped(checklog.CheckLog, "_kick", "kick")
    _stamped(checklog.CheckLog, "_sync", "sync")
    _stamped(journal.Waiters, "settle", "settle")
    _stamped(journal.Waiters, "_release", "release")
    real_write = journal._write_synced

    def timed_write(fd: int, data: bytes, offset: int) -> None:
        started = clock()
        real_write(fd, data, offset)
        writes.append(clock() - started)

    journal._write_synced = timed_write  # type: ignore[assignment]

    startup, shutdown = uvicorn.server.Server.startup, uvicorn.server.Server.shutdown

    async def traced_startup(self: Any, sockets: Any = None) -> None:
        await startup(self, sockets)
        loop = asyncio.get_running_loop()
        pauses.clear()  # the start-up's own collections (the index loaded) are not serving

        def tick(previous: float) -> None:
            now = clock()
            lags.append(now - previous - 0.001)
            loop.call_later(0.001, tick, now)

        loop.call_soon(tick, clock())

    async def traced_shutdown(self: Any, sockets: Any = None) -> None:
        report()
        await shutdown(self, sockets)

    uvicorn.server.Server.startup = traced_startup  # type: ignore[method-assign]
    uvicorn.server.Server.shutdown = traced_shutdown  # type: ignore[method-assign]


def _next(times: list[float], after: float) -> float | None:
    at = bisect.bisect_left(times, after)
    return times[at] if at < len(times) else None


def _groups() -> dict[str, list[float]]:
    """Each kicked group's three legs, matching every kick with the next round, settle and
    release after it (one group in flight at a time: the journal's own order)."""
    kicks, syncs, settles, releases = (sorted(events[k]) for k in ("kick", "sync", "settle", "release"))
    legs: dict[str, list[float]] = {"kick -> round": [], "round -> settled": [], "settled -> released": []}
    for kick in kicks:
        sync = _next(syncs, kick)
        settle = _next(settles, sync) if sync is not None else None
        release = _next(releases, settle) if settle is not None else None
        if release is None or sync is None or settle is None:
            continue
        legs["kick -> round"].append(sync - kick)
        legs["round -> settled"].append(settle - sync)
        legs["settled -> released"].append(release - settle)
    return legs


def report() -> None:
    out = os.environ.get("IDGUARD_TRACE_OUT")
    if not out:
        return
    data = {
        "loop lag": lags,
        "synced write": writes,
        **_groups(),
        **{f"gc gen {g}": [d for gen, d in pauses if gen == g] for g in (0, 1, 2)},
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(data, f)


if __name__ == "__main__":
    _install()
    from idguard.cli.main import app

    sys.argv[0] = "idguard"
    app()
