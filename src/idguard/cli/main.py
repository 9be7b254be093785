"""The `idguard` command. Command names and options are used by scripts outside the project."""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from idguard.accountability import cli as accountability_cli
from idguard.citizens import cli as citizens_cli
from idguard.core.errors import DomainError, InvalidField
from idguard.core.grants import Role
from idguard.offline import cli as offline_cli
from idguard.ops import cli as ops_cli
from idguard.ops import ledger_cli
from idguard.registry import keys_cli
from idguard.scaleout import cli as scaleout_cli
from idguard.verification import checks_cli

# `idguard --help` and the short commands (`idguard demo fingerprint ID` runs inline in scripts)
# import no database, web or numeric library: each command imports what it uses in its body, and
# a command using the database every feature's tables (_load_schema_first, at the end);
# tests/unit/test_cli_imports.py checks both.
if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.orm import Session, sessionmaker

    from idguard.config import Settings

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
demo_app = typer.Typer(
    help="Synthetic demo data: load a population; make a demo person's live fingerprint.",
    invoke_without_command=True,
)
app.add_typer(demo_app, name="demo")
fingerprints_app = typer.Typer(
    help="Registered fingerprints: re-seal under a new key, calibrate the threshold.", no_args_is_help=True
)
app.add_typer(fingerprints_app, name="fingerprints")
accountability_cli.register(app)  # `idguard transactions …`, `idguard compliance …`
ops_cli.register(app)  # `idguard backup DEST`
app.add_typer(ledger_cli.app, name="ledger")  # `idguard ledger verify`, `idguard ledger checkpoint`
app.add_typer(keys_cli.app, name="keys")  # `idguard keys rekey`, `idguard keys status`
app.add_typer(citizens_cli.app, name="citizens")  # `idguard citizens purge-checks`, `declaration-key`
app.add_typer(offline_cli.app, name="offline")  # `idguard offline fetch`, `idguard offline check`
app.add_typer(checks_cli.app, name="checks")  # `idguard checks partitions` (PostgreSQL)


def _suspension_notes(session: Session) -> dict[str, str]:
    """accountability.cases.suspension_notes, imported when the relay first asks."""
    from idguard.accountability.cases import suspension_notes

    return suspension_notes(session)


scaleout_cli.register(app, _suspension_notes)  # relay, verifier, checklog-sink
console = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    from idguard.config import Settings

    return Settings()


def _engine() -> sa.Engine:
    from idguard.db.engine import make_engine

    return make_engine(_settings())


