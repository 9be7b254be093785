"""Server-side render time of the console's impersonation and accountability pages on demo data,
p50 and p95, next to the person page of bench/console.py measured in the same run (the machine is
shared: compare within one run). Target: p95 <= 50 ms.

The demo population (`idguard demo`'s loader: blacklisted persons, units with checks and
transactions) plus `--incidents` incidents opened through the watchlist's own use-case, in a
scratch SQLite database; each page is requested in-process (Starlette's TestClient), signed in as
the demo accounts.

    .venv/bin/python bench/console_watch.py [--citizens 20000] [--rounds 200] [--incidents 500]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient

from console import TARGET_MS, Unthrottled, staff, timed
from harness import SECRET, table
from idguard import uow
from idguard.accountability.models import Case
from idguard.accountability.rules import month_of
from idguard.app import create_app
from idguard.biometrics.fingerprints import Biometrics
from idguard.config import Environment, Settings
from idguard.db import migrate
from idguard.db.engine import make_engine
from idguard.demo.load import load_demo
from idguard.registry.models import Person
from idguard.verification.models import Unit
from idguard.watchlist import incidents
from idguard.watchlist.models import Incident


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--citizens", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--incidents", type=int, default=500)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="idguard-bench-console-watch-"))
    settings = Settings(
        database_url=f"sqlite:///{directory / 'idguard.db'}", env=Environment.DEVELOPMENT, secret_key=SECRET
    )
    engine = make_engine(settings)
    migrate.upgrade(engine)
    now = dt.datetime.now(dt.UTC)
    print(
        load_demo(
            engine,
            citizens=args.citizens,
            seed=1,
            now=now,
            fingerprint_persons=5,
            biometrics=Biometrics.from_settings(settings),
        ).summary()
    )
    factory = sa.orm.sessionmaker(engine)
    with uow.transaction(factory) as s:
        numbers = list(s.scalars(sa.select(Person.id_number).limit(args.incidents)))
        unit = s.scalars(sa.select(Unit.code).order_by(Unit.code)).first()
        for n, number in enumerate(numbers):
            incidents.open_incident(
                s,
                kind="disputed_by_holder",
                id_number=number,
                unit_code=unit,
                check_id=None,
                at=now - dt.timedelta(minutes=n),
            )
    with engine.connect() as conn:
        person = conn.scalar(sa.select(Person.id).limit(1))
        incident_no = conn.scalar(sa.select(Incident.incident_no).limit(1))
    engine.dispose()

    app = create_app(settings)
    app.state.throttle = Unthrottled(settings.workers)
    results: list[tuple[object, ...]] = []
    with TestClient(app) as client:
        clerk = staff(client, "clerk1")
        supervisor = staff(client, "supervisor1")
        auditor = staff(client, "auditor1")
        month = month_of(now)
        supervisor.get("/console/accountability")  # the signed-in session's CSRF token
        supervisor.post(
            "/console/accountability/cases",
            {"unit": str(unit), "month": month, "finding": "bench"},
        )
        with factory() as s:
            case_no = s.scalar(sa.select(Case.case_no).limit(1))
        pages: list[tuple[str, Callable[[], object]]] = [
            ("person page, clerk (reference)", lambda: clerk.get(f"/console/persons/{person}")),
            ("person page + watch forms (sup.)", lambda: supervisor.get(f"/console/persons/{person}")),
            ("incidents queue (supervisor)", lambda: supervisor.get("/console/incidents?status=all")),
            ("incident (supervisor)", lambda: supervisor.get(f"/console/incidents/{incident_no}")),
            ("blacklist (supervisor)", lambda: supervisor.get("/console/blacklist?status=all")),
            ("units + suspend forms (sup.)", lambda: supervisor.get("/console/units")),
            (
                "monthly compliance (supervisor)",
                lambda: supervisor.get(f"/console/accountability?month={month}"),
            ),
            ("charts, 30 days (auditor)", lambda: auditor.get("/console/accountability/charts")),
            ("cases (auditor)", lambda: auditor.get("/console/cases")),
            ("case (supervisor)", lambda: supervisor.get(f"/console/cases/{case_no}")),
        ]
        for name, fn in pages:
            ms = timed(fn, args.rounds)
            p95 = statistics.quantiles(ms, n=20)[18]
            results.append(
                (name, f"{statistics.median(ms):.1f}", f"{p95:.1f}", "yes" if p95 <= TARGET_MS else "NO")
            )
    table(
        f"console watch/accountability render times, ms ({args.citizens:,} demo citizens, "
        f"{args.incidents} incidents, {args.rounds} requests each, in-process)",
        ("page", "p50", "p95", f"p95 <= {TARGET_MS:.0f} ms"),
        results,
    )


if __name__ == "__main__":
    main()
