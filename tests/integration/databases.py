"""A scratch registry for the integration tests that start real servers on it (several workers,
several nodes): a PostgreSQL database of its own, created and dropped here, or a SQLite file."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from idguard import uow
from idguard.db import migrate
from idguard.db.engine import make_engine
from tests.conftest import settings_for
from tests.factories import seed_world


@contextlib.contextmanager
def scratch_database(tmp_path: Path, postgres_url: str | None, *, prefix: str) -> Iterator[str]:
    """The URL of a migrated registry with the test world (offices, one account per role): a new
    database named `<prefix>_<random>` on the server of `postgres_url` (dropped at the end, with
    whatever still holds it), or without one, `tmp_path`/idguard.db."""
    admin: sa.Engine | None = None
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    if postgres_url:
        admin = sa.create_engine(
            sa.make_url(postgres_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = sa.make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{tmp_path / 'idguard.db'}"
    try:
        engine = make_engine(settings_for(url))
        migrate.upgrade(engine)
        with uow.connection(engine) as conn:
            seed_world(conn)
        engine.dispose()
        yield url
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()