@contextmanager
def _database(settings: Settings) -> Iterator[sa.Engine]:
    """An engine for one command, its connections closed at the end."""
    from idguard.db.engine import make_engine

    engine = make_engine(settings)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def _transaction(settings: Settings | None = None) -> Iterator[Session]:
    """One command's unit of work: it commits when the command's work is done; a rule the work
    breaks is printed and the command exits 1 with nothing written."""
    from idguard import uow
    from idguard.db.engine import make_sessionmaker

    with _database(settings or _settings()) as engine:
        try:
            with uow.transaction(make_sessionmaker(engine)) as session:
                yield session
        except DomainError as exc:
            raise _fail(exc) from None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _fail(exc: DomainError | str) -> typer.Exit:
    message = exc.detail if isinstance(exc, DomainError) else exc
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)  # one line, however narrow
    return typer.Exit(code=1)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(help="server worker processes")] = 1,
    fd: Annotated[
        int | None,
        typer.Option(help="serve on this already bound, listening socket (inherited) instead of HOST:PORT"),
    ] = None,
    http: Annotated[
        str,
        typer.Option(help="HTTP protocol: httptools on uvloop (fastest, bench/floor.py) or h11 on asyncio"),
    ] = "httptools",
) -> None:
    """Serve the HTTP API (uvicorn; SIGTERM finishes the requests in flight, then stops)."""
    import os

    import uvicorn

    from idguard.api.server import uvicorn_options

    # Each worker divides the units' rate limits by this (the workers inherit the environment).
    os.environ["IDGUARD_WORKERS"] = str(workers)
    if workers > 1 and not (
        os.environ.get("IDGUARD_METRICS_DIR") or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    ):
        # Several workers count into one set of files, so any worker's /metrics shows them all
        # (ops/metrics.py): a fresh directory for this server's life when none is configured.
        import tempfile

        os.environ["IDGUARD_METRICS_DIR"] = tempfile.mkdtemp(prefix="idguard-metrics-")
    if http not in ("httptools", "h11"):
        raise _fail(f"--http must be httptools or h11, not {http!r}")
    # The HTTP protocol answering 431 for a head past the limit and lingering before it closes a
    # connection whose request was not read to its end (api/server.py). Proxy headers
    # (X-Forwarded-For/-Proto) are taken from FORWARDED_ALLOW_IPS, 127.0.0.1 by default: uvicorn's.
    uvicorn.run(
        "idguard.app:create_app",
        factory=True,
        host=host,
        port=port,
        fd=fd,
        workers=workers,
        **uvicorn_options(http),
    )


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default: head)."""
    from idguard.db import migrate

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
    from idguard.registry import staff as staff_service

    with _transaction() as session:
        staff_service.add_office(session, now=_now(), code=code, name=name, region=region or code[:6])
    console.print(f"office {code} added")


@staff_app.command("add")
def staff_add(
    username: Annotated[str, typer.Option(help="login name")],
    password: Annotated[str, typer.Option(help="at least 8 characters", prompt=True, hide_input=True)],
    role: Annotated[Role, typer.Option(help="clerk, supervisor, auditor or admin")],
    office: Annotated[str | None, typer.Option(help="office code (required for a clerk)")] = None,
) -> None:
    """Add a staff account."""
    from idguard.registry import staff as staff_service

    with _transaction() as session:
        staff_service.add_staff(
            session, now=_now(), username=username, password=password, role=role, office=office
        )
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
    from idguard.verification import units as units_service

    settings = _settings()
    with _transaction(settings) as session:
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
    console.print(f"unit {code} added; its API key (store it now, it is not shown again):")
    typer.echo(issued.api_key)
    console.print(f"webhook signing secret: {issued.webhook_secret}")


@unit_app.command("roll-webhook-secret")
def unit_roll_webhook_secret(
    code: str,
    overlap_hours: Annotated[
        int, typer.Option(min=0, max=168, help="hours the secrets in use keep signing beside the new one")
    ] = 24,
) -> None:
    """Roll unit CODE's webhook signing secret and print the new one (shown this once only)."""
    from idguard.verification import units as units_service

    settings = _settings()
    with _transaction(settings) as session:
        rolled = units_service.roll_webhook_secret(
            session,
            actor=None,
            now=_now(),
            secret_key=settings.secret_key,
            code=code,
            overlap=dt.timedelta(hours=overlap_hours),
        )
    until = rolled.previous_expire_at
    console.print(
        f"unit {code}: new webhook signing secret (store it now, it is not shown again); "
        + (f"the previous one signs too until {until:%Y-%m-%dT%H:%M:%SZ}" if until else "no overlap"),
        soft_wrap=True,
    )
    typer.echo(rolled.webhook_secret)


