"""What a bank hears for a card in each stored status, through the HTTP API, every expected answer
written out by hand (API.md's `result` / `reason` values; docs/rules.md: a destroyed card answers
`superseded`, a valid card is valid through its expiry day, any differing printed field is a
mismatch). Today is 2026-06-15 in Beijing (tests/factories.py NOW)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tests.factories import OFFICE_A
from tests.functional.conftest import Counter
from tests.functional.verification.test_verify import Bank, sync

Card = dict[str, Any]


def hand_in(counter: Counter, card: Card) -> str:
    body = {
        "id_number": card["id_number"],
        "issued_on": card["issued_on"],
        "office": OFFICE_A,
        "finder": {"name": "李四"},
    }
    r = counter.post("/api/v1/found-cards", body)
    assert r.status_code == 201, r.text
    return str(r.json()["disposition"])


def revoke(counter: Counter, number: str) -> None:
    r = counter.post(f"/api/v1/persons/{number}/revocations", {"reason": "deceased"})
    assert r.status_code == 201, r.text


def stored_status(counter: Counter, card: Card) -> str:
    return next(str(c["status"]) for c in counter.cards(card["id_number"]) if c["card_id"] == card["card_id"])


def test_each_status_answers_as_documented(counter: Counter) -> None:
    cards: dict[str, Card] = {}
    cards["valid"] = counter.card(counter.person(dt.date(1990, 5, 4)))

    cards["reported_lost"] = counter.card(counter.person())
    assert counter.report(cards["reported_lost"], "lost").status_code == 201
    cards["reported_stolen"] = counter.card(counter.person())
    assert counter.report(cards["reported_stolen"], "stolen").status_code == 201

    number = counter.person()
    cards["superseded"] = counter.card(number, issued_on="2020-01-01", as_="admin")
    counter.card(number, kind="renewal")

    cards["revoked"] = counter.card(counter.person())
    revoke(counter, cards["revoked"]["id_number"])

    # Destroyed after the owner's registration was revoked: the card was answered `revoked`.
    cards["destroyed (revoked before)"] = counter.card(counter.person())
    revoke(counter, cards["destroyed (revoked before)"]["id_number"])
    assert hand_in(counter, cards["destroyed (revoked before)"]) == "destroyed"

    # Destroyed after a replacement: a lost card, found once its owner had a new one.
    number = counter.person()
    cards["destroyed (lost before)"] = counter.card(number, issued_on="2020-01-01", as_="admin")
    assert counter.report(cards["destroyed (lost before)"]).status_code == 201
    counter.card(number, kind="replacement")
    assert hand_in(counter, cards["destroyed (lost before)"]) == "destroyed"

    # Imports (admin): 11 years old at issue, a 5-year card.
    cards["expires today"] = counter.card(
        counter.person(dt.date(2010, 1, 1)), issued_on="2021-06-15", as_="admin"
    )
    cards["expired yesterday"] = counter.card(
        counter.person(dt.date(2010, 1, 2)), issued_on="2021-06-14", as_="admin"
    )
    cards["long-term"] = counter.card(counter.person(dt.date(1970, 1, 1)))  # 56: no expiry

    # The scenarios are what their names say (stored statuses, not answers).
    assert {label: stored_status(counter, card) for label, card in cards.items()} == {
        "valid": "valid",
        "reported_lost": "reported_lost",
        "reported_stolen": "reported_stolen",
        "superseded": "superseded",
        "revoked": "revoked",
        "destroyed (revoked before)": "destroyed",
        "destroyed (lost before)": "destroyed",
        "expires today": "valid",
        "expired yesterday": "expired",  # as staff see it: `expired` is derived, never stored
        "long-term": "valid",
    }
    assert (cards["expires today"]["expires_on"], cards["expired yesterday"]["expires_on"]) == (
        "2026-06-15",
        "2026-06-14",
    )
    assert cards["long-term"]["expires_on"] is None

    bank = Bank(counter, code="BANK-STATUS")
    sync(counter)

    def answer(card: Card, **over: Any) -> tuple[str, str | None]:
        r = bank.verify(card, **over)
        assert r.status_code == 200, r.text
        return r.json()["result"], r.json().get("reason")

    assert {label: answer(card) for label, card in cards.items()} == {
        "valid": ("valid", None),
        "reported_lost": ("invalid", "reported_lost"),
        "reported_stolen": ("invalid", "reported_stolen"),
        "superseded": ("invalid", "superseded"),
        "revoked": ("invalid", "revoked"),
        "destroyed (revoked before)": ("invalid", "superseded"),
        "destroyed (lost before)": ("invalid", "superseded"),
        "expires today": ("valid", None),
        "expired yesterday": ("invalid", "expired"),
        "long-term": ("valid", None),
    }
    # The chip serial, when a reader sends it, changes nothing for the right card.
    assert {label: answer(card, chip_serial=card["chip_serial"]) for label, card in cards.items()} == {
        "valid": ("valid", None),
        "reported_lost": ("invalid", "reported_lost"),
        "reported_stolen": ("invalid", "reported_stolen"),
        "superseded": ("invalid", "superseded"),
        "revoked": ("invalid", "revoked"),
        "destroyed (revoked before)": ("invalid", "superseded"),
        "destroyed (lost before)": ("invalid", "superseded"),
        "expires today": ("valid", None),
        "expired yesterday": ("invalid", "expired"),
        "long-term": ("valid", None),
    }

    valid, lost, long_term = cards["valid"], cards["reported_lost"], cards["long-term"]
    assert (valid["issued_on"], valid["expires_on"]) == ("2026-06-15", "2046-06-15")
    assert {
        "name": answer(valid, name="李四"),
        "issue date": answer(valid, issued_on="2026-06-14"),
        "expiry date": answer(valid, expires_on="2046-06-14"),
        "expiry date missing": answer(valid, expires_on=None),
        "chip serial": answer(valid, chip_serial="0" * 32),
        "lost card, name": answer(lost, name="李四"),
        "lost card, chip serial": answer(lost, chip_serial="0" * 32),
        "long-term card, a date": answer(long_term, expires_on="2046-06-15"),
        "unknown number": answer(valid, id_number="11010519491231002X"),
    } == {
        "name": ("mismatch", None),
        "issue date": ("mismatch", None),
        "expiry date": ("mismatch", None),
        "expiry date missing": ("mismatch", None),
        "chip serial": ("mismatch", None),
        "lost card, name": ("mismatch", None),
        "lost card, chip serial": ("mismatch", None),
        "long-term card, a date": ("mismatch", None),
        "unknown number": ("mismatch", None),
    }
