"""The `idguard` command starts fast: operators run many short commands (`idguard demo fingerprint
ID` runs inline in the README's curl example), and each paid ~1 s of imports before anything ran.
`import idguard.cli.main` and every `--help` import no database, web or numeric library; each
command imports what it uses in its body (cli/main.py and the features' cli modules)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from idguard.cli.main import NO_DATABASE, app
from tests.factories import SECRET

HEAVY = ("sqlalchemy", "alembic", "fastapi", "starlette", "psycopg", "numba", "numpy", "prometheus_client")
DATABASE = ("sqlalchemy", "alembic", "psycopg")

# Run the command in a fresh interpreter, then list the top-level packages it imported.
SCRIPT = """
import sys
from idguard.cli.main import app
try:
    app(sys.argv[1:], prog_name="idguard")
except SystemExit:
    pass
print()
print(" ".join(sorted({name.partition(".")[0] for name in sys.modules})))
"""


def idguard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`idguard ARGS` in a fresh interpreter (in this one, the tests have imported everything)."""
    return subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-c", SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def imported_by(*args: str) -> set[str]:
    run = idguard(*args)
    assert run.returncode == 0, run.stderr
    return set(run.stdout.splitlines()[-1].split())


@pytest.fixture(scope="module")
def help_imports() -> set[str]:
    # `--help` builds every command (typer reads each command's parameter annotations then).
    return imported_by("--help")


@pytest.mark.parametrize("package", HEAVY)
def test_idguard_help_imports_no_heavy_library(help_imports: set[str], package: str) -> None:
    assert "typer" in help_imports  # the command did run
    assert package not in help_imports


def test_demo_fingerprint_needs_no_database_library() -> None:
    # A pure function of the id number (demo/fingers.py): numpy, but no database.
    imported = imported_by("demo", "fingerprint", "11010519491231002X")
    assert "numpy" in imported  # the command did run
    assert not imported & set(DATABASE)


def _commands(command: object, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    if hasattr(command, "list_commands"):  # a group
        for name in command.list_commands(None):
            found += _commands(command.get_command(None, name), (*path, name))  # type: ignore[attr-defined]
    return found


def test_every_commands_help_works() -> None:
    # Annotations naming heavy types are only for the type checker (TYPE_CHECKING): a command's
    # parameters must keep types typer can resolve at run time.
    paths = _commands(typer_command())
    assert ("demo", "fingerprint") in paths
    assert ("keys", "rekey") in paths
    assert len(paths) > 30
    for path in paths:
        result = CliRunner().invoke(app, [*path, "--help"], prog_name="idguard")
        assert result.exit_code == 0, (path, result.output)
        assert "Usage: idguard" in result.output


def test_database_free_commands_exist() -> None:
    # cli/main.py NO_DATABASE names commands that run without the schema: a renamed one must not
    # silently leave the list (and the command get the schema's imports back).
    paths = set(_commands(typer_command()))
    assert not NO_DATABASE - paths  # those left are no command


def typer_command() -> object:
    import typer.main

    return typer.main.get_command(app)


def test_database_commands_run_with_every_features_tables(tmp_path: Path, sqlite_template: Path) -> None:
    # A command imports what it uses when it runs; the ORM must still know every feature's tables
    # before a session flushes: compliance's closed_months names staff (registry), a unit's audit
    # entry names persons. In one process of the test suite everything is imported already.
    path = tmp_path / "idguard.db"
    shutil.copyfile(sqlite_template, path)
    env = {"IDGUARD_DATABASE_URL": f"sqlite:///{path}", "IDGUARD_SECRET_KEY": SECRET, "IDGUARD_ENV": "test"}
    closed = idguard("compliance", "close", "2020-01", env=env)
    assert closed.returncode == 0, closed.stderr
    assert "month 2020-01 closed" in closed.stdout
    added = idguard(
        "unit", "add", "CLI-BANK", "某银行", "--sector", "bank", "--purpose", "account_opening", env=env
    )
    assert added.returncode == 0, added.stderr
    assert "unit CLI-BANK added" in added.stdout


def test_defaults_shown_by_help_are_the_modules_own() -> None:
    # The cli modules repeat these defaults so that --help need not import their modules.
    from idguard.citizens import cli as citizens_cli
    from idguard.citizens import retention
    from idguard.offline import cli as offline_cli
    from idguard.offline import sets
    from idguard.verification import checks_cli
    from idguard.verification.runtime import partitions

    assert checks_cli.AHEAD_MONTHS == partitions.AHEAD_MONTHS
    assert citizens_cli.BATCH == retention.BATCH
    assert offline_cli.LONG_TERM == sets.LONG_TERM
