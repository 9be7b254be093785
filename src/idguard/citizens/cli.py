"""`idguard citizens ...`: the check log's retention job and a declaration signing key."""

from __future__ import annotations

import base64
import datetime as dt
import os
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.console import Console
from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.citizens import retention
from idguard.citizens.rules import retention_horizon
from idguard.config import Settings
from idguard.db.engine import make_engine, make_sessionmaker

app = typer.Typer(
    help="Citizens' own view: the check log's retention, declaration signing keys.", no_args_is_help=True
)
console = Console()


def purge(
    sessions: sessionmaker[Session], *, horizon: dt.datetime, batch: int = retention.BATCH
) -> dict[str, int]:
    """Remove every check older than `horizon`, unit by unit, `batch` rows a transaction (so the
    job holds no long lock and can be stopped and run again); how many per unit."""
    with sessions() as session:
        codes = retention.unit_codes(session)
    removed: dict[str, int] = {}
    for code in codes:
        while True:
            with uow.transaction(sessions) as session:
                n = retention.purge_batch(session, unit_code=code, horizon=horizon, limit=batch)
            if n:
                removed[code] = removed.get(code, 0) + n
            if n < batch:
                break
    return removed


@app.command("purge-checks")
def purge_checks(
    batch: Annotated[int, typer.Option(min=1, max=100_000, help="rows per transaction")] = retention.BATCH,
) -> None:
    """Remove check-log rows older than IDGUARD_CHECK_RETENTION_MONTHS (default 24). Safe to run
    while the service runs (nightly, from cron) and to stop and run again."""
    settings = Settings()
    engine: sa.Engine = make_engine(settings)
    try:
        horizon = retention_horizon(dt.datetime.now(dt.UTC), settings.check_retention_months)
        removed = purge(make_sessionmaker(engine), horizon=horizon, batch=batch)
    finally:
        engine.dispose()
    console.print(
        f"removed {sum(removed.values())} checks older than {horizon.isoformat()} "
        f"({settings.check_retention_months} months) from {len(removed)} units",
        soft_wrap=True,
    )


@app.command("declaration-key")
def declaration_key(
    key_id: Annotated[str, typer.Argument(help="1-16 of A-Z a-z 0-9 _ . - (e.g. the year)")],
) -> None:
    """Print a new Ed25519 signing key for IDGUARD_DECLARATION_KEYS ("key_id:base64-seed"): put it
    first in the list and keep the older keys after it, so old declarations stay verifiable."""
    from idguard.citizens.declarations import parse_keys

    entry = f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"
    try:
        parse_keys(entry)
    except ValueError as exc:
        raise typer.BadParameter(str(exc).replace(entry.partition(":")[2], "…")) from None
    print(entry)
