"""The accountability demo: every level shows in a full month's compliance."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.accountability import compliance, demo
from idguard.accountability.rules import DEFAULT_LADDER, Level
from idguard.config import Settings

NOW = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)


def test_the_demo_shows_every_level(engine: sa.Engine, settings: Settings) -> None:
    assert demo.load(engine, now=NOW, settings=settings) > 0
    assert demo.load(engine, now=NOW, settings=settings) == 0  # once
    with Session(engine) as session:
        rows = {
            r.unit_code: r.level for r in compliance.live(session, month="2026-10", ladder=DEFAULT_LADDER)
        }
    assert set(rows.values()) == set(Level)
    assert rows["DEMO-TELCO"] is Level.EXCESSIVE
