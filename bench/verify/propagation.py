"""Part 3: a loss report committed through the service layer, to `invalid` on both of two server
processes (each its own index, like two uvicorn workers), polled with verify every ~1 ms."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import time
from pathlib import Path

import sqlalchemy as sa

from bench.harness import met, note, server, settings_for, table
from bench.verify.common import PURPOSE, TARGET_PROPAGATION_P99_MS, onboard_bench_unit
from idguard.core.clock import today_cst
from idguard.core.grants import Actor, Role
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.registry import sealed
from idguard.registry.lifecycle import LossReason
from idguard.registry.loss_reports import report_loss
from idguard.verification.runtime import follower as follower_module


def run(url: str, reports: int, workdir: Path) -> None:
    key = onboard_bench_unit(url, "BENCH-PROPAGATION")
    engine = make_engine(settings_for(url))
    sessions = make_sessionmaker(engine)
    now = dt.datetime.now(dt.UTC)
    today = today_cst(now)
    with engine.connect() as conn:
        clerk_id, office = conn.execute(
            sa.text("SELECT id, office_code FROM staff WHERE username = 'clerk1'")
        ).one()
        # Cards a clerk may report at once: valid today, no registered fingerprints (those need an
        # on-site comparison), an adult holder reporting in person.
        cards = conn.execute(
            sa.text(
                "SELECT c.id, c.id_number, c.seal_key, c.name_sealed, c.issued_on, c.expires_on FROM cards c"
                " JOIN persons p ON p.id = c.person_id"
                " WHERE c.status = 'valid' AND NOT c.fingerprints_registered AND NOT c.temporary"
                " AND (c.expires_on IS NULL OR c.expires_on > :today) AND p.revoked_reason IS NULL"
                " AND p.birth_date < :adult ORDER BY md5(c.id::text) LIMIT :n"
            ),
            {"today": today, "adult": today - dt.timedelta(days=366 * 19), "n": reports},
        ).all()
    ring = sealed.ring_of(engine)  # names are sealed at rest: opened here for the verify bodies
    cards = [(c, n, sealed.card_name(ring, c, k, s), i, e) for c, n, k, s, i, e in cards]
    clerk = Actor(staff_id=clerk_id, username="clerk1", role=Role.CLERK, office=office)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    propagation: list[float] = []
    per_server: list[list[float]] = [[], []]
    round_trips: list[float] = []
    commits: list[float] = []
    with (
        server(url, workdir / "part3-a.log") as a,
        server(url, workdir / "part3-b.log") as b,
    ):
        conns = [http.client.HTTPConnection("127.0.0.1", s.port, timeout=10) for s in (a, b)]

        def ask(conn: http.client.HTTPConnection, body: bytes) -> str:
            started = time.perf_counter()
            conn.request("POST", "/api/v1/verify", body, headers)
            result = str(json.loads(conn.getresponse().read())["result"])
            round_trips.append(time.perf_counter() - started)
            return result

        for card_id, number, name, issued_on, expires_on in cards:
            body = json.dumps(
                {
                    "id_number": number,
                    "name": name,
                    "issued_on": issued_on.isoformat(),
                    "expires_on": expires_on.isoformat() if expires_on else None,
                    "purpose": PURPOSE,
                    "operator": "bench",
                }
            ).encode()
            assert [ask(c, body) for c in conns] == ["valid", "valid"]
            started = time.perf_counter()
            with sessions() as session:
                report_loss(
                    session,
                    actor=clerk,
                    now=dt.datetime.now(dt.UTC),
                    card_id=str(card_id),
                    reason=LossReason.LOST,
                    office=office,
                    applicant_id_number=number,
                )
                session.commit()
            t0 = time.perf_counter()  # the report is committed: from here every check must say invalid
            commits.append(t0 - started)
            seen: list[float | None] = [None, None]
            tick = t0
            while None in seen and time.perf_counter() - t0 < 2.0:
                for j, conn in enumerate(conns):
                    if seen[j] is None and ask(conn, body) == "invalid":
                        seen[j] = time.perf_counter() - t0
                tick += 0.001  # poll every ~1 ms
                time.sleep(max(0.0, tick - time.perf_counter()))
            if None in seen:
                raise RuntimeError(
                    f"report not seen within 2 s by server(s) {[i for i, s in enumerate(seen) if s is None]}"
                )
            for j in (0, 1):
                per_server[j].append(seen[j] or 0.0)
            propagation.append(max(s or 0.0 for s in seen))
        for c in conns:
            c.close()
    engine.dispose()

    def pct(xs: list[float], p: float) -> float:
        s = sorted(xs)
        return s[min(len(s) - 1, int(len(s) * p))] * 1e3

    table(
        f"Part 3 - loss report to `invalid` on both of 2 server processes ({len(propagation)} reports; "
        f"each follower polls every {follower_module.POLL_INTERVAL * 1e3:g} ms; verify every ~1 ms)",
        ("measure", "p50 ms", "p99 ms", "max ms"),
        [
            (
                "verify round trip (floor)",
                pct(round_trips, 0.5),
                pct(round_trips, 0.99),
                pct(round_trips, 1.0),
            ),
            ("report_loss + commit", pct(commits, 0.5), pct(commits, 0.99), pct(commits, 1.0)),
            ("seen by server A", pct(per_server[0], 0.5), pct(per_server[0], 0.99), pct(per_server[0], 1.0)),
            ("seen by server B", pct(per_server[1], 0.5), pct(per_server[1], 0.99), pct(per_server[1], 1.0)),
            ("seen by both", pct(propagation, 0.5), pct(propagation, 0.99), pct(propagation, 1.0)),
        ],
    )
    p99 = pct(propagation, 0.99)
    note(
        f"p99 {p99:.1f} ms; target <= {TARGET_PROPAGATION_P99_MS:g} ms: {met(p99 <= TARGET_PROPAGATION_P99_MS)}"
    )
