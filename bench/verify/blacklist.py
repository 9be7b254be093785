"""Part 7: a blacklist of N persons (default 100,000) loads into a worker: the index with every
card's flags (`IndexFollower.load`, the cards joined with `person_flags`) beside the same index
without any flags row (the baseline), and the blacklist gallery (`BlacklistGallery.load`: every
listed person's two registered fingers opened and added to the 1:N gallery). Target: <= 10 s.

A SQLite file of its own in the work directory: N persons with one card each and two sealed
fingers (a few distinct synthetic templates, cycled: building 2N templates would take an hour;
what is measured is opening, decoding and adding them), written by bulk inserts."""

from __future__ import annotations

import datetime as dt
import time
import uuid
import zlib
from pathlib import Path

import sqlalchemy as sa

from bench.harness import note, settings_for, table
from idguard import uow
from idguard.biometrics import fingerprints as fingerprint_service
from idguard.biometrics.fingerprints import Biometrics, _context
from idguard.biometrics.models import Fingerprint
from idguard.db import migrate
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.demo import fingers
from idguard.registry import sealed
from idguard.registry.models import Card, Office, Person
from idguard.verification.index import CardIndex
from idguard.verification.models import PersonFlags
from idguard.verification.runtime.follower import IndexFollower
from idguard.verification.runtime.gallery import BlacklistGallery
from idguard.verification.runtime.keyring import KeyRing

TARGET_SECONDS = 10.0
TEMPLATES = 16  # distinct synthetic fingers, cycled
BATCH = 20_000
NOW = dt.datetime(2026, 6, 15, 2, 0, tzinfo=dt.UTC)


def _build(url: str, persons: int, biometrics: Biometrics, *, flags: bool) -> None:
    engine = make_engine(settings_for(url))
    migrate.upgrade(engine)
    samples = [
        fingerprint_service.prepare_enrolment(fingers.enrolment_samples(f"11010519900101{n:03d}X"))
        for n in range(TEMPLATES)
    ]
    with uow.connection(engine) as conn:
        conn.execute(
            sa.insert(Office), [{"code": "110105001", "name": "bench", "region": "110105", "created_at": NOW}]
        )
    vault = biometrics.vault
    for start in range(0, persons, BATCH):
        people, cards, listed, stored = [], [], [], []
        for i in range(start, min(persons, start + BATCH)):
            person_id, card_id = uuid.uuid4(), uuid.uuid4()
            number = f"1101051990{i:07d}X"
            common = {
                "name": "某某",
                "sex": "male",
                "ethnicity": "汉",
                "birth_date": dt.date(1990, 1, 1),
                "address": "bench",
            }
            people.append(
                {
                    "id": person_id,
                    "id_number": number,
                    "hukou_office": "110105001",
                    "created_at": NOW,
                    **common,
                }
            )
            cards.append(
                {
                    "id": card_id,
                    "person_id": person_id,
                    "id_number": number,
                    "kind": "first",
                    "temporary": False,
                    "status": "valid",
                    "issued_on": dt.date(2020, 1, 1),
                    "expires_on": dt.date(2040, 1, 1),
                    "issuing_office": "110105001",
                    "chip_serial": f"{i:032X}",
                    "fingerprints_registered": True,
                    "created_at": NOW,
                    "updated_at": NOW,
                    **common,
                }
            )
            if flags:
                listed.append(
                    {
                        "person_id": person_id,
                        "blacklisted": True,
                        "blacklisted_until": None,
                        "person_check_required": False,
                        "updated_at": NOW,
                    }
                )
            for e in samples[i % TEMPLATES]:
                key_id, record = vault.seal(e.record, context=_context(card_id, e.finger, "record"))
                _, template = vault.seal(
                    zlib.compress(e.template, 1), context=_context(card_id, e.finger, "template")
                )
                stored.append(
                    {
                        "card_id": card_id,
                        "finger": e.finger,
                        "key_id": key_id,
                        "record": record,
                        "template": template,
                        "minutiae": e.minutiae,
                        "quality": e.quality,
                        "enrolled_at": NOW,
                        "enrolled_by": None,
                    }
                )
        with uow.connection(engine) as conn:
            ring = sealed.ring_of(engine)  # names and addresses are stored sealed
            conn.execute(sa.insert(Person), [sealed.sealed_values(ring, "persons", p) for p in people])
            conn.execute(sa.insert(Card), [sealed.sealed_values(ring, "cards", c) for c in cards])
            if listed:
                conn.execute(sa.insert(PersonFlags), listed)
            conn.execute(sa.insert(Fingerprint), stored)
    engine.dispose()


def run(workdir: Path, persons: int) -> None:
    settings = settings_for("sqlite://")
    biometrics = Biometrics.from_settings(settings)
    urls = {}
    built = time.perf_counter()
    for flags in (False, True):
        path = workdir / f"blacklist-{persons}-{'flags' if flags else 'none'}.db"
        urls[flags] = f"sqlite:///{path}"
        _build(urls[flags], persons, biometrics, flags=flags)
    note(f"part 7: two registries of {persons:,} persons built in {time.perf_counter() - built:.0f} s")

    rows = []
    loaded: dict[bool, float] = {}
    for flags in (False, True, False, True):  # interleaved
        engine = make_engine(settings_for(urls[flags]))
        follower = IndexFollower(make_sessionmaker(engine), CardIndex(), KeyRing())
        started = time.perf_counter()
        follower.load()
        loaded[flags] = min(loaded.get(flags, 1e9), time.perf_counter() - started)
        engine.dispose()
    engine = make_engine(settings_for(urls[True]))
    gallery = BlacklistGallery(make_sessionmaker(engine), biometrics)
    started = time.perf_counter()
    gallery.load()
    gallery_seconds = time.perf_counter() - started
    engine.dispose()
    rows.append(("index, no person flagged (baseline)", f"{loaded[False]:.2f}", persons))
    rows.append(("index, every person listed", f"{loaded[True]:.2f}", persons))
    rows.append(("blacklist gallery (2 fingers each)", f"{gallery_seconds:.2f}", len(gallery)))
    table(
        f"Part 7 - a blacklist of {persons:,} persons loads into a worker (SQLite, best of 2 for the index)",
        ("what", "seconds", "cards / fingers"),
        rows,
    )
    total = loaded[True] + gallery_seconds
    note(
        f"index with flags + gallery: {total:.1f} s (target <= {TARGET_SECONDS:.0f} s: "
        f"{'MET' if total <= TARGET_SECONDS else 'MISSED'}); the gallery loads on its own thread after "
        f"the index, so a worker answers checks {gallery_seconds:.1f} s before `known_impersonator` works"
    )