@demo_app.callback(
    help="Load a synthetic population with demo offices and staff into an empty database (with "
    "no subcommand); or work with demo data (a subcommand)."
)
def demo(
    ctx: typer.Context,
    citizens: Annotated[int, typer.Option(help="number of synthetic citizens")] = 10_000,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same population)")] = 1,
    fingerprint_persons: Annotated[
        int | None,
        typer.Option(
            help="persons whose current card gets two registered synthetic fingers "
            "(default 100; 0 for none; ~30 ms of CPU each)"
        ),
    ] = None,
) -> None:
    """`idguard demo [--citizens N]` loads; `idguard demo SUBCOMMAND` only runs the subcommand."""
    if ctx.invoked_subcommand is not None:
        return
    from idguard.biometrics.fingerprints import Biometrics
    from idguard.db import migrate
    from idguard.demo.load import DEFAULT_FINGERPRINT_PERSONS, load_demo

    if citizens < 0:
        raise _fail(f"--citizens {citizens}: must not be negative")
    if fingerprint_persons is not None and fingerprint_persons < 0:
        raise _fail(f"--fingerprint-persons {fingerprint_persons}: must not be negative (0 for none)")
    settings = _settings()
    with _database(settings) as engine:
        migrate.upgrade(engine)
        try:
            report = load_demo(
                engine,
                citizens=citizens,
                seed=seed,
                now=_now(),
                fingerprint_persons=DEFAULT_FINGERPRINT_PERSONS
                if fingerprint_persons is None
                else fingerprint_persons,
                biometrics=Biometrics.from_settings(settings),
            )
        except DomainError as exc:
            raise _fail(exc) from None
        console.print(report.summary())
        _print_fingerprint_holders(engine)


def _print_fingerprint_holders(engine: sa.Engine) -> None:
    """A few demo id numbers whose card has registered fingerprints: the ones a loss report or a
    found card's return needs a live capture for (`idguard demo fingerprint`). Id numbers only."""
    from idguard.biometrics.fingerprints import finger_name
    from idguard.demo.fingers import DEMO_FINGERS
    from idguard.demo.load import demo_fingerprint_holders

    count, examples = demo_fingerprint_holders(engine, now=_now())
    if not count:
        return
    fingers = " and ".join(f"{finger_name(f)} ({f})" for f in DEMO_FINGERS)
    console.print(f"{count:,} valid demo cards have registered fingerprints, {fingers}; for example:")
    for number in examples:
        console.print(f"  {number}")
    console.print("  a live capture of one (for loss reports, found-card returns, verification):")
    console.print("  idguard demo fingerprint ID_NUMBER --finger 1 --impression 1")


def _print_test_cards(engine: sa.Engine, settings: Settings, base: str) -> None:
    """The demo unit's key and one demo card per answer, ready for a first check."""
    import json

    from idguard import uow
    from idguard.core.clock import today_cst
    from idguard.db.engine import make_sessionmaker
    from idguard.demo.testcards import CATEGORIES, EXPECTED, demo_card, demo_unit_key

    with uow.transaction(make_sessionmaker(engine)) as session:
        key = demo_unit_key(session, now=_now(), secret_key=settings.secret_key)
    console.print(f"demo unit DEMO-BANK, API key (new at every start): {key}")
    console.print("demo cards, one per answer (the body a bank sends to POST /api/v1/verify):")
    with make_sessionmaker(engine)() as session:
        for category in CATEGORIES:
            body = demo_card(session, category, today=today_cst(_now()))
            if body is not None:
                result, reason = EXPECTED[category]
                answer = result + (f" ({reason})" if reason else "")
                console.print(f"  {category:<18} → {answer}", soft_wrap=True)
                typer.echo(f"    {json.dumps(body, ensure_ascii=False)}")
    console.print(
        f"  try one: curl -s -X POST {base}/api/v1/verify -H 'Authorization: Bearer {key}' "
        "-H 'Content-Type: application/json' -d \"$(idguard demo card valid)\"",
        soft_wrap=True,
        markup=False,
    )


