"""`idguard offline fetch` and `idguard offline check`: the reader on a unit's machine
(registered on the `idguard` command by cli/main.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

# sets.LONG_TERM, the default shown by --help: the same value, without importing the set's
# format (numpy) for `idguard --help` (tests/unit/test_cli_imports.py checks).
LONG_TERM = "long-term"
app = typer.Typer(
    help="Offline verification: keep the signed set of valid cards; check cards without the network.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code=2)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


@app.command()
def fetch(
    url: Annotated[str, typer.Option(help="idguard's base URL, e.g. https://idguard.example")],
    key: Annotated[str, typer.Option(help="your unit's API key", envvar="IDGUARD_UNIT_KEY")],
    dir: Annotated[Path, typer.Option("--dir", help="where the set is kept")],
) -> None:
    """Bring the offline set up to date: the first call downloads a snapshot, later calls the
    deltas since its version (a snapshot again when idguard answers 410). Every file's Ed25519
    signature is verified, and a delta must follow the set's version. Then the checks made
    offline are uploaded. Run it as often as you like (every minute keeps the set current
    within a minute)."""
    from idguard.offline import sets
    from idguard.offline.reader import FetchError, Reader

    reader = Reader(dir)
    try:
        report = reader.fetch(url, key)
    except FetchError as exc:
        raise _fail(str(exc)) from None
    except sets.BadFile as exc:
        raise _fail(f"refused: {exc}") from None
    what = "snapshot" if report.kind == "snapshot" else f"delta with {report.changes} changed cards"
    console.print(
        f"version {report.version}: {what} ({report.size} bytes); "
        f"{report.uploaded} offline checks uploaded"
        + (f", {report.rejected} rejected (rejected.jsonl)" if report.rejected else "")
    )


def _expiry(value: str | None) -> dt.date | None:
    if value is None or value.strip().lower() in (LONG_TERM, "长期"):
        return None
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter("YYYY-MM-DD or long-term", param_hint="--expires-on") from None


@app.command()
def check(
    dir: Annotated[Path, typer.Argument(help="the directory `offline fetch` keeps the set in")],
    id_number: Annotated[str, typer.Argument(help="the card's id number")],
    chip_serial: Annotated[str, typer.Argument(help="the chip serial the card reader read")],
    expires_on: Annotated[
        str,
        typer.Option(
            help="the card's expiry date as printed on it and stored in its chip: YYYY-MM-DD or long-term"
        ),
    ] = LONG_TERM,
    purpose: Annotated[
        str | None, typer.Option(help="your unit's purpose (needed if it has several)")
    ] = None,
    operator: Annotated[str, typer.Option(help="who checked (recorded with the check)")] = "offline-reader",
) -> None:
    """Check a card against the offline set: prints `valid` or `invalid`, the set's version and
    age; exit status 0 for valid, 1 for invalid (2 for an error). The check is kept in the local
    log and uploaded by the next `offline fetch`. The expiry date is part of the card's key and
    applied here: a card past it is invalid without any delta."""
    from idguard.offline import sets
    from idguard.offline.reader import Reader

    reader = Reader(dir)
    try:
        answer = reader.check(
            id_number,
            chip_serial,
            _expiry(expires_on),
            now=dt.datetime.now(dt.UTC),
            purpose=purpose,
            operator=operator,
        )
    except sets.BadFile as exc:
        raise _fail(f"the offline set cannot be used: {exc}") from None
    word = "valid" if answer.valid else "invalid"
    console.print(f"{word} (version {answer.version}, age {_age(answer.age_seconds)})")
    raise typer.Exit(code=0 if answer.valid else 1)
