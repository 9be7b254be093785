"""A node in a partial partition (issue 15, the node's cut-off; docs/scaling.md): its checks still
reach the check stream and are acknowledged, but nothing from the relay's side reaches it (no
beats, no leases, no ledger messages, no writer's `required`), as when a NATS cluster routes the
check stream's subjects but not the relay's. The writer gives up on the node at its bound; from
that moment on the node must refuse every check (503 with Retry-After), never answer `valid` for
the card whose report was just acknowledged.

The partition is made inside the node's NATS client: every message the server delivers to it is
dropped except the JetStream acknowledgements of its check stream (the node's code is untouched;
its connection, pings and publishes keep working). With the former rule (stale after 1 s without
a relay beat) the node answered `valid` for the reported card for ~0.75 s after the writer's
answer; with the lease (counted from a moment of the node's own clock no later than the relay's
reading, as long as the writers' bound) it is stale before the writer answers."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

from fastapi.testclient import TestClient

from idguard.config import Settings
from idguard.scaleout import propagation, streams
from idguard.scaleout.node import NodeRuntime, create_node_app
from idguard.scaleout.relay import Relay
from tests.functional.conftest import Counter
from tests.functional.scaleout.support import Background, body, needs_nats
from tests.functional.scaleout.test_nodes import head
from tests.functional.verification.test_verify import Bank

pytestmark = needs_nats


def deafen(runtime: NodeRuntime, cut: threading.Event) -> None:
    """While `cut` is set, the node's client drops every delivered message but the check stream's
    acknowledgements."""
    nc = runtime.nc
    assert nc is not None
    checks_ack = f'"stream":"{streams.names(runtime.settings).checks_stream}"'.encode()
    deliver = nc._process_msg

    async def filtered(sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        if cut.is_set() and checks_ack not in data:
            return
        await deliver(sid, subject, reply, data, headers)

    nc._process_msg = filtered  # type: ignore[method-assign]


def test_a_node_that_hears_nothing_from_the_relay_refuses_before_the_writer_gives_up_on_it(
    counter: Counter, nats_settings: Settings, session_factory: Any
) -> None:
    lost, other = (
        counter.card(counter.person(name=n, birth=dt.date(1990, 5, d))) for n, d in (("庚", 1), ("辛", 2))
    )
    bank = Bank(counter)
    bound = nats_settings.propagation_wait_ms / 1000
    relay = Background(Relay(nats_settings, session_factory), "ready")
    relay.wait()
    cut = threading.Event()
    with TestClient(create_node_app(nats_settings)) as node:
        deafen(node.app.state.runtime, cut)  # type: ignore[attr-defined]
        assert (
            node.post("/api/v1/verify", json=body(lost), headers=bank.headers()).json()["result"] == "valid"
        )
        acknowledged = node.get("/api/v1/health").json()["check_stream"]["acknowledged"]

        cut.set()
        cut_at = time.monotonic()
        # Within its lease the node still answers, and its checks still reach the stream.
        r = node.post("/api/v1/verify", json=body(other), headers=bank.headers())
        if r.status_code == 200:  # (a 503 only when this machine took longer than the lease)
            acknowledged += 1
            assert node.get("/api/v1/health").json()["check_stream"]["acknowledged"] == acknowledged
        assert counter.report(lost).status_code == 201
        waited = propagation.wait_for_nodes(nats_settings, head(counter), bound)
        answered_at = time.monotonic()
        assert (waited["nodes"], waited["confirmed"]) == (1, 0), waited
        assert answered_at - cut_at >= bound  # the writer waited its whole bound for the node

        # From the writer's answer on, without pause: every check refused, none answered.
        answers = []
        while time.monotonic() - answered_at < 1.5 * bound + 1.0:  # past the former 1 s cut-off
            r = node.post("/api/v1/verify", json=body(lost), headers=bank.headers())
            answers.append((r.status_code, r.headers.get("Retry-After"), r.text))
        assert answers
        assert all(status == 503 and retry == "1" for status, retry, _ in answers), [
            a for a in answers if a[0] != 503
        ][:3]
        health = node.get("/api/v1/health").json()
        assert health["status"] == "stale"
        assert "lost contact" in health["detail"]
        assert health["check_stream"]["acknowledged"] == acknowledged  # the refusals wrote nothing

        # The partition heals: the node hears the relay again and answers from the new state.
        cut.clear()
        deadline = time.monotonic() + 15
        while True:
            r = node.post("/api/v1/verify", json=body(lost), headers=bank.headers())
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert r.status_code == 200, r.text
        assert (r.json()["result"], r.json()["reason"]) == ("invalid", "reported_lost")
        r = node.post("/api/v1/verify", json=body(other), headers=bank.headers())
        assert r.json()["result"] == "valid"
    relay.close()
