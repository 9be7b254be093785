"""What the verify parts share: the targets, the cached demo database, a bench unit, the query mix."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from bench.harness import (
    SECRET,
    admin_engine,
    database_url,
    note,
    recreate_database,
    scratch_database,
    settings_for,
)
from idguard.core.idnumber import check_character
from idguard.db import migrate
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.demo.load import load_demo
from idguard.registry import sealed
from idguard.registry.lifecycle import CardStatus
from idguard.registry.models import Card
from idguard.verification import units

PURPOSE = "account_opening"
# Far above anything this bench can reach, so the limiter never answers 429 while we measure
# (the API caps rate_limit at 100,000/s, which a 1000-item batch run could exceed; the service
# layer does not).
RATE_LIMIT = 10_000_000
TARGET_CHECKS_PER_CORE = 500_000
TARGET_HTTP_RATIO = 0.80
TARGET_P99_MS = 10.0
TARGET_BATCH_CHECKS = 200_000
TARGET_PROPAGATION_P99_MS = 100.0
TARGET_BYTES_PER_CARD = 200


# ---------------------------------------------------------------------------------------------
# Databases


def _count(url: str, table_name: str) -> int | None:
    engine = make_engine(settings_for(url))
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table_name}").scalar_one())  # noqa: S608 - constant
    except sa.exc.DBAPIError:
        return None
    finally:
        engine.dispose()


def cached_demo(admin: sa.Engine, admin_url: str, name: str, citizens: int) -> str:
    """The demo database `name` with `citizens` persons: reused if complete, else (re)loaded.

    The PostgreSQL load is one transaction, so a database holding the right number of persons
    is a complete one. A reused database is first migrated to the current schema (a no-op when
    it is already there), so the bench never serves a schema older than the code's."""
    url = database_url(admin_url, name)
    with admin.connect() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
    if exists and _count(url, "persons") == citizens:
        engine = make_engine(settings_for(url))
        try:
            migrate.upgrade(engine)
        finally:
            engine.dispose()
        note(f"reusing demo database {name} ({citizens:,} citizens, {_count(url, 'cards'):,} cards)")
        return url
    recreate_database(admin, name)
    engine = make_engine(settings_for(url))
    try:
        migrate.upgrade(engine)
        note(f"loading {citizens:,} demo citizens into {name} (once; later runs reuse it) ...")
        note(load_demo(engine, citizens=citizens, seed=1, now=dt.datetime.now(dt.UTC)).summary())
    finally:
        engine.dispose()
    return url


def demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a bench serving a copy of the cached demo database (`demo_copy`)."""
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("IDGUARD_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("--citizens", type=int, default=20_000, help="demo population (cached database)")


@contextlib.contextmanager
def demo_copy(args: argparse.Namespace, name: str, template: str | None = None) -> Iterator[str]:
    """A scratch copy (database `name` and this process's id) of `template`, by default the
    cached demo database of `args.citizens` persons (loaded once, `cached_demo`): its URL."""
    admin = admin_engine(args.postgres_url)
    try:
        if template is None:
            template = f"idguard_bench_{args.citizens}"
            cached_demo(admin, args.postgres_url, template, args.citizens)
        with scratch_database(admin, args.postgres_url, f"{name}_{os.getpid()}", template=template) as url:
            yield url
    finally:
        admin.dispose()


def onboard_bench_unit(url: str, code: str) -> str:
    engine = make_engine(settings_for(url))
    try:
        with make_sessionmaker(engine)() as session:
            issued = units.onboard(
                session,
                actor=None,
                now=dt.datetime.now(dt.UTC),
                secret_key=SECRET,
                code=code,
                name="bench bank",
                sector="bank",
                purposes=[PURPOSE],
                rate_limit=RATE_LIMIT,
            )
            session.commit()
            return issued.api_key
    finally:
        engine.dispose()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------------------------------------
# The query mix


@dataclass(frozen=True, slots=True)
class Probe:
    id_number: str
    name: str
    issued_on: dt.date
    expires_on: dt.date | None

    def body(self) -> dict[str, Any]:
        return {
            "id_number": self.id_number,
            "name": self.name,
            "issued_on": self.issued_on.isoformat(),
            "expires_on": self.expires_on.isoformat() if self.expires_on else None,
            "purpose": PURPOSE,
            "operator": "bench-teller",
        }


def query_mix(url: str, n: int, today: dt.date, seed: int = 7) -> list[Probe]:
    """n probes: 90 % cards valid today, 5 % invalid ones (reported, superseded, revoked,
    expired), 5 % mismatches (half a wrong name on a real number, half an unknown number)."""
    engine = make_engine(settings_for(url))
    try:
        with engine.connect() as conn:  # typed columns: dates on SQLite too (bench part 6)
            found = conn.execute(
                sa.select(
                    Card.id_number,
                    Card.id,
                    Card.seal_key,
                    Card.name_sealed,
                    Card.issued_on,
                    Card.expires_on,
                    Card.status,
                )
            ).all()
        ring = sealed.ring_of(engine)  # names are sealed at rest: opened for the probes
        rows = [
            SimpleNamespace(
                id_number=r.id_number,
                name=sealed.card_name(ring, r.id, r.seal_key, r.name_sealed),
                issued_on=r.issued_on,
                expires_on=r.expires_on,
                status=r.status,
            )
            for r in found
        ]
    finally:
        engine.dispose()
    valid = [
        r for r in rows if r.status == CardStatus.VALID and (r.expires_on is None or r.expires_on >= today)
    ]
    invalid = [
        r
        for r in rows
        if not (r.status == CardStatus.VALID and (r.expires_on is None or r.expires_on >= today))
    ]
    known = {r.id_number for r in rows}
    rng = random.Random(seed)
    probes = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.90:
            r = rng.choice(valid)
            probes.append(Probe(r.id_number, r.name, r.issued_on, r.expires_on))
        elif roll < 0.95:
            r = rng.choice(invalid)
            probes.append(Probe(r.id_number, r.name, r.issued_on, r.expires_on))
        elif roll < 0.975:
            r = rng.choice(valid)
            probes.append(Probe(r.id_number, r.name + "某", r.issued_on, r.expires_on))
        else:
            r = rng.choice(valid)
            probes.append(Probe(_unknown_number(r.id_number, known, rng), r.name, r.issued_on, r.expires_on))
    return probes


def _unknown_number(near: str, known: set[str], rng: random.Random) -> str:
    """A well-formed number (right check character) that no card carries."""
    while True:
        body = near[:14] + f"{rng.randrange(1000):03d}"
        number = body + check_character(body)
        if number not in known:
            return number