@demo_app.command(
    "fingerprint",
    help="Print a new live capture of a demo person's finger: a base64 ISO/IEC 19794-2 record, as a "
    "counter scanner sends it (the `fingerprint` of a loss report or a found card's return).\n\n"
    "Demo data only, and no database needed: a demo person's fingers are a pure function of the id "
    "number, so this matches the fingers the demo loader registered for that person (fingers 1 "
    "and 6, on cards `idguard demo` lists) and nothing a real scanner enrolled. Another finger of "
    "the same person does not match.",
)
def demo_fingerprint(
    id_number: Annotated[str, typer.Argument(help="a demo person's citizen id number")],
    finger: Annotated[
        int,
        typer.Option(
            help="ISO finger position, 1 right thumb ... 10 left little; demo cards register 1 and 6"
        ),
    ] = 1,
    impression: Annotated[
        int, typer.Option(help="which live capture: 1, 2, ... (each a different impression of the finger)")
    ] = 1,
) -> None:
    """A live capture for demo data, computed from the id number alone (idguard.demo.fingers)."""
    from idguard.core import idnumber
    from idguard.core.clock import today_cst
    from idguard.demo.fingers import live_sample

    try:
        number = idnumber.parse(id_number, today=today_cst(_now()), field="ID_NUMBER").value
    except InvalidField as exc:
        raise _fail(f"ID_NUMBER: {exc.detail}") from None
    if not 1 <= finger <= 10:
        raise _fail(f"--finger {finger}: a finger position is 1 (right thumb) to 10 (left little finger)")
    if impression < 1:
        raise _fail(f"--impression {impression}: live captures are numbered from 1 (0 is the enrolled one)")
    typer.echo(live_sample(number, finger, impression))


@demo_app.command(
    "card",
    help="Print the JSON a bank sends to POST /api/v1/verify for a demo card that answers CATEGORY: "
    "valid, reported_lost, reported_stolen, superseded, expired, revoked or with_fingerprints. "
    "Demo data only (the loaded demo population).",
)
def demo_card_command(
    category: Annotated[str, typer.Argument(help="which answer the card gets")] = "valid",
) -> None:
    """One demo card per answer, so a first check is a copy-paste (docs/integration.md)."""
    import json

    from idguard.core.clock import today_cst
    from idguard.db.engine import make_sessionmaker
    from idguard.demo.testcards import CATEGORIES, demo_card

    if category not in CATEGORIES:
        raise _fail(f"CATEGORY {category!r}: one of {', '.join(CATEGORIES)}")
    with _database(_settings()) as engine, make_sessionmaker(engine)() as session:
        body = demo_card(session, category, today=today_cst(_now()))
    if body is None:
        raise _fail(f"the demo data holds no {category} card: load it with `idguard demo` (or `make run`)")
    typer.echo(json.dumps(body, ensure_ascii=False))


@demo_app.command(
    "unit-key",
    help="Print a working API key of the demo unit DEMO-BANK (onboarded on first use; otherwise its "
    "key is rotated, and earlier demo keys stop). For trying the API on demo data only.",
)
def demo_unit_key_command() -> None:
    from idguard.demo.testcards import demo_unit_key

    settings = _settings()
    with _transaction(settings) as session:
        key = demo_unit_key(session, now=_now(), secret_key=settings.secret_key)
    typer.echo(key)


def _fingerprint_batches(
    sessions: sessionmaker[Session], step: Callable[[Session], int], *, action: str, did: str
) -> int:
    """Run `step` (a batch over the stored fingerprints) one transaction at a time until it does
    nothing, each batch audited as `action` ("<n> fingerprints <did>"); the total. A row under a
    key the configuration does not hold stops the run with one clean line: what earlier batches
    did stays done, the failing batch is rolled back."""
    from idguard import uow
    from idguard.biometrics.vault import VaultError
    from idguard.db.common import AuditEntry

    total = 0
    while True:
        try:
            with uow.transaction(sessions) as session:
                done = step(session)
                if done:
                    session.add(AuditEntry(at=_now(), action=action, detail=f"{done} fingerprints {did}"))
        except VaultError as exc:
            raise _fail(
                f"{exc}; {total:,} fingerprints were {did} before this batch (they stay so): "
                "list every key still in use in IDGUARD_TEMPLATE_KEYS and run again"
            ) from None
        if not done:
            return total
        total += done


