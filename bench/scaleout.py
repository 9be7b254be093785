"""Scale-out on NATS JetStream (issue 15): verifier nodes as real processes, side by side in one run.

No database: the bench plays the relay. It writes a snapshot of a synthetic registry to the
object store, publishes the units' keys, beats on {P}.head, and publishes card events itself, so
what is measured is the nodes and JetStream (the relay's database read is the follower's, measured
in bench/verify). Every part prints its baseline beside it; this machine's two cores are shared.

1. batch   Batch checks/s on one node with every check durable in JetStream (acknowledged before
           the answer) vs the same node with the check stream disabled (the ceiling), rounds
           interleaved (the order alternating). Target: >= 200,000 checks/s, and >= 0.8 of the
           ceiling. Also the node's CPU per check (from /proc: the shared cores blur wall time,
           less so CPU time) and the HTTP client's, which runs on the same cores: wrk by default
           (a few hundredths of a microsecond a check), `--client httpx` the Python client
           (about one microsecond a check, taken from the node's cores); nats-server's CPU per
           check (it shares the cores) and the check stream's bytes per check. `--old-src DIR`
           runs a second pair of nodes from another source tree (`DIR` holding `idguard/`, e.g.
           `git archive HEAD src | tar -x -C /tmp/old`, then `--old-src /tmp/old/src`) in the
           same rounds: before and after side by side.
2. propagation  3 nodes; a card event (a loss report) published, then `wait_for_nodes` until all
           3 have applied it: p50/p99 from the publish's acknowledgement to applied on all
           (target p99 <= 10 ms), and the report's latency with the wait vs without it.
3. index   Bytes per card of the compact index at --cards (default 10,000,000) synthetic cards,
           and a node's cold start from a snapshot of that size (process start to healthy with
           every card; target <= 5 s), beside the in-process restore alone.
4. kill    A node under batch load killed with kill -9: the checks acknowledged to clients vs
           those in the stream (target: 0 acknowledged checks missing).
5. check   In-process check cost (CPU time): CompactIndex.check vs CardIndex.check on the same
           1,000,000 cards and queries, with the index's own strings and with new ones (as a
           request brings them: no hash cached). With `--old-src DIR`, that tree's CompactIndex
           too, in its own process, before this tree's rounds and after them.
6. lease   The node's lease (read-your-write under a partial partition): the relay's beats are
           leases, every 50 ms (lease / 5) where they were every 100 ms; idle nodes of both side
           by side in the same windows: node CPU per second, messages per second, the relay's
           loop CPU.

    .venv/bin/python bench/scaleout.py [--parts batch,propagation,index,kill,check,lease]
        [--cards 10000000] [--seconds 5] [--rounds 3] [--clients 4] [--connections 1]
        [--client wrk|httpx] [--node-workers 1] [--old-src DIR]
        [--lease-nodes 2] [--nats nats://127.0.0.1:4222]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np

from idguard.config import Environment, Settings
from idguard.registry.lifecycle import CardStatus
from idguard.scaleout import propagation, streams
from idguard.scaleout.compact import CompactIndex, Hasher
from idguard.scaleout.relay import index_key
from idguard.verification.index import CardFacts, CardIndex, pack
from idguard.verification.rules import new_api_key
from idguard.verification.runtime.keyring import UnitView

SECRET = "bench-secret-0123456789abcdef"  # noqa: S105 - signs nothing outside the benches
TODAY = dt.date(2026, 11, 28)
LOW = (1 << 45) - 1
LEASE_MS = Settings.model_fields["propagation_wait_ms"].default  # the nodes' default lease


def uptime() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time so far of a process (its threads included) and of its live
    children (a node's workers under `--workers`)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if stat.parent.name == str(pid) or fields[1] == str(pid):  # itself, or its parent is pid
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def nats_server_pid() -> int | None:
    """The local nats-server's pid (its CPU is read from /proc, as the node's), if one runs here."""
    for comm in Path("/proc").glob("[0-9]*/comm"):
        with contextlib.suppress(OSError):
            if comm.read_text().strip() == "nats-server":
                return int(comm.parent.name)
    return None


def settings_for(nats: str) -> Settings:
    return Settings(
        env=Environment.TEST, secret_key=SECRET, nats_url=nats, nats_prefix=f"bench{secrets.token_hex(4)}"
    )


def population(n: int) -> list[CardFacts]:
    rng = random.Random(15)
    cards = []
    for i in range(n):
        number = f"{11010519800000000 + i * 13:017d}"
        status = CardStatus.VALID if rng.random() < 0.9 else CardStatus.REPORTED_LOST
        cards.append(
            CardFacts(number + "0", f"姓名{i}", dt.date(2016, 6, 15), dt.date(2036, 6, 15), f"C{i}", status)
        )
    return cards


class Deployment:
    """The bench as the relay: streams, snapshot, units, beats, card events; node processes."""

    def __init__(self, settings: Settings, *, beat_seconds: float = LEASE_MS / 1000 / 5) -> None:
        self.settings = settings
        self.beat_seconds = beat_seconds  # as the relay: a beat every lease / 5
        self.names = streams.names(settings)
        self.key, prefix, digest = new_api_key()
        self.keys: streams.Keys = [(prefix, digest, "BENCH", None)]
        self.units = [
            UnitView("BENCH", "bench bank", frozenset({"account_opening"}), 1_000_000_000, True, None)
        ]
        self.seq = 0
        self.nodes: list[subprocess.Popen[bytes]] = []
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.nc: Any = self.run(streams.connect(settings, name="idguard-bench"))
        self.js = self.nc.jetstream()
        self.run(streams.ensure_streams(self.js, self.names))
        # As the relay: leases for the nodes, acknowledgements for the writers (scaleout/relay.py).
        self.lease_requests = 0
        self._beating = True
        asyncio.run_coroutine_threadsafe(self._beat(), self.loop)
        self.run(self.nc.subscribe(self.names.core("lease"), cb=self._on_lease))
        self.run(self.nc.subscribe(self.names.core("required"), cb=self._on_required))

    def run(self, coro: Any, timeout: float = 600) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _beat(self) -> None:
        while self._beating:
            await self.nc.publish(self.names.core("head"), json.dumps(self._grant()).encode())
            await asyncio.sleep(self.beat_seconds)

    def _grant(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "known": self.seq,
            "lease_ms": LEASE_MS,
            "relay": "bench",
            "at": time.monotonic(),
        }

    async def _on_lease(self, msg: Any) -> None:
        self.lease_requests += 1
        await msg.respond(json.dumps(self._grant()).encode())

    async def _on_required(self, msg: Any) -> None:
        # (the bench publishes a card event before it waits for it: acknowledged at once)
        await msg.respond(json.dumps({"lease_ms": LEASE_MS, "seq": self.seq}).encode())

    def snapshot(self, index: CompactIndex) -> int:
        extra = {"stream_seq": 0, "units": json.loads(streams.encode_units(1, self.keys, self.units))}
        blob = index.dump(self.seq, extra)

        async def put() -> None:
            store = await self.js.object_store(self.names.snapshots)
            await store.put(streams.INDEX_OBJECT, blob, meta=streams.snapshot_meta())

        self.run(put())
        return len(blob)

    def publish_card(self, card: CardFacts, hasher: Hasher) -> float:
        """Publish one card event; returns when JetStream acknowledged it (monotonic)."""
        self.seq += 1
        low = pack(card) & LOW
        data = streams.encode_card(
            self.seq, card.id_number, low, hasher.name(card.name), hasher.chip(card.chip_serial), None
        )
        self.run(self.js.publish(self.names.card_subject, data, headers={"Nats-Msg-Id": f"c{self.seq}"}))
        return time.monotonic()

    def start_node(
        self,
        port: int,
        *,
        stream: bool = True,
        workers: int = 1,
        env_extra: dict[str, str] | None = None,
        src: str | None = None,
    ) -> str:
        """A node process on `port`; `src`: a directory holding another `idguard` package, run
        instead of this one (put first on its path)."""
        env = {
            **(env_extra or {}),
            **os.environ,
            "IDGUARD_NATS_URL": self.settings.nats_url or "",
            "IDGUARD_NATS_PREFIX": self.settings.nats_prefix,
            "IDGUARD_SECRET_KEY": SECRET,
            "IDGUARD_ENV": "test",
            "IDGUARD_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/nothing",
        }
        if not stream:
            env["IDGUARD_BENCH_NODE_NO_CHECK_STREAM"] = "1"
        if src is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        idguard = Path(sys.executable).parent / "idguard"
        self.nodes.append(
            subprocess.Popen(  # noqa: S603
                [str(idguard), "verifier", "--port", str(port), "--workers", str(workers)], env=env
            )
        )
        return f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self._beating = False
        for p in self.nodes:
            if p.poll() is None:
                p.terminate()
                p.wait(10)
        self.run(streams.delete_all(self.js, self.names))
        self.run(self.nc.close())


def wait_healthy(url: str, cards: int, timeout: float = 120) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            h = httpx.get(url + "/api/v1/health", timeout=1).json()
            if h["status"] == "ok" and h["index"]["cards"] >= cards:
                return time.monotonic() - started
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    raise RuntimeError(f"node {url} not healthy after {timeout} s")


def batch_body(cards: list[CardFacts], n: int = 1000) -> bytes:
    rng = random.Random(7)
    items = []
    for card in rng.sample(cards, n):
        items.append(
            {
                "id_number": card.id_number,
                "name": card.name if rng.random() < 0.97 else "别人",
                "issued_on": card.issued_on.isoformat(),
                "expires_on": card.expires_on.isoformat() if card.expires_on else None,
                "purpose": "account_opening",
                "operator": "teller-1",
            }
        )
    return json.dumps({"items": items}).encode()


async def _load(
    url: str,
    key: str,
    body: bytes,
    seconds: float,
    clients: int,
    ids: list[str] | None,
    connections: int = 1,
) -> tuple[int, int]:
    """Post the batch from `clients` client objects with `connections` requests in flight each,
    for `seconds`: (checks answered 200, errors)."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    done = errors = 0
    per_request = len(json.loads(body)["items"])
    end = time.monotonic() + seconds

    async def client() -> None:
        async with httpx.AsyncClient(timeout=10) as c:
            await asyncio.gather(*(post(c) for _ in range(connections)))

    async def post(c: httpx.AsyncClient) -> None:
        nonlocal done, errors
        while time.monotonic() < end:
            try:
                r = await c.post(url + "/api/v1/verify/batch", content=body, headers=headers)
            except httpx.HTTPError:
                errors += 1
                await asyncio.sleep(0.05)
                continue
            if r.status_code == 200:
                if ids is None:  # the client's own JSON parsing would cost more than the node
                    done += per_request
                    continue
                results = r.json()["results"]
                done += len(results)
                ids.extend(x["check_id"] for x in results)
            else:
                errors += 1

    await asyncio.gather(*(client() for _ in range(clients)))
    return done, errors


