"""The `idguard` command. Command names and options are used by scripts outside the project."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.console import Console

from idguard.config import Settings
from idguard.db import migrate
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.domain.errors import DomainError
from idguard.domain.roles import Role
from idguard.services import staff as staff_service
from idguard.services import units as units_service

app = typer.Typer(help="idguard: the invalid resident ID card information system.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
office_app = typer.Typer(help="Police offices.", no_args_is_help=True)
staff_app = typer.Typer(help="Staff accounts.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(office_app, name="office")
app.add_typer(staff_app, name="staff")
unit_app = typer.Typer(
    help="ID-using units (banks, hotels, railways) and their API keys.", no_args_is_help=True
)
app.add_typer(unit_app, name="unit")
console = Console()
err = Console(stderr=True)


def _engine() -> sa.Engine:
    return make_engine(Settings())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _fail(exc: DomainError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc.detail}")
    return typer.Exit(code=1)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(help="server worker processes")] = 1,
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    uvicorn.run("idguard.api.app:create_app", factory=True, host=host, port=port, workers=workers)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    migrate.upgrade(_engine(), revision)
    console.print(f"database at {revision}")


@office_app.command("add")
def office_add(
    code: str,
    name: str,
    region: Annotated[
        str | None, typer.Option(help="6-digit GB/T 2260 region; default: first 6 of CODE")
    ] = None,
) -> None:
    """Add an office CODE with NAME."""
    with make_sessionmaker(_engine())() as session:
        try:
            staff_service.add_office(session, now=_now(), code=code, name=name, region=region or code[:6])
        except DomainError as exc:
            raise _fail(exc) from None
        session.commit()
    console.print(f"office {code} added")


@staff_app.command("add")
def staff_add(
    username: Annotated[str, typer.Option(help="login name")],
    password: Annotated[str, typer.Option(help="at least 8 characters", prompt=True, hide_input=True)],
    role: Annotated[Role, typer.Option(help="clerk, supervisor, auditor or admin")],
    office: Annotated[str | None, typer.Option(help="office code (required for a clerk)")] = None,
) -> None:
    """Add a staff account."""
    with make_sessionmaker(_engine())() as session:
        try:
            staff_service.add_staff(
                session, now=_now(), username=username, password=password, role=role, office=office
            )
        except DomainError as exc:
            raise _fail(exc) from None
        session.commit()
    console.print(f"{role.value} {username} added")


@unit_app.command("add")
def unit_add(
    code: str,
    name: str,
    sector: Annotated[str, typer.Option(help="bank, hotel, railway, telecom, ...")],
    purpose: Annotated[list[str], typer.Option(help="an allowed purpose; repeat for several")],
    rate_limit: Annotated[int, typer.Option(help="checks per second")] = 100,
    webhook_url: Annotated[str | None, typer.Option(help="where to POST signed notifications")] = None,
) -> None:
    """Onboard unit CODE NAME and print its API key (shown this once only)."""
    settings = Settings()
    with make_sessionmaker(make_engine(settings))() as session:
        try:
            issued = units_service.onboard(
                session,
                actor=None,
                now=_now(),
                secret_key=settings.secret_key,
                code=code,
                name=name,
                sector=sector,
                purposes=purpose,
                rate_limit=rate_limit,
                webhook_url=webhook_url,
            )
        except DomainError as exc:
            raise _fail(exc) from None
        session.commit()
    console.print(f"unit {code} added; its API key (store it now, it is not shown again):")
    typer.echo(issued.api_key)
    console.print(f"webhook signing secret: {issued.webhook_secret}")


@app.command()
def demo(
    citizens: Annotated[int, typer.Option(help="number of synthetic citizens")] = 10_000,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same population)")] = 1,
) -> None:
    """Load a synthetic population with demo offices and staff into an empty database."""
    from idguard.demo.load import load_demo

    engine = _engine()
    migrate.upgrade(engine)
    try:
        report = load_demo(engine, citizens=citizens, seed=seed, now=_now())
    except DomainError as exc:
        raise _fail(exc) from None
    console.print(report.summary())


@app.command("run-dev", hidden=True)
def run_dev(
    citizens: Annotated[int, typer.Option()] = 20_000,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
) -> None:
    """What `make run` does: migrate, load demo data if empty, print credentials, serve."""
    from idguard.demo.load import DEMO_CREDENTIALS, load_demo

    engine = _engine()
    migrate.upgrade(engine)
    with engine.connect() as conn:
        empty = conn.scalar(sa.text("SELECT count(*) FROM persons")) == 0
    if empty:
        console.print(load_demo(engine, citizens=citizens, seed=1, now=_now()).summary())
    console.print("demo staff accounts (username / password / role):")
    for username, password, role, office in DEMO_CREDENTIALS:
        console.print(f"  {username} / {password} / {role}" + (f" at office {office}" if office else ""))
    console.print(f"API docs: http://{host}:{port}/api/v1/docs")
    engine.dispose()
    serve(host=host, port=port, workers=1)
