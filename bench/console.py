"""Server-side render time of each console page type on demo data, p50 and p95. Target: p95 <= 50 ms.

A scratch SQLite database gets the demo population (`idguard demo`'s loader, with synthetic
fingerprints on a few cards), then each page type is requested in-process through the ASGI app
(Starlette's TestClient: no network, no browser), signed in as the demo accounts. The time is from
the request entering the app to the last byte of the answer: routing, the session, the
permission check, the use-case with its audited reads and commit, the template. Writes (a loss
report and its receipt) run on fresh demo cards each time.

    .venv/bin/python bench/console.py [--citizens 20000] [--rounds 200]
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import sqlalchemy as sa
from fastapi.testclient import TestClient

from harness import SECRET, table
from idguard import uow
from idguard.app import create_app
from idguard.biometrics.fingerprints import Biometrics
from idguard.config import Environment, Settings
from idguard.console import DemoSupport, use_demo
from idguard.core.ratelimit import RateLimiter
from idguard.db import migrate
from idguard.db.engine import make_engine
from idguard.demo import fingers
from idguard.demo.load import DEMO_CREDENTIALS, load_demo
from idguard.demo.testcards import demo_unit_key
from idguard.registry import sealed
from idguard.registry.lifecycle import CardStatus
from idguard.registry.models import Card, Person

TARGET_MS = 50.0
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Unthrottled(RateLimiter):
    """The public look-up's per-address throttle would stop a bench from one address: the
    bucket is still computed (the cost is measured), its verdict ignored."""

    def take(self, key: str, rate_limit: float, n: int = 1, *, burst: float | None = None) -> float:
        super().take(key, rate_limit, n, burst=burst)
        return 0.0


class Session:
    def __init__(self, client: TestClient) -> None:
        self.client = TestClient(client.app, follow_redirects=False)
        self.csrf = ""

    def get(self, path: str) -> str:
        r = self.client.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        self._keep(r.text)
        return r.text

    def post(self, path: str, data: dict[str, str], expect: int = 303) -> str:
        r = self.client.post(path, data={"csrf": self.csrf, **data})
        assert r.status_code == expect, (path, r.status_code, r.text[:300])
        self._keep(r.text)
        return str(r.headers.get("location", ""))

    def _keep(self, text: str) -> None:
        found = _CSRF.search(text)
        if found:
            self.csrf = found.group(1)


def staff(client: TestClient, username: str) -> Session:
    password = next(p for u, p, _, _ in DEMO_CREDENTIALS if u == username)
    s = Session(client)
    s.get("/console/login")
    s.post("/console/login", {"username": username, "password": password})
    return s


def timed(fn: Callable[[], object], rounds: int) -> list[float]:
    fn()  # warm: templates compiled, caches filled
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--citizens", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="idguard-bench-console-"))
    settings = Settings(
        database_url=f"sqlite:///{directory / 'idguard.db'}", env=Environment.DEVELOPMENT, secret_key=SECRET
    )
    engine = make_engine(settings)
    migrate.upgrade(engine)
    now = dt.datetime.now(dt.UTC)
    report = load_demo(
        engine,
        citizens=args.citizens,
        seed=1,
        now=now,
        fingerprint_persons=5,
        biometrics=Biometrics.from_settings(settings),
    )
    print(report.summary())
    with uow.transaction(sa.orm.sessionmaker(engine)) as s:
        key = demo_unit_key(s, now=now, secret_key=settings.secret_key)
    with engine.connect() as conn:
        persons = list(conn.execute(sa.select(Person.id).limit(args.rounds + 1)).scalars())
        valid = list(
            conn.execute(
                sa.select(
                    Card.id, Card.id_number, Card.seal_key, Card.name_sealed, Card.issued_on, Card.expires_on
                )
                .where(
                    Card.status == CardStatus.VALID,
                    Card.temporary.is_(False),
                    Card.fingerprints_registered.is_(False),
                    sa.or_(Card.expires_on.is_(None), Card.expires_on > now.date() + dt.timedelta(days=2)),
                )
                .limit(args.rounds * 2 + 10)
            ).all()
        )
    ring = sealed.ring_of(engine)  # names are sealed at rest: opened for the teller's checks
    valid = [
        SimpleNamespace(
            id=c.id,
            id_number=c.id_number,
            name=sealed.card_name(ring, c.id, c.seal_key, c.name_sealed),
            issued_on=c.issued_on,
            expires_on=c.expires_on,
        )
        for c in valid
    ]
    engine.dispose()

    app = create_app(settings)
    use_demo(
        app.state,
        DemoSupport(
            accounts=DEMO_CREDENTIALS, live_finger=fingers.live_sample, enrolment=fingers.enrolment_samples
        ),
    )
    app.state.throttle = Unthrottled(settings.workers)
    results: list[tuple[object, ...]] = []
    with TestClient(app) as client:
        anonymous = Session(client)
        clerk = staff(client, "clerk1")
        supervisor = staff(client, "supervisor1")
        auditor = staff(client, "auditor1")
        teller = Session(client)
        teller.get("/unit/login")
        teller.post("/unit/login", {"api_key": key, "operator": "bench"})
        people = iter(persons * 3)
        cards = iter(valid)
        receipts: list[str] = []

        def report_loss() -> None:
            card = next(cards)
            location = clerk.post(
                f"/console/cards/{card.id}/loss-report",
                {"reason": "lost", "applicant_id_number": card.id_number, "office": "110105101"},
            )
            receipts.append(location)

        def check() -> None:
            card = valid[0]
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

        pages: list[tuple[str, Callable[[], object]]] = [
            ("sign-in page", lambda: anonymous.get("/")),
            ("staff start page", lambda: clerk.get("/console")),
            ("person page (audited read)", lambda: clerk.get(f"/console/persons/{next(people)}")),
            ("loss report form", lambda: clerk.get(f"/console/cards/{valid[-1].id}/loss-report")),
            ("loss report (write + redirect)", report_loss),
            ("receipt with QR code", lambda: clerk.get(receipts[-1])),
            ("public receipt status", lambda: anonymous.get("/receipt/" + receipts[-1].rsplit("/", 1)[1])),
            ("found cards page", lambda: clerk.get("/console/found-cards")),
            ("units page (supervisor)", lambda: supervisor.get("/console/units")),
            ("audit log (auditor)", lambda: auditor.get("/console/audit")),
            ("comparisons (auditor)", lambda: auditor.get("/console/comparisons")),
            ("check log (auditor)", lambda: auditor.get("/console/checks")),
            ("teller check page", lambda: teller.get("/unit")),
            ("teller check (verify + answer)", check),
            ("API docs page", lambda: anonymous.get("/api/v1/docs")),
        ]
        for name, fn in pages:
            rounds = (
                min(args.rounds, len(valid) // 2 - 2) if name.startswith("loss report (") else args.rounds
            )
            ms = timed(fn, rounds)
            p95 = statistics.quantiles(ms, n=20)[18]
            results.append(
                (name, f"{statistics.median(ms):.1f}", f"{p95:.1f}", "yes" if p95 <= TARGET_MS else "NO")
            )
    table(
        f"console page render times, ms ({args.citizens:,} demo citizens, {args.rounds} requests each, in-process)",
        ("page", "p50", "p95", f"p95 <= {TARGET_MS:.0f} ms"),
        results,
    )


if __name__ == "__main__":
    main()
