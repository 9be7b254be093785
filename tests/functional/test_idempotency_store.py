"""Stored answers of idempotent writes hold personal data: sealed at rest, replayed for 24 hours,
then purged (issue 9, item 10)."""

from __future__ import annotations

import datetime as dt

import httpx2 as httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.core.clock import FixedClock
from idguard.db.common import IdempotencyRecord
from tests.factories import OFFICE_A, id_number
from tests.functional.conftest import Counter, assert_problem

PERSON = {
    "name": "王秀英",
    "sex": "female",
    "ethnicity": "汉",
    "birth_date": "1990-05-04",
    "address": "北京市朝阳区建国门外大街1号",
    "hukou_office": OFFICE_A,
}


def new_number() -> str:
    return id_number(dt.date(1990, 5, 4), female=True)


def register(counter: Counter, key: str, number: str) -> httpx.Response:
    return counter.post("/api/v1/persons", {**PERSON, "id_number": number}, **{"Idempotency-Key": key})


def test_a_stored_answer_holds_no_personal_data_in_the_clear(counter: Counter, engine: sa.Engine) -> None:
    number = new_number()
    first = register(counter, "person-1", number)
    assert first.status_code == 201, first.text
    with engine.connect() as conn:
        stored = conn.scalar(sa.select(IdempotencyRecord.body))
    assert stored
    for secret in (number, PERSON["name"], PERSON["address"], "王"):
        assert secret not in stored
    again = register(counter, "person-1", number)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()


def test_an_answer_is_replayed_for_24_hours_then_the_request_acts_anew(
    counter: Counter, clock: FixedClock
) -> None:
    number = new_number()
    first = register(counter, "person-2", number)
    assert first.status_code == 201
    clock.advance(dt.timedelta(hours=23, minutes=59))
    replay = register(counter, "person-2", number)
    assert replay.headers.get("Idempotent-Replayed") == "true"
    clock.advance(dt.timedelta(minutes=2))
    late = register(counter, "person-2", number)
    # not replayed: it acted again, and the registry refuses a second registration of the number
    assert_problem(late, 409, says="already registered")


def test_expired_answers_are_purged(counter: Counter, session_factory: sessionmaker[Session]) -> None:
    register(counter, "person-3", new_number())
    with uow.transaction(session_factory) as session:
        assert uow.purge_expired(session, counter_now(counter)) == 0
        assert uow.purge_expired(session, counter_now(counter) + dt.timedelta(hours=25)) == 1
    with session_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(IdempotencyRecord)) == 0


def test_a_stored_answer_that_does_not_open_is_refused_not_replayed(
    counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    number = new_number()
    register(counter, "person-4", number)
    with uow.transaction(session_factory) as session:
        record = session.scalars(sa.select(IdempotencyRecord)).one()
        record.body = record.body[:-8] + "AAAAAAA="  # altered at rest
    retry = register(counter, "person-4", number)
    assert_problem(retry, 503, says="cannot be read")


def counter_now(counter: Counter) -> dt.datetime:
    clock: FixedClock = counter.client.app.state.clock
    return clock.now()
