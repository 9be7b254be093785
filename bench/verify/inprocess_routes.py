"""Part 5: the verify routes called through the ASGI app in this process (no sockets, no server),
in CPU seconds of the calling thread, against the no-op route and `CardIndex.check`."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import statistics
import time
from typing import Any

from bench._bench_app import add_noop
from bench.harness import note, settings_for, table
from bench.verify.common import TARGET_BATCH_CHECKS, onboard_bench_unit, query_mix
from idguard.app import create_app
from idguard.core.clock import today_cst


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


def run(url: str, rounds: int) -> None:
    """CPU seconds of this (the serving) thread per check, so a neighbour's load counts less than
    in wall time; the check log is written between rounds and its CPU measured the same way."""
    key = onboard_bench_unit(url, "BENCH-INPROCESS")
    app = add_noop(create_app(settings_for(url)))
    verifier = app.state.verifier
    verifier.follower.load()  # the index and the keys, as the lifespan does (no threads started)
    today = today_cst(dt.datetime.now(dt.UTC))
    probes = query_mix(url, 8000, today, seed=13)
    # Many tellers, as a bank's branches have: one operator sending thousands of distinct numbers
    # a minute is what harvesting detection throttles (verification/harvesting.py), as part 6 says.
    bodies = [{**p.body(), "operator": f"bench-teller-{i % 500}"} for i, p in enumerate(probes)]
    batches = [
        json.dumps({"items": bodies[i : i + 1000]}, ensure_ascii=False).encode()
        for i in range(0, len(bodies), 1000)
    ]
    singles = [json.dumps(b, ensure_ascii=False).encode() for b in bodies[:2000]]
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
    verifier.log.stop()  # writes the rest and removes the journal
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