@fingerprints_app.command(
    "rekey",
    help="Re-seal every stored fingerprint under the active key, the first of IDGUARD_TEMPLATE_KEYS."
    "\n\nTo rotate: put the new key first (keeping the old one listed), run this, then drop the "
    "old key. Each batch is one transaction, so an interrupted run keeps what it did and can "
    "simply be run again; on PostgreSQL, runs at once share the rows (SKIP LOCKED).",
)
def fingerprints_rekey(
    batch: Annotated[int, typer.Option(help="fingerprints re-sealed per transaction")] = 500,
) -> None:
    """Key rotation: until every row is re-sealed, the old key must stay configured to decrypt."""
    import sqlalchemy as sa

    from idguard.biometrics.fingerprints import rekey
    from idguard.biometrics.models import Fingerprint
    from idguard.biometrics.vault import TemplateVault
    from idguard.db.engine import make_sessionmaker

    if batch < 1:
        raise _fail(f"--batch {batch}: must be at least 1")
    settings = _settings()
    vault = TemplateVault.from_settings(settings)
    with _database(settings) as engine:
        sessions = make_sessionmaker(engine)
        total = _fingerprint_batches(
            sessions,
            lambda session: rekey(session, vault, batch=batch),
            action="fingerprints.rekey",
            did=f"re-sealed under key {vault.active_key_id}",
        )
        with sessions() as session:
            left = session.scalar(
                sa.select(sa.func.count())
                .select_from(Fingerprint)
                .where(Fingerprint.key_id != vault.active_key_id)
            )
    console.print(f"{total:,} fingerprints re-sealed under key {vault.active_key_id}")
    if left:
        console.print(
            f"{left:,} still under other keys (another run holds them?): run again before dropping a key"
        )


@fingerprints_app.command(
    "reindex",
    help="Derive the 1:N index data of every stored fingerprint that has none (enrolled before "
    "migration 0015, or bulk-loaded) or whose index data an older index model made, sealed like "
    "its template, so that the blacklist gallery files it from that data instead of its template "
    "(docs/fingerprints.md, 1:N).\n\nEach batch "
    "is one transaction: an interrupted run keeps what it did and can simply be run again.",
)
def fingerprints_reindex(
    batch: Annotated[int, typer.Option(help="fingerprints indexed per transaction")] = 500,
) -> None:
    from idguard.biometrics.fingerprints import ReindexPlace, reindex
    from idguard.biometrics.vault import TemplateVault
    from idguard.db.engine import make_sessionmaker

    if batch < 1:
        raise _fail(f"--batch {batch}: must be at least 1")
    settings = _settings()
    vault = TemplateVault.from_settings(settings)
    place = ReindexPlace()  # each row's index data opened once in the run
    with _database(settings) as engine:
        total = _fingerprint_batches(
            make_sessionmaker(engine),
            lambda session: reindex(session, vault, batch=batch, place=place),
            action="fingerprints.reindex",
            did="indexed",
        )
    console.print(f"{total:,} fingerprints indexed")


@fingerprints_app.command(
    "calibrate",
    help="Print the comparison threshold for a false match rate, computed on the held-out synthetic "
    "calibration set, and how many impostor comparisons it rests on.\n\nTakes several minutes "
    "(about 300,000 comparisons). Synthetic data: the figure is only as good as the synthetic "
    "model (docs/fingerprints.md). Set IDGUARD_FINGERPRINT_THRESHOLD to use it.",
)
def fingerprints_calibrate(
    fmr: Annotated[float, typer.Option(help="target false match rate, e.g. 0.0001 for 1 in 10,000")] = 1e-4,
) -> None:
    """The threshold is checked against the set's size first: minutes are not spent to refuse."""
    from idguard.biometrics import calibration
    from idguard.biometrics.synthetic import Difficulty

    current = _settings().fingerprint_threshold
    per_level = calibration.CALIBRATION_FINGERS * calibration.CALIBRATION_IMPRESSIONS
    same_finger = calibration.CALIBRATION_FINGERS * math.comb(calibration.CALIBRATION_IMPRESSIONS, 2)
    available = len(Difficulty) * (math.comb(per_level, 2) - same_finger)  # pairs of different fingers
    if not 0.0 < fmr < 1.0:
        raise _fail(f"--fmr {fmr:g}: a false match rate is between 0 and 1, e.g. 0.0001")
    if math.ceil(1.0 / fmr - 1e-9) > available:  # as calibration.calibrate_threshold counts
        raise _fail(
            f"--fmr {fmr:g}: the calibration set has {available:,} impostor comparisons and a rate "
            f"needs at least 1/FMR of them: the smallest FMR it can calibrate is 1/{available:,}"
        )
    err.print(f"calibrating on {available:,} synthetic impostor comparisons: this takes several minutes")
    threshold, comparisons = calibration.calibrate_default_threshold(fmr)
    rounded = math.ceil(threshold * 10_000) / 10_000  # up: the rate stays at most fmr on this set
    console.print(
        f"threshold {threshold!r} at FMR {fmr:g} from {comparisons:,} impostor scores (synthetic data); "
        f"configure IDGUARD_FINGERPRINT_THRESHOLD={rounded:.4f} (current: {current:g})"
    )


