"""`idguard checks partitions`: the check log's monthly partitions on PostgreSQL (issue 15;
verification/runtime/partitions.py, docs/checklog.md)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="The check log (核查记录).", no_args_is_help=True)
console = Console()

# partitions.AHEAD_MONTHS, the default shown by --help: the same value, without importing the
# partitions module (SQLAlchemy) for `idguard --help` (tests/unit/test_cli_imports.py checks).
AHEAD_MONTHS = 3


@app.command("partitions")
def partitions_command(
    create: Annotated[
        bool,
        typer.Option("--create", help="create the current month's and the coming months' partitions first"),
    ] = False,
    ahead: Annotated[
        int, typer.Option(min=0, max=120, help="months created ahead of the current one")
    ] = AHEAD_MONTHS,
) -> None:
    """List the check log's monthly partitions (UTC months) with their estimated rows; with
    --create, first create the missing ones (as every server worker does at start and daily).
    Old months are dropped by the retention job, `idguard citizens purge-checks`. PostgreSQL only:
    on SQLite the log is one table (exit 2)."""
    import sqlalchemy as sa

    from idguard.config import Settings
    from idguard.db.engine import make_engine
    from idguard.verification.runtime import partitions

    engine: sa.Engine = make_engine(Settings())
    try:
        with engine.connect() as conn:
            if not partitions.partitioned(conn):
                console.print("the check log is not partitioned here (SQLite, or before migration 0013)")
                raise typer.Exit(code=2)
        created = partitions.ensure(engine, dt.datetime.now(dt.UTC), ahead=ahead) if create else []
        with engine.connect() as conn:
            found = partitions.partitions(conn)
            estimates = {
                str(name): int(rows)
                for name, rows in conn.execute(
                    sa.text(
                        "SELECT n.nspname || '.' || c.relname, c.reltuples::bigint FROM pg_inherits i "
                        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE i.inhparent = to_regclass(:t)"
                    ),
                    {"t": partitions.TABLE},
                )
            }
    finally:
        engine.dispose()
    for p in found:
        span = "default" if p.start is None or p.end is None else f"{p.start:%Y-%m-%d} .. {p.end:%Y-%m-%d}"
        rows = estimates.get(p.name, -1)
        mark = "  (created now)" if p.name in created else ""
        console.print(f"{p.name:<38} {span:<26} ~{max(rows, 0):,} rows{mark}", soft_wrap=True)
