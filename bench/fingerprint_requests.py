"""Requests with a fingerprint check, end to end over HTTP, against the same requests without one.

A real `idguard` server (uvicorn, production settings, sealed templates) on SQLite and, with
--postgres-url, PostgreSQL. One client sends requests one after another (latency, not
throughput), each measured from sending the request to the last byte of the answer:

* loss report, card without fingerprints (the baseline of this run);
* loss report with a live capture that matches (the target: p99 under 50 ms);
* loss report with another person's finger (refused, the attempt recorded);
* issue with two fingers enrolled (quality gate, two templates built and sealed);
* verify with a live capture (person-card check), against verify without one.

Then the parts of one comparison, in process: the live capture's template, opening the two
sealed templates, the two comparisons.

    .venv/bin/python bench/fingerprint_requests.py [--cards 200] [--postgres-url URL]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import http.client
import json
import statistics
import sys
import tempfile
import time
import urllib.parse
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness import admin_engine, http_json, note, scratch_database, server, settings_for, table
from idguard.biometrics import Template, build_template, encode, match_any, parse, synthetic
from idguard.biometrics.vault import TemplateVault
from idguard.core.clock import SystemClock
from idguard.core.grants import Role
from idguard.core.idnumber import check_character
from idguard.db import migrate
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.registry import staff

OFFICE = "110105001"
PASSWORD = "bench-password"  # noqa: S105 - a throwaway account in a throwaway database
TARGET_MS = 50.0
PURPOSE = "account_opening"


def capture(person: int, finger: int, impression: int) -> str:
    master = synthetic.master_finger(person, finger - 1)
    return base64.b64encode(encode(synthetic.impression(master, impression, seed=person))).decode()


def id_number(i: int) -> str:
    birth = dt.date(1960, 1, 1) + dt.timedelta(days=i)
    body = f"110105{birth:%Y%m%d}{(i % 400) * 2 + 1:03d}"
    return body + check_character(body)


def prepare(url: str) -> None:
    engine = make_engine(settings_for(url, production=True))
    migrate.upgrade(engine)
    now = SystemClock().now()
    with make_sessionmaker(engine).begin() as s:
        staff.add_office(s, now=now, code=OFFICE, name="bench office", region="110105")
        staff.add_staff(s, now=now, username="clerk", password=PASSWORD, role=Role.CLERK, office=OFFICE)
        staff.add_staff(s, now=now, username="super", password=PASSWORD, role=Role.SUPERVISOR, office=None)
    engine.dispose()


def timed(fn: Callable[[], tuple[int, Any]], expect: int) -> float:
    started = time.perf_counter()
    status, body = fn()
    elapsed = (time.perf_counter() - started) * 1000
    if status != expect:
        raise RuntimeError(f"expected {expect}, got {status}: {body}")
    return elapsed


def row(name: str, samples: list[float], target: float | None = None) -> tuple[object, ...]:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    verdict = "" if target is None else ("MET" if q[98] < target else "MISSED")
    return (name, len(samples), statistics.median(samples), q[94], q[98], max(samples), verdict)


def run(name: str, url: str, cards: int, log: Path) -> None:
    prepare(url)
    with server(url, log) as srv:
        port = srv.port

        def call(method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
            return http_json(
                port, method, path, body, {"Authorization": f"Bearer {token}"} if token else None
            )

        clerk, supervisor = login(port, "clerk"), login(port, "super")
        status, unit = call(
            "POST",
            "/api/v1/units",
            {
                "code": "BENCH",
                "name": "bench",
                "sector": "bank",
                "purposes": [PURPOSE],
                "rate_limit": 100_000,
            },
            supervisor,
        )
        assert status == 201, unit
        key = unit["api_key"]

        issue, with_prints, plain = [], [], []
        for i in range(2 * cards):
            number = id_number(i)
            person = {
                "id_number": number,
                "name": "张三",
                "sex": "male",
                "ethnicity": "汉",
                "birth_date": f"{number[6:10]}-{number[10:12]}-{number[12:14]}",
                "address": "北京市朝阳区建国路1号",
                "hukou_office": OFFICE,
            }
            timed(lambda p=person: call("POST", "/api/v1/persons", p, clerk), 201)
            enrol = i < cards
            body: dict[str, Any] = {"kind": "first", "office": OFFICE}
            if enrol:
                body["fingerprints"] = [{"finger": f, "template": capture(i, f, 0)} for f in (1, 6)]
            started = time.perf_counter()
            status, card = call("POST", f"/api/v1/persons/{number}/cards", body, clerk)
            assert status == 201, card
            if enrol:
                issue.append((time.perf_counter() - started) * 1000)
                with_prints.append((i, card))
            else:
                plain.append(card)

        def verify(card: dict[str, Any], **extra: Any) -> Callable[[], tuple[int, Any]]:
            body = {
                "id_number": card["id_number"],
                "name": card["name"],
                "issued_on": card["issued_on"],
                "expires_on": card["expires_on"],
                "purpose": PURPOSE,
                "operator": "bench",
                **extra,
            }
            return lambda: http_json(port, "POST", "/api/v1/verify", body, {"Authorization": f"Bearer {key}"})

        time.sleep(0.2)  # the index follows the ledger within a poll
        verify_plain = [timed(verify(c), 200) for _, c in with_prints]
        verify_print = [timed(verify(c, fingerprint=capture(i, 1, 2)), 200) for i, c in with_prints]

        def report(card: dict[str, Any], **extra: Any) -> Callable[[], tuple[int, Any]]:
            body = {
                "card_id": card["card_id"],
                "reason": "lost",
                "office": OFFICE,
                "applicant_id_number": card["id_number"],
                **extra,
            }
            return lambda: call("POST", "/api/v1/loss-reports", body, clerk)

        baseline = [timed(report(c), 201) for c in plain]
        refused = [timed(report(c, fingerprint=capture(i + 1, 1, 3)), 409) for i, c in with_prints]
        matched = [timed(report(c, fingerprint=capture(i, 6, 4)), 201) for i, c in with_prints]

    table(
        f"{name}: one client, requests in sequence, milliseconds from request to answer",
        ("request", "n", "p50", "p95", "p99", "max", f"p99 < {TARGET_MS:.0f} ms"),
        [
            row("loss report, card without fingerprints (baseline)", baseline),
            row("loss report with matching fingerprint", matched, TARGET_MS),
            row("loss report with non-matching fingerprint (409)", refused),
            row("issue a card with two fingers enrolled", issue),
            row("verify without fingerprint", verify_plain),
            row("verify with fingerprint (person-card check)", verify_print),
        ],
    )
    note(
        f"loss report with fingerprint / without: {statistics.median(matched) / statistics.median(baseline):.2f}x "
        "at the median"
    )


def login(port: int, user: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        form = urllib.parse.urlencode({"username": user, "password": PASSWORD})
        conn.request(
            "POST", "/api/v1/auth/token", form, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        r = conn.getresponse()
        body = json.loads(r.read())
        if r.status != 200:
            raise RuntimeError(f"login failed: {body}")
        return str(body["access_token"])
    finally:
        conn.close()


def parts(reps: int) -> None:
    """One comparison's parts, in process, median of `reps` fingers."""
    vault = TemplateVault({"bench": bytes(range(32))})
    live_ms, open_ms, match_ms = [], [], []
    for person in range(reps):
        sealed = []
        for finger in (1, 6):
            template = build_template(parse(base64.b64decode(capture(person, finger, 0)))).to_bytes()
            context = f"idguard/fingerprint/{uuid.uuid4()}/{finger}/template".encode()
            sealed.append((context, vault.seal(zlib.compress(template, 1), context=context)))
        sample = capture(person, 1, 3)
        t0 = time.perf_counter()
        live = build_template(parse(base64.b64decode(sample)).views[0])
        t1 = time.perf_counter()
        registered = [
            Template.from_bytes(zlib.decompress(vault.open(key_id, blob, context=context)))
            for context, (key_id, blob) in sealed
        ]
        t2 = time.perf_counter()
        match_any(live, registered)
        t3 = time.perf_counter()
        live_ms.append((t1 - t0) * 1000)
        open_ms.append((t2 - t1) * 1000)
        match_ms.append((t3 - t2) * 1000)
    table(
        f"parts of one on-site comparison, in process (median of {reps})",
        ("part", "ms"),
        [
            ("parse the live record and build its template", statistics.median(live_ms)),
            ("open the two sealed templates (AES-GCM, zlib, decode)", statistics.median(open_ms)),
            ("compare with both registered fingers", statistics.median(match_ms)),
        ],
    )


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    admin = admin_engine(admin_url)
    try:
        with scratch_database(admin, admin_url, "idguard_bench_fingerprints") as url:
            yield url
    finally:
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cards", type=int, default=200, help="cards with fingerprints (and as many without)"
    )
    parser.add_argument(
        "--postgres-url", default=None, help="e.g. postgresql://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    parts(50)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        try:
            run("sqlite", f"sqlite:///{tmp}/bench.db", args.cards, log)
            if args.postgres_url:
                with postgres_database(args.postgres_url) as url:
                    run("postgresql", url, args.cards, log)
        except Exception:
            sys.stdout.write(log.read_text()[-4000:])
            raise


if __name__ == "__main__":
    main()
