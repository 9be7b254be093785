"""The worker's blacklist gallery as /health reports it: size, whether it is loaded, its age; it
follows a listing and a lifting without a rebuild, and says nothing about whom it holds."""

from __future__ import annotations

import time
from typing import Any

import pytest
import sqlalchemy as sa

from idguard import uow
from idguard.biometrics.fingerprints import ReindexPlace, _context, reindex
from idguard.biometrics.identification import IndexModel, default_model, index_data, index_is_current
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


@pytest.mark.parametrize("keep_place", [False, True], ids=["each call from the start", "a run's place kept"])
def test_reindex_redoes_missing_and_stale_index_data_and_leaves_current_data(
    counter: Counter, keep_place: bool
) -> None:
    """`fingerprints.reindex` redoes index data that is missing or was made by another index model
    (it tells by opening the header: the model id is sealed inside), in batches, and leaves index
    data of the current model as it is; a last call finds nothing left. The same whether each
    call scans from the first row or a run keeps its place between calls (the CLI does)."""
    app: Any = counter.client.app
    cards = [
        counter.card(counter.person(name=f"冒用人{i}"), fingerprints=enrolment(310 + i)) for i in range(3)
    ]
    vault = app.state.biometrics.vault
    base = default_model()
    older = IndexModel(base.mean, base.basis, base.centroids[::-1].copy())  # as before a retraining
    with uow.transaction(app.state.sessionmaker) as session:
        rows = session.scalars(sa.select(Fingerprint).order_by(Fingerprint.card_id, Fingerprint.finger)).all()
        assert len(rows) == 6
        ids = [
            session.scalars(sa.select(Card.id).where(Card.id_number == c["id_number"])).one() for c in cards
        ]
        kept: dict[tuple[object, int], bytes] = {}
        for fp in rows:
            template = vault.open(fp.key_id, fp.template, context=_context(fp.card_id, fp.finger, "template"))
            if fp.card_id == ids[0]:  # made by the older model
                fp.index_data = vault.seal(
                    index_data(template, older), context=_context(fp.card_id, fp.finger, "index")
                )[1]
            elif fp.card_id == ids[1]:  # none (enrolled before migration 0015)
                fp.index_data = None
            else:
                assert fp.index_data is not None
                kept[fp.card_id, fp.finger] = fp.index_data
    counts = []
    place = ReindexPlace() if keep_place else None
    while not counts or counts[-1]:
        with uow.transaction(app.state.sessionmaker) as session:
            counts.append(reindex(session, vault, batch=3, place=place))
    assert counts == [3, 1, 0]
    with uow.transaction(app.state.sessionmaker) as session:
        for fp in session.scalars(sa.select(Fingerprint)).all():
            assert fp.index_data is not None
            context = _context(fp.card_id, fp.finger, "index")
            plain = vault.open(fp.key_id, fp.index_data, context=context)
            template = vault.open(fp.key_id, fp.template, context=_context(fp.card_id, fp.finger, "template"))
            assert index_is_current(plain)
            assert plain == index_data(template)
            if (fp.card_id, fp.finger) in kept:
                assert fp.index_data == kept[fp.card_id, fp.finger]  # not re-sealed: left alone
