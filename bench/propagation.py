"""Invalid at once on a node of two workers: the loss report's latency with the read-your-write
wait and without it, and how long the change took to reach both workers (the answer's
`propagation.ms`: from the commit to the last worker's confirmation, with the push), on SQLite and
PostgreSQL, side by side in one run.

Each configuration is a fresh server (`--workers 2`, one node directory); the reports are sent
one after another, each followed at once by two checks of the reported card on connections of
their own (the kernel spreads them over both workers), and every check that still says `valid`
is counted as stale. Without the wait (IDGUARD_PROPAGATION_WAIT_MS=0) the answer leaves right
after the commit; the checks that follow are still correct because each worker catches up with
what was published before it answers (runtime/follower.py `current`), which is what the stale
column shows.

    .venv/bin/python bench/propagation.py [--reports 200] [--postgres-url URL]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from harness import (
    SECRET,
    admin_engine,
    http_json,
    scratch_database,
    server,
    settings_for,
    table,
    uptime,
)
from idguard.core.grants import Actor, Role
from idguard.core.idnumber import Sex, check_character
from idguard.db import migrate
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.registry.cards import issue_card
from idguard.registry.lifecycle import IssueKind
from idguard.registry.models import Office, Staff
from idguard.registry.persons import register_person
from idguard.registry.staff import issue_token
from idguard.uow import transaction
from idguard.verification import units

OFFICE = "110105001"
NOW = dt.datetime(2026, 1, 5, 2, 0, tzinfo=dt.UTC)


def seed(url: str, n: int) -> tuple[str, str, list[dict[str, str]]]:
    """n valid cards, a clerk's token and a bank's key (setup, not measured)."""
    settings = settings_for(url)
    engine = make_engine(settings)
    migrate.upgrade(engine)
    clerk = Staff(id=uuid.uuid4(), username="bench", role=Role.CLERK, office_code=OFFICE)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(Office), [{"code": OFFICE, "name": "bench", "region": "110105", "created_at": NOW}]
        )
        conn.execute(
            sa.insert(Staff),
            [
                {
                    "id": clerk.id,
                    "username": "bench",
                    "password_hash": "x",
                    "role": Role.CLERK,
                    "office_code": OFFICE,
                    "active": True,
                    "created_at": NOW,
                }
            ],
        )
    actor = Actor(staff_id=clerk.id, username="bench", role=Role.CLERK, office=OFFICE)
    cards = []
    with transaction(make_sessionmaker(engine)) as session:
        for i in range(n):
            birth = dt.date(1950, 1, 1) + dt.timedelta(days=i % 20000)
            body = f"110105{birth:%Y%m%d}{(i % 500) * 2 + 1:03d}"
            number = body + check_character(body)
            register_person(
                session,
                actor=actor,
                now=NOW,
                id_number=number,
                name="张三",
                sex=Sex.MALE,
                ethnicity="汉",
                birth_date=birth,
                address="北京",
                hukou_office=OFFICE,
            )
            card = issue_card(
                session, actor=actor, now=NOW, id_number=number, kind=IssueKind.FIRST, office=OFFICE
            )
            session.flush()
            cards.append(
                {
                    "card_id": str(card.id),
                    "id_number": number,
                    "name": "张三",
                    "issued_on": card.issued_on.isoformat(),
                    "expires_on": card.expires_on.isoformat() if card.expires_on else "",
                }
            )
        issued = units.onboard(
            session,
            actor=None,
            now=NOW,
            secret_key=SECRET,
            code="BENCH-BANK",
            name="bench",
            sector="bank",
            purposes=["account_opening"],
            rate_limit=1_000_000,
        )
    engine.dispose()
    token = issue_token(clerk, secret=settings.token_key, now=dt.datetime.now(dt.UTC), ttl_seconds=3600)
    return token, issued.api_key, cards


def run(url: str, wait_ms: int, n: int, log: Path, node_dir: Path) -> tuple[list[float], list[float], int]:
    """Report n cards lost; the reports' latencies (ms), the propagation ms, the stale checks."""
    token, key, cards = seed(url, n)
    env = {"IDGUARD_PROPAGATION_WAIT_MS": str(wait_ms), "IDGUARD_NODE_DIR": str(node_dir)}
    latencies, propagation, stale = [], [], 0
    with server(url, log, workers=2, extra_env=env) as srv:
        deadline = time.monotonic() + 60
        while len([m for m in (node_dir / "members").iterdir() if not m.name.startswith(".")]) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the second worker did not join")
            time.sleep(0.05)
        staff = {"Authorization": f"Bearer {token}"}
        bank = {"Authorization": f"Bearer {key}"}
        for card in cards:
            report = {
                "card_id": card["card_id"],
                "reason": "lost",
                "office": OFFICE,
                "applicant_id_number": card["id_number"],
            }
            started = time.perf_counter()
            status, answer = http_json(srv.port, "POST", "/api/v1/loss-reports", report, staff)
            latencies.append((time.perf_counter() - started) * 1000)
            if status != 201:
                raise RuntimeError(f"loss report answered {status}: {answer}")
            if "propagation" in answer and answer["propagation"]["confirmed"] == 2:
                propagation.append(answer["propagation"]["ms"])
            check = {
                "id_number": card["id_number"],
                "name": card["name"],
                "issued_on": card["issued_on"],
                "expires_on": card["expires_on"] or None,
                "purpose": "account_opening",
                "operator": "bench",
            }
            for _ in range(2):
                status, result = http_json(srv.port, "POST", "/api/v1/verify", check, bank)
                stale += status == 200 and result["result"] == "valid"
    return latencies, propagation, stale


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reports", type=int, default=200)
    parser.add_argument("--postgres-url", default=None)
    args = parser.parse_args()
    print(f"# {uptime()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        backends: list[tuple[str, str | None]] = [("sqlite", None)]
        if args.postgres_url:
            backends.append(("postgresql", args.postgres_url))
        for name, admin_url in backends:
            for wait in (0, 250):
                label = f"{name}-{wait}"
                node_dir = where / f"node-{label}"
                log = where / f"{label}.log"
                if admin_url is None:
                    url = f"sqlite:///{where / label}.db"
                    lat, prop, stale = run(url, wait, args.reports, log, node_dir)
                else:
                    admin = admin_engine(admin_url)
                    with scratch_database(admin, admin_url, f"idguard_bench_prop_{wait}") as url:
                        lat, prop, stale = run(url, wait, args.reports, log, node_dir)
                    admin.dispose()
                rows.append(
                    (
                        name,
                        "yes" if wait else "no",
                        f"{statistics.median(lat):.1f}",
                        f"{pct(lat, 0.99):.1f}",
                        f"{statistics.median(prop):.1f}" if prop else "-",
                        f"{pct(prop, 0.99):.1f}" if prop else "-",
                        f"{len(prop)}/{len(lat)}",
                        f"{stale}/{2 * len(lat)}",
                    )
                )
    table(
        f"loss reports on a node of 2 workers ({args.reports} reports each; ms)",
        (
            "database",
            "wait",
            "report p50",
            "report p99",
            "propagation p50",
            "p99",
            "confirmed by 2",
            "stale checks",
        ),
        rows,
    )


if __name__ == "__main__":
    main()
