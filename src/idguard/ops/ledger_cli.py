"""`idguard ledger verify` and `idguard ledger checkpoint` (registered by cli/main.py).

verify recomputes the ledger's and the audit log's hash chains (registry/chains.py) and checks
the signed checkpoints, those in the database and those an auditor kept (`--checkpoints FILE`,
the JSON lines `checkpoint --out` wrote); it exits 1 naming the first altered, removed or
reordered row, 0 when everything holds. It writes nothing, so it may run on a backup copy.
checkpoint seals the audit log's newest entries, then signs and stores a checkpoint of each
chain, prints them as JSON lines and appends them to `--out FILE` for keeping elsewhere.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from idguard.core.chain import Checkpoint

app = typer.Typer(
    help="The tamper-evident ledger and audit log: verify the hash chains, write signed checkpoints.",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(code=1)


def _read_kept(path: Path) -> list[Checkpoint]:
    """The checkpoints of an exported file, every line; a bad line is named and stops the run."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _fail(f"--checkpoints {path}: cannot be read ({exc.strerror})") from None
    kept = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            kept.append(Checkpoint.from_json(line))
        except ValueError as exc:
            raise _fail(f"--checkpoints {path} line {number}: {exc}") from None
    return kept


@app.command("verify")
def verify(
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            help="checkpoints kept outside the database (JSON lines from `ledger checkpoint --out`)"
        ),
    ] = None,
) -> None:
    """Recompute the ledger's and the audit log's hash chains and check the signed checkpoints.

    Exit 1 naming the first altered, removed or reordered row (ledger seq, audit id), or a
    checkpoint that no longer matches; 0 when both chains hold."""
    from idguard.config import Settings
    from idguard.db.engine import make_engine
    from idguard.registry import chains

    settings = Settings()
    kept = _read_kept(checkpoints) if checkpoints is not None else []
    engine = make_engine(settings)
    try:
        result = chains.verify(engine, chains.keyring(settings), kept)
    finally:
        engine.dispose()
    ledger, audit = result.ledger, result.audit
    console.print(f"ledger: {ledger.rows:,} events chained, up to seq {ledger.last_seq}")
    console.print(
        f"audit log: {audit.rows:,} entries chained, up to position {audit.last_seq}"
        + (f"; {audit.unsealed:,} newer not yet sealed" if audit.unsealed else "")
    )
    console.print(f"checkpoints: {result.checkpoints_checked} checked ({len(kept)} from a file)")
    for problem in result.problems():
        err.print(f"[red]tampered:[/red] {escape(problem)}", soft_wrap=True)
    if not result.ok:
        raise typer.Exit(code=1)
    console.print("ok: both chains hold")


@app.command("checkpoint")
def checkpoint(
    out: Annotated[
        Path | None, typer.Option(help="append the checkpoints to this file (JSON lines) to keep elsewhere")
    ] = None,
) -> None:
    """Seal the audit log's newest entries, then sign and store a checkpoint of each chain (its
    head's seq and hash, now) and print it as a JSON line."""
    from idguard.config import Settings
    from idguard.db.engine import make_engine
    from idguard.registry import chains

    settings = Settings()
    engine = make_engine(settings)
    try:
        made = chains.write_checkpoints(engine, chains.keyring(settings), now=dt.datetime.now(dt.UTC))
    finally:
        engine.dispose()
    lines = [c.to_json() for c in made]
    if out is not None:
        try:
            with out.open("a", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in lines)
        except OSError as exc:
            raise _fail(
                f"--out {out}: cannot be written ({exc.strerror}); the checkpoints are stored"
            ) from None
    for line in lines:
        typer.echo(line)
