"""Scale-out on NATS JetStream (issue 15), against the NATS server at 127.0.0.1:4222 with a random
prefix per test (its streams deleted afterwards): the relay publishes every ledger event exactly
once across restarts; nodes restored from a snapshot and following the stream answer as the
database does; read-your-write with 3 nodes (no sleep between the report's confirmation and the
checks); a node that hears no relay refuses to answer; the sink writes checks once."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

import sqlalchemy as sa
from fastapi.testclient import TestClient

from idguard.config import Settings
from idguard.registry.models import LedgerHead
from idguard.scaleout import propagation, streams
from idguard.scaleout.node import create_node_app
from idguard.scaleout.relay import Relay
from idguard.scaleout.sink import Sink
from idguard.verification.models import Check
from idguard.verification.routes import verify
from tests.functional.conftest import Counter
from tests.functional.scaleout.support import Background, needs_nats
from tests.functional.verification.test_verify import Bank

pytestmark = needs_nats


def head(counter: Counter) -> int:
    engine = counter.client.app.state.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return int(conn.scalar(sa.select(LedgerHead.seq).where(LedgerHead.id == 1)) or 0)


async def _card_seqs(settings: Settings) -> list[int]:
    """The ledger seq of every card message in the stream, in stream order."""
    nc = await streams.connect(settings, name="idguard-test-reader")
    js = nc.jetstream()
    n = streams.names(settings)
    info = await js.stream_info(n.ledger_stream)
    seqs = []
    for position in range(1, info.state.last_seq + 1):
        msg = await js.get_msg(n.ledger_stream, position)
        if msg.subject == n.card_subject:
            seqs.append(streams.decode_card(msg.data or b"")[0])
    await nc.close()
    return seqs


def test_relay_publishes_every_event_once_across_restarts(
    counter: Counter, nats_settings: Settings, session_factory: Any
) -> None:
    cards = [
        counter.card(counter.person(name=f"人{i}", birth=__import__("datetime").date(1980, 1, 1 + i)))
        for i in range(5)
    ]
    relay = Background(Relay(nats_settings, session_factory), "ready")
    relay.wait()
    relay.close()
    first_head = head(counter)
    for card in cards[:3]:
        assert counter.report(card).status_code == 201
    relay = Background(Relay(nats_settings, session_factory), "ready")
    relay.wait()
    # A retried publish of an event the stream holds (a relay that died before the ack) is
    # dropped by JetStream's duplicate window.
    relay.close()
    seqs = asyncio.run(_card_seqs(nats_settings))
    assert head(counter) > first_head
    assert seqs == list(range(1, head(counter) + 1))

    async def republish() -> int:
        nc = await streams.connect(nats_settings, name="idguard-test-dup")
        js = nc.jetstream()
        n = streams.names(nats_settings)
        ack = await js.publish(n.card_subject, b"\0" * 40, headers={"Nats-Msg-Id": f"c{seqs[-1]}"})
        await nc.close()
        return int(ack.duplicate or 0)

    assert asyncio.run(republish()) == 1
    assert asyncio.run(_card_seqs(nats_settings)) == seqs


def _node(settings: Settings) -> TestClient:
    return TestClient(create_node_app(settings))


def test_three_nodes_answer_as_the_database_and_confirm_a_loss_report_before_checks(
    counter: Counter, nats_settings: Settings, session_factory: Any
) -> None:
    import datetime as dt

    cards = [counter.card(counter.person(name=f"甲{i}", birth=dt.date(1985, 2, 1 + i))) for i in range(6)]
    bank = Bank(counter)
    assert counter.report(cards[0]).status_code == 201  # before the snapshot
    relay = Background(Relay(nats_settings, session_factory), "ready")
    relay.wait()  # caught up and a snapshot written
    assert counter.report(cards[1], "stolen").status_code == 201  # after it: from the stream
    relay.wait()
    with _node(nats_settings) as a, _node(nats_settings) as b, _node(nats_settings) as c:
        nodes = [a, b, c]
        for node in nodes:
            health = node.get("/api/v1/health").json()
            assert health["index"]["snapshot_seq"] >= 1
        # Snapshot + stream = the database: every node answers as the API server does.
        for card in cards:
            expected = bank.verify(card).json()
            for node in nodes:
                r = node.post("/api/v1/verify", json=_body(card), headers=bank.headers())
                assert r.status_code == 200, r.text
                assert (r.json()["result"], r.json().get("reason")) == (
                    expected["result"],
                    expected.get("reason"),
                )
                assert "X-Index-Age" in r.headers
        # Read-your-write: each report is confirmed by all 3 nodes, then checked at once on each.
        for card in cards[2:]:
            assert counter.report(card).status_code == 201
            answer = propagation.wait_for_nodes(nats_settings, head(counter), 0.25)
            assert answer["nodes"] == 3
            assert answer["confirmed"] == 3, answer
            for node in nodes:
                r = node.post("/api/v1/verify", json=_body(card), headers=bank.headers())
                assert r.json()["result"] == "invalid", r.text
                assert r.json()["reason"] == "reported_lost"
        # A batch on a node: one stream message, acknowledged before the answer.
        r = a.post(
            "/api/v1/verify/batch", json={"items": [_body(card) for card in cards]}, headers=bank.headers()
        )
        assert r.status_code == 200, r.text
        assert [x["result"] for x in r.json()["results"]] == ["invalid"] * 6
        # A batch the node's batch door answers (FAST_BATCH_MIN items or more; mismatches among
        # them): the API server's answers, check for check (the routes' lane never runs).
        items = [_body(card) for card in cards] + [{**_body(card), "name": "别人"} for card in cards[:3]]
        items += items
        expected = counter.client.post("/api/v1/verify/batch", json={"items": items}, headers=bank.headers())
        assert expected.status_code == 200, expected.text
        with mock.patch.object(verify._LANE_BATCH, "validate_json", side_effect=AssertionError("the lane")):
            r = b.post("/api/v1/verify/batch", json={"items": items}, headers=bank.headers())
        assert r.status_code == 200, r.text
        assert [(x["result"], x.get("reason")) for x in r.json()["results"]] == [
            (x["result"], x.get("reason")) for x in expected.json()["results"]
        ]
        assert {x["result"] for x in r.json()["results"]} == {"invalid", "mismatch"}
        acknowledged = sum(n.get("/api/v1/health").json()["check_stream"]["acknowledged"] for n in nodes)
        assert acknowledged == 6 * 3 + 4 * 3 + 6 + len(items)
        # The sink writes them once, even when a message comes twice.
        before = _checks(counter)
        sink = Background(Sink(nats_settings, counter.client.app.state.engine), "idle")  # type: ignore[attr-defined]
        sink.wait()
        assert _checks(counter) == before + acknowledged
        _republish_last_check_message(nats_settings)
        sink.wait()
        sink.close()
        assert _checks(counter) == before + acknowledged
        # The relay stops: within a second every node refuses to answer (no answer from an index
        # that may be old), with Retry-After.
        relay.close()
        import time

        time.sleep(1.3)
        r = a.post("/api/v1/verify", json=_body(cards[5]), headers=bank.headers())
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "1"
        assert a.get("/api/v1/health").json()["status"] == "stale"


def _body(card: dict[str, Any]) -> dict[str, Any]:
    return {
        "id_number": card["id_number"],
        "name": card["name"],
        "issued_on": card["issued_on"],
        "expires_on": card["expires_on"],
        "purpose": "account_opening",
        "operator": "teller-7",
    }


def _checks(counter: Counter) -> int:
    engine = counter.client.app.state.engine  # type: ignore[attr-defined]
    counter.client.app.state.verifier.log.flush()  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return int(conn.scalar(sa.select(sa.func.count()).select_from(Check)) or 0)


def _republish_last_check_message(settings: Settings) -> None:
    async def run() -> None:
        nc = await streams.connect(settings, name="idguard-test-dup")
        js = nc.jetstream()
        n = streams.names(settings)
        last = await js.get_last_msg(n.checks_stream, n.checks_subject)
        headers = dict(last.headers or {})
        headers["Nats-Msg-Id"] = "a-retry-with-another-id"
        await js.publish(n.checks_subject, last.data or b"", headers=headers)
        await nc.close()

    asyncio.run(run())


def test_a_node_behind_a_required_seq_past_the_bound_refuses_and_the_writer_stops_waiting(
    counter: Counter, nats_settings: Settings, session_factory: Any
) -> None:
    """A writer waits for a seq the node never gets (as if its ledger messages were lost): the
    wait ends at the bound with 0 of 1 confirmed, and the node, behind a seq it knows of for
    longer than the bound, refuses to answer (503, Retry-After) instead of answering `valid`."""
    import datetime as dt
    import time

    card = counter.card(counter.person(name="戊", birth=dt.date(1991, 3, 3)))
    bank = Bank(counter)
    relay = Background(Relay(nats_settings, session_factory), "ready")
    relay.wait()
    with _node(nats_settings) as node:
        assert (
            node.post("/api/v1/verify", json=_body(card), headers=bank.headers()).json()["result"] == "valid"
        )
        started = time.monotonic()
        answer = propagation.wait_for_nodes(nats_settings, head(counter) + 1000, 0.25)
        waited = time.monotonic() - started
        assert answer["nodes"] == 1
        assert answer["confirmed"] == 0
        assert 0.25 <= waited < 1.0
        time.sleep(0.2)  # past the bound from when the node heard the required seq
        r = node.post("/api/v1/verify", json=_body(card), headers=bank.headers())
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "1"
        assert "catching up" in r.json()["detail"]
    relay.close()


def test_without_nats_there_are_no_nodes_to_wait_for(settings: Settings) -> None:
    assert propagation.wait_for_nodes(settings, 5) == {"nodes": 0, "confirmed": 0, "ms": 0.0}


def test_a_watch_started_on_a_node_reaches_the_database_through_the_sink(
    counter: Counter, nats_settings: Settings, session_factory: Any
) -> None:
    """`watch: true` on a node: the check's id number travels sealed in the check stream, and the
    sink creates the unit's Watch on the card (notifications stay with the API servers)."""
    import datetime as dt

    from idguard.verification.models import Watch

    card = counter.card(counter.person(name="己", birth=dt.date(1992, 4, 4)))
    bank = Bank(counter)
    relay = Background(Relay(nats_settings, session_factory), "ready")
    relay.wait()
    with _node(nats_settings) as node:
        r = node.post("/api/v1/verify", json={**_body(card), "watch": True}, headers=bank.headers())
        assert r.json()["result"] == "valid", r.text
    engine = counter.client.app.state.engine  # type: ignore[attr-defined]
    sink = Background(Sink(nats_settings, engine), "idle")
    sink.wait()
    sink.close()
    relay.close()
    with engine.connect() as conn:
        watches = conn.execute(sa.select(Watch.unit_code, Watch.card_id)).all()
    assert [(code, str(card_id)) for code, card_id in watches] == [(bank.code, card["card_id"])]
