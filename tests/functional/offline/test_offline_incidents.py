"""Offline checks open incidents as online checks do (issue 20): a card reported lost or stolen
at the check's time, or a listed holder's card, checked at a gate and uploaded later, opens the
same incident, deduplicated per (card, kind, unit, day) — and never twice for a re-upload."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from idguard.offline.reader import Reader
from tests.factories import NOW, OFFICE_A
from tests.functional.conftest import Counter
from tests.functional.offline.conftest import OfflineUnit, transport
from tests.functional.watchlist.helpers import blacklist, incidents, settle

BASE = "http://testserver"


def expiry(card: dict[str, Any]) -> dt.date | None:
    return dt.date.fromisoformat(card["expires_on"]) if card["expires_on"] else None


def upload(unit: OfflineUnit, *items: dict[str, Any]) -> list[str]:
    r = unit.counter.client.post("/api/v1/offline/checks", json={"items": list(items)}, headers=unit.headers)
    assert r.status_code == 200, r.text
    return [x["status"] for x in r.json()["results"]]


def item(card: dict[str, Any], result: str, *, at: dt.datetime = NOW, serial: bool = True) -> dict[str, Any]:
    body = {
        "check_id": str(uuid.uuid4()),
        "at": at.isoformat(),
        "id_number": card["id_number"],
        "result": result,
        "version": 0,
    }
    return {**body, "chip_serial": card["chip_serial"]} if serial else body


def test_a_lost_card_checked_at_the_gate_opens_an_incident_on_upload(
    counter: Counter, tmp_path: Path
) -> None:
    """End to end with the reader: the gate's set was stale (the card was reported after the last
    fetch), the reader said `valid`, and the incident still opens once the check is uploaded."""
    unit = OfflineUnit(counter)
    card = counter.card(counter.person())
    reader = Reader(tmp_path)
    send = transport(counter.client)
    reader.fetch(BASE, unit.key, transport=send)
    assert counter.report(card).status_code == 201  # the network is down at the gate now
    answer = reader.check(
        card["id_number"], card["chip_serial"], expiry(card), now=NOW + dt.timedelta(minutes=1)
    )
    assert answer.valid  # stale, as a set is during an outage
    assert incidents(counter) == []
    assert reader.fetch(BASE, unit.key, transport=send).uploaded == 1
    settle(counter)
    (incident,) = incidents(counter)
    assert (incident["kind"], incident["unit_code"], incident["check_id"], incident["office"]) == (
        "lost_card_presented",
        unit.code,
        answer.check_id,
        OFFICE_A,
    )


def test_only_a_report_standing_at_the_checks_time_counts(counter: Counter) -> None:
    unit = OfflineUnit(counter)
    card = counter.card(counter.person())
    before = item(card, "valid", at=NOW - dt.timedelta(minutes=5))  # checked before the report
    assert counter.report(card).status_code == 201
    assert upload(unit, before) == ["recorded"]
    settle(counter)
    assert incidents(counter) == []


def test_same_dedup_as_online_and_a_reupload_counts_nothing(counter: Counter) -> None:
    unit = OfflineUnit(counter)
    card = counter.card(counter.person())
    assert counter.report(card).status_code == 201
    later = NOW + dt.timedelta(minutes=1)
    first, second = item(card, "invalid", at=later), item(card, "invalid", at=later + dt.timedelta(minutes=2))
    assert upload(unit, first, second) == ["recorded", "recorded"]
    assert upload(unit, first) == ["duplicate"]
    settle(counter)
    (incident,) = incidents(counter)  # one per (card, kind, unit, day)
    assert incident["kind"] == "lost_card_presented"


def test_a_forged_serial_or_an_unidentified_invalid_answer_opens_nothing(counter: Counter) -> None:
    unit = OfflineUnit(counter)
    card = counter.card(counter.person())
    assert counter.report(card).status_code == 201
    later = NOW + dt.timedelta(minutes=1)
    forged = {**item(card, "invalid", at=later), "chip_serial": "00" * 16}
    unidentified = item(card, "invalid", at=later, serial=False)
    assert upload(unit, forged, unidentified) == ["recorded", "recorded"]
    settle(counter)
    assert incidents(counter) == []  # an online mismatch signals nothing either


def test_a_listed_holders_card_checked_offline(counter: Counter) -> None:
    unit = OfflineUnit(counter)
    number = counter.person()
    card = counter.card(number)
    assert blacklist(counter, number).status_code == 201
    later = NOW + dt.timedelta(minutes=1)
    # An older reader sends no serial: a `valid` answer still identifies the holder's card.
    assert upload(unit, item(card, "valid", at=later, serial=False)) == ["recorded"]
    settle(counter)
    (incident,) = incidents(counter)
    assert (incident["kind"], incident["unit_code"]) == ("blacklisted_holder_checked", unit.code)
    # Before the listing: nothing.
    other = counter.card(counter.person())
    assert upload(unit, item(other, "valid", at=later)) == ["recorded"]
    settle(counter)
    assert len(incidents(counter)) == 1
