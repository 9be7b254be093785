"""`idguard citizens ...`: the check log's retention job and a declaration signing key."""

from __future__ import annotations

import base64
import datetime as dt
import os
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.orm import Session, sessionmaker

    from idguard.verification.runtime import partitions

app = typer.Typer(
    help="Citizens' own view: the check log's retention, declaration signing keys.", no_args_is_help=True
)
console = Console()

# retention.BATCH, the default shown by --help: the same value, without importing the retention
# module (SQLAlchemy, the models) for `idguard --help` (tests/unit/test_cli_imports.py checks).
BATCH = 5_000


def purge(sessions: sessionmaker[Session], *, horizon: dt.datetime, batch: int = BATCH) -> dict[str, int]:
    """Remove every check older than `horizon`, unit by unit, `batch` rows a transaction (so the
    job holds no long lock and can be stopped and run again); how many per unit."""
    from idguard import uow
    from idguard.citizens import retention

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


def drop_months(engine: sa.Engine, *, horizon: dt.datetime) -> partitions.Dropped:
    """PostgreSQL's partitioned check log: drop each month wholly older than the horizon's month
    (and the default partition's rows before it), their travel-certificate rows first."""
    import sqlalchemy as sa

    from idguard.citizens.models import CertificateCheck
    from idguard.verification.runtime import partitions

    def forget(conn: sa.Connection, ids: sa.Select[tuple[object]]) -> None:
        conn.execute(sa.delete(CertificateCheck).where(CertificateCheck.check_id.in_(ids)))

    return partitions.drop_expired(engine, horizon, forget=forget)


@app.command("purge-checks")
def purge_checks(
    batch: Annotated[int, typer.Option(min=1, max=100_000, help="rows per transaction")] = BATCH,
) -> None:
    """Remove check-log rows older than IDGUARD_CHECK_RETENTION_MONTHS (default 24). Safe to run
    while the service runs (nightly, from cron) and to stop and run again. On PostgreSQL (the log
    partitioned by month) whole months are dropped: a check goes once its whole month is past."""
    from idguard.citizens.rules import retention_horizon
    from idguard.config import Settings
    from idguard.db.engine import make_engine, make_sessionmaker
    from idguard.verification.runtime import partitions

    settings = Settings()
    engine: sa.Engine = make_engine(settings)
    try:
        horizon = retention_horizon(dt.datetime.now(dt.UTC), settings.check_retention_months)
        with engine.connect() as conn:
            by_month = partitions.partitioned(conn)
        if by_month:
            dropped = drop_months(engine, horizon=horizon)
        else:
            removed = purge(make_sessionmaker(engine), horizon=horizon, batch=batch)
    finally:
        engine.dispose()
    if by_month:
        console.print(
            f"dropped {len(dropped.partitions)} monthly partitions ({', '.join(dropped.partitions) or 'none'}) "
            f"and {dropped.default_rows} rows of {partitions.DEFAULT}, all before "
            f"{partitions.month_start(horizon).isoformat()} (horizon {horizon.isoformat()}, "
            f"{settings.check_retention_months} months)",
            soft_wrap=True,
        )
        return
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
