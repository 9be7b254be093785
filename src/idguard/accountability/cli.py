"""`idguard transactions import UNIT FILE` and `idguard compliance close YYYY-MM`
(registered on the `idguard` command by cli/main.py through `register`)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from idguard.core.errors import DomainError, NotFound

transactions_app = typer.Typer(help="Transactions units report (accountability).", no_args_is_help=True)
compliance_app = typer.Typer(help="Monthly compliance of units (accountability).", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    app.add_typer(transactions_app, name="transactions")
    app.add_typer(compliance_app, name="compliance")


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code=1)


@transactions_app.command("import")
def import_file(
    unit: Annotated[str, typer.Argument(help="the unit's code")],
    file: Annotated[
        Path, typer.Argument(help=".csv (with a header row) or .jsonl", exists=True, dir_okay=False)
    ],
) -> None:
    """Import a unit's transactions: validate the whole file first (any bad row: nothing is
    imported, each error names its row and field), then store them in batches, classified. Run
    it again after an interruption: refs already stored are skipped."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from idguard import uow
    from idguard.accountability import importer, transactions
    from idguard.config import Settings
    from idguard.db.engine import make_engine, make_sessionmaker
    from idguard.verification.models import Unit

    settings = Settings()
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    now = dt.datetime.now(dt.UTC)
    window = dt.timedelta(hours=settings.check_window_hours)
    try:
        with sessions() as session:
            if session.get(Unit, unit) is None:
                raise _fail(f"no unit {unit}")
            try:
                plan = importer.plan(
                    session, unit_code=unit, path=file, hash_key=settings.check_hash_key, now=now
                )
            except importer.BadFile as bad:
                for e in bad.errors:
                    err.print(escape(str(e)), soft_wrap=True)
                more = "" if bad.total <= len(bad.errors) else f" (the first {len(bad.errors)} errors shown)"
                raise _fail(f"{bad.total} bad rows{more}: nothing imported") from None
        with Progress(
            TextColumn("[bold]importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("import", total=len(plan.new))
            for start in range(0, len(plan.new), importer.BATCH):
                batch = plan.new[start : start + importer.BATCH]
                with uow.transaction(sessions) as session:
                    transactions.store(session, unit_code=unit, items=batch, now=now, window=window)
                progress.advance(task, len(batch))
    finally:
        engine.dispose()
    console.print(
        f"{len(plan.new)} transactions imported for {escape(unit)}; "
        f"{plan.skipped} already stored (skipped); {plan.total} rows in the file"
    )


@compliance_app.command("close")
def close(month: Annotated[str, typer.Argument(help="YYYY-MM")]) -> None:
    """Close a month: re-classify its transactions and store every unit's figures (compliance
    reads of the month answer from them from now on). Possible once the month's end plus the
    check window has passed; a month is closed once."""
    from idguard import uow
    from idguard.accountability import compliance
    from idguard.accountability.rules import parse_ladder, parse_month
    from idguard.config import Settings
    from idguard.db.engine import make_engine, make_sessionmaker

    settings = Settings()
    engine = make_engine(settings)
    try:
        with uow.transaction(make_sessionmaker(engine)) as session:
            closed = compliance.close_month(
                session,
                month=parse_month(month),
                now=dt.datetime.now(dt.UTC),
                window=dt.timedelta(hours=settings.check_window_hours),
                ladder=parse_ladder(settings.compliance_levels),
                ladder_text=settings.compliance_levels,
                staff_id=None,
            )
            summary = f"month {closed.month} closed: {closed.units} units, {closed.transactions} transactions"
    except NotFound as exc:
        raise _fail(exc.detail) from None
    except DomainError as exc:
        raise _fail(exc.detail) from None
    finally:
        engine.dispose()
    console.print(summary)
