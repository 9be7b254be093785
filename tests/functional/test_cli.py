"""The `idguard` command as scripts outside the project call it."""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from typer.testing import CliRunner

from idguard import uow
from idguard.biometrics import DEFAULT_POLICY, FingerPosition, calibration
from idguard.biometrics import parse as parse_record
from idguard.biometrics.fingerprints import Biometrics
from idguard.biometrics.identification import index_data
from idguard.biometrics.models import Fingerprint
from idguard.biometrics.vault import TemplateVault, parse_template_keys
from idguard.cli.main import app
from idguard.config import Environment, Settings
from idguard.db.common import AuditEntry
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.demo import fingers
from idguard.registry.lifecycle import CardStatus, LossReason
from idguard.registry.loss_reports import report_loss
from idguard.registry.models import Card
from idguard.verification.rules import hash_key
from tests.factories import NOW, OFFICE_A, SECRET, actor, id_number

runner = CliRunner()
ID_NUMBER = re.compile(r"\d{17}[\dX]")


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> sa.Engine:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("IDGUARD_DATABASE_URL", url)
    monkeypatch.setenv("IDGUARD_ENV", "development")
    engine = sa.create_engine(url)
    yield engine  # type: ignore[misc]
    engine.dispose()


def run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_upgrade_office_staff_unit(database: sa.Engine) -> None:
    run("db", "upgrade")
    run("office", "add", "110105001", "朝阳区建国门派出所")
    run(
        "staff",
        "add",
        "--username",
        "alice",
        "--password",
        "correct horse",
        "--role",
        "clerk",
        "--office",
        "110105001",
    )
    out = run(
        "unit",
        "add",
        "ICBC",
        "工商银行",
        "--sector",
        "bank",
        "--purpose",
        "account_opening",
        "--purpose",
        "insurance",
    )
    key = next(line for line in out.splitlines() if line.startswith("idg_"))
    with database.connect() as conn:
        assert conn.scalar(sa.text("SELECT region FROM offices WHERE code = '110105001'")) == "110105"
        assert conn.scalar(sa.text("SELECT role FROM staff WHERE username = 'alice'")) == "clerk"
        stored = conn.scalar(sa.text("SELECT key_hash FROM unit_keys WHERE unit_code = 'ICBC'"))
    assert stored == hash_key(key)  # the key itself is not stored


def test_errors_are_one_clean_line_and_exit_1(database: sa.Engine) -> None:
    run("db", "upgrade")
    result = runner.invoke(
        app, ["staff", "add", "--username", "bob", "--password", "long enough", "--role", "clerk"]
    )
    assert result.exit_code == 1
    assert "a clerk is bound to one office" in result.output
    assert "Traceback" not in result.output


