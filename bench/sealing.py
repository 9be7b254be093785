"""Issue 16: what sealing personal data at rest costs, side by side with keys off.

Two databases seeded alike with N persons, each with one valid card: one sealed under a real key
ring (AES-256-GCM), one under a null ring that stores the clear UTF-8 bytes in the same columns
(keys off: the same schema, statements and row count, no cryptography). Then, in interleaved
rounds so that the machine's load falls on both alike:

- the verification index build (`IndexFollower.load`: read every card, open its name, pack it),
- loss reports through the use-case, one transaction each, with the applicant's name checked
  against the holder's (one name opened per report).

    .venv/bin/python bench/sealing.py [--cards 1000000] [--reports 1000] [--rounds 2]
                                      [--memory-cards 1000000] [--postgres-url URL]

The seeded database takes time (about 1.3 ms a person and card on a loaded two-core machine), so
`--cards 100000` with the default `--memory-cards 1000000` gives the million-card index build's
own work (`_facts` into a CardIndex from rows in memory) beside the database runs.

Times are wall-clock seconds for the index build (the best of the rounds) and reports per second
(the total of the rounds).
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from harness import admin_engine, note, scratch_database, settings_for, table
from idguard import uow
from idguard.core import sealing
from idguard.core.grants import Actor, Role
from idguard.core.idnumber import Sex, check_character
from idguard.db import migrate
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.registry import sealed
from idguard.registry.lifecycle import CardStatus, IssueKind, LossReason
from idguard.registry.loss_reports import report_loss
from idguard.registry.models import Card, Office, Person, Staff
from idguard.verification.index import CardIndex
from idguard.verification.runtime.follower import IndexFollower, _facts
from idguard.verification.runtime.keyring import KeyRing

NOW = dt.datetime(2026, 6, 15, 2, 0, tzinfo=dt.UTC)
OFFICE = "110105001"
CHUNK = 20_000
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华"


class NullRing(sealing.KeyRing):
    """Keys off: the clear bytes go where the ciphertext would."""

    def seal(self, plaintext: str, *, context: bytes) -> bytes:
        return plaintext.encode()

    def opener(self, key_id: str) -> Callable[[bytes, bytes], str]:
        return lambda sealed, context: bytes(sealed).decode()


def _number(i: int) -> tuple[str, dt.date]:
    """Distinct valid numbers: 20,000 birth dates from 1960 times 500 sequence numbers."""
    birth = dt.date(1960, 1, 1) + dt.timedelta(days=i % 20_000)
    body = f"110105{birth:%Y%m%d}{(i // 20_000) % 500 * 2 + 1:03d}"
    return body + check_character(body), birth


def seed(engine: sa.Engine, n: int) -> tuple[Actor, list[tuple[str, str, str]]]:
    """n persons with one valid card each, written in chunks through the engine's ring."""
    ring = sealed.ring_of(engine)
    staff_id = uuid.uuid4()
    with uow.connection(engine) as conn:
        conn.execute(
            sa.insert(Office), [{"code": OFFICE, "name": "bench", "region": "110105", "created_at": NOW}]
        )
        conn.execute(
            sa.insert(Staff),
            [
                {
                    "id": staff_id,
                    "username": "bench",
                    "password_hash": "x",
                    "role": Role.CLERK,
                    "office_code": OFFICE,
                    "active": True,
                    "created_at": NOW,
                }
            ],
        )
    sample: list[tuple[str, str, str]] = []
    for start in range(0, n, CHUNK):
        persons: list[dict[str, Any]] = []
        cards: list[dict[str, Any]] = []
        for i in range(start, min(n, start + CHUNK)):
            number, birth = _number(i)
            name = (
                SURNAMES[i % len(SURNAMES)] + GIVEN[(i // 20) % len(GIVEN)] + GIVEN[(i // 500) % len(GIVEN)]
            )
            address = f"北京市朝阳区建国路{i % 997 + 1}号{i % 31 + 1}单元{i % 2003}"
            pid, cid = uuid.uuid4(), uuid.uuid4()
            common = {
                "name": name,
                "sex": Sex.MALE,
                "ethnicity": "汉",
                "birth_date": birth,
                "address": address,
            }
            persons.append(
                sealed.sealed_values(
                    ring,
                    "persons",
                    {"id": pid, "id_number": number, "hukou_office": OFFICE, "created_at": NOW, **common},
                )
            )
            cards.append(
                sealed.sealed_values(
                    ring,
                    "cards",
                    {
                        "id": cid,
                        "person_id": pid,
                        "id_number": number,
                        "kind": IssueKind.FIRST,
                        "temporary": False,
                        "status": CardStatus.VALID,
                        "issued_on": dt.date(2020, 1, 1),
                        "expires_on": None,
                        "issuing_office": OFFICE,
                        "chip_serial": cid.hex.upper(),
                        "fingerprints_registered": False,
                        "created_at": NOW,
                        "updated_at": NOW,
                        **common,
                    },
                )
            )
            if len(sample) < 100_000 and i % 7 == 0:
                sample.append((str(cid), number, name))
        with uow.connection(engine) as conn:
            conn.execute(sa.insert(Person), persons)
            conn.execute(sa.insert(Card), cards)
    actor = Actor(staff_id=staff_id, username="bench", role=Role.CLERK, office=OFFICE)
    return actor, sample


def index_build(engine: sa.Engine) -> float:
    follower = IndexFollower(make_sessionmaker(engine), CardIndex(), KeyRing())
    started = time.perf_counter()
    follower.load()
    return time.perf_counter() - started


def loss_reports(engine: sa.Engine, actor: Actor, cards: list[tuple[str, str, str]]) -> float:
    sessions = make_sessionmaker(engine)
    started = time.perf_counter()
    for card_id, number, name in cards:
        with uow.transaction(sessions) as session:
            report_loss(
                session,
                actor=actor,
                now=NOW,
                card_id=card_id,
                reason=LossReason.LOST,
                office=OFFICE,
                applicant_id_number=number,
                applicant_name=name,
            )
    return time.perf_counter() - started


def compare(
    backend: str, urls: dict[str, str], cards: int, reports: int, rounds: int
) -> list[tuple[object, ...]]:
    engines: dict[str, sa.Engine] = {}
    samples: dict[str, list[tuple[str, str, str]]] = {}
    actors: dict[str, Actor] = {}
    for mode, url in urls.items():
        engine = make_engine(settings_for(url))
        if mode == "keys off":
            sealing.attach(engine, NullRing({"off": bytes(32)}))
        migrate.upgrade(engine)
        started = time.perf_counter()
        actors[mode], samples[mode] = seed(engine, cards)
        note(f"{backend} {mode}: {cards:,} persons and cards seeded in {time.perf_counter() - started:.0f} s")
        engines[mode] = engine
    builds: dict[str, list[float]] = {mode: [] for mode in urls}
    spent: dict[str, float] = dict.fromkeys(urls, 0.0)
    per_round = max(1, reports // rounds)
    for r in range(rounds):
        for mode in urls if r % 2 == 0 else reversed(list(urls)):
            builds[mode].append(index_build(engines[mode]))
            batch = samples[mode][r * per_round : (r + 1) * per_round]
            spent[mode] += loss_reports(engines[mode], actors[mode], batch)
    for engine in engines.values():
        engine.dispose()
    build = {mode: min(builds[mode]) for mode in urls}
    rate = {mode: per_round * rounds / spent[mode] for mode in urls}
    rows: list[tuple[object, ...]] = [(f"{backend}, {mode}", build[mode], rate[mode]) for mode in urls]
    rows.append(
        (
            f"{backend}, sealed / keys off",
            build["sealed"] / build["keys off"],
            rate["sealed"] / rate["keys off"],
        )
    )
    return rows


def in_memory(cards: int, rounds: int) -> list[tuple[object, ...]]:
    """The index build's own work for `cards` cards, without the database: the rows as the
    follower reads them (sealed name, or clear bytes with keys off) through `_facts` into a
    CardIndex, best of `rounds`. What sealing adds to the build is this difference; the
    database part (reading 28 more bytes a name) is measured above at the size seeded."""
    real = sealing.KeyRing({"k": bytes(range(32))})
    null = NullRing({"off": bytes(32)})
    day = dt.date(2020, 1, 1)
    rows: dict[str, list[tuple[Any, ...]]] = {"sealed": [], "keys off": []}
    for i in range(cards):
        number, _ = _number(i)
        cid = uuid.uuid4()
        name = SURNAMES[i % len(SURNAMES)] + GIVEN[(i // 20) % len(GIVEN)] + GIVEN[(i // 500) % len(GIVEN)]
        for mode, ring in (("sealed", real), ("keys off", null)):
            blob = ring.seal(name, context=sealing.sealing_context("cards", "name", cid))
            rows[mode].append(
                (
                    number,
                    cid,
                    ring.active_key_id,
                    blob,
                    day,
                    None,
                    cid.hex,
                    CardStatus.VALID,
                    None,
                    None,
                    None,
                )
            )
    best: dict[str, float] = {}
    for r in range(rounds):
        for mode, ring in (
            (("sealed", real), ("keys off", null)) if r % 2 == 0 else (("keys off", null), ("sealed", real))
        ):
            index = CardIndex()
            started = time.perf_counter()
            index.load(_facts(rows[mode], ring))
            best[mode] = min(best.get(mode, float("inf")), time.perf_counter() - started)
            assert len(index) == cards
    out: list[tuple[object, ...]] = [(f"in memory, {mode}", best[mode], "") for mode in best]
    out.append(("in memory, sealed / keys off", best["sealed"] / best["keys off"], ""))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cards", type=int, default=1_000_000)
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--postgres-url", default=None, help="also on PostgreSQL (scratch databases)")
    parser.add_argument("--memory-cards", type=int, default=1_000_000, help="index build without a database")
    args = parser.parse_args()
    rows: list[tuple[object, ...]] = []
    if args.memory_cards:
        rows += in_memory(args.memory_cards, max(2, args.rounds))
    if args.cards:
        with tempfile.TemporaryDirectory() as tmp:
            urls = {
                mode: f"sqlite:///{Path(tmp) / f'{i}.db'}" for i, mode in enumerate(("sealed", "keys off"))
            }
            rows += compare("sqlite", urls, args.cards, args.reports, args.rounds)
    if args.cards and args.postgres_url:
        admin = admin_engine(args.postgres_url)
        with (
            scratch_database(admin, args.postgres_url, "idguard_bench_sealed") as sealed_url,
            scratch_database(admin, args.postgres_url, "idguard_bench_clear") as clear_url,
        ):
            rows += compare(
                "postgresql",
                {"sealed": sealed_url, "keys off": clear_url},
                args.cards,
                args.reports,
                args.rounds,
            )
    table(
        f"Sealing personal data: index build of {args.cards:,} cards ({args.memory_cards:,} in memory),"
        f" {args.reports:,} loss reports",
        ("database, mode", "index build s", "loss reports/s"),
        rows,
    )


if __name__ == "__main__":
    main()
