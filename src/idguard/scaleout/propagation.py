"""Read-your-write across verifier nodes: the writer's side (issue 15).

`wait_for_nodes(settings, seq, bound)` is what an API server calls after a write that changes an
answer has committed (the lead's post-commit hook in uow.py, issue 17, calls it beside the wait
for the node's own workers): it nudges the relay to read the ledger now ({P}.nudge), says on
{P}.required which seq it waits for (a node that cannot reach it within the bound marks itself
stale: scaleout/node.py), and waits until every live node has announced on {P}.applied a seq at
least `seq`, or `bound` seconds. The answer is the `propagation` object of the write's answer:
`{"nodes": 3, "confirmed": 3, "ms": 4.2}`.

A node is live while it announces (every node.ANNOUNCE_SECONDS): one silent for LIVE_SECONDS has
left (killed, cut off), so a dead node never holds a write for more than that, and not at all
once it has dropped out. One NATS connection per process, on its own thread and event loop,
listens to the announcements; the first call opens it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from idguard.config import Settings
from idguard.scaleout import streams

LIVE_SECONDS = 1.0
DEFAULT_BOUND = 0.25
WARM_UP_SECONDS = 0.3  # longer than a node's heartbeat (node.ANNOUNCE_SECONDS)


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

    async def _announce(self, seq: int) -> None:
        await self._nc.publish(self.names.core("nudge"), b"")
        await self._nc.publish(self.names.core("required"), str(seq).encode())
        await self._nc.flush(timeout=1)

    def announce(self, seq: int) -> None:
        asyncio.run_coroutine_threadsafe(self._announce(seq), self._loop).result(1)

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
    """Wait until every live verifier node has applied ledger `seq`, at most `bound` seconds;
    `{"nodes": live nodes, "confirmed": those that had, "ms": the wait}`. Without NATS
    configured: no nodes."""
    if not settings.nats_url:
        return {"nodes": 0, "confirmed": 0, "ms": 0.0}
    watch = watch_for(settings)  # the first call also listens for the nodes' heartbeats first
    started = time.monotonic()
    try:
        watch.announce(seq)
    except Exception:  # NATS unreachable: no node can confirm; the nodes go stale by themselves
        return {"nodes": len(watch.live(time.monotonic())), "confirmed": 0, "ms": 0.0}
    with watch.changed:
        while True:
            now = time.monotonic()
            live = watch.live(now)
            confirmed = sum(1 for applied in live.values() if applied >= seq)
            if confirmed == len(live) or now - started >= bound:
                break
            watch.changed.wait(bound - (now - started))
    return {"nodes": len(live), "confirmed": confirmed, "ms": round((time.monotonic() - started) * 1000, 1)}
