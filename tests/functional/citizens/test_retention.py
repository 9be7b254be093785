"""Retention of the check log: older checks are removed in batches, unit by unit; the citizen's
view never reaches past the horizon and says where it is."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from idguard import uow
from idguard.citizens.cli import purge
from idguard.citizens.rules import retention_horizon
from idguard.cli.main import app as cli
from idguard.db import migrate
from idguard.verification.models import Check, Unit
from idguard.verification.rules import UnitStatus
from idguard.verification.runtime.checklog import id_hash
from tests.factories import CHECK_HASH_KEY, NOW
from tests.functional.citizens.conftest import Citizens
from tests.functional.citizens.conftest import Unit as UnitClient
from tests.functional.conftest import Counter


def _checks(
    engine: sa.Engine, unit: str, times: list[dt.datetime], id_number: str = "11010519900504001X"
) -> None:
    with uow.connection(engine) as conn:
        conn.execute(
            sa.insert(Check.__table__),  # type: ignore[arg-type]
            [
                {
                    "id": uuid.uuid4(),
                    "unit_code": unit,
                    "operator": "t",
                    "purpose": "account_opening",
                    "at": at,
                    "result": "valid",
                    "reason": None,
                    "id_masked": "110105********001X",
                    "id_hash": id_hash(CHECK_HASH_KEY, id_number),
                    "watch": False,
                    "fingerprint_match": None,
                }
                for at in times
            ],
        )


def _count(engine: sa.Engine, unit: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.scalar(sa.select(sa.func.count()).select_from(Check).where(Check.unit_code == unit)) or 0
        )


def test_purge_removes_only_older_checks_in_batches(
    counter: Counter, engine: sa.Engine, session_factory: sessionmaker[Session]
) -> None:
    UnitClient(counter, "BANK-1")
    UnitClient(counter, "HOTEL-1", sector="hotel", purposes=("hotel_checkin",))
    horizon = retention_horizon(NOW, 24)
    old = [horizon - dt.timedelta(days=d, seconds=1) for d in range(7)]
    recent = [horizon + dt.timedelta(seconds=1), NOW]
    _checks(engine, "BANK-1", old + recent)
    _checks(engine, "HOTEL-1", old[:2])
    removed = purge(session_factory, horizon=horizon, batch=3)
    assert removed == {"BANK-1": 7, "HOTEL-1": 2}
    assert _count(engine, "BANK-1") == 2
    assert _count(engine, "HOTEL-1") == 0
    assert purge(session_factory, horizon=horizon, batch=3) == {}  # run again: nothing left to do


def test_my_checks_never_reach_past_the_horizon(citizens: Citizens, engine: sa.Engine) -> None:
    UnitClient(citizens.counter, "BANK-1")
    citizen = citizens.new()
    horizon = retention_horizon(NOW, 24)
    _checks(
        engine,
        "BANK-1",
        [horizon - dt.timedelta(seconds=1), horizon + dt.timedelta(days=1)],
        citizen.id_number,
    )
    page = citizen.get("/me/checks").json()
    assert [i["at"] for i in page["items"]] == [
        (horizon + dt.timedelta(days=1)).isoformat().replace("+00:00", "Z")
    ]
    assert page["reaches_back_to"] == horizon.isoformat().replace("+00:00", "Z")


@pytest.fixture
def cli_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> sa.Engine:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("IDGUARD_DATABASE_URL", url)
    monkeypatch.setenv("IDGUARD_ENV", "development")
    engine = sa.create_engine(url)
    migrate.upgrade(engine)
    yield engine  # type: ignore[misc]
    engine.dispose()


def test_the_command_purges_and_says_how_far_back(cli_database: sa.Engine) -> None:
    now = dt.datetime.now(dt.UTC)
    with uow.connection(cli_database) as conn:
        conn.execute(
            sa.insert(Unit.__table__),  # type: ignore[arg-type]
            {
                "code": "BANK-1",
                "name": "b",
                "sector": "bank",
                "purposes": ["account_opening"],
                "rate_limit": 10,
                "status": UnitStatus.ACTIVE,
                "created_at": now,
                "updated_at": now,
            },
        )
    _checks(cli_database, "BANK-1", [now - dt.timedelta(days=800), now - dt.timedelta(days=10)])
    result = CliRunner().invoke(cli, ["citizens", "purge-checks", "--batch", "1"])
    assert result.exit_code == 0, result.output
    assert "removed 1 checks older than" in result.output
    assert "(24 months) from 1 units" in result.output
    assert _count(cli_database, "BANK-1") == 1


def test_a_new_declaration_key_is_printed_in_the_settings_form() -> None:
    result = CliRunner().invoke(cli, ["citizens", "declaration-key", "d2027"])
    assert result.exit_code == 0, result.output
    key_id, _, seed = result.output.strip().partition(":")
    assert key_id == "d2027"
    assert len(seed) == 44
    assert CliRunner().invoke(cli, ["citizens", "declaration-key", "bad id"]).exit_code != 0
