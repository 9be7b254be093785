"""The relay's side of the nodes' leases (docs/scaling.md, "The node's cut-off"): a writer's seq
is acknowledged only once the relay has published it, a seq never published is never
acknowledged, and every lease the relay grants after an acknowledgement — a reply on {P}.lease or
a beat — names that seq, with the lease's length (the writers' bound) and the relay's clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import pytest
from nats.errors import TimeoutError as NatsTimeoutError

from idguard.config import Settings
from idguard.scaleout import streams
from idguard.scaleout.relay import Relay
from tests.functional.conftest import Counter
from tests.functional.scaleout.support import Background, needs_nats
from tests.functional.scaleout.test_nodes import head

pytestmark = needs_nats


async def _exchange(settings: Settings, counter: Counter) -> dict[str, Any]:
    names = streams.names(settings)
    nc = await streams.connect(settings, name="idguard-test-leases")
    beats: list[dict[str, Any]] = []

    async def on_beat(msg: Any) -> None:
        beats.append(json.loads(msg.data))

    await nc.subscribe(names.core("head"), cb=on_beat)
    try:
        first = json.loads((await nc.request(names.core("lease"), b"node-a", timeout=5)).data)
        with pytest.raises(NatsTimeoutError):  # a seq the ledger does not hold: no acknowledgement
            await nc.request(names.core("required"), str(first["seq"] + 1000).encode(), timeout=0.4)
        card = counter.card(counter.person(name="壬", birth=dt.date(1988, 8, 8)))
        before = await asyncio.to_thread(head, counter)
        assert (await asyncio.to_thread(counter.report, card)).status_code == 201
        seq = await asyncio.to_thread(head, counter)
        assert seq > before
        ack = json.loads((await nc.request(names.core("required"), str(seq).encode(), timeout=5)).data)
        beats.clear()
        after = json.loads((await nc.request(names.core("lease"), b"node-a", timeout=5)).data)
        await asyncio.sleep(0.2)  # a few beats
        return {"first": first, "seq": seq, "ack": ack, "after": after, "beats": list(beats)}
    finally:
        await nc.close()


def test_a_writer_s_seq_is_acknowledged_once_published_and_every_later_lease_names_it(
    counter: Counter, nats_settings: Settings, session_factory: Any
) -> None:
    relay = Background(Relay(nats_settings, session_factory), "ready")
    relay.wait()
    seen = asyncio.run(_exchange(nats_settings, counter))
    relay.close()
    lease_ms = nats_settings.propagation_wait_ms
    first, seq, ack, after = seen["first"], seen["seq"], seen["ack"], seen["after"]
    assert first["lease_ms"] == lease_ms
    assert isinstance(first["at"], float)
    assert first["known"] == first["seq"] < seq
    assert ack["lease_ms"] == lease_ms
    assert ack["seq"] >= seq  # acknowledged only once published
    assert after["relay"] == first["relay"]
    assert after["known"] >= seq
    assert after["at"] > first["at"]  # the relay's clock, read when the lease was made
    # The beats stamped after that lease (so after the acknowledgement) name the seq too.
    beats = [b for b in seen["beats"] if b["at"] >= after["at"]]
    assert beats, "no beat in 0.2 s (one every lease / 5)"
    assert all(b["known"] >= seq and b["lease_ms"] == lease_ms for b in beats), beats
