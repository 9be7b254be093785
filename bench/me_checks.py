"""A citizen's own checks (GET /api/v1/me/checks) in a big check log, beside the same page query by
unit history (GET /api/v1/checks with the unit's key), over HTTP against a real server.

Target (issue 12): GET /api/v1/me/checks for a citizen with 500 checks in a check log of
10,000,000 rows answers in <= 20 ms p99 on PostgreSQL (index on the keyed hash and time).

    .venv/bin/python bench/me_checks.py [--rows 10000000] [--mine 500] [--rounds 40]
        [--postgres-url URL] [--fresh] [--drop]

The log is generated in SQL (generate_series, INSERT ... SELECT, indexes built after the load):
row g is a check by unit g % 1000 at a time spread evenly over the last 23 months; every
(rows / mine)-th row is of the citizen's id number (its keyed hash), the others of other numbers.
Then a production-mode server answers, on one kept-alive connection, `rounds` walks of the
citizen's whole history (10 pages of 50, each page after the previous one's `next`) and the same
number of pages of one unit's history (pages of 50 after its `next`), alternated. Both queries'
EXPLAIN (ANALYZE, BUFFERS) plans are printed. The loaded database is kept for the next run
(loading 10,000,000 rows takes minutes); --fresh loads anew, --drop removes it at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from harness import (
    admin_engine,
    database_url,
    drop_database,
    met,
    note,
    recreate_database,
    server,
    settings_for,
    table,
)
from idguard import uow
from idguard.citizens.accounts import _hasher
from idguard.citizens.models import CitizenAccount
from idguard.config import Settings
from idguard.core.idnumber import check_character
from idguard.db import migrate
from idguard.db.engine import make_engine
from idguard.registry import sealed
from idguard.registry.models import Office, Person
from idguard.verification.models import Unit, UnitKey
from idguard.verification.rules import UnitStatus, new_api_key
from idguard.verification.runtime.checklog import id_hash

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
UNITS = 1000
PASSWORD = "bench passphrase 2026"  # noqa: S105 - a bench-only account
NUMBER_BODY = "11010519900504001"
NUMBER = NUMBER_BODY + check_character(NUMBER_BODY)
SPAN_SECONDS = 23 * 30 * 86400  # within the 24-month retention
DECLARATION_KEYS = "bench:" + "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
PAGE = 50


def _settings(url: str) -> Settings:
    """Settings for loading: the server runs in production with the same secret (harness.server)."""
    return settings_for(url)  # the same secret as the server's: the same check-log hash key


def seed(url: str, rows: int, mine: int) -> str:
    """Load the log; return the unit key of unit U0001 (whose history is the comparison)."""
    settings = _settings(url)
    engine = make_engine(settings)
    migrate.upgrade(engine)
    digest = id_hash(settings.check_hash_key, NUMBER)
    step = rows // mine
    key, prefix, key_hash = new_api_key()
    person_id = uuid.uuid4()
    with uow.connection(engine) as conn:
        conn.execute(
            sa.insert(Office), {"code": "BENCH-A", "name": "bench", "region": "110105", "created_at": NOW}
        )
        conn.execute(
            sa.insert(Person),
            sealed.sealed_values(  # names and addresses are stored sealed
                sealed.ring_of(engine),
                "persons",
                {
                    "id": person_id,
                    "id_number": NUMBER,
                    "name": "张三",
                    "sex": "male",
                    "ethnicity": "汉",
                    "birth_date": dt.date(1990, 5, 4),
                    "address": "北京",
                    "hukou_office": "BENCH-A",
                    "created_at": NOW,
                },
            ),
        )
        conn.execute(
            sa.insert(CitizenAccount),
            {
                "person_id": person_id,
                "password_hash": _hasher.hash(PASSWORD),
                "totp_enabled": False,
                "token_version": 1,
                "activated_at": NOW,
                "updated_at": NOW,
            },
        )
        conn.execute(
            sa.insert(Unit),
            [
                {
                    "code": f"U{u:04d}",
                    "name": f"银行 {u}",
                    "sector": "bank",
                    "purposes": ["account_opening"],
                    "rate_limit": 100_000,
                    "status": UnitStatus.ACTIVE,
                    "created_at": NOW,
                    "updated_at": NOW,
                }
                for u in range(UNITS)
            ],
        )
        conn.execute(
            sa.insert(UnitKey),
            {
                "id": uuid.uuid4(),
                "unit_code": "U0001",
                "prefix": prefix,
                "key_hash": key_hash,
                "created_at": NOW,
            },
        )
    started = time.perf_counter()
    with uow.connection(engine) as conn:
        indexes = [
            (r[0], r[1])
            for r in conn.exec_driver_sql(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'checks' AND indexname != 'pk_checks'"
            )
        ]
        for name, _ in indexes:
            conn.exec_driver_sql(f'DROP INDEX "{name}"')
        conn.exec_driver_sql(
            f"""INSERT INTO checks (id, unit_code, operator, purpose, at, result, reason, id_masked,
                                    id_hash, watch, fingerprint_match)
                SELECT md5(g::text)::uuid, 'U' || lpad((g %% {UNITS})::text, 4, '0'), 'op',
                       'account_opening',
                       timestamptz '{NOW.isoformat()}' - ({rows} - g) * interval '{SPAN_SECONDS / rows} seconds',
                       CASE WHEN g %% 50 = 0 THEN 'invalid' ELSE 'valid' END,
                       CASE WHEN g %% 50 = 0 THEN 'reported_lost' END,
                       '110105********0000',
                       CASE WHEN g %% {step} = 0 THEN '{digest}' ELSE md5(g::text) || md5((g + 1)::text) END,
                       false, NULL
                FROM generate_series(1, {rows}) AS s(g)"""  # noqa: S608 - generated numbers only
        )
        for _, definition in indexes:
            conn.exec_driver_sql(definition)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE checks")
    with uow.connection(engine) as conn:  # marks the load complete, for reruns
        conn.exec_driver_sql("CREATE TABLE bench_meta (unit_key text NOT NULL)")
        conn.execute(sa.text("INSERT INTO bench_meta VALUES (:k)"), {"k": key})
    note(
        f"loaded {rows:,} checks ({mine} of the citizen's) and {len(indexes)} indexes in {time.perf_counter() - started:.0f} s"
    )
    engine.dispose()
    return key


def _plans(url: str) -> None:
    settings = _settings(url)
    engine = make_engine(settings)
    digest = id_hash(settings.check_hash_key, NUMBER)
    mine = f"""SELECT c.id, c.at, c.unit_code, u.name, u.sector, c.purpose, c.result, c.reason,
                      c.fingerprint_match
               FROM checks c JOIN units u ON u.code = c.unit_code
               WHERE c.id_hash = '{digest}' AND c.at >= now() - interval '24 months'
               ORDER BY c.at DESC, c.id DESC LIMIT {PAGE + 1}"""  # noqa: S608 - constants
    unit = f"""SELECT * FROM checks WHERE unit_code = 'U0001'
               ORDER BY at DESC, id DESC LIMIT {PAGE + 1}"""  # noqa: S608 - constants
    with engine.connect() as conn:
        # The last page: after the cursor of the 450th newest check (citizens/views.py bounds `at`).
        at, row_id = conn.exec_driver_sql(
            f"SELECT at, id FROM checks WHERE id_hash = '{digest}' ORDER BY at DESC, id DESC OFFSET 449 LIMIT 1"  # noqa: S608
        ).one()
        last = mine.replace(
            "ORDER BY",
            f"AND c.at <= '{at.isoformat()}' AND (c.at < '{at.isoformat()}' OR (c.at = '{at.isoformat()}' "
            f"AND c.id < '{row_id}')) ORDER BY",
        )
        plans = (
            ("GET /me/checks, first page (by keyed hash)", mine),
            ("GET /me/checks, last page (after a cursor)", last),
            ("GET /checks, first page (by unit)", unit),
        )
        for title, sql in plans:
            print(f"\nEXPLAIN (ANALYZE, BUFFERS): {title}")
            for (line,) in conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {sql}"):
                print(f"  {line}")
    engine.dispose()


class Client:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any, float]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        started = time.perf_counter()
        self.conn.request(method, path, json.dumps(body).encode() if body is not None else None, headers)
        r = self.conn.getresponse()
        raw = r.read()
        return r.status, json.loads(raw), (time.perf_counter() - started) * 1000


def _walk(client: Client, path: str, token: str, cursor_name: str, pages: int) -> tuple[list[float], int]:
    times: list[float] = []
    seen = 0
    after: str | None = None
    for _ in range(pages):
        query = f"?limit={PAGE}" + (f"&{cursor_name}={after}" if after else "")
        status, body, ms = client.request("GET", path + query, token=token)
        assert status == 200, body
        times.append(ms)
        seen += len(body["items"])
        after = body["next"]
        if after is None:
            break
    return times, seen


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _loaded(url: str) -> str | None:
    """The unit key of a database loaded by an earlier run, if it is complete."""
    engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT unit_key FROM bench_meta").scalar_one_or_none()
    except sa.exc.DBAPIError:
        return None
    finally:
        engine.dispose()


def run(url: str, rows: int, mine: int, rounds: int, *, reuse: bool) -> None:
    unit_key = _loaded(url) if reuse else None
    if unit_key is None:
        unit_key = seed(url, rows, mine)
    else:
        note(f"reusing the check log loaded by an earlier run ({rows:,} rows; --fresh to load anew)")
    _plans(url)
    with tempfile.TemporaryDirectory() as tmp:
        extra = {
            "IDGUARD_DECLARATION_KEYS": DECLARATION_KEYS,
            "IDGUARD_OFFLINE_KEYS": DECLARATION_KEYS,  # production needs them; unused here
            "IDGUARD_LEDGER_KEYS": DECLARATION_KEYS,
            "IDGUARD_CHECKLOG_DIR": tmp,
        }
        with server(url, Path(tmp) / "server.log", extra_env=extra) as srv:
            client = Client(srv.port)
            status, body, _ = client.request(
                "POST", "/api/v1/citizen/token", {"id_number": NUMBER, "password": PASSWORD}
            )
            assert status == 200, body
            token = body["access_token"]
            pages = -(-mine // PAGE)
            _walk(client, "/api/v1/me/checks", token, "after", pages)  # warm up both
            _walk(client, "/api/v1/checks", unit_key, "after", pages)
            me_times: list[float] = []
            unit_times: list[float] = []
            for _ in range(rounds):
                t, seen = _walk(client, "/api/v1/me/checks", token, "after", pages)
                assert seen == mine, seen
                me_times += t
                unit_times += _walk(client, "/api/v1/checks", unit_key, "after", pages)[0]
    rows_out = []
    for name, times in (
        ("GET /api/v1/me/checks (citizen, keyed hash)", me_times),
        ("GET /api/v1/checks (unit history)", unit_times),
    ):
        rows_out.append(
            (name, len(times), statistics.median(times), _pct(times, 0.95), _pct(times, 0.99), max(times))
        )
    table(
        f"pages of {PAGE} over HTTP, check log of {rows:,} rows, the citizen's {mine} checks",
        ("query", "requests", "p50 ms", "p95 ms", "p99 ms", "max ms"),
        rows_out,
    )
    p99 = rows_out[0][4]
    note(f"target p99 <= 20 ms for /me/checks: {p99:.2f} ms: {met(p99 <= 20)}")
    note(f"ratio /me/checks p99 / unit history p99: {p99 / rows_out[1][4]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--mine", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--fresh", action="store_true", help="load anew even if an earlier run's log is there"
    )
    parser.add_argument(
        "--drop", action="store_true", help="drop the database at the end (else kept for reruns)"
    )
    args = parser.parse_args()
    admin = admin_engine(args.postgres_url)
    name = f"idguard_bench_me_checks_{args.rows}_{args.mine}"
    url = database_url(args.postgres_url, name)
    reuse = not args.fresh and _loaded(url) is not None
    if not reuse:
        recreate_database(admin, name)
    try:
        run(url, args.rows, args.mine, args.rounds, reuse=reuse)
    finally:
        if args.drop:
            drop_database(admin, name)
        admin.dispose()


if __name__ == "__main__":
    main()
