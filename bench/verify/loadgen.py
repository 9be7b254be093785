"""Load generation for part 2: wrk when installed (closed loop, peak), an asyncio client otherwise
and for the open-loop latency run (wrk2 is not available; wrk's latencies at peak suffer
coordinated omission, so the p99 target is measured open-loop with latency counted from the
scheduled send time).

Standard library only: `pyload` runs this file as a script in its own process (so the client
does not share the bench's GIL), `python loadgen.py SPEC.json`, which prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Load:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    bad: int  # non-2xx answers and socket errors
    offered: float = 0.0  # open loop: the scheduled rate
    client_cpu_us: float = 0.0  # the asyncio generator's own CPU per request (it shares the cores)
    # Open loop, the latency's two legs (`_generate`): scheduled -> written (a request waiting for
    # a free connection, or for the generator's own turn on the CPU), and written -> answer read.
    wait_p99_ms: float = 0.0
    answer_p50_ms: float = 0.0
    answer_p99_ms: float = 0.0

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
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(  # noqa: S603 - our own argv, no shell
        [sys.executable, __file__, str(spec)],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return Load(
        r["requests"],
        r["seconds"],
        r["p50_ms"],
        r["p99_ms"],
        r["max_ms"],
        r["bad"],
        rate or 0.0,
        cpu / max(1, r["requests"]) * 1e6,
        r.get("wait_p99_ms", 0.0),
        r.get("answer_p50_ms", 0.0),
        r.get("answer_p99_ms", 0.0),
    )


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
    waits: list[float] = []  # scheduled -> written
    answers: list[float] = []  # written -> answer read
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
                written = loop.time()
                writer.write(requests[i % len(requests)])
                i += 1
                response_head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", response_head)
                await reader.readexactly(int(length.group(1)) if length else 0)
                done = loop.time()
                if scheduled >= start + warmup:
                    latencies.append(done - scheduled)
                    waits.append(written - scheduled)
                    answers.append(done - written)
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
    waits.sort()
    answers.sort()
    if not latencies:
        return {"requests": 0, "seconds": 1.0, "p50_ms": 0, "p99_ms": 0, "max_ms": 0, "bad": stats["bad"]}
    return {
        "requests": stats["done"],
        "seconds": stats["last"] - (start + warmup),
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
        "max_ms": latencies[-1] * 1e3,
        "bad": stats["bad"],
        "wait_p99_ms": _p(waits, 0.99),
        "answer_p50_ms": _p(answers, 0.5),
        "answer_p99_ms": _p(answers, 0.99),
    }


def _p(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted seconds, in milliseconds."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    print(json.dumps(asyncio.run(_generate(spec))))


if __name__ == "__main__":
    main(sys.argv[1])
