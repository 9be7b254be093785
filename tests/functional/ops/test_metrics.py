"""GET /metrics as an operator's Prometheus reads it: what is counted, under which labels, and
that no personal data is ever a label (on SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.app import create_app
from idguard.config import Settings
from idguard.core.clock import FixedClock
from idguard.core.idnumber import mask
from idguard.ops.metrics import UNMATCHED
from idguard.verification.models import WebhookCursor
from tests import prints
from tests.factories import auth
from tests.functional.conftest import Counter, assert_problem
from tests.functional.ops.conftest import parse, scrape, total, value
from tests.functional.verification.test_verify import Bank, flush, sync

ALICE, BOB = 11, 12  # synthetic fingers (tests/prints.py)
TOKEN = "metrics-token-0123456789"


def test_requests_are_counted_by_route_template_and_status_never_by_raw_path(counter: Counter) -> None:
    number = counter.person(name="王五")
    for _ in range(3):
        assert counter.get(f"/api/v1/persons/{number}", as_="auditor").status_code == 200
    assert counter.client.get(f"/api/v1/persons/{number}").status_code == 401  # no token
    assert counter.client.get(f"/no/such/{number}").status_code == 404
    r = counter.client.get("/metrics")
    text = r.text
    samples = parse(text)
    route = "/api/v1/persons/{id_number}"
    assert value(samples, "idguard_http_requests_total", method="GET", route=route, status="200") == 3
    assert value(samples, "idguard_http_requests_total", method="GET", route=route, status="401") == 1
    assert (
        value(samples, "idguard_http_requests_total", method="POST", route="/api/v1/persons", status="201")
        == 1
    )
    assert value(samples, "idguard_http_requests_total", method="GET", route=UNMATCHED, status="404") == 1
    # Latency: one observation per request, whatever its status.
    assert value(samples, "idguard_http_request_duration_seconds_count", method="GET", route=route) == 4
    assert (
        value(samples, "idguard_http_request_duration_seconds_bucket", method="GET", route=route, le="+Inf")
        == 4
    )
    assert value(samples, "idguard_http_request_duration_seconds_sum", method="GET", route=route) > 0
    # Neither the number nor its mask nor the raw path of the unmatched request is anywhere.
    assert number not in text
    assert mask(number) not in text
    assert "/no/such" not in text
    labels = re.findall(r"\{[^}]*\}", text)
    assert labels
    assert not [found for found in labels if re.search(r"\d{14}", found)]


def test_checks_by_result_and_the_workers_index_and_check_log(counter: Counter) -> None:
    bank = Bank(counter)
    valid = counter.card(counter.person(name="甲"))
    lost = counter.card(counter.person(name="乙", birth=dt.date(1980, 1, 2)))
    assert counter.report(lost).status_code == 201
    sync(counter)
    assert bank.verify(valid).json()["result"] == "valid"
    assert bank.verify(valid).json()["result"] == "valid"
    assert bank.verify(lost).json()["result"] == "invalid"
    assert bank.verify(valid, name="别人").json()["result"] == "mismatch"
    flush(counter)
    samples = scrape(counter.client)
    assert value(samples, "idguard_checks_total", result="valid") == 2
    assert value(samples, "idguard_checks_total", result="invalid") == 1
    assert value(samples, "idguard_checks_total", result="mismatch") == 1
    assert value(samples, "idguard_index_cards") == 2
    assert value(samples, "idguard_index_ledger_seq") == value(samples, "idguard_ledger_seq") == 3
    assert 0 <= value(samples, "idguard_index_age_seconds") < 5
    assert value(samples, "idguard_checklog_pending") == 0
    assert value(samples, "idguard_checklog_write_failures_total") == 0
    # One request at a time: each check was synced in a journal write of its own.
    assert value(samples, "idguard_checklog_journal_writes_total") == 4
    assert (
        value(samples, "idguard_http_requests_total", method="POST", route="/api/v1/verify", status="200")
        == 4
    )


def test_loss_reports_and_fingerprint_comparisons_at_the_counter(counter: Counter, clock: FixedClock) -> None:
    plain = counter.card(counter.person(name="丙"))
    cancelled = counter.card(counter.person(name="丁", birth=dt.date(1979, 4, 5)))
    enrolled = counter.card(
        counter.person(name="戊", birth=dt.date(1982, 7, 8)), fingerprints=prints.enrolment(ALICE)
    )
    assert counter.report(plain).status_code == 201
    r = counter.report(cancelled)
    assert r.status_code == 201
    assert (
        counter.post(
            f"/api/v1/loss-reports/{r.json()['report_no']}/cancel", {"office": "110105001"}
        ).status_code
        == 200
    )
    assert_problem(counter.report(enrolled, fingerprint=prints.capture(BOB)), 409)  # refused, recorded
    clock.at += dt.timedelta(minutes=1)
    r = counter.report(enrolled, fingerprint=prints.capture(ALICE, prints.LEFT_THUMB, impression=3))
    assert r.status_code == 201, r.text
    samples = scrape(counter.client)
    assert value(samples, "idguard_loss_reports_total") == 3
    assert value(samples, "idguard_loss_reports_cancelled_total") == 1
    comparisons = "idguard_fingerprint_comparisons_total"
    assert value(samples, comparisons, purpose="loss_report", matched="true") == 1
    assert value(samples, comparisons, purpose="loss_report", matched="false") == 1
    assert total(samples, comparisons) == 2
    assert value(samples, "idguard_database_up") == 1


def test_webhook_units_failing(counter: Counter, session_factory: sessionmaker[Session]) -> None:
    Bank(counter, code="BANK-W1")
    Bank(counter, code="BANK-W2")
    with uow.transaction(session_factory) as session:
        session.add(WebhookCursor(unit_code="BANK-W1", delivered_seq=0, next_attempt_at=None, failures=4))
        session.add(WebhookCursor(unit_code="BANK-W2", delivered_seq=0, next_attempt_at=None, failures=0))
    samples = scrape(counter.client)
    assert value(samples, "idguard_webhook_units_failing") == 1
    assert value(samples, "idguard_webhook_consecutive_failures_max") == 4


def test_one_worker_without_a_directory_says_its_counts_are_its_own(client: TestClient) -> None:
    samples = scrape(client)
    assert value(samples, "idguard_metrics_multiprocess") == 0
    assert total(samples, "idguard_build_info") == 1


@pytest.fixture
def guarded(settings: Settings, clock: FixedClock) -> TestClient:
    app = create_app(settings.model_copy(update={"metrics_token": SecretStr(TOKEN)}), clock=clock)
    with TestClient(app) as client:
        yield client  # type: ignore[misc]
    app.state.engine.dispose()


def test_with_a_token_only_its_bearer_reads_the_metrics(guarded: TestClient) -> None:
    for headers in ({}, auth("admin"), {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN}):
        r = guarded.get("/metrics", headers=headers)
        assert_problem(r, 401, says="metrics token")
        assert r.headers["www-authenticate"] == "Bearer"
    samples = scrape(guarded, {"Authorization": f"Bearer {TOKEN}"})
    assert value(samples, "idguard_http_requests_total", method="GET", route="/metrics", status="401") == 4


def test_person_card_comparisons_of_units_are_counted_by_outcome(counter: Counter) -> None:
    bank = Bank(counter, code="BANK-FP")
    card = counter.card(
        counter.person(name="己", birth=dt.date(1984, 9, 10)), fingerprints=prints.enrolment(ALICE)
    )
    sync(counter)
    assert bank.verify(card, fingerprint=prints.capture(ALICE, prints.LEFT_THUMB, impression=3)).json()[
        "fingerprint_match"
    ]
    assert bank.verify(card, fingerprint=prints.capture(BOB)).json()["fingerprint_match"] is False
    assert bank.verify(card).json()["result"] == "valid"  # no finger: nothing compared
    samples = scrape(counter.client)
    name = "idguard_person_card_comparisons_total"
    assert value(samples, name, matched="true") == 1
    assert value(samples, name, matched="false") == 1
