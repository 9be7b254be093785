"""Issue 14, in process: the CPU a single check costs in `idguard serve`'s HTTP protocol against
the bare floor's, with the network left out, so that the Python work of each can be weighed
(and profiled) on a loaded machine.

Both servers are driven alike, in this process, on uvloop: C connections (uvicorn protocol
objects over in-memory transports) each get one request, the loop runs until every answer is
written, and again, for the run's length. The floor is `_floor_app.app` under uvicorn's own
httptools protocol with its access log on; idguard is `idguard serve`'s app and protocol
(`GuardedHttpToolsProtocol`) for a PostgreSQL copy of the demo population, the journal and
every background thread running. Access lines go to a file. Figures: requests per CPU second,
CPU per request of the whole process (every thread) and of the loop's thread alone. The floor
and idguard run in alternating rounds. What `bench.floor` measures over loopback adds the
kernel's socket work to both sides alike.

    .venv/bin/python -m bench.protocol_cpu [--rounds 5] [--seconds 2] [--profile out.prof]

`--profile` writes a cProfile of idguard's loop thread over one extra run (cProfile's own cost
inflates the small calls: read it for where the time goes, not for how much).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import json
import logging
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvloop
from uvicorn.config import Config
from uvicorn.lifespan.on import LifespanOn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from bench import _floor_app
from bench.harness import (
    DATA_KEYS,
    SECRET,
    SIGNING_KEYS,
    TEMPLATE_KEYS,
    note,
    table,
    uptime,
)
from bench.verify.common import demo_arguments, demo_copy, onboard_bench_unit, query_mix
from idguard.core.clock import today_cst


class Transport(asyncio.Transport):
    """An in-memory connection: counts the answers written to it (each parsed by its length)."""

    def __init__(self, done: Callable[[], None]) -> None:
        super().__init__()
        self.buffer = b""
        self.answers = 0
        self.done = done
        self.closed = False

    def write(self, data: Any) -> None:
        self.buffer += bytes(data)
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            at = head.find(b"content-length: ")
            length = int(head[at + 16 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            if not head.startswith(b"http/1.1 200"):
                raise RuntimeError(f"not a 200 answer: {self.buffer[: end + 4 + length]!r}")
            self.buffer = self.buffer[end + 4 + length :]
            self.answers += 1
            self.done()

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return ("127.0.0.1", 50000)
        if name == "sockname":
            return ("127.0.0.1", 8000)
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


class Driver:
    """C connections of one server's protocol, each given one request at a time."""

    def __init__(self, make: Callable[[], asyncio.Protocol], requests: list[bytes], connections: int) -> None:
        self.requests = requests
        self.next = 0
        self.waiting = 0
        self.event = asyncio.Event()
        self.protocols: list[tuple[asyncio.Protocol, Transport]] = []
        self.threads: dict[str, float] = {}
        self.switches = 0  # the loop thread's voluntary context switches in the last run
        for _ in range(connections):
            protocol = make()
            transport = Transport(self._answered)
            protocol.connection_made(transport)
            self.protocols.append((protocol, transport))

    def _answered(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.event.set()

    async def run(self, seconds: float) -> tuple[int, float, float, float]:
        """Requests answered, wall, process CPU and loop-thread CPU seconds (and in
        `self.threads`, each thread's CPU seconds by its name)."""
        answered = 0
        threads = thread_cpu()
        switches = voluntary_switches()
        wall, cpu, thread = time.perf_counter(), time.process_time(), time.thread_time()
        end = wall + seconds
        while time.perf_counter() < end:
            self.event.clear()
            self.waiting = len(self.protocols)
            for protocol, _ in self.protocols:
                request = self.requests[self.next % len(self.requests)]
                self.next += 1
                protocol.data_received(request)
            await self.event.wait()
            answered += len(self.protocols)
        after = thread_cpu()
        self.threads = {name: after[name] - threads.get(name, 0.0) for name in after}
        self.switches = voluntary_switches() - switches
        return (
            answered,
            time.perf_counter() - wall,
            time.process_time() - cpu,
            time.thread_time() - thread,
        )


def voluntary_switches() -> int:
    """The loop's thread's voluntary context switches so far: each time it waited (for the GIL
    another thread held, or in a blocking call). A count, which a loaded machine does not move
    as it moves CPU times."""
    status = Path(f"/proc/self/task/{threading.get_native_id()}/status").read_text()
    found = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.MULTILINE)
    return int(found.group(1)) if found else 0


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each live Python thread of this process, by name (from /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        except (OSError, TypeError):
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[thread.name] = out.get(thread.name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _request(path: str, body: bytes, key: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _access_to(path: Path) -> None:
    """uvicorn's access lines into a file, as the wrk benches send a server's output."""
    stream = path.open("a", encoding="utf-8")
    for handler in logging.getLogger("uvicorn.access").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(stream)


@contextlib.contextmanager
def environment(url: str, journal: Path) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(
        IDGUARD_DATABASE_URL=url,
        IDGUARD_SECRET_KEY=SECRET,
        IDGUARD_TEMPLATE_KEYS=TEMPLATE_KEYS,
        IDGUARD_DECLARATION_KEYS=SIGNING_KEYS,
        IDGUARD_OFFLINE_KEYS=SIGNING_KEYS,
        IDGUARD_LEDGER_KEYS=SIGNING_KEYS,
        IDGUARD_DATA_KEYS=DATA_KEYS,
        IDGUARD_ENV="production",
        IDGUARD_CHECKLOG_DIR=str(journal),
    )
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


async def measure(args: argparse.Namespace, url: str, workdir: Path) -> None:
    from idguard.api.server import find_door, uvicorn_options

    key = onboard_bench_unit(url, f"BENCH-PCPU-{os.getpid()}")
    today = today_cst(dt.datetime.now(dt.UTC))
    bodies = [
        json.dumps({**p.body(), "operator": f"bench-teller-{i % 500}"}, ensure_ascii=False).encode()
        for i, p in enumerate(query_mix(url, 4000, today, seed=17))
    ]
    loop = asyncio.get_running_loop()
    state = ServerState()
    state.default_headers = [(b"date", b"Sat, 28 Nov 2026 20:00:00 GMT"), (b"server", b"uvicorn")]

    floor_config = Config(app=_floor_app.app, http="httptools", loop="uvloop", lifespan="off")
    floor_config.load()
    ours = Config("idguard.app:create_app", factory=True, **uvicorn_options("httptools"))
    ours.load()
    _access_to(workdir / "access.log")
    lifespan = LifespanOn(ours)
    await lifespan.startup()
    if lifespan.should_exit:
        raise RuntimeError("idguard's app did not start")
    try:
        floor = Driver(
            lambda: HttpToolsProtocol(floor_config, state, {}, loop),
            [_request("/", b, key) for b in bodies],
            args.connections,
        )
        verify = Driver(
            lambda: ours.http_protocol_class(ours, state, lifespan.state, loop),  # type: ignore[call-arg]
            [_request("/api/v1/verify", b, key) for b in bodies],
            args.connections,
        )
        for driver in (floor, verify):  # warm up: imports, caches, the door found
            await driver.run(1.0)
        runs: dict[str, list[tuple[int, float, float, float]]] = {"floor": [], "verify": []}
        by_thread: dict[str, list[float]] = {}
        found = find_door(ours.loaded_app)
        log = found[0].verifier.log if found is not None else None  # type: ignore[attr-defined]
        group_sizes: list[float] = []
        switches: dict[str, list[float]] = {"floor": [], "verify": []}  # per request
        for _ in range(args.rounds):
            for name, driver in (("floor", floor), ("verify", verify)):
                writes = log.journal_writes if log is not None else 0
                runs[name].append(await driver.run(args.seconds))
                switches[name].append(driver.switches / runs[name][-1][0])
                if name == "verify" and log is not None and log.journal_writes > writes:
                    group_sizes.append(runs[name][-1][0] / (log.journal_writes - writes))
            for thread, seconds in verify.threads.items():
                by_thread.setdefault(thread, []).append(seconds / runs["verify"][-1][0] * 1e6)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            await verify.run(args.seconds)
            profiler.disable()
            profiler.dump_stats(args.profile)
    finally:
        await lifespan.shutdown()

    def per(name: str, i: int) -> tuple[float, float, float]:
        n, wall, cpu, thread = runs[name][i]
        return n / wall, cpu / n * 1e6, thread / n * 1e6

    rows: list[tuple[object, ...]] = []
    for i in range(args.rounds):
        f, v = per("floor", i), per("verify", i)
        rows.append((f"round {i + 1}", f[0], v[0], v[0] / f[0], f[1], v[1], f[2], v[2], f[1] / v[1]))
    table(
        f"in-process, {args.connections} connections, {args.seconds:g} s a run (no sockets: the Python work)",
        (
            "run",
            "floor req/s",
            "verify req/s",
            "verify / floor",
            "floor CPU us",
            "verify CPU us",
            "floor loop us",
            "verify loop us",
            "floor / verify CPU",
        ),
        rows,
    )
    table(
        "idguard's threads: CPU per request (us, from /proc, 10 ms ticks), per round",
        ("thread", *(f"round {i + 1}" for i in range(args.rounds))),
        [(thread, *values) for thread, values in sorted(by_thread.items(), key=lambda kv: -sum(kv[1]))],
    )
    fc = statistics.median(per("floor", i)[1] for i in range(args.rounds))
    vc = statistics.median(per("verify", i)[1] for i in range(args.rounds))
    vl = statistics.median(per("verify", i)[2] for i in range(args.rounds))
    note(
        "the loop thread's voluntary context switches per request (waits for the GIL or in a "
        f"blocking call), per round: floor {', '.join(f'{x:.2f}' for x in switches['floor'])}; "
        f"verify {', '.join(f'{x:.2f}' for x in switches['verify'])}"
    )
    if group_sizes:
        note(
            f"checks per journal write (synced group), per round: {', '.join(f'{g:.1f}' for g in group_sizes)}"
        )
    note(
        f"medians: CPU per request floor {fc:.1f} us, verify {vc:.1f} us (loop thread {vl:.1f} us): "
        f"floor / verify {fc / vc:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.protocol_cpu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo_arguments(parser)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--journal-dir", default=None, help="the check log's journal (default: here, on disk)"
    )
    parser.add_argument("--switch-interval", type=float, default=None, help="sys.setswitchinterval (s)")
    parser.add_argument("--profile", default=None, help="write a cProfile of one more verify run here")
    args = parser.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    print(f"bench/protocol_cpu - {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores")
    print(f"  the GIL's switch interval: {sys.getswitchinterval() * 1000:g} ms")
    print(f"  {uptime()}")
    with (
        tempfile.TemporaryDirectory(prefix="idguard-pcpu-", dir=".") as tmp,
        demo_copy(args, "idguard_bench_pcpu") as url,
    ):
        journal = Path(args.journal_dir) if args.journal_dir else Path(tmp) / "checklog"
        with environment(url, journal):
            uvloop.run(measure(args, url, Path(tmp)))


if __name__ == "__main__":
    main()
