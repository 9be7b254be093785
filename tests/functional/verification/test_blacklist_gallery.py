"""The worker's blacklist gallery as /health reports it: size, whether it is loaded, its age; it
follows a listing and a lifting without a rebuild, and says nothing about whom it holds."""

from __future__ import annotations

import time

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
