"""The worker's blacklist gallery as /health reports it: size, whether it is loaded, its age; it
follows a listing and a lifting without a rebuild, and says nothing about whom it holds."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa

from idguard import uow
from idguard.biometrics.fingerprints import _context
from idguard.biometrics.identification import index_data
from idguard.biometrics.models import Fingerprint
from idguard.biometrics.vault import VaultError
from idguard.registry.models import Card
from tests.functional.conftest import Counter
from tests.functional.watchlist.helpers import gallery_holds, listed
from tests.prints import enrolment


def gallery_status(counter: Counter) -> dict[str, object]:
    r = counter.client.get("/api/v1/health")
    assert r.status_code == 200, r.text
    status: dict[str, object] = r.json()["extra"]["blacklist_gallery"]
    return status


def wait_loaded(counter: Counter, timeout: float = 10.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while not (status := gallery_status(counter))["loaded"]:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    return status


def test_health_reports_the_gallery_following_a_listing(counter: Counter) -> None:
    status = wait_loaded(counter)
    assert status["fingers"] == 0
    assert status["cards"] == 0
    assert isinstance(status["age_seconds"], float)
    assert isinstance(status["loaded_in_seconds"], float)

    impostor = counter.person(name="冒用人")
    counter.card(impostor, fingerprints=enrolment(303))
    listed(counter, impostor)
    gallery_holds(counter, 2)
    status = gallery_status(counter)
    assert (status["fingers"], status["cards"], status["loaded"]) == (2, 1, True)
    assert isinstance(status["age_seconds"], float)
    assert status["age_seconds"] < 10
    assert set(status) == {"fingers", "cards", "loaded", "loaded_in_seconds", "age_seconds"}  # no one named


def test_enrolment_seals_index_data_and_a_finger_without_it_is_still_filed(counter: Counter) -> None:
    """Each enrolled finger carries its index data (the fast load), sealed like its template and
    bound to its card and finger; a finger enrolled before migration 0015 (none) is filed from its
    template instead."""
    app: Any = counter.client.app
    wait_loaded(counter)
    first, second = counter.person(name="冒用人"), counter.person(name="冒用人二")
    cards = [
        counter.card(first, fingerprints=enrolment(304)),
        counter.card(second, fingerprints=enrolment(305)),
    ]
    vault = app.state.biometrics.vault
    with uow.transaction(app.state.sessionmaker) as session:
        rows = session.scalars(
            sa.select(Fingerprint)
            .join(Card, Card.id == Fingerprint.card_id)
            .where(Card.id_number.in_([c["id_number"] for c in cards]))
        ).all()
        assert len(rows) == 4
        for fp in rows:
            assert fp.index_data is not None
            template = vault.open(fp.key_id, fp.template, context=_context(fp.card_id, fp.finger, "template"))
            plain = index_data(template)
            assert plain not in fp.index_data  # sealed, not stored as is
            assert (
                vault.open(fp.key_id, fp.index_data, context=_context(fp.card_id, fp.finger, "index"))
                == plain
            )
            with pytest.raises(VaultError):  # bound to its own finger
                vault.open(
                    fp.key_id, fp.index_data, context=_context(fp.card_id, fp.finger % 10 + 1, "index")
                )
        second_card = session.scalars(sa.select(Card.id).where(Card.id_number == cards[1]["id_number"])).one()
        session.execute(
            sa.update(Fingerprint).where(Fingerprint.card_id == second_card).values(index_data=None)
        )
    listed(counter, first)
    listed(counter, second)
    gallery_holds(counter, 4)
    assert gallery_status(counter)["cards"] == 2
