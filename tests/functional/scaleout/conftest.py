from __future__ import annotations

from collections.abc import Iterator

import pytest

from idguard.config import Settings
from tests.functional.scaleout.support import Background, scaled


@pytest.fixture
def nats_settings(settings: Settings) -> Iterator[Settings]:
    with scaled(settings) as out:
        yield out


@pytest.fixture(autouse=True)
def _close_backgrounds() -> Iterator[None]:
    """A relay or sink a failed test left running is stopped (else it retries for ever)."""
    yield
    while Background.running:
        Background.running.pop().close()
