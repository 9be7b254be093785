"""Engine and session factory, built from Settings by the app factory or CLI (never at import)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from idguard.config import Settings
from idguard.core import sealing

# A database that stops answering (a network partition drops packets; nothing is refused) must not
# hold a request, or a worker thread, for minutes. libpq's own limits, in every connection:
POSTGRES_TIMEOUTS: dict[str, Any] = {
    "connect_timeout": 3,  # seconds to establish a connection (and to get past authentication)
    # milliseconds that sent data may stay unacknowledged before the connection is dropped
    "tcp_user_timeout": 5_000,
    # while waiting for an answer with nothing to send: probe an idle link after 3 s, every 1 s,
    # and give up after 2 unanswered probes (about 5 s)
    "keepalives": 1,
    "keepalives_idle": 3,
    "keepalives_interval": 1,
    "keepalives_count": 2,
}
# Seconds a request waits for a pooled connection before it is answered 503 (all in use).
POOL_TIMEOUT_SECONDS = 5.0


def make_engine(settings: Settings, **kwargs: Any) -> sa.Engine:
    # Statement parameters hold id numbers and names: never let SQL logging or an error print them.
    kwargs.setdefault("hide_parameters", True)
    url = settings.database_url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if settings.is_sqlite:
        engine = sa.create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        _configure_sqlite(engine, settings.sqlite_busy_timeout_ms)
        sealing.attach(engine, sealing.KeyRing(settings.personal_data_keys))  # personal data at rest
        return engine
    # No pool_pre_ping: it costs a round trip on every request. A connection found dead raises a
    # disconnect error, SQLAlchemy then invalidates the pool, and the client gets a 503 to retry.
    kwargs.setdefault("pool_timeout", POOL_TIMEOUT_SECONDS)  # read here: tests shorten it
    connect_args = {**POSTGRES_TIMEOUTS, **kwargs.pop("connect_args", {})}
    engine = sa.create_engine(url, pool_recycle=1800, connect_args=connect_args, **kwargs)
    sealing.attach(engine, sealing.KeyRing(settings.personal_data_keys))  # personal data at rest
    return engine


def _configure_sqlite(engine: sa.Engine, busy_timeout_ms: int) -> None:
    """WAL, foreign keys, and BEGIN IMMEDIATE.

    pysqlite's default deferred BEGIN lets two writers both read, then one fails to upgrade its
    lock with "database is locked". Taking the write lock at BEGIN serialises writers on the
    busy timeout instead, so concurrent requests on one person queue and then see each other's
    result (the SQLAlchemy-documented recipe for serialisable SQLite transactions).
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged loss report must survive a power cut, not just a crash.
            cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # A reader that never writes (read_only) takes no write lock: under WAL it reads a
        # snapshot while a writer commits, instead of queueing behind every write.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")


READ_ONLY = "idguard_read_only"


def read_only(engine: sa.Engine) -> sa.Engine:
    """The engine for transactions that only read (the verification index's follower): on SQLite
    they begin deferred, without the write lock every other transaction takes at BEGIN."""
    reader = engine.execution_options(**{READ_ONLY: True})
    ring = sealing.ring_for(engine)
    if ring is not None:  # the same personal-data keys (registry/sealed.py finds them by engine)
        sealing.attach(reader, ring)
    return reader


def make_sessionmaker(engine: sa.Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def sqlite_path(settings: Settings) -> Path | None:
    if not settings.is_sqlite:
        return None
    database = sa.make_url(settings.database_url).database
    return Path(database) if database and database != ":memory:" else None
