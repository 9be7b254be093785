"""The migrations are the schema: they build it from empty, tear it down, and match the models."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from idguard.db import migrate
from idguard.db.models import Base


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
