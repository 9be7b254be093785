"""Incidents from checks made on verifier nodes (issue 15): a node's check message carries its
checks' signals (sealed), and `idguard checklog-sink` hands them to the watchlist's derivation,
as an API server's watchlist thread does with its own checks: a lost card presented at a node
opens the incident `lost_card_presented` for that card and unit; a message delivered again
(a sink that died before acknowledging) does not count it twice."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from idguard.config import Settings
from idguard.registry.models import Card
from idguard.scaleout import streams
from idguard.scaleout.node import create_node_app
from idguard.scaleout.relay import Relay
from idguard.scaleout.sink import Sink, signal_lines
from idguard.verification.runtime.checklog import WatchSeal
from idguard.watchlist.models import Incident
from tests.functional.conftest import Counter
from tests.functional.scaleout.support import Background, births, body, needs_nats
from tests.functional.verification.test_verify import Bank

pytestmark = needs_nats


def _incidents(engine: sa.Engine, id_number: str) -> list[tuple[str, str | None, int, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(Incident.kind, Incident.unit_code, Incident.count, Incident.check_id)
            .join(Card, Card.id == Incident.card_id)
            .where(Card.id_number == id_number)
        ).all()
    return [(str(k), u, int(c), i) for k, u, c, i in rows]


async def _messages(settings: Settings) -> list[tuple[int, bytes, dict[str, str]]]:
    nc = await streams.connect(settings, name="idguard-test-checks")
    js = nc.jetstream()
    n = streams.names(settings)
    info = await js.stream_info(n.checks_stream)
    out = []
    for position in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(n.checks_stream, position)
        out.append((position, msg.data or b"", dict(msg.headers or {})))
    await nc.close()
    return out


async def _replace(settings: Settings, position: int, data: bytes, salt: str, msg_id: str) -> None:
    """The message at `position` deleted, `data` published in its place (another id)."""
    nc = await streams.connect(settings, name="idguard-test-checks")
    js = nc.jetstream()
    n = streams.names(settings)
    if position:
        await js.delete_msg(n.checks_stream, position)
    await js.publish(n.checks_subject, data, headers={"Nats-Msg-Id": msg_id, "Idg-Salt": salt})
    await nc.close()


def _sink(settings: Settings, engine: sa.Engine) -> None:
    sink = Background(Sink(settings, engine), "idle")
    sink.wait()
    sink.close()


def _lost_card_checked_at_a_node(
    counter: Counter, settings: Settings, session_factory: Any, name: str
) -> tuple[dict[str, Any], Bank, dict[str, Any]]:
    card = counter.card(counter.person(birth=births(1)[0], name=name))
    bank = Bank(counter)
    assert counter.report(card).status_code == 201
    relay = Background(Relay(settings, session_factory), "ready")
    relay.wait()
    with TestClient(create_node_app(settings)) as node:
        r = node.post("/api/v1/verify", json=body(card), headers=bank.headers())
    relay.close()
    assert r.status_code == 200, r.text
    assert (r.json()["result"], r.json()["reason"]) == ("invalid", "reported_lost")
    return card, bank, r.json()


def test_the_sink_opens_the_incident_of_a_signal_in_a_node_message_once(
    counter: Counter, nats_settings: Settings, session_factory: Any, engine: sa.Engine
) -> None:
    """The sink's side, on a node's real message: the node appended its check's signal, sealed."""
    card, bank, answer = _lost_card_checked_at_a_node(counter, nats_settings, session_factory, "辛")
    [(position, data, headers)] = asyncio.run(_messages(nats_settings))
    seal = WatchSeal(nats_settings.check_hash_key, bytes.fromhex(headers["Idg-Salt"]))
    at = dt.datetime.fromisoformat(answer["checked_at"].replace("Z", "+00:00"))
    signal = (
        answer["check_id"],
        bank.code,
        at,
        card["id_number"],
        dt.date.fromisoformat(card["issued_on"]),
        ("lost_card_presented",),
        None,
    )
    [line] = signal_lines([signal], seal).splitlines()
    prefix = line.rsplit("\t", 1)[0] + "\t"  # the tag and the check id, before the sealed part
    signal_rows = [row for row in data.decode().splitlines() if row.startswith(prefix)]
    assert len(signal_rows) == 1  # the node's message carries its check's one signal line
    assert card["id_number"].encode() not in data  # sealed on the wire
    with_signals = data
    asyncio.run(_replace(nats_settings, position, with_signals, headers["Idg-Salt"], "first"))
    _sink(nats_settings, engine)
    assert _incidents(engine, card["id_number"]) == [
        ("lost_card_presented", bank.code, 1, answer["check_id"])
    ]
    # Delivered again (a sink killed before its acknowledgement): the check is there, the
    # signal is not counted twice.
    asyncio.run(_replace(nats_settings, 0, with_signals, headers["Idg-Salt"], "again"))
    _sink(nats_settings, engine)
    assert _incidents(engine, card["id_number"]) == [
        ("lost_card_presented", bank.code, 1, answer["check_id"])
    ]


def test_a_lost_card_presented_at_a_node_opens_its_incident_through_the_sink(
    counter: Counter, nats_settings: Settings, session_factory: Any, engine: sa.Engine
) -> None:
    card, bank, answer = _lost_card_checked_at_a_node(counter, nats_settings, session_factory, "壬")
    _sink(nats_settings, engine)
    assert _incidents(engine, card["id_number"]) == [
        ("lost_card_presented", bank.code, 1, answer["check_id"])
    ]
