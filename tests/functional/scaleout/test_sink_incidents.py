"""Incidents from checks made on verifier nodes (issue 15): a node's check message carries its
checks' signals (sealed with the checks), and `idguard checklog-sink` hands them to the
watchlist's derivation, as an API server's watchlist thread does with its own checks: a lost card
presented at a node opens the incident `lost_card_presented` for that card and unit; a message
delivered again (a sink that died before acknowledging) does not count it twice; a message of the
former form (row lines, a sealed line a signal) still in the stream after an upgrade is read; a
message sealed with another secret is left in the stream, not lost."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from idguard.config import Settings
from idguard.registry.models import Card
from idguard.scaleout import streams
from idguard.scaleout.node import SEALED_MIN, create_node_app
from idguard.scaleout.relay import Relay
from idguard.scaleout.sink import TAG, CheckSeal, Sink, seal_entries, signal_lines
from idguard.verification.models import Check
from idguard.verification.runtime.checklog import WatchSeal, row_values
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


def _sink(settings: Settings, engine: sa.Engine) -> Sink:
    sink = Sink(settings, engine)
    running = Background(sink, "idle")
    running.wait()
    running.close()
    return sink


def _checks(engine: sa.Engine, check_id: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.scalar(sa.select(sa.func.count()).select_from(Check).where(Check.id == uuid.UUID(check_id)))
            or 0
        )


async def _unacknowledged(settings: Settings) -> int:
    nc = await streams.connect(settings, name="idguard-test-checks")
    n = streams.names(settings)
    info = await nc.jetstream().consumer_info(n.checks_stream, n.sink_consumer)
    await nc.close()
    return int(info.num_ack_pending)


def _lost_card_checked_at_a_node(
    counter: Counter, settings: Settings, session_factory: Any, name: str, *, batch: bool = False
) -> tuple[dict[str, Any], Bank, dict[str, Any]]:
    """A lost card checked at a node: alone (a message of the text form), or first in a batch of
    SEALED_MIN checks whose others are of a valid card (a sealed message)."""
    birth, other_birth = births(2)
    card = counter.card(counter.person(birth=birth, name=name))
    other = counter.card(counter.person(birth=other_birth, name=name + "乙")) if batch else None
    bank = Bank(counter)
    assert counter.report(card).status_code == 201
    relay = Background(Relay(settings, session_factory), "ready")
    relay.wait()
    with TestClient(create_node_app(settings)) as node:
        if other is None:
            r = node.post("/api/v1/verify", json=body(card), headers=bank.headers())
        else:
            items = [body(card)] + [body(other)] * (SEALED_MIN - 1)
            r = node.post("/api/v1/verify/batch", json={"items": items}, headers=bank.headers())
    relay.close()
    assert r.status_code == 200, r.text
    answer = r.json() if other is None else r.json()["results"][0]
    assert (answer["result"], answer["reason"]) == ("invalid", "reported_lost")
    return card, bank, answer


def _signal(card: dict[str, Any], bank: Bank, answer: dict[str, Any]) -> tuple[Any, ...]:
    return (
        answer["check_id"],
        bank.code,
        dt.datetime.fromisoformat(answer["checked_at"].replace("Z", "+00:00")),
        card["id_number"],
        dt.date.fromisoformat(card["issued_on"]),
        ("lost_card_presented",),
        None,
    )


@pytest.mark.parametrize("batch", [True, False], ids=["sealed", "text"])
def test_the_sink_opens_the_incident_of_a_signal_in_a_node_message_once(
    counter: Counter, nats_settings: Settings, session_factory: Any, engine: sa.Engine, batch: bool
) -> None:
    """The sink's side, on a node's real message (either form): it carries its check's signal."""
    card, bank, answer = _lost_card_checked_at_a_node(
        counter, nats_settings, session_factory, "辛", batch=batch
    )
    [(position, data, headers)] = asyncio.run(_messages(nats_settings))
    assert data.startswith(TAG) == batch
    assert card["id_number"].encode() not in data  # sealed on the wire
    reader = Sink(nats_settings, engine)
    _, _, signals = reader.decode_all(data, headers["Idg-Salt"])
    assert signals == [_signal(card, bank, answer)]  # the node's message carries its check's signal
    asyncio.run(_replace(nats_settings, position, data, headers["Idg-Salt"], "first"))
    _sink(nats_settings, engine)
    assert _incidents(engine, card["id_number"]) == [
        ("lost_card_presented", bank.code, 1, answer["check_id"])
    ]
    assert _checks(engine, answer["check_id"]) == 1
    # Delivered again (a sink killed before its acknowledgement): the check is there, the
    # signal is not counted twice.
    asyncio.run(_replace(nats_settings, 0, data, headers["Idg-Salt"], "again"))
    _sink(nats_settings, engine)
    assert _incidents(engine, card["id_number"]) == [
        ("lost_card_presented", bank.code, 1, answer["check_id"])
    ]
    assert _checks(engine, answer["check_id"]) == 1


