"""Read-your-write across verifier nodes: the writer's side (issue 15).

`wait_for_nodes(settings, seq, bound)` is what an API server calls after a write that changes an
answer has committed (the lead's post-commit hook in uow.py, issue 17, calls it beside the wait
for the node's own workers): it says on {P}.required which seq it waits for (the relay reads the
ledger at once; a node that cannot reach the seq within the bound marks itself stale:
scaleout/node.py), and waits until every live node has announced on {P}.applied a seq at least
`seq`, or until it gives up (below). The answer is the `propagation` object of the write's
answer: `{"nodes": 3, "confirmed": 3, "ms": 4.2}`.

A node is live while it announces (every node.ANNOUNCE_SECONDS): one silent for LIVE_SECONDS has
left (killed, cut off), so a dead node never holds a write for more than that, and not at all
once it has dropped out. One NATS connection per process, on its own thread and event loop,
listens to the announcements; the first call opens it.

When the writer gives up (docs/scaling.md, "The node's cut-off"): {P}.required is a request the
leading relay answers once it has published the seq, with the length of the leases it grants
nodes (scaleout/relay.py). The wait ends at the bound counted from that acknowledgement, and never
before the lease's length: every lease granted without the seq was asked for before the
acknowledgement, so it has run out, on the node's own clock, before this writer answers. Without
an acknowledgement (no leader for a moment: retried; NATS unreachable) the writer waits the whole
bound for nodes that have not confirmed, never less.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import Future
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from idguard.config import Settings
from idguard.scaleout import streams

LIVE_SECONDS = 1.0
DEFAULT_BOUND = 0.25
WARM_UP_SECONDS = 0.3  # longer than a node's heartbeat (node.ANNOUNCE_SECONDS)
NO_LEADER_RETRY_SECONDS = 0.02  # {P}.required had no responder (a relay taking over): ask again


class NodeWatch:
    """The announcements of every node of one deployment, as this process last heard them."""

    def __init__(self, settings: Settings) -> None:
        self.names = streams.names(settings)
        self.nodes: dict[str, tuple[int, float]] = {}  # node id -> (applied seq, when heard)
        self.changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="idguard-nodewatch", daemon=True)
        self._thread.start()
        self._nc: Client = asyncio.run_coroutine_threadsafe(self._connect(settings), self._loop).result(10)

    async def _connect(self, settings: Settings) -> Client:
        nc = await streams.connect(settings, name="idguard-nodewatch")
        await nc.subscribe(self.names.core("applied"), cb=self._on_applied)
        return nc

    async def _on_applied(self, msg: Msg) -> None:
        node, _, seq_text = msg.data.decode().partition(" ")
        seq = int(seq_text)
        with self.changed:
            before = self.nodes.get(node)
            self.nodes[node] = (max(seq, before[0]) if before else seq, time.monotonic())
            self.changed.notify_all()

    def live(self, now: float) -> dict[str, int]:
        return {node: seq for node, (seq, heard) in self.nodes.items() if now - heard <= LIVE_SECONDS}

    async def _announce(self, seq: int, until: float) -> tuple[float, float] | None:
        """Say `seq` on {P}.required (the nodes hear it; the relay records it, reads the ledger at
        once and acknowledges); (when acknowledged, the relay's lease in seconds), or None when
        no relay acknowledged it before `until`."""
        data = str(seq).encode()
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return None
            try:
                reply = await self._nc.request(self.names.core("required"), data, timeout=left)
            except NoRespondersError:  # no leader this moment (a takeover): the nodes heard it
                await asyncio.sleep(NO_LEADER_RETRY_SECONDS)
                continue
            except NatsTimeoutError:
                return None
            acked = time.monotonic()
            try:
                lease = float(json.loads(reply.data)["lease_ms"]) / 1000
            except (ValueError, KeyError, TypeError):
                lease = 0.0
            return acked, lease

    def announce(self, seq: int, until: float) -> Future[tuple[float, float] | None]:
        """`_announce` on the watch's loop; whoever waits on `changed` is woken when it ends."""
        future = asyncio.run_coroutine_threadsafe(self._announce(seq, until), self._loop)
        future.add_done_callback(self._wake)
        return future

    def _wake(self, _future: object) -> None:
        with self.changed:
            self.changed.notify_all()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._nc.close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()


_watches: dict[tuple[str, str], NodeWatch] = {}
_watches_lock = threading.Lock()


def watch_for(settings: Settings) -> NodeWatch:
    key = (streams.nats_url(settings), settings.nats_prefix)
    with _watches_lock:
        watch = _watches.get(key)
        if watch is None:
            watch = _watches[key] = NodeWatch(settings)
            time.sleep(WARM_UP_SECONDS)  # every live node announces within this: hear them first
        return watch


def wait_for_nodes(settings: Settings, seq: int, bound: float = DEFAULT_BOUND) -> dict[str, Any]:
    """Wait until every live verifier node has applied ledger `seq`: at most `bound` seconds
    from the relay's acknowledgement of the seq and never less than the relay's lease, or
    `bound` seconds when no relay acknowledged it in that time; `{"nodes": live nodes,
    "confirmed": those that had, "ms": the wait}`. Without NATS configured: no nodes."""
    if not settings.nats_url:
        return {"nodes": 0, "confirmed": 0, "ms": 0.0}
    watch = watch_for(settings)  # the first call also listens for the nodes' heartbeats first
    started = time.monotonic()
    acked = watch.announce(seq, started + bound)
    with watch.changed:
        while True:
            now = time.monotonic()
            live = watch.live(now)
            confirmed = sum(1 for applied in live.values() if applied >= seq)
            if confirmed == len(live):
                break
            ack = acked.result() if acked.done() and acked.exception() is None else None
            deadline = give_up_at(started, bound, ack)
            if now >= deadline:
                break
            watch.changed.wait(deadline - now)
    return {"nodes": len(live), "confirmed": confirmed, "ms": _ms(started)}


def give_up_at(started: float, bound: float, ack: tuple[float, float] | None) -> float:
    """When a writer that started waiting at `started` stops waiting for nodes that have not
    confirmed: `bound` after the relay's acknowledgement `ack` = (when, the relay's lease), and
    never before the lease's length after it (a node's lease runs out by then: docs/scaling.md,
    "The node's cut-off"); without an acknowledgement, `bound` after the start."""
    if ack is None:
        return started + bound
    at, lease = ack
    return max(started + bound, at + max(bound, lease))


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
