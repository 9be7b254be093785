"""Two clerks at the same moment on the same person: one success, one clean 409, never two valid
cards and never a lost or duplicated ledger event — on SQLite and on PostgreSQL, with threads."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections import Counter as Tally
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from idguard.registry.lifecycle import CardStatus
from idguard.registry.models import Card, LedgerEvent, LedgerHead, Person
from tests.factories import OFFICE_A, OFFICE_B, auth, id_number

THREADS = 8


def race(calls: list[Callable[[], int]]) -> Tally[int]:
    """Start every call at the same instant; tally the HTTP statuses."""
    barrier = threading.Barrier(len(calls))
    results: list[int] = []
    lock = threading.Lock()

    def run(call: Callable[[], int]) -> None:
        barrier.wait()
        status = call()
        with lock:
            results.append(status)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return Tally(results)


def new_person(client: TestClient) -> str:
    number = id_number(dt.date(1988, 8, 8))
    body = {
        "id_number": number,
        "name": "周九",
        "sex": "male",
        "ethnicity": "汉",
        "birth_date": "1988-08-08",
        "address": "北京",
        "hukou_office": OFFICE_A,
    }
    assert client.post("/api/v1/persons", json=body, headers=auth("clerk_a")).status_code == 201
    return number


def assert_ledger_consistent(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        seqs = list(s.scalars(sa.select(LedgerEvent.seq).order_by(LedgerEvent.seq)))
        head = s.scalar(sa.select(LedgerHead.seq))
        assert seqs == list(range(1, (head or 0) + 1)), "ledger seq must be gap-free and match the head"
        for card in s.scalars(sa.select(Card)):
            last = s.scalars(
                sa.select(LedgerEvent).where(LedgerEvent.card_id == card.id).order_by(LedgerEvent.seq.desc())
            ).first()
            assert last is not None
            assert last.status_after == card.status


def valid_regular_cards(session_factory: sessionmaker[Session], number: str) -> int:
    with session_factory() as s:
        return len(
            s.scalars(
                sa.select(Card)
                .join(Person)
                .where(Person.id_number == number, Card.status == CardStatus.VALID, Card.temporary.is_(False))
            ).all()
        )


def test_concurrent_first_issue(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    number = new_person(client)

    def issue() -> int:
        return client.post(
            f"/api/v1/persons/{number}/cards",
            json={"kind": "first", "office": OFFICE_A},
            headers=auth("clerk_a"),
        ).status_code

    assert race([issue] * THREADS) == Tally({201: 1, 409: THREADS - 1})
    assert valid_regular_cards(session_factory, number) == 1
    assert_ledger_consistent(session_factory)


def test_concurrent_replacements_naming_the_card(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    number = new_person(client)
    first = client.post(
        f"/api/v1/persons/{number}/cards", json={"kind": "first", "office": OFFICE_A}, headers=auth("clerk_a")
    ).json()

    def replace(office: str, clerk: str) -> Callable[[], int]:
        body = {"kind": "replacement", "office": office, "previous_card_id": first["card_id"]}
        return lambda: (
            client.post(f"/api/v1/persons/{number}/cards", json=body, headers=auth(clerk)).status_code
        )

    calls = [replace(OFFICE_A, "clerk_a"), replace(OFFICE_B, "clerk_b")] * (THREADS // 2)
    assert race(calls) == Tally({201: 1, 409: THREADS - 1})
    assert valid_regular_cards(session_factory, number) == 1
    assert_ledger_consistent(session_factory)


def test_concurrent_loss_report_and_replacement(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    """Different operations on one person serialise on the person lock; the ledger stays exact."""
    number = new_person(client)
    card = client.post(
        f"/api/v1/persons/{number}/cards", json={"kind": "first", "office": OFFICE_A}, headers=auth("clerk_a")
    ).json()
    report = {"card_id": card["card_id"], "reason": "lost", "office": OFFICE_B, "applicant_id_number": number}
    renew = {"kind": "renewal", "office": OFFICE_A, "previous_card_id": card["card_id"]}
    calls: list[Callable[[], int]] = [
        lambda: client.post("/api/v1/loss-reports", json=report, headers=auth("clerk_b")).status_code,
        lambda: (
            client.post(f"/api/v1/persons/{number}/cards", json=renew, headers=auth("clerk_a")).status_code
        ),
    ] * (THREADS // 2)
    statuses = race(calls)
    assert statuses[201] == 2 or statuses[201] == 1, (
        statuses
    )  # report then renewal both fine; renewal first blocks the report
    assert statuses[201] + statuses[409] == THREADS
    assert valid_regular_cards(session_factory, number) == (1 if statuses[201] else 0)
    assert_ledger_consistent(session_factory)


def test_concurrent_retries_with_one_idempotency_key_act_once(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    number = new_person(client)
    card = client.post(
        f"/api/v1/persons/{number}/cards", json={"kind": "first", "office": OFFICE_A}, headers=auth("clerk_a")
    ).json()
    body = {"card_id": card["card_id"], "reason": "stolen", "office": OFFICE_A, "applicant_id_number": number}
    answers: list[tuple[int, str]] = []
    lock = threading.Lock()

    def send() -> int:
        r = client.post(
            "/api/v1/loss-reports", json=body, headers={**auth("clerk_a"), "Idempotency-Key": "same"}
        )
        answer = r.json()
        # How far the change had reached the workers is told once, by the answer that made it.
        made_it = answer.pop("propagation", None) is not None
        with lock:
            answers.append((r.status_code, json.dumps(answer, sort_keys=True)))
            made.append(made_it)
        return r.status_code

    made: list[bool] = []
    assert race([send] * THREADS) == Tally({201: THREADS})
    assert len({text for _, text in answers}) == 1, "every retry must get the first answer"
    assert made.count(True) == 1, "one request acted; the others replayed its answer"
    with session_factory() as s:
        events = s.scalars(
            sa.select(LedgerEvent.event).where(LedgerEvent.card_id == uuid.UUID(card["card_id"]))
        )
        assert list(events) == ["issued:first", "reported_stolen"]
    assert_ledger_consistent(session_factory)


@pytest.mark.parametrize("writers", [THREADS])
def test_many_writers_on_different_people_keep_the_ledger_gap_free(
    client: TestClient, session_factory: sessionmaker[Session], writers: int
) -> None:
    numbers = [new_person(client) for _ in range(writers)]

    def issue(n: str) -> Callable[[], int]:
        return lambda: (
            client.post(
                f"/api/v1/persons/{n}/cards",
                json={"kind": "first", "office": OFFICE_A},
                headers=auth("clerk_a"),
            ).status_code
        )

    assert race([issue(n) for n in numbers]) == Tally({201: writers})
    assert_ledger_consistent(session_factory)