def test_a_batch_message_of_the_former_form_is_still_read(
    counter: Counter, nats_settings: Settings, session_factory: Any, engine: sa.Engine
) -> None:
    """A batch as a node before the sealed message published it (the checks' row lines, then the
    signal sealed on a line of its own), left in the stream across an upgrade: its rows written,
    its incident opened, once."""
    card, bank, answer = _lost_card_checked_at_a_node(
        counter, nats_settings, session_factory, "癸", batch=True
    )
    [(position, data, headers)] = asyncio.run(_messages(nats_settings))
    salt = headers["Idg-Salt"]
    lines, _, _ = Sink(nats_settings, engine).decode_all(data, salt)
    seal = WatchSeal(nats_settings.check_hash_key, bytes.fromhex(salt))
    former = ("".join(lines) + signal_lines([_signal(card, bank, answer)], seal)).encode()
    assert not former.startswith(TAG)
    asyncio.run(_replace(nats_settings, position, former, salt, "former"))
    _sink(nats_settings, engine)
    assert _incidents(engine, card["id_number"]) == [
        ("lost_card_presented", bank.code, 1, answer["check_id"])
    ]
    assert [_checks(engine, line.split("\t", 1)[0]) for line in lines] == [1] * SEALED_MIN
    assert row_values(lines[0])["id_masked"] == f"{card['id_number'][:6]}********{card['id_number'][14:]}"


def test_a_message_sealed_with_another_secret_is_left_in_the_stream(
    counter: Counter, nats_settings: Settings, session_factory: Any, engine: sa.Engine
) -> None:
    """A node on another secret (misconfigured): the sink cannot read its message, so writes and
    acknowledges nothing of it (its checks stay in the stream for a sink with that secret), counts
    it, and goes on with the others."""
    card, bank, answer = _lost_card_checked_at_a_node(counter, nats_settings, session_factory, "丑")
    [(_, _, headers)] = asyncio.run(_messages(nats_settings))
    salt = headers["Idg-Salt"]
    other_id = str(uuid.uuid4())
    signal = (other_id, *_signal(card, bank, answer)[1:])
    entry = (other_id, bank.code, "o", "account_opening", signal[2], "invalid", "reported_lost")
    theirs = seal_entries(
        CheckSeal("another-secret-0123456789", bytes.fromhex(salt)),
        [(*entry, card["id_number"], None, 1, None, None)],
        [signal],
    )
    asyncio.run(_replace(nats_settings, 0, theirs, salt, "theirs"))  # beside the node's own
    sink = _sink(nats_settings, engine)
    assert sink.sealed_off >= 1
    assert asyncio.run(_unacknowledged(nats_settings)) == 1  # theirs: not acknowledged
    assert _checks(engine, other_id) == 0
    assert _checks(engine, answer["check_id"]) == 1  # the node's own message written
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