@app.command("run-dev")
def run_dev(
    citizens: Annotated[int, typer.Option(help="demo citizens to load into an empty database")] = 20_000,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    fingerprint_persons: Annotated[
        int | None, typer.Option(help="demo persons with registered fingers (default 100)")
    ] = None,
) -> None:
    """What `make run` does: migrate, load demo data if the database is empty, print the demo staff
    accounts, a demo unit's key and one demo card per answer, and serve."""
    import sqlalchemy as sa

    from idguard.biometrics.fingerprints import Biometrics
    from idguard.db import migrate
    from idguard.db.engine import make_engine
    from idguard.demo.load import DEFAULT_FINGERPRINT_PERSONS, DEMO_CREDENTIALS, load_demo

    settings = _settings()
    engine = make_engine(settings)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        empty = conn.scalar(sa.text("SELECT count(*) FROM persons")) == 0
    if empty:
        report = load_demo(
            engine,
            citizens=citizens,
            seed=1,
            now=_now(),
            fingerprint_persons=DEFAULT_FINGERPRINT_PERSONS
            if fingerprint_persons is None
            else fingerprint_persons,
            biometrics=Biometrics.from_settings(settings),
        )
        console.print(report.summary())
    console.print("demo staff accounts (username / password / role):")
    for username, password, role, office in DEMO_CREDENTIALS:
        console.print(f"  {username} / {password} / {role}" + (f" at office {office}" if office else ""))
    _print_fingerprint_holders(engine)
    _print_test_cards(engine, settings, f"http://{host}:{port}")
    console.print(f"API docs: http://{host}:{port}/api/v1/docs")
    engine.dispose()
    serve(host=host, port=port, workers=1)


# Commands that open no database: they run without the schema (`demo fingerprint` runs inline in
# scripts, `offline check` at a unit's counter for each card).
NO_DATABASE = {
    ("demo", "fingerprint"),
    ("offline", "fetch"),
    ("offline", "check"),
    ("citizens", "declaration-key"),
    ("fingerprints", "calibrate"),
    ("serve",),  # the app it serves imports its own
    ("verifier",),
}


def _with_schema(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command`, run with every feature's models imported first, as the service has them: a
    session's flush sorts every table the ORM knows, and fails on a table whose foreign key names
    one not imported (compliance's closed_months -> staff), whichever feature the command is."""

    @functools.wraps(command)  # typer reads the signature, annotations and help through it
    def run(*args: Any, **kwargs: Any) -> Any:
        import idguard.schema  # noqa: F401 - every feature's tables on one metadata

        return command(*args, **kwargs)

    return run


def _load_schema_first(group: typer.Typer, path: tuple[str, ...] = ()) -> None:
    """Wrap every command in `group` but NO_DATABASE's in `_with_schema`: when it runs, not when
    the command line is built, so `--help` imports no SQLAlchemy."""
    for info in group.registered_commands:
        if info.callback is None:
            continue
        name = info.name or info.callback.__name__.lower().replace("_", "-")  # as typer names it
        if (*path, name) not in NO_DATABASE:
            info.callback = _with_schema(info.callback)
    for sub in group.registered_groups:
        if sub.typer_instance is not None and sub.name is not None:
            _load_schema_first(sub.typer_instance, (*path, sub.name))


_load_schema_first(app)  # last: every command above and the features' are registered