def _children_cpu() -> float:
    """CPU time of the bench's waited-for children (wrk runs), user and system."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _batch_round(
    args: argparse.Namespace, url: str, key: str, body: bytes, workdir: Path
) -> tuple[int, int, float]:
    """One round of batch load on `url` for --seconds: (checks answered 200, errors, the
    client's CPU seconds). wrk (C, one thread, --clients x --connections connections) unless
    --client httpx or wrk is not installed: the client shares the two cores with the node and
    NATS, and httpx costs about a microsecond of CPU a check, wrk a few hundredths."""
    per_request = len(json.loads(body)["items"])
    if args.client == "wrk" and shutil.which("wrk"):
        from bench.verify.loadgen import wrk  # (main() puts the repository on the path)

        before = _children_cpu()
        load = wrk(
            int(url.rsplit(":", 1)[1]),
            "/api/v1/verify/batch",
            [body.decode()],
            key,
            connections=args.clients * args.connections,
            seconds=args.seconds,
            workdir=workdir,
        )
        # (wrk's own duration, not ours: its start-up is not load)
        done = max(0, load.requests - load.bad) * per_request
        return done, load.bad, (_children_cpu() - before) / load.seconds * args.seconds
    own = time.process_time()
    done, errors = asyncio.run(_load(url, key, body, args.seconds, args.clients, None, args.connections))
    return done, errors, time.process_time() - own


def part_batch(args: argparse.Namespace) -> None:
    client = "wrk" if args.client == "wrk" and shutil.which("wrk") else "httpx"
    print(
        f"\n== 1. batch checks/s on one node ({args.node_workers} worker(s)), durable check stream vs "
        f"disabled; client {client}, {args.clients * args.connections} connections (load {uptime()})"
    )
    d = Deployment(settings_for(args.nats))
    try:
        cards = population(200_000)
        index = CompactIndex(index_key(d.settings))
        index.load(cards)
        d.snapshot(index)
        # (name, durable, source tree): this tree's pair, and with --old-src the other's
        kinds: list[tuple[str, bool, str | None]] = [("durable", True, None), ("disabled", False, None)]
        if args.old_src:
            kinds += [("old durable", True, args.old_src), ("old disabled", False, args.old_src)]
        urls, pids = {}, {}
        for j, (name, stream, src) in enumerate(kinds):
            urls[name] = d.start_node(8301 + j, stream=stream, workers=args.node_workers, src=src)
            pids[name] = d.nodes[-1].pid
        for url in urls.values():
            for _ in range(8 * args.node_workers):  # a request reaches any worker: ask each a few times
                wait_healthy(url, len(cards))
        body = batch_body(cards)
        names = [name for name, _, _ in kinds]
        rates: dict[str, list[float]] = {name: [] for name in names}
        server_us: dict[str, list[float]] = {name: [] for name in names}
        nats_us: dict[str, list[float]] = {name: [] for name in names}
        stream_bytes: dict[str, list[float]] = {name: [] for name in names}
        client_us: list[float] = []
        nats_pid = nats_server_pid()

        async def stored() -> int:
            return int((await d.js.stream_info(d.names.checks_stream)).state.bytes or 0)

        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                # the order turns and alternates from round to round (none always runs first)
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order if r % 2 == 0 else order[::-1]:
                    pid = pids[name]
                    node_cpu, nats_cpu = cpu_seconds(pid), cpu_seconds(nats_pid) if nats_pid else 0.0
                    before, started = d.run(stored()), time.monotonic()
                    done, errors, own = _batch_round(args, urls[name], d.key, body, Path(tmp))
                    rates[name].append(done / (time.monotonic() - started))
                    server_us[name].append((cpu_seconds(pid) - node_cpu) / max(done, 1) * 1e6)
                    if nats_pid:
                        nats_us[name].append((cpu_seconds(nats_pid) - nats_cpu) / max(done, 1) * 1e6)
                    stream_bytes[name].append((d.run(stored()) - before) / max(done, 1))
                    client_us.append(own / max(done, 1) * 1e6)
                    print(
                        f"   {name:12s} {rates[name][-1]:>10,.0f} checks/s  node CPU {server_us[name][-1]:.2f} us/check"
                        f"  nats-server {nats_us[name][-1] if nats_pid else float('nan'):.2f} us/check"
                        f"  stream {stream_bytes[name][-1]:.1f} B/check  client CPU {client_us[-1]:.2f} us/check"
                        f"  (errors {errors}, load {uptime()})"
                    )
        med = statistics.median
        for prefix in ("", "old ") if args.old_src else ("",):
            dur, cap = med(rates[prefix + "durable"]), med(rates[prefix + "disabled"])
            label = "old tree" if prefix else "this tree"
            print(
                f"   {label}, median: durable {dur:,.0f} checks/s, disabled {cap:,.0f} checks/s, ratio {dur / cap:.2f}; "
                f"node CPU per check durable {med(server_us[prefix + 'durable']):.2f} us, disabled "
                f"{med(server_us[prefix + 'disabled']):.2f} us (one core at that cost: "
                f"{1e6 / med(server_us[prefix + 'durable']):,.0f} checks/s); nats-server "
                + (f"{med(nats_us[prefix + 'durable']):.2f} us" if nats_pid else "not local")
                + f" a durable check; {med(stream_bytes[prefix + 'durable']):.1f} stream bytes a check"
            )
        print(f"   the HTTP client: {med(client_us):.2f} us of CPU per check on the same cores")
    finally:
        d.close()


def part_propagation(args: argparse.Namespace) -> None:
    print(f"\n== 2. propagation to 3 nodes: publish ack -> applied on all (load {uptime()})")
    d = Deployment(settings_for(args.nats))
    try:
        cards = population(10_000)
        index = CompactIndex(index_key(d.settings))
        index.load(cards)
        d.snapshot(index)
        urls = [d.start_node(port) for port in (8311, 8312, 8313)]
        for url in urls:
            wait_healthy(url, len(cards))
        hasher = Hasher(index_key(d.settings))
        without, with_wait, spread_ms, confirmed = [], [], [], []
        propagation.watch_for(d.settings)  # the writer's listener, opened once per process
        for i in range(args.reports):
            card = cards[i]
            lost = CardFacts(
                card.id_number,
                card.name,
                card.issued_on,
                card.expires_on,
                card.chip_serial,
                CardStatus.REPORTED_LOST,
            )
            t0 = time.monotonic()
            acked = d.publish_card(lost, hasher)
            without.append((acked - t0) * 1000)
            answer = propagation.wait_for_nodes(d.settings, d.seq, 0.25)
            done = time.monotonic()
            with_wait.append((done - t0) * 1000)
            spread_ms.append((done - acked) * 1000)
            confirmed.append(answer["confirmed"] == 3 and answer["nodes"] == 3)
            time.sleep(0.01)

        def p(xs: list[float], q: float) -> float:
            return float(np.percentile(xs, q))

        print(f"   reports: {len(spread_ms)}, all 3 confirmed in {sum(confirmed)}")
        print(f"   ack -> applied on all 3: p50 {p(spread_ms, 50):.2f} ms, p99 {p(spread_ms, 99):.2f} ms")
        print(f"   report latency without the wait: p50 {p(without, 50):.2f} ms, p99 {p(without, 99):.2f} ms")
        print(
            f"   report latency with the wait:    p50 {p(with_wait, 50):.2f} ms, p99 {p(with_wait, 99):.2f} ms"
        )
    finally:
        d.close()


def part_lease(args: argparse.Namespace) -> None:
    """The cost of the node's lease (docs/scaling.md, "The node's cut-off"): the relay's beats are
    the leases, one every lease / 5 (50 ms at the default 250 ms) where they were one every
    100 ms, and a node asks for a lease (and reads the relay's clock) every 2 s. Two deployments
    side by side in the same windows, `--lease-nodes` idle nodes each: one beating every 50 ms,
    one every 100 ms (the former rate; its nodes still hold leases, 2.5 beats to a lease). Node
    CPU per second (from /proc, 10 ms ticks: long windows), beats and lease requests per second,
    and the relay's side (the bench's loop thread, which beats and answers as the relay does)."""
    print(f"\n== 6. lease cost: idle nodes, beats every 50 ms vs 100 ms, same windows (load {uptime()})")
    kinds = {"50 ms": 0.05, "100 ms": 0.1}
    deployments = {k: Deployment(settings_for(args.nats), beat_seconds=b) for k, b in kinds.items()}

    async def loop_cpu() -> float:
        return time.thread_time()

    try:
        each = max(1, args.lease_nodes)
        urls: dict[str, list[str]] = {}
        for j, (kind, d) in enumerate(deployments.items()):
            index = CompactIndex(index_key(d.settings))
            index.load(population(1000))
            d.snapshot(index)
            urls[kind] = [d.start_node(8321 + 20 * j + i) for i in range(each)]
        pids = {}
        for kind, d in deployments.items():
            for url, p in zip(urls[kind], d.nodes, strict=True):
                wait_healthy(url, 0, timeout=180)
                pids[url] = p.pid
        time.sleep(1.0)  # past start-up work
        rows = []
        for r in range(args.rounds):
            load = uptime()
            before = {url: cpu_seconds(pid) for url, pid in pids.items()}
            asked = {k: d.lease_requests for k, d in deployments.items()}
            loops = {k: d.run(loop_cpu()) for k, d in deployments.items()}
            t0 = time.monotonic()
            time.sleep(args.seconds)
            elapsed = time.monotonic() - t0
            loops = {k: (d.run(loop_cpu()) - loops[k]) / elapsed * 1000 for k, d in deployments.items()}
            used = {url: (cpu_seconds(pid) - before[url]) / elapsed * 1000 for url, pid in pids.items()}
            row = {
                k: (
                    statistics.mean(used[u] for u in urls[k]),
                    (d.lease_requests - asked[k]) / elapsed / each,
                    loops[k],
                )
                for k, d in deployments.items()
            }
            rows.append(row)
            print(
                f"   round {r + 1} (load {load}): "
                + "; ".join(
                    f"beats every {k}: node CPU {v[0]:.2f} ms/s, {v[1]:.2f} lease requests/s a node, "
                    f"relay loop {v[2]:.2f} ms/s"
                    for k, v in row.items()
                )
            )
        for k, b in kinds.items():
            med = [statistics.median(row[k][i] for row in rows) for i in range(3)]
            print(
                f"   median, beats every {k}: node CPU {med[0]:.2f} ms/s; messages a node receives "
                f"{1 / b:.0f} beats/s + {med[1]:.2f} lease replies/s (and sends {med[1]:.2f} requests/s "
                f"+ 5 announcements/s); relay loop {med[2]:.2f} ms/s for {1 / b:.0f} beats/s"
            )
    finally:
        for d in deployments.values():
            d.close()


def synthetic_index(key: bytes, n: int) -> CompactIndex:
    rng = np.random.default_rng(10)
    h = np.unique(rng.integers(0, 2**64, size=n, dtype=np.uint64))  # keyed hashes: uniform
    while len(h) < n:  # (a repeat among 10 M draws of 64 bits: about one run in 400 thousand)
        h = np.unique(np.concatenate([h, rng.integers(0, 2**64, size=n - len(h), dtype=np.uint64)]))
    low = rng.integers(0, 1 << 45, n, dtype=np.uint64) & ~np.uint64(7)
    name = rng.integers(0, 2**63, n, dtype=np.uint64)
    chip = rng.integers(0, 2**32, n, dtype=np.uint32)
    return CompactIndex.from_arrays(key, h, low, name, chip)


def part_index(args: argparse.Namespace) -> None:
    n = args.cards
    print(f"\n== 3. compact index: bytes per card at {n:,} cards, cold start from snapshot (load {uptime()})")
    d = Deployment(settings_for(args.nats))
    try:
        key = index_key(d.settings)
        started = time.monotonic()
        index = synthetic_index(key, n)
        print(
            f"   built in {time.monotonic() - started:.1f} s; arrays {index.nbytes() / n:.1f} bytes/card (limit 32)"
        )
        size = d.snapshot(index)
        print(f"   snapshot {size / 1e6:,.0f} MB in the object store")
        blob = index.dump(0, {"stream_seq": 0, "units": json.loads(streams.encode_units(1, d.keys, d.units))})
        started = time.monotonic()
        CompactIndex.restore(key, blob)
        print(f"   in-process restore of the blob alone: {time.monotonic() - started:.3f} s")
        del blob, index
        url = d.start_node(8321)
        cold = wait_healthy(url, n, timeout=300)
        print(f"   node process: start to healthy with {n:,} cards: {cold:.2f} s (target <= 5 s)")
        h = httpx.get(url + "/api/v1/health").json()
        print(
            f"   node says: loaded_in {h['index']['loaded_in_seconds']} s, of which the snapshot's fetch "
            f"and restore {h['index']['snapshot_seconds']} s (load {uptime()})"
        )
        rss = Path(f"/proc/{d.nodes[-1].pid}/status").read_text().split("VmRSS:")[1].split("\n")[0].strip()
        print(f"   node resident memory: {rss}")
    finally:
        d.close()


async def _stream_check_ids(d: Deployment) -> set[str]:
    """The check ids in the check stream, as the sink reads its messages."""
    from sqlalchemy import create_engine

    from idguard.scaleout.sink import Sink

    sink = Sink(d.settings, create_engine("sqlite://"))  # its reader only
    sub = await d.js.pull_subscribe(
        d.names.checks_subject, durable=f"{d.names.prefix}_count", stream=d.names.checks_stream
    )
    found: set[str] = set()
    while True:
        try:
            msgs = await sub.fetch(500, timeout=1)
        except Exception:  # drained
            return found
        for m in msgs:
            lines, _, _ = sink.decode_all(m.data, (m.headers or {}).get("Idg-Salt", "00"))
            found.update(line.split("\t", 1)[0] for line in lines)
            await m.ack()


def part_kill(args: argparse.Namespace) -> None:
    print(f"\n== 4. kill -9 of a node under batch load: acknowledged checks vs the stream (load {uptime()})")
    d = Deployment(settings_for(args.nats))
    try:
        cards = population(50_000)
        index = CompactIndex(index_key(d.settings))
        index.load(cards)
        d.snapshot(index)
        url = d.start_node(8331)
        wait_healthy(url, len(cards))
        body = batch_body(cards)
        acked: list[str] = []
        node = d.nodes[-1]
        threading.Timer(args.seconds / 2, lambda: node.send_signal(signal.SIGKILL)).start()
        _done, _errors = asyncio.run(_load(url, d.key, body, args.seconds, 4, acked))
        node.wait(10)
        in_stream = d.run(_stream_check_ids(d))
        missing = len(set(acked) - in_stream)
        print(
            f"   acknowledged {len(acked):,} checks before the kill; in the stream {len(in_stream):,}; "
            f"acknowledged but missing: {missing}"
        )
    finally:
        d.close()


Query = tuple[str, str, dt.date, dt.date | None]


def _check_queries(cards: list[CardFacts]) -> tuple[list[Query], list[Query]]:
    """part_check's queries: 200,000 of the cards and 20,000 unknown numbers, once as the index's
    own string objects and once as new ones, as a request brings them (no hash computed yet; the
    index's own strings carry theirs, and equal the dict's keys by identity)."""
    rng = random.Random(3)
    same = [(c.id_number, c.name, c.issued_on, c.expires_on) for c in rng.sample(cards, 200_000)]
    same += [(f"{11010519800000000 + i * 13 + 1:017d}0", "无", TODAY, None) for i in range(20_000)]
    fresh = [(n.encode().decode(), nm.encode().decode(), i, e) for n, nm, i, e in same]
    return same, fresh


def _compact_fresh(rounds: int) -> None:
    """`--parts compact-fresh` (run by part_check in another tree's process): that tree's
    CompactIndex on part_check's cards and fresh queries, CPU per check, one line a round."""
    cards = population(1_000_000)
    compact = CompactIndex(b"bench-key" * 4)
    compact.load(cards)
    _, fresh = _check_queries(cards)
    for _ in range(rounds):
        check = compact.check
        started = time.process_time()
        for number, nm, issued, expires in fresh:
            check(number, nm, issued, expires, TODAY, None)
        print(f"FRESH {(time.process_time() - started) / len(fresh) * 1e6:.3f}", flush=True)


def part_check(args: argparse.Namespace) -> None:
    print(f"\n== 5. in-process check cost, same 1,000,000 cards and queries (load {uptime()})")
    older: list[float] = []
    command = [sys.executable, str(Path(__file__).resolve()), "--parts", "compact-fresh", "--rounds", "2"]

    def other_tree() -> None:  # the other tree's CompactIndex (--old-src), in its own process
        out = subprocess.run(  # noqa: S603 - our own argv
            command,
            env={**os.environ, "PYTHONPATH": args.old_src},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        older.extend(float(line.split()[1]) for line in out.splitlines() if line.startswith("FRESH"))

    if args.old_src:
        other_tree()
    cards = population(1_000_000)
    reference = CardIndex()
    reference.load(cards)
    compact = CompactIndex(b"bench-key" * 4)
    compact.load(cards)
    same, fresh = _check_queries(cards)
    print("   (CPU time per check; 'same': the index's own string objects, 'fresh': new ones as parsed)")
    seen: dict[tuple[str, str], list[float]] = {}
    for _ in range(max(2, args.rounds)):
        for label, queries in (("same", same), ("fresh", fresh)):
            for name, index in (("CardIndex", reference), ("CompactIndex", compact)):
                check = index.check
                started = time.process_time()
                for number, nm, issued, expires in queries:
                    check(number, nm, issued, expires, TODAY, None)
                us = (time.process_time() - started) / len(queries) * 1e6
                seen.setdefault((label, name), []).append(us)
                print(f"   {label:5s} {name:13s} {us:.2f} us/check")
    if args.old_src:
        other_tree()
        print(
            f"   the other tree's CompactIndex, fresh: {' '.join(f'{us:.2f}' for us in older)} us/check "
            f"(median {statistics.median(older):.2f}; this tree's {statistics.median(seen['fresh', 'CompactIndex']):.2f})"
        )
    for label in ("same", "fresh"):
        card, compact_us = (
            statistics.median(seen[label, "CardIndex"]),
            statistics.median(seen[label, "CompactIndex"]),
        )
        print(
            f"   median {label:5s}: CompactIndex {compact_us:.2f} vs CardIndex {card:.2f} us/check, "
            f"ratio {compact_us / card:.2f} (target <= 1 for 'fresh', as requests bring them; load {uptime()})"
        )


PARTS = {
    "batch": part_batch,
    "propagation": part_propagation,
    "index": part_index,
    "kill": part_kill,
    "check": part_check,
    "compact-fresh": lambda args: _compact_fresh(args.rounds),
    "lease": part_lease,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--cards", type=int, default=10_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reports", type=int, default=300)
    parser.add_argument("--clients", type=int, default=4, help="batch part: HTTP clients")
    parser.add_argument(
        "--client",
        choices=("wrk", "httpx"),
        default="wrk",
        help="batch part: the load generator (wrk when installed; httpx costs ~1 us of CPU a check)",
    )
    parser.add_argument(
        "--connections", type=int, default=1, help="batch part: requests in flight per client"
    )
    parser.add_argument("--node-workers", type=int, default=1, help="batch part: the node's processes")
    parser.add_argument(
        "--old-src",
        default=None,
        help="batch part: also run nodes from this source tree (holding idguard/); check part: its CompactIndex",
    )
    parser.add_argument("--lease-nodes", type=int, default=2, help="lease part: idle nodes of each kind")
    parser.add_argument("--nats", default=os.environ.get("IDGUARD_NATS_URL", "nats://127.0.0.1:4222"))
    args = parser.parse_args()
    root = str(Path(__file__).resolve().parent.parent)  # `python bench/scaleout.py`: bench.* importable
    if root not in sys.path:
        sys.path.insert(0, root)
    for part in args.parts.split(","):
        PARTS[part](args)


if __name__ == "__main__":
    main()
