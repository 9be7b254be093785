"""The `idguard` command as scripts outside the project call it."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from idguard.cli.main import app
from idguard.domain.units import hash_key

runner = CliRunner()


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


def test_demo_loads_once(database: sa.Engine) -> None:
    out = run("demo", "--citizens", "200", "--seed", "3")
    assert "200 persons" in out
    with database.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM persons")) == 200
    again = runner.invoke(app, ["demo", "--citizens", "200"])
    assert again.exit_code == 1
    assert "Traceback" not in again.output