def fail(*args: str) -> str:
    """A refused command: exit 1 and one line of error, no traceback."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    return result.output


def holders(output: str) -> list[str]:
    """The demo id numbers with registered fingerprints that `idguard demo` lists."""
    return [line.strip() for line in output.splitlines() if ID_NUMBER.fullmatch(line.strip())]


def test_demo_loads_once(database: sa.Engine) -> None:
    out = run("demo", "--citizens", "200", "--seed", "3", "--fingerprint-persons", "2")
    assert "200 persons" in out
    listed = holders(out)
    assert len(listed) == 2
    with database.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM persons")) == 200
        enrolled = conn.scalars(
            sa.text("SELECT DISTINCT c.id_number FROM cards c JOIN fingerprints f ON f.card_id = c.id")
        ).all()
    assert sorted(enrolled) == sorted(listed)
    assert "already holds 200 persons" in fail("demo", "--citizens", "200")
    fail("demo", "--fingerprint-persons", "-1")


# --- demo fingerprint -------------------------------------------------------------------------


def test_demo_fingerprint_is_a_live_capture_made_from_the_id_number_alone() -> None:
    """No database: the same id number, finger and impression always give the same record, a
    valid ISO/IEC 19794-2 capture of that finger, and another impression or finger differs."""
    number = id_number(dt.date(1990, 5, 4))
    printed = run("demo", "fingerprint", number).strip()
    assert printed == run("demo", "fingerprint", number, "--finger", "1", "--impression", "1").strip()
    assert printed == fingers.live_sample(number)
    record = parse_record(base64.b64decode(printed, validate=True))
    (view,) = record.views
    assert view.finger_position == FingerPosition.RIGHT_THUMB
    assert len(view.minutiae) >= DEFAULT_POLICY.min_minutiae
    left = run("demo", "fingerprint", number, "--finger", "6").strip()
    assert parse_record(base64.b64decode(left)).views[0].finger_position == FingerPosition.LEFT_THUMB
    others = {left, run("demo", "fingerprint", number, "--impression", "2").strip()}
    others.add(run("demo", "fingerprint", id_number(dt.date(1990, 5, 5))).strip())
    assert printed not in others
    assert len(others) == 3
    # Never the enrolled capture itself, and nothing but a valid id number and finger.
    assert "--impression 0" in fail("demo", "fingerprint", number, "--impression", "0")
    assert "check character" in fail("demo", "fingerprint", number[:-1] + ("0" if number[-1] != "0" else "1"))
    assert "--finger 11" in fail("demo", "fingerprint", number, "--finger", "11")


# --- fingerprints rekey / calibrate -----------------------------------------------------------


def template_key(name: str, fill: int) -> str:
    return f"{name}:{base64.b64encode(bytes([fill]) * 32).decode()}"


OLD_KEY, NEW_KEY, OTHER_KEY = template_key("old", 1), template_key("new", 2), template_key("other", 3)


@pytest.fixture
def registry(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[sa.Engine]:
    """The test database (SQLite or PostgreSQL) as the command sees it, through the environment."""
    monkeypatch.setenv("IDGUARD_DATABASE_URL", database_url)
    monkeypatch.setenv("IDGUARD_ENV", "test")
    monkeypatch.setenv("IDGUARD_SECRET_KEY", SECRET)
    engine = make_engine(Settings(database_url=database_url, env=Environment.TEST, secret_key=SECRET))
    yield engine
    engine.dispose()


def test_rekey_reseals_every_fingerprint_under_the_new_key(
    registry: sa.Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDGUARD_TEMPLATE_KEYS", OLD_KEY)
    holder = holders(run("demo", "--citizens", "200", "--seed", "5", "--fingerprint-persons", "2"))[0]
    with registry.connect() as conn:
        assert set(conn.scalars(sa.select(Fingerprint.key_id))) == {"old"}

    monkeypatch.setenv("IDGUARD_TEMPLATE_KEYS", f"{NEW_KEY},{OLD_KEY}")  # rotate: the new key first
    assert "4 fingerprints re-sealed under key new" in run("fingerprints", "rekey", "--batch", "3")
    with registry.connect() as conn:
        assert conn.scalars(sa.select(Fingerprint.key_id)).all() == ["new"] * 4
        batches = conn.scalars(sa.select(AuditEntry.detail).where(AuditEntry.action == "fingerprints.rekey"))
        assert sorted(batches) == [
            "1 fingerprints re-sealed under key new",
            "3 fingerprints re-sealed under key new",
        ]
    assert "0 fingerprints re-sealed" in run("fingerprints", "rekey")

    # The old key dropped: the rows open under the new key alone, and a demo live capture of the
    # holder's thumb still matches at a loss report.
    settings = Settings(
        database_url=database_url, env=Environment.TEST, secret_key=SECRET, template_keys=SecretStr(NEW_KEY)
    )
    with make_sessionmaker(registry)() as session:
        card_id = session.scalars(
            sa.select(Card.id).where(Card.id_number == holder, Card.fingerprints_registered)
        ).one()
        _, card = report_loss(
            session,
            actor=actor("clerk_a"),
            now=NOW,
            card_id=str(card_id),
            reason=LossReason.LOST,
            office=OFFICE_A,
            applicant_id_number=holder,
            fingerprint=fingers.live_sample(holder),
            biometrics=Biometrics.from_settings(settings),
        )
        uow.commit(session)
        assert card.status is CardStatus.REPORTED_LOST

    # A row under a key the configuration no longer lists cannot be re-sealed: one clean line.
    monkeypatch.setenv("IDGUARD_TEMPLATE_KEYS", OTHER_KEY)
    assert "'new' is not configured" in fail("fingerprints", "rekey")
    with registry.connect() as conn:
        assert set(conn.scalars(sa.select(Fingerprint.key_id))) == {"new"}  # nothing half-done


def test_reindex_gives_every_bulk_loaded_finger_its_sealed_index_data(
    registry: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fingers stored without 1:N index data (as a database from before migration 0015 holds
    them): `fingerprints reindex` derives it from each template, sealed and bound to its finger,
    in batches, and a second run finds nothing left."""
    monkeypatch.setenv("IDGUARD_TEMPLATE_KEYS", OLD_KEY)
    run("demo", "--citizens", "200", "--seed", "5", "--fingerprint-persons", "2")
    with uow.connection(registry) as conn:  # as before migration 0015
        conn.execute(sa.update(Fingerprint).values(index_data=None))
    with registry.connect() as conn:
        missing = sa.select(sa.func.count()).select_from(Fingerprint).where(Fingerprint.index_data.is_(None))
        assert conn.scalar(missing) == 4
    monkeypatch.setenv("IDGUARD_TEMPLATE_KEYS", f"{NEW_KEY},{OLD_KEY}")  # mid-rotation: rows move to new
    assert "4 fingerprints indexed" in run("fingerprints", "reindex", "--batch", "3")
    vault = TemplateVault(parse_template_keys(NEW_KEY))
    with registry.connect() as conn:
        rows = conn.execute(
            sa.select(
                Fingerprint.card_id,
                Fingerprint.finger,
                Fingerprint.key_id,
                Fingerprint.template,
                Fingerprint.index_data,
            )
        ).all()
        assert len(rows) == 4
        for card_id, finger, key_id, template, index in rows:
            assert key_id == "new"  # one key per row: re-sealed whole
            plain = vault.open(
                key_id, template, context=f"idguard/fingerprint/{card_id}/{finger}/template".encode()
            )
            context = f"idguard/fingerprint/{card_id}/{finger}/index".encode()
            assert vault.open(key_id, index, context=context) == index_data(plain)
        batches = conn.scalars(
            sa.select(AuditEntry.detail).where(AuditEntry.action == "fingerprints.reindex")
        )
        assert sorted(batches) == ["1 fingerprints indexed", "3 fingerprints indexed"]
    assert "0 fingerprints indexed" in run("fingerprints", "reindex")


def test_calibrate_prints_the_threshold_and_refuses_a_rate_the_set_cannot_measure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[float] = []

    def quick(fmr: float) -> tuple[float, int]:  # the real one takes minutes
        calls.append(fmr)
        return 0.061234, 301_725

    monkeypatch.setattr(calibration, "calibrate_default_threshold", quick)
    out = run("fingerprints", "calibrate", "--fmr", "0.001")
    assert calls == [0.001]
    assert "301,725 impostor" in out
    assert "IDGUARD_FINGERPRINT_THRESHOLD=0.0613" in out  # rounded up, never down
    assert "synthetic" in out
    fail("fingerprints", "calibrate", "--fmr", "0")
    assert "1/301,725" in fail("fingerprints", "calibrate", "--fmr", "1e-7")
    assert calls == [0.001]  # refused before minutes of work
