"""The database itself refuses a second valid card of one person (docs/rules.md, "One valid card"):
rows inserted directly, past every service and lock, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from idguard import uow
from idguard.registry import sealed
from idguard.registry.models import Card, Person
from tests.factories import OFFICE_A, id_number

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
BIRTH = dt.date(1990, 1, 1)
SQLITE_UNIQUE = "UNIQUE constraint failed: cards.person_id"  # SQLite names the columns, not the index
COMMON = {"name": "张三", "sex": "male", "ethnicity": "汉", "birth_date": BIRTH, "address": "北京"}


def add_person(engine: sa.Engine) -> tuple[uuid.UUID, str]:
    person_id, number = uuid.uuid4(), id_number(BIRTH)
    with uow.connection(engine) as conn:
        conn.execute(
            sa.insert(Person),
            sealed.sealed_values(  # names are stored sealed (registry/sealed.py)
                sealed.ring_of(engine),
                "persons",
                {"id": person_id, "id_number": number, "hukou_office": OFFICE_A, "created_at": NOW, **COMMON},
            ),
        )
    return person_id, number


def card_row(person_id: uuid.UUID, number: str, *, status: str, temporary: bool, day: int) -> dict[str, Any]:
    issued = dt.date(2020, 1, day)
    return {
        "id": uuid.uuid4(),
        "person_id": person_id,
        "id_number": number,
        "kind": "temporary" if temporary else "first",
        "temporary": temporary,
        "status": status,
        "issued_on": issued,
        "expires_on": issued.replace(year=2030),
        "issuing_office": OFFICE_A,
        "chip_serial": f"{day:032d}",
        "fingerprints_registered": False,
        "superseded_by": None,
        "created_at": NOW,
        "updated_at": NOW,
        **COMMON,
    }


def insert(engine: sa.Engine, row: dict[str, Any]) -> None:
    with uow.connection(engine) as conn:
        conn.execute(sa.insert(Card), sealed.sealed_values(sealed.ring_of(engine), "cards", row))


def statuses(engine: sa.Engine, person_id: uuid.UUID) -> list[tuple[bool, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(Card.temporary, Card.status).where(Card.person_id == person_id).order_by(Card.issued_on)
        ).all()
    return [(temporary, str(status)) for temporary, status in rows]


def test_a_second_valid_regular_card_is_refused_by_the_database(engine: sa.Engine) -> None:
    person_id, number = add_person(engine)
    insert(engine, card_row(person_id, number, status="valid", temporary=False, day=1))
    with pytest.raises(IntegrityError, match=f"uq_cards_one_valid_card|{SQLITE_UNIQUE}"):
        insert(engine, card_row(person_id, number, status="valid", temporary=False, day=2))
    assert statuses(engine, person_id) == [(False, "valid")]


def test_a_second_valid_temporary_card_is_refused_by_the_database(engine: sa.Engine) -> None:
    person_id, number = add_person(engine)
    insert(engine, card_row(person_id, number, status="valid", temporary=True, day=1))
    with pytest.raises(IntegrityError, match=f"uq_cards_one_valid_temporary_card|{SQLITE_UNIQUE}"):
        insert(engine, card_row(person_id, number, status="valid", temporary=True, day=2))
    assert statuses(engine, person_id) == [(True, "valid")]


def test_the_index_counts_only_valid_cards_of_one_kind(engine: sa.Engine) -> None:
    # Partial indexes: invalid cards of any number, and one valid card of each kind, are fine.
    person_id, number = add_person(engine)
    insert(engine, card_row(person_id, number, status="superseded", temporary=False, day=1))
    insert(engine, card_row(person_id, number, status="reported_lost", temporary=False, day=2))
    insert(engine, card_row(person_id, number, status="valid", temporary=False, day=3))
    insert(engine, card_row(person_id, number, status="valid", temporary=True, day=4))
    other_id, other_number = add_person(engine)
    insert(engine, card_row(other_id, other_number, status="valid", temporary=False, day=5))
    assert statuses(engine, person_id) == [
        (False, "superseded"),
        (False, "reported_lost"),
        (False, "valid"),
        (True, "valid"),
    ]
