"""The migrations are the schema: they build it from empty, tear it down, and match the models."""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from idguard import uow
from idguard.db import migrate
from idguard.registry.models import Card
from idguard.schema import Base
from tests.factories import OFFICE_A, id_number


def _reset_to_base(engine: sa.Engine) -> None:
    migrate.downgrade(engine, "base")
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) <= {"alembic_version"}


def test_empty_to_head_to_base_and_back(engine: sa.Engine) -> None:
    _reset_to_base(engine)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        assert {t.name for t in Base.metadata.sorted_tables} <= tables
        assert conn.scalar(sa.text("SELECT seq FROM ledger_head WHERE id = 1")) == 0


def test_models_and_migrations_do_not_drift(engine: sa.Engine) -> None:
    """What `alembic check` does: autogenerate against head must find nothing to change."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], f"models differ from migrations: {diff}"


def test_one_valid_card_is_enforced_by_the_database_itself(engine: sa.Engine) -> None:
    """Bypass the services: two valid regular cards for one person are refused by the index."""
    with engine.connect() as conn:
        index_names = {ix["name"] for ix in sa.inspect(conn).get_indexes("cards")}
    assert {"uq_cards_one_valid_card", "uq_cards_one_valid_temporary_card"} <= index_names


def test_cards_flagged_before_fingerprints_were_stored_are_unflagged(engine: sa.Engine) -> None:
    """0003: a card flagged under 0002 has no stored fingers, so no comparison could ever pass and
    its loss reports would be refused for good; the upgrade unflags it (it can be reported)."""
    migrate.downgrade(engine, "0002")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    person_id, card_id = uuid.uuid4(), uuid.uuid4()
    number = id_number(dt.date(1990, 1, 1))
    common = {
        "name": "张三",
        "sex": "male",
        "ethnicity": "汉",
        "birth_date": dt.date(1990, 1, 1),
        "address": "北京",
    }
    with uow.connection(engine) as conn:
        # The tables as they were at 0002 (names still in the clear), not as the models are now.
        old = sa.MetaData()
        persons = sa.Table("persons", old, sa.Column("id", sa.Uuid, primary_key=True), autoload_with=conn)
        cards = sa.Table(
            "cards",
            old,
            sa.Column("id", sa.Uuid, primary_key=True),
            sa.Column("person_id", sa.Uuid),
            autoload_with=conn,
        )
        conn.execute(
            sa.insert(persons),
            {"id": person_id, "id_number": number, "hukou_office": OFFICE_A, "created_at": now, **common},
        )
        conn.execute(
            sa.insert(cards),
            {
                "id": card_id,
                "person_id": person_id,
                "id_number": number,
                "kind": "first",
                "temporary": False,
                "status": "valid",
                "issued_on": dt.date(2015, 1, 1),
                "expires_on": dt.date(2035, 1, 1),
                "issuing_office": OFFICE_A,
                "chip_serial": "C" * 32,
                "fingerprints_registered": True,
                "superseded_by": None,
                "created_at": now,
                "updated_at": now,
                **common,
            },
        )
    migrate.upgrade(engine)
    with engine.connect() as conn:
        flag = conn.scalar(sa.select(Card.fingerprints_registered).where(Card.id == card_id))
    assert flag is False
