"""`idguard backup DEST` (registered on the `idguard` command by cli/main.py through `register`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.command("backup")(backup)


def backup(
    dest: Annotated[Path, typer.Argument(help="the backup file to create (never overwritten)")],
) -> None:
    """Back up the SQLite database to DEST while the service runs.

    An online backup: one consistent commit's state, integrity-checked. With PostgreSQL, print
    how to back it up instead (base backup + WAL archiving) and exit 2. docs/operations.md
    says how to restore."""
    from idguard.config import Settings
    from idguard.ops.backup import POSTGRES_ADVICE, BackupError, backup_sqlite, sqlite_path

    settings = Settings()
    source = sqlite_path(settings.database_url)
    if source is None:
        err.print(escape(POSTGRES_ADVICE), soft_wrap=True)
        raise typer.Exit(code=2)
    try:
        made = backup_sqlite(source, dest, busy_timeout_ms=settings.sqlite_busy_timeout_ms)
    except BackupError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(code=1) from None
    console.print(
        f"backup {escape(str(made.path))}: {made.bytes:,} bytes ({made.pages:,} pages) in "
        f"{made.seconds:.2f} s, integrity ok, ledger at seq {made.ledger_seq}",
        soft_wrap=True,
    )
