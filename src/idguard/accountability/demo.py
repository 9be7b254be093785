"""Demo data for accountability (called by demo/load.py): a few units with checks and reported
transactions over the last three months, some of which skip checks or accept invalid cards, so
`GET /api/v1/compliance` shows every level (ok, early_warning, standard, excessive).

The numbers are synthetic (valid GB 11643 form, not the demo population's: the check log keeps
only hashes anyway). Checks and transactions go in with bulk Core INSERTs; the transactions are
then classified by the same set-based statement the API uses, month by month.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from idguard import uow
from idguard.accountability.classify import classify_where
from idguard.accountability.models import Transaction
from idguard.accountability.rules import month_bounds, month_of
from idguard.config import Settings
from idguard.core.idnumber import check_character, mask
from idguard.db.engine import make_sessionmaker
from idguard.verification import units
from idguard.verification.models import Check, Unit
from idguard.verification.runtime.checklog import IdHasher

WINDOW = dt.timedelta(hours=24)
MONTHS = 3  # the current month so far and the two before it


@dataclass(frozen=True, slots=True)
class Profile:
    """A unit and, per full month, how many transactions of each class it reports."""

    code: str
    name: str
    sector: str
    purpose: str
    compliant: int
    unchecked: int
    checked_after: int = 0
    accepted_invalid: int = 0
    ignored_alert: int = 0


# With DOMAIN.md's default ladder a full month lands on the level in the comment. The volumes
# are kept small (the demo loads in seconds), so the violating units' rates are high.
PROFILES = (
    Profile("DEMO-ICBC", "工商银行 (demo)", "bank", "account_opening", 990, 6, 4),  # ok (1 %, 10)
    Profile(
        "DEMO-HOTEL", "如家酒店 (demo)", "hotel", "hotel_checkin", 715, 50, 25, 0, 10
    ),  # early_warning (85)
    Profile("DEMO-RAIL", "铁路12306 (demo)", "railway", "ticketing", 880, 80, 30, 10),  # standard (120)
    # Accepts invalid cards and ignores alerts: standard (110).
    Profile("DEMO-SECU", "证券公司 (demo)", "securities", "securities_account", 790, 10, 0, 80, 20),
    # Skips checks: excessive (1,150 violations).
    Profile("DEMO-TELCO", "电信营业厅 (demo)", "telecom", "telecom_registration", 1850, 1000, 100, 50),
)


def _months(now: dt.datetime) -> list[tuple[dt.datetime, dt.datetime, float]]:
    """(start, end, share of a full month's volume) for the last MONTHS months, the current one
    up to `now`."""
    current = month_of(now)
    year, mon = int(current[:4]), int(current[5:])
    out = []
    for back in range(MONTHS - 1, -1, -1):
        y, m = divmod((year * 12 + mon - 1) - back, 12)
        start, end = month_bounds(f"{y:04d}-{m + 1:02d}")
        end = min(end, now - dt.timedelta(hours=1))
        full = month_bounds(f"{y:04d}-{m + 1:02d}")
        out.append((start, end, max(0.0, (end - start) / (full[1] - full[0]))))
    return out


def _checker(
    rows: list[dict[str, object]], rng: random.Random, digest: str, masked: str
) -> Callable[[Profile, str, dt.datetime, str, str | None], None]:
    """Appends a check of one number to `rows`."""

    def check(p: Profile, _number: str, when: dt.datetime, result: str, alerts: str | None = None) -> None:
        rows.append(
            {
                "id": uuid.uuid4(),
                "unit_code": p.code,
                "operator": f"op-{rng.randint(1, 40):02d}",
                "purpose": p.purpose,
                "at": when,
                "result": result,
                "reason": "reported_lost" if result == "invalid" else None,
                "id_masked": masked,
                "id_hash": digest,
                "watch": False,
                "fingerprint_match": None,
                "alerts": alerts,
            }
        )

    return check


def _number(rng: random.Random) -> str:
    body = f"110105{rng.randint(1950, 2005):04d}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}{rng.randint(0, 999):03d}"
    return body + check_character(body)


def load(engine: sa.Engine, *, now: dt.datetime, settings: Settings | None = None, seed: int = 11) -> int:
    """Onboard the demo units (if they exist already, nothing is loaded) and load their checks
    and transactions; return the number of transactions. `settings` (default: from the
    environment, as the CLI's) gives the check-hash key, so the demo's transactions and checks
    are hashed as the running service hashes them."""
    settings = settings or Settings()
    hasher = IdHasher(settings.check_hash_key)
    rng = random.Random(seed)  # noqa: S311 - synthetic demo data, not a secret
    sessions = make_sessionmaker(engine)
    with uow.transaction(sessions) as session:
        if session.get(Unit, PROFILES[0].code) is not None:
            return 0
        for p in PROFILES:
            units.onboard(
                session,
                actor=None,
                now=now,
                secret_key=settings.secret_key,
                code=p.code,
                name=p.name,
                sector=p.sector,
                purposes=[p.purpose],
                rate_limit=200,
            )
    checks: list[dict[str, object]] = []
    txs: list[dict[str, object]] = []
    for p in PROFILES:
        n = 0
        for start, end, share in _months(now):
            plan = [
                ("compliant", round(p.compliant * share)),
                ("unchecked", round(p.unchecked * share)),
                ("checked_after", round(p.checked_after * share)),
                ("accepted_invalid", round(p.accepted_invalid * share)),
                ("ignored_alert", round(p.ignored_alert * share)),
            ]
            span = (end - start).total_seconds()
            for kind, count in plan:
                for _ in range(count):
                    at = start + dt.timedelta(seconds=rng.uniform(1800, max(span, 1801)))
                    number = _number(rng)
                    digest, masked = hasher(number), mask(number)
                    check = _checker(checks, rng, digest, masked)
                    before = at - dt.timedelta(seconds=rng.uniform(5, 1800))

                    if kind == "compliant":
                        check(p, number, before, "valid", None)
                    elif kind == "checked_after":
                        check(p, number, at + dt.timedelta(minutes=rng.uniform(1, 120)), "valid", None)
                    elif kind == "accepted_invalid":
                        check(p, number, before, rng.choice(("invalid", "mismatch")), None)
                    elif kind == "ignored_alert":
                        check(p, number, before, "valid", "person_check_required")
                    n += 1
                    txs.append(
                        {
                            "unit_code": p.code,
                            "ref": f"{p.code}-{n:07d}",
                            "at": at,
                            "month": month_of(at),
                            "id_hash": digest,
                            "id_masked": masked,
                            "purpose": p.purpose,
                            "check_id": None,
                            "window_start": at - WINDOW,
                            "window_end": at + WINDOW,
                            "classification": None,
                            "received_at": now,
                        }
                    )
    step = 20_000
    for start_row in range(0, max(len(checks), len(txs)), step):
        with uow.connection(engine) as conn:
            if checks[start_row : start_row + step]:
                conn.execute(sa.insert(Check), checks[start_row : start_row + step])
            if txs[start_row : start_row + step]:
                conn.execute(sa.insert(Transaction), txs[start_row : start_row + step])
    with uow.connection(engine) as conn:
        conn.execute(classify_where(Transaction.unit_code.in_([p.code for p in PROFILES])))
    return len(txs)
