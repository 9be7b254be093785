"""`idguard keys …`: the key ring that seals personal data at rest (IDGUARD_DATA_KEYS).

To rotate (docs/operations.md, key rotation): put a new key first in IDGUARD_DATA_KEYS and keep
the old ones listed, restart the service (new rows are sealed under the new key from then on),
run `idguard keys rekey` (safe while the service runs, resumable), check with `idguard keys
status` that no row is left under an old key, then drop the old key and restart again.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    import sqlalchemy as sa

app = typer.Typer(help="Keys sealing personal data at rest: rotation and status.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


@functools.cache
def tables() -> tuple[sa.TableClause, ...]:
    """Every table with sealed personal data or free text (registry/sealed.py), in the order rekey
    walks them: lightweight tables of the sealing columns, so no feature's models are imported
    here. Built on first use: `idguard --help` imports no SQLAlchemy."""
    from idguard.registry import sealed

    return tuple(spec.clause() for spec in sealed.SEALED_TABLES.values())


def rows_by_key(engine: sa.Engine) -> dict[str, dict[str, int]]:
    """table -> key id -> rows sealed under it."""
    import sqlalchemy as sa

    counts: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        for table in tables():
            rows = conn.execute(
                sa.select(table.c.seal_key, sa.func.count())
                .where(table.c.seal_key.is_not(None))  # NULL: nothing sealed in the row (yet)
                .group_by(table.c.seal_key)
                .order_by(table.c.seal_key)
            ).all()
            counts[table.name] = {key: n for key, n in rows}  # noqa: C416 - Row pairs
    return counts


def rekey_all(engine: sa.Engine, *, batch: int) -> dict[str, int]:
    """Re-seal every table's rows under the active key; table -> rows re-sealed."""
    import sqlalchemy as sa

    from idguard import uow
    from idguard.db.common import AuditEntry
    from idguard.registry import sealed

    done = {table.name: sealed.rekey(engine, table, batch=batch) for table in tables()}
    if any(done.values()):
        ring = sealed.ring_of(engine)
        with uow.connection(engine) as conn:
            conn.execute(
                sa.insert(AuditEntry),
                {
                    "at": dt.datetime.now(dt.UTC),
                    "action": "keys.rekey",
                    "detail": f"{sum(done.values())} rows re-sealed under key {ring.active_key_id}",
                },
            )
    return done


@app.command(
    "rekey",
    help="Re-seal every name, address, finder's contact and sealed free text (notes, reasons, "
    "findings, case texts) under the active key, the first of "
    "IDGUARD_DATA_KEYS.\n\nEach batch is one transaction, so an interrupted run keeps what it did "
    "and can simply be run again; it is safe while the service runs.",
)
def rekey(batch: Annotated[int, typer.Option(min=1, max=100_000, help="rows per transaction")] = 500) -> None:
    from idguard.config import Settings
    from idguard.core.sealing import KeyRingError
    from idguard.db.engine import make_engine
    from idguard.registry import sealed

    settings = Settings()
    engine = make_engine(settings)
    try:
        ring = sealed.ring_of(engine)
        try:
            done = rekey_all(engine, batch=batch)
        except KeyRingError as exc:
            err.print(
                f"[red]error:[/red] {escape(str(exc))}; rows re-sealed before this batch stay so: "
                "list every key still in use in IDGUARD_DATA_KEYS and run again",
                soft_wrap=True,
            )
            raise typer.Exit(code=1) from None
        left = {
            table: sum(n for key, n in keys.items() if key != ring.active_key_id)
            for table, keys in rows_by_key(engine).items()
        }
    finally:
        engine.dispose()
    for table, n in done.items():
        console.print(f"{table}: {n:,} rows re-sealed under key {ring.active_key_id}")
    if any(left.values()):  # written meanwhile by a process still running with the old key first
        err.print(f"rows still under another key: {left}; run again once every process has the new key")
        raise typer.Exit(code=1)


@app.command("status", help="How many rows each key id seals, per table (drop a key only at 0).")
def status() -> None:
    from idguard.config import Settings
    from idguard.db.engine import make_engine
    from idguard.registry import sealed

    settings = Settings()
    engine = make_engine(settings)
    try:
        ring = sealed.ring_of(engine)
        counts = rows_by_key(engine)
    finally:
        engine.dispose()
    console.print(f"active key: {ring.active_key_id}; configured: {', '.join(ring.key_ids)}")
    for table, keys in counts.items():
        listed = ", ".join(f"{key}: {n:,}" for key, n in keys.items()) or "no rows"
        console.print(f"{table}: {listed}")
    missing = {key for keys in counts.values() for key in keys} - set(ring.key_ids)
    if missing:
        err.print(f"[red]error:[/red] rows are sealed under keys not in IDGUARD_DATA_KEYS: {sorted(missing)}")
        raise typer.Exit(code=1)
