"""Server-side render time of the citizen's pages (/me), the clerk's activation-code receipt and
the teller's notifications, transactions and compliance pages, on demo data: p50 and p95 against
the console's target (p95 <= 50 ms). Same method as bench/console.py (whose helpers it uses):
in-process through the ASGI app, signed in, from the request entering the app to the last byte.

    .venv/bin/python bench/console_me.py [--citizens 20000] [--rounds 200]
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import sqlalchemy as sa
from fastapi.testclient import TestClient

from console import TARGET_MS, Session, Unthrottled, staff, timed
from harness import SECRET, table
from idguard import uow
from idguard.app import create_app
from idguard.biometrics.fingerprints import Biometrics
from idguard.config import Environment, Settings
from idguard.db import migrate
from idguard.db.engine import make_engine
from idguard.demo.load import load_demo
from idguard.demo.testcards import demo_unit_key
from idguard.registry.lifecycle import CardStatus
from idguard.registry.models import Card, Person

PASSWORD = "plum blossom river 42"  # noqa: S105 - a bench citizen's
_CODE = re.compile(r'id="activation-code">([^<]+)<')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--citizens", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="idguard-bench-console-me-"))
    settings = Settings(
        database_url=f"sqlite:///{directory / 'idguard.db'}", env=Environment.DEVELOPMENT, secret_key=SECRET
    )
    engine = make_engine(settings)
    migrate.upgrade(engine)
    now = dt.datetime.now(dt.UTC)
    report = load_demo(
        engine, citizens=args.citizens, seed=1, now=now, biometrics=Biometrics.from_settings(settings)
    )
    print(report.summary())
    with uow.transaction(sa.orm.sessionmaker(engine)) as s:
        key = demo_unit_key(s, now=now, secret_key=settings.secret_key)
    with sa.orm.Session(engine) as session:
        cards = [
            SimpleNamespace(
                id=c.id,
                person_id=c.person_id,
                id_number=c.id_number,
                name=c.name,
                issued_on=c.issued_on,
                expires_on=c.expires_on,
            )
            for c in session.scalars(
                sa.select(Card)
                .where(
                    Card.status == CardStatus.VALID,
                    Card.temporary.is_(False),
                    Card.fingerprints_registered.is_(False),
                    sa.or_(Card.expires_on.is_(None), Card.expires_on > now.date() + dt.timedelta(days=2)),
                )
                .limit(2)
            )
        ]
        people = list(
            session.scalars(
                sa.select(Person.id).where(Person.revoked_reason.is_(None)).limit(args.rounds + 1)
            )
        )
    engine.dispose()
    card, reported = cards

    app = create_app(settings)
    app.state.throttle = Unthrottled(settings.workers)
    results: list[tuple[object, ...]] = []
    with TestClient(app) as client:
        clerk = staff(client, "clerk1")
        teller = Session(client)
        teller.get("/unit/login")
        teller.post("/unit/login", {"api_key": key, "operator": "bench"})
        teller.get("/unit")  # the signed-in page: its CSRF token
        for _ in range(20):  # checks of the citizen's card, for /me/checks
            teller.post(
                "/unit/check",
                {
                    "id_number": card.id_number,
                    "name": card.name,
                    "issued_on": card.issued_on.isoformat(),
                    "expires_on": card.expires_on.isoformat() if card.expires_on else "",
                    "long_term": "" if card.expires_on else "1",
                    "purpose": "account_opening",
                },
                expect=200,
            )
        app.state.verifier.log.flush()
        clerk.get(f"/console/persons/{card.person_id}")  # an audited read, for /me/accesses

        def code_for(person_id: object) -> str:
            found = _CODE.search(
                clerk.client.post(
                    f"/console/persons/{person_id}/activation-code", data={"csrf": clerk.csrf}
                ).text
            )
            assert found is not None
            return found.group(1)

        citizen = Session(client)
        citizen.get("/me/activate")
        citizen.post(
            "/me/activate",
            {
                "id_number": card.id_number,
                "activation_code": code_for(card.person_id),
                "password": PASSWORD,
                "password_again": PASSWORD,
            },
        )
        citizen.get("/me")
        # A second citizen reports a card and declares it, for the declaration pages.
        other = Session(client)
        other.get("/me/activate")
        other.post(
            "/me/activate",
            {
                "id_number": reported.id_number,
                "activation_code": code_for(reported.person_id),
                "password": PASSWORD,
                "password_again": PASSWORD,
            },
        )
        other.get("/me")
        other.post(f"/me/cards/{reported.id}/loss-report", {"reason": "lost"})
        declaration = other.post(
            f"/me/cards/{reported.id}/declaration",
            {"lost_on": reported.issued_on.isoformat(), "place": "地铁"},
        )
        public = declaration.replace("/me/declarations/", "/declaration/")
        anonymous = Session(client)
        locks = iter(["1", "0"] * (args.rounds + 1))
        persons = iter(people * 2)

        pages: list[tuple[str, Callable[[], object]]] = [
            ("citizen sign-in page", lambda: anonymous.get("/me/login")),
            ("my cards and ledger", lambda: citizen.get("/me")),
            ("who checked my card (20)", lambda: citizen.get("/me/checks")),
            ("who read my record", lambda: citizen.get("/me/accesses")),
            ("lock / unlock (write)", lambda: citizen.post("/me/protection", {"required": next(locks)})),
            ("my declaration with QR", lambda: other.get(declaration)),
            ("public declaration (verify)", lambda: anonymous.get(public)),
            ("activation code receipt", lambda: code_for(next(persons))),
            ("teller notifications", lambda: teller.get("/unit/notifications")),
            ("teller transactions form", lambda: teller.get("/unit/transactions")),
            ("teller compliance", lambda: teller.get("/unit/compliance")),
        ]
        for name, fn in pages:
            ms = timed(fn, args.rounds)
            p95 = statistics.quantiles(ms, n=20)[18]
            results.append(
                (name, f"{statistics.median(ms):.1f}", f"{p95:.1f}", "yes" if p95 <= TARGET_MS else "NO")
            )
    table(
        f"citizen and teller page render times, ms ({args.citizens:,} demo citizens, "
        f"{args.rounds} requests each, in-process)",
        ("page", "p50", "p95", f"p95 <= {TARGET_MS:.0f} ms"),
        results,
    )


if __name__ == "__main__":
    main()
