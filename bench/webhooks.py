"""Issue 18 follow-up: what signing one webhook delivery costs, side by side.

- `derived`: the secret derived from the service secret and the unit code (before secrets were
  random): one HMAC, no database.
- `open each time`: the unit's sealed secrets read and opened for every delivery
  (verification/units.signing_secrets, what the dispatcher did first).
- `cached`: the dispatcher's per-unit cache (runtime/webhooks.WebhookDispatcher._signing_secrets),
  valid while the `units` version the key ring follows does not move.

Each is measured inside one open transaction (as the dispatcher calls it, beside its cursor
claim), on a unit during a roll's overlap (two live secrets: the worst case), in interleaved
rounds so that the machine's load falls on all alike; then the headers are signed over a
100-item body. Milliseconds per delivery (the median of the rounds).

    .venv/bin/python bench/webhooks.py [--calls 2000] [--rounds 5] [--postgres-url URL]
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from harness import SECRET, admin_engine, note, scratch_database, settings_for, table
from idguard import uow
from idguard.core.clock import FixedClock
from idguard.db import migrate
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.verification import units
from idguard.verification.models import RegistryVersion
from idguard.verification.runtime.keyring import KeyRing
from idguard.verification.runtime.webhooks import WebhookDispatcher, delivery_headers

NOW = dt.datetime(2026, 6, 15, 2, 0, tzinfo=dt.UTC)
CODE = "BENCH-HOOK"
BODY = (
    '{"unit":"BENCH-HOOK","items":[' + ",".join(['{"cursor":123456,"event":"reported_lost"}'] * 100) + "]}"
).encode()


def measure(url: str, calls: int, rounds: int) -> list[tuple[str, float]]:
    engine = make_engine(settings_for(url))
    migrate.upgrade(engine)
    sessions = make_sessionmaker(engine)
    with uow.transaction(sessions) as session:
        units.onboard(
            session,
            actor=None,
            now=NOW,
            secret_key=SECRET,
            code=CODE,
            name="bench",
            sector="bank",
            purposes=["account_opening"],
            rate_limit=10,
            webhook_url="http://127.0.0.1:9/hook",
        )
        # During an overlap: two live secrets to open.
        units.roll_webhook_secret(session, actor=None, now=NOW, secret_key=SECRET, code=CODE)
    keyring = KeyRing()
    with sessions() as session:
        keyring.reload(
            session,
            session.scalar(sa.select(RegistryVersion.version).where(RegistryVersion.name == "units")) or 0,
        )
    dispatcher = WebhookDispatcher(sessions, keyring, horizon=None, secret_key=SECRET, clock=FixedClock(NOW))  # type: ignore[arg-type]
    message = uuid.uuid4()

    def derived(session: Session) -> list[str]:
        return [units.legacy_webhook_secret(SECRET, CODE)]

    def each_time(session: Session) -> list[str]:
        return units.signing_secrets(session, secret_key=SECRET, code=CODE, now=NOW)

    def cached(session: Session) -> list[str]:
        return dispatcher._signing_secrets(session, CODE, NOW)

    ways: list[tuple[str, Callable[[Session], list[str]]]] = [
        ("derived (before random secrets)", derived),
        ("open each time", each_time),
        ("cached per units version", cached),
    ]
    with sessions() as session:
        assert len(each_time(session)) == 2
        assert cached(session) == each_time(session)
    times: dict[str, list[float]] = {name: [] for name, _ in ways}
    for _ in range(rounds):
        for name, way in ways:
            with sessions() as session, session.begin():
                way(session)  # warm
                start = time.perf_counter()
                for _ in range(calls):
                    delivery_headers(way(session), message, int(NOW.timestamp()), BODY)
                times[name].append((time.perf_counter() - start) / calls * 1000)
    engine.dispose()
    return [(name, statistics.median(t)) for name, t in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres-url", default=None)
    args = parser.parse_args()
    results: list[tuple[str, list[tuple[str, float]]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(("SQLite", measure(f"sqlite:///{Path(tmp) / 'hooks.db'}", args.calls, args.rounds)))
    if args.postgres_url:
        with scratch_database(
            admin_engine(args.postgres_url), args.postgres_url, "idguard_bench_hooks"
        ) as url:
            results.append(("PostgreSQL", measure(url, args.calls, args.rounds)))
    for backend, rows in results:
        cached = dict(rows)["cached per units version"]
        table(
            f"Signing one webhook delivery ({backend}, two live secrets, {args.calls} calls x {args.rounds} rounds)",
            ("secrets", "ms per delivery", "x cached"),
            [(name, f"{ms:.3f}", f"{ms / cached:.1f}") for name, ms in rows],
        )
    note("`open each time` reads and opens the sealed rows per delivery; `cached` only filters by time")


if __name__ == "__main__":
    main()
