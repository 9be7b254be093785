"""Every database test runs on SQLite and, when IDGUARD_TEST_POSTGRES_URL is set, on PostgreSQL.

SQLite: the schema is built once with Alembic into a template file, copied per test.
PostgreSQL: one database per xdist worker, built with Alembic, emptied between tests.
In CI the URL is always set (.ci/run refuses to start without a reachable PostgreSQL).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.app import create_app
from idguard.config import Environment, Settings
from idguard.core.clock import FixedClock
from idguard.db import migrate
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.schema import Base
from tests.factories import NOW, SECRET, seed_world

POSTGRES_URL = os.environ.get("IDGUARD_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", "postgres"]


def settings_for(url: str) -> Settings:
    return Settings(database_url=url, env=Environment.TEST, secret_key=SECRET)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(settings_for(f"sqlite:///{path}"))
    migrate.upgrade(engine)
    with uow.connection(engine) as conn:
        seed_world(conn)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_database(worker_id: str) -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip("IDGUARD_TEST_POSTGRES_URL is not set: PostgreSQL tests skipped (CI always sets it)")
    # Unique per process, so two runs on one server (two checkouts, CI and a developer) never
    # truncate each other's database.
    name = f"idguard_test_{worker_id}_{os.getpid()}"
    admin = sa.create_engine(
        sa.make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(settings_for(url))
    migrate.upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def empty_postgres(conn: sa.Connection) -> None:
    """Every table emptied and every sequence back at its start, as TRUNCATE … RESTART IDENTITY
    would, in a quarter of its time: DELETE of a few rows per table, with foreign-key triggers off
    for the transaction (`session_replication_role`, the tests' superuser may set it), instead of
    TRUNCATE, which makes new files for each of the ~40 tables of every test."""
    conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
    for table in reversed(Base.metadata.sorted_tables):
        conn.execute(table.delete())
    sequences = (
        conn.exec_driver_sql(
            "SELECT quote_ident(sequence_schema) || '.' || quote_ident(sequence_name) "
            "FROM information_schema.sequences WHERE sequence_schema = current_schema()"
        )
        .scalars()
        .all()
    )
    for sequence in sequences:
        conn.exec_driver_sql(f"ALTER SEQUENCE {sequence} RESTART")
    conn.exec_driver_sql("SET LOCAL session_replication_role = DEFAULT")


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return fresh_database(request, request.param, tmp_path)


def fresh_database(request: pytest.FixtureRequest, backend: str, directory: Path) -> str:
    """The seeded test world on a database of its own: a copy of the SQLite template in
    `directory`, or this process's PostgreSQL database emptied and seeded again."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = directory / "idguard.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database")
    engine = make_engine(settings_for(url))
    with uow.connection(engine) as conn:
        empty_postgres(conn)
        conn.exec_driver_sql("INSERT INTO ledger_head (id, seq) VALUES (1, 0)")
        conn.exec_driver_sql("INSERT INTO registry_versions (name, version) VALUES ('units', 0)")
        seed_world(conn)
    engine.dispose()
    return url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return settings_for(database_url)


@pytest.fixture
def engine(settings: Settings) -> Iterator[sa.Engine]:
    engine = make_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: sa.Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def client(settings: Settings, clock: FixedClock) -> Iterator[TestClient]:
    app = create_app(settings, clock=clock)
    with TestClient(app) as client:
        yield client
    app.state.engine.dispose()
