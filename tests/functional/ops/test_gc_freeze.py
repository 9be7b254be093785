"""A worker's long-lived objects are out of the garbage collector's full collections while it
serves (app.py `_lifespan`): a full collection otherwise walked them all (~200,000 objects, a
~200 ms pause of every request in flight, issue 14). Objects made while serving are still
collected, and everything is thawed when the worker stops."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from idguard.app import create_app
from idguard.config import Settings
from idguard.core.clock import FixedClock


def test_the_startup_heap_is_frozen_while_serving_and_thawed_after(
    settings: Settings, clock: FixedClock
) -> None:
    gc.unfreeze()
    app = create_app(settings, clock=clock)
    with TestClient(app) as client:
        frozen = gc.get_freeze_count()
        # The app, its modules' objects and the loaded index: far more than a stray few.
        assert frozen > 10_000
        assert client.get("/api/v1/health").status_code == 200

        class Cycle:
            def __init__(self) -> None:
                self.me = self

        # Garbage made while serving is still collected (the freeze holds only what was there).
        Cycle()
        assert gc.collect() >= 1
        assert gc.get_freeze_count() > frozen // 2  # frozen objects leave only when freed
    assert gc.get_freeze_count() == 0
    app.state.engine.dispose()
