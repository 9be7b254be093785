"""Fingerprints at the counter and at the unit: enrolment with the quality gate, the on-site
comparison for loss reports and found cards' returns, the person-card check, and what is stored."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.biometrics import build_template, parse
from idguard.biometrics.models import Fingerprint, FingerprintComparison
from idguard.core.clock import FixedClock
from idguard.db.common import AuditEntry
from idguard.registry.models import Card
from tests import prints
from tests.factories import OFFICE_A, OFFICE_B
from tests.functional.conftest import Counter, assert_problem
from tests.functional.registry.test_found_cards import hand_in
from tests.functional.verification.test_verify import Bank, flush, sync

ALICE, BOB = 11, 12  # two persons' fingers (synthetic generator seeds)


@pytest.fixture
def bank(counter: Counter) -> Bank:
    return Bank(counter)


def enrolled_card(counter: Counter, person: int = ALICE, **kwargs: Any) -> dict[str, Any]:
    return counter.card(counter.person(**kwargs), fingerprints=prints.enrolment(person))


def comparisons(session_factory: sessionmaker[Session], card: dict[str, Any]) -> list[FingerprintComparison]:
    with session_factory() as s:
        return list(
            s.scalars(
                sa.select(FingerprintComparison)
                .where(FingerprintComparison.card_id == uuid.UUID(card["card_id"]))
                .order_by(FingerprintComparison.at)
            )
        )


# --- enrolment ------------------------------------------------------------------------------


def test_issue_with_two_fingers_registers_them(
    counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    card = enrolled_card(counter)
    assert card["fingerprints_registered"] is True
    with session_factory() as s:
        rows = s.scalars(
            sa.select(Fingerprint).where(Fingerprint.card_id == uuid.UUID(card["card_id"]))
        ).all()
        assert sorted(r.finger for r in rows) == [prints.THUMB, prints.LEFT_THUMB]
        assert all(r.minutiae >= 12 and r.quality >= 40 for r in rows)
    plain = counter.card(counter.person())
    assert plain["fingerprints_registered"] is False


@pytest.mark.parametrize(
    ("fingers", "field", "says"),
    [
        (lambda: prints.enrolment(ALICE)[:1], "fingerprints", "2 fingers"),
        (lambda: prints.enrolment(ALICE, (1, 1)), "fingerprints[1].finger", "different"),
        (
            lambda: [{"finger": 1, "template": "not base64!"}, prints.enrolment(ALICE)[1]],
            "fingerprints[0].template",
            "base64",
        ),
        (
            lambda: [prints.enrolment(ALICE)[0], {"finger": 6, "template": prints.capture(ALICE, 6)[:40]}],
            "fingerprints[1].template.record_length",
            "the header says",
        ),
        (
            # The record says it is the right thumb; it is sent as the left thumb.
            lambda: [prints.enrolment(ALICE)[0], {"finger": 6, "template": prints.capture(ALICE, 1, 0)}],
            "fingerprints[1].template",
            "no view of finger 6",
        ),
        (
            lambda: [{"finger": 1, "template": prints.poor(ALICE, minutiae=8)}, prints.enrolment(ALICE)[1]],
            "fingerprints[0].template",
            "only 8 minutiae",
        ),
        (
            lambda: [
                prints.enrolment(ALICE)[0],
                {"finger": 6, "template": prints.poor(ALICE, 6, minutiae=40, quality=20)},
            ],
            "fingerprints[1].template",
            "left thumb: finger quality 20",
        ),
    ],
)
def test_enrolment_refusals_name_the_finger_and_write_nothing(
    counter: Counter, fingers: Any, field: str, says: str
) -> None:
    number = counter.person()
    r = counter.issue(number, fingerprints=fingers())
    assert_problem(r, 422, field=field, says=says)
    assert counter.cards(number) == []


def test_poor_capture_message_tells_the_clerk_what_to_do(counter: Counter) -> None:
    r = counter.issue(
        counter.person(),
        fingerprints=[{"finger": 1, "template": prints.poor(ALICE, quality=20)}, prints.enrolment(ALICE)[1]],
    )
    assert_problem(r, 422, field="fingerprints[0].template", says="capture again")
    assert "right thumb" in r.json()["detail"]


def test_a_truncated_record_names_the_part_at_fault(counter: Counter) -> None:
    good = prints.record(ALICE, 6, 0)
    r = counter.issue(
        counter.person(),
        fingerprints=[
            prints.enrolment(ALICE)[0],
            {"finger": 6, "template": base64.b64encode(good[:-5]).decode()},
        ],
    )
    assert_problem(r, 422, field="fingerprints[1].template.record_length")


def test_2011_and_2005_records_interoperate(counter: Counter) -> None:
    """A card enrolled from 2011-format records is compared with a 2005-format live capture (and
    the other way round): scanners of either edition work together."""
    modern = [{"finger": f, "template": prints.capture_2011(ALICE, f, prints.ENROLLED)} for f in (1, 6)]
    card = counter.card(counter.person(), fingerprints=modern)
    assert card["fingerprints_registered"] is True
    assert counter.report(card, fingerprint=prints.capture(ALICE)).status_code == 201
    older = enrolled_card(counter, BOB)
    assert counter.report(older, fingerprint=prints.capture_2011(BOB, 6, 3)).status_code == 201


# --- loss reports ---------------------------------------------------------------------------


def test_loss_report_with_matching_finger_is_accepted_and_recorded(
    counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    card = enrolled_card(counter)
    r = counter.report(card, fingerprint=prints.capture(ALICE, prints.LEFT_THUMB, impression=3))
    assert r.status_code == 201, r.text
    assert r.json()["card_status"] == "reported_lost"
    [comparison] = comparisons(session_factory, card)
    assert comparison.matched
    assert comparison.purpose == "loss_report"
    assert comparison.office == OFFICE_A


def test_loss_report_with_another_persons_finger_is_refused_and_the_attempt_recorded(
    counter: Counter, session_factory: sessionmaker[Session], clock: FixedClock
) -> None:
    card = enrolled_card(counter)
    r = counter.report(card, fingerprint=prints.capture(BOB), headers={"Idempotency-Key": "lr-1"})
    assert_problem(r, 409, says="does not match")
    assert "last 24 hours: 1" in r.json()["detail"]
    assert counter.cards(card["id_number"])[0]["status"] == "valid"
    assert len(counter.events(card["card_id"])) == 1  # only the issue: nothing half-written
    clock.at += dt.timedelta(minutes=1)
    r = counter.report(card, fingerprint=prints.capture(BOB, 6), office=OFFICE_B, as_="clerk_b")
    assert_problem(r, 409, says="last 24 hours: 2")
    failed = comparisons(session_factory, card)
    assert [(c.matched, c.office) for c in failed] == [(False, OFFICE_A), (False, OFFICE_B)]
    # A retry of the refused request (same key, same capture) replays the refusal: it is neither
    # compared nor recorded again. Another capture is another request, with another key.
    again = counter.report(card, fingerprint=prints.capture(BOB), headers={"Idempotency-Key": "lr-1"})
    assert_problem(again, 409, says="last 24 hours: 1")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(comparisons(session_factory, card)) == 2
    other = counter.report(card, fingerprint=prints.capture(ALICE), headers={"Idempotency-Key": "lr-1"})
    assert_problem(other, 422, field="Idempotency-Key")
    r = counter.report(card, fingerprint=prints.capture(ALICE), headers={"Idempotency-Key": "lr-2"})
    assert r.status_code == 201, r.text
    assert counter.cards(card["id_number"])[0]["status"] == "reported_lost"


def test_loss_report_without_a_sample_is_refused_for_a_card_with_fingerprints(
    counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    card = enrolled_card(counter)
    assert_problem(counter.report(card), 422, field="fingerprint", says="registered fingerprints")
    assert_problem(counter.report(card, fingerprint="Rk1SACAyMAA="), 422, field="fingerprint.record_length")
    assert_problem(
        counter.report(card, fingerprint=prints.poor(ALICE)), 422, field="fingerprint", says="capture again"
    )
    assert comparisons(session_factory, card) == []  # not an attempt: nothing was compared
    assert counter.cards(card["id_number"])[0]["status"] == "valid"


def test_card_without_fingerprints_needs_no_sample(counter: Counter) -> None:
    card = counter.card(counter.person())
    assert counter.report(card).status_code == 201


def test_guardian_report_needs_the_childs_finger(counter: Counter) -> None:
    parent = counter.person(dt.date(1980, 1, 1))
    card = enrolled_card(counter, birth=dt.date(2015, 3, 3))  # a child of 11 with fingers registered
    r = counter.report(card, applicant=parent, fingerprint=prints.capture(BOB))  # the parent's own finger
    assert_problem(r, 409, says="does not match")
    r = counter.report(card, applicant=parent, fingerprint=prints.capture(ALICE))
    assert r.status_code == 201, r.text


def test_comparisons_are_listed_for_supervisors_and_the_clerks_own_office(
    counter: Counter, clock: FixedClock, session_factory: sessionmaker[Session]
) -> None:
    card = enrolled_card(counter)
    counter.report(card, fingerprint=prints.capture(BOB))
    clock.at += dt.timedelta(minutes=1)
    counter.report(card, fingerprint=prints.capture(BOB), office=OFFICE_B, as_="clerk_b")
    clock.at += dt.timedelta(minutes=1)
    counter.report(card, fingerprint=prints.capture(ALICE))
    r = counter.get("/api/v1/fingerprint-comparisons", as_="supervisor", matched="false")
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [(i["office"], i["matched"]) for i in items] == [(OFFICE_B, False), (OFFICE_A, False)]
    assert items[0]["clerk"] == "clerk_b"
    assert "*" in items[0]["id_number"]
    assert items[0]["id_number"] != card["id_number"]
    mine = counter.get("/api/v1/fingerprint-comparisons", card_id=card["card_id"]).json()["items"]
    assert [i["matched"] for i in mine] == [True, False]  # clerk_a: office A only, newest first
    page = counter.get("/api/v1/fingerprint-comparisons", as_="auditor", limit=1).json()
    assert len(page["items"]) == 1
    assert page["next"]
    rest = counter.get("/api/v1/fingerprint-comparisons", as_="auditor", after=page["next"]).json()
    assert len(rest["items"]) == 2
    assert_problem(counter.get("/api/v1/fingerprint-comparisons", office=OFFICE_B), 403, says="office")
    assert all(i["score"] is None for i in mine)  # scores: supervisors and auditors only
    assert all(isinstance(i["score"], float) for i in items)
    with session_factory() as s:
        reads = s.scalars(
            sa.select(AuditEntry.action).where(AuditEntry.action == "fingerprint_comparisons.list")
        )
        assert len(list(reads)) == 4  # every read that answered is audited (not the 403)


# --- found cards ----------------------------------------------------------------------------


def test_found_card_goes_back_only_to_a_matching_finger(
    counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    card = enrolled_card(counter)
    assert counter.report(card, fingerprint=prints.capture(ALICE)).status_code == 201
    found = hand_in(counter, card).json()
    path = f"/api/v1/found-cards/{found['found_no']}/return"
    claim = {"claimant_id_number": card["id_number"]}
    assert_problem(counter.post(path, claim), 422, field="fingerprint")
    assert_problem(
        counter.post(path, {**claim, "fingerprint": prints.capture(BOB)}), 409, says="does not match"
    )
    r = counter.post(path, {**claim, "fingerprint": prints.capture(ALICE, prints.LEFT_THUMB, 4)})
    assert r.status_code == 200, r.text
    assert r.json()["disposition"] == "returned"
    assert [(c.purpose, c.matched) for c in comparisons(session_factory, card)] == [
        ("loss_report", True),
        ("found_card_return", False),
        ("found_card_return", True),
    ]


# --- the person-card check (verify) ---------------------------------------------------------


def test_verify_with_fingerprint(counter: Counter, bank: Bank, clock: FixedClock) -> None:
    card = enrolled_card(counter)
    plain = counter.card(counter.person())
    sync(counter)
    own = bank.verify(card, fingerprint=prints.capture(ALICE, impression=5))
    assert own.status_code == 200, own.text
    assert own.json()["result"] == "valid"
    assert own.json()["fingerprint_match"] is True
    assert own.json().get("fingerprint_reason") is None
    clock.at += dt.timedelta(seconds=1)
    other = bank.verify(card, fingerprint=prints.capture(BOB)).json()
    assert (other["result"], other["fingerprint_match"]) == ("valid", False)
    clock.at += dt.timedelta(seconds=1)
    none = bank.verify(plain, fingerprint=prints.capture(ALICE)).json()
    assert none["fingerprint_match"] is None
    assert none["fingerprint_reason"] == "no_registered_fingerprints"
    clock.at += dt.timedelta(seconds=1)
    without = bank.verify(card).json()
    assert "fingerprint_match" not in without
    flush(counter)
    checks = counter.get("/api/v1/checks", as_="auditor").json()["items"]  # newest first
    assert [c["fingerprint_match"] for c in checks] == [None, None, False, True]


def test_verify_compares_only_a_valid_card(counter: Counter, bank: Bank) -> None:
    card = enrolled_card(counter)
    counter.report(card, fingerprint=prints.capture(ALICE))
    sync(counter)
    body = bank.verify(card, fingerprint=prints.capture(ALICE)).json()
    assert (body["result"], body["reason"]) == ("invalid", "reported_lost")
    assert body["fingerprint_match"] is None
    assert body["fingerprint_reason"] == "card_not_valid"
    mismatch = bank.verify(card, name="王五", fingerprint=prints.capture(ALICE)).json()
    assert mismatch["result"] == "mismatch"
    assert mismatch["fingerprint_reason"] == "card_not_valid"


def test_verify_with_a_malformed_record_names_the_fault(counter: Counter, bank: Bank) -> None:
    card = counter.card(counter.person())
    sync(counter)
    assert_problem(bank.verify(card, fingerprint="Rk1SACAyMAA="), 422, field="fingerprint.record_length")
    assert_problem(bank.verify(card, fingerprint="%%%"), 422, field="fingerprint")


def test_batch_with_fingerprints(counter: Counter, bank: Bank) -> None:
    card = enrolled_card(counter)
    sync(counter)
    base = {
        "id_number": card["id_number"],
        "name": card["name"],
        "issued_on": card["issued_on"],
        "expires_on": card["expires_on"],
        "purpose": "account_opening",
        "operator": "teller-7",
    }
    items = [
        {**base, "fingerprint": prints.capture(ALICE)},
        {**base, "fingerprint": prints.capture(BOB)},
        {**base, "fingerprint": "Rk1SACAyMAA="},
        base,
    ]
    r = counter.client.post("/api/v1/verify/batch", json={"items": items}, headers=bank.headers())
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results[0]["fingerprint_match"] is True
    assert results[1]["fingerprint_match"] is False
    assert results[2]["error"]["status"] == 422
    assert results[2]["error"]["errors"][0]["field"] == "fingerprint.record_length"
    assert results[3]["result"] == "valid"
    assert "fingerprint_match" not in results[3]


# --- what is stored, and what never leaves --------------------------------------------------


def test_templates_are_sealed_at_rest(counter: Counter, session_factory: sessionmaker[Session]) -> None:
    card = enrolled_card(counter)
    enrolled = prints.record(ALICE, prints.THUMB, prints.ENROLLED)
    with session_factory() as s:
        rows = s.scalars(
            sa.select(Fingerprint).where(Fingerprint.card_id == uuid.UUID(card["card_id"]))
        ).all()
    for row in rows:
        # Neither the record nor any recognisable part of it (its header, its minutiae) is there.
        assert b"FMR\x00" not in row.record
        assert b"FMR\x00" not in row.template
        assert enrolled[24:60] not in row.record
        assert b"IGMC" not in row.template
        assert row.key_id == "derived"


def traces(raw: bytes) -> list[str]:
    """How bytes of a record or template could show up in text: a run from the middle (the
    minutiae, not the shared header) as hex, and as base64 at each of the three alignments."""
    middle = len(raw) // 2
    out = [raw[middle : middle + 24].hex(), raw[middle : middle + 24].hex().upper()]
    out += [base64.b64encode(raw[middle + k : middle + k + 24]).decode() for k in range(3)]
    return out


def test_nothing_answered_stored_in_text_or_logged_carries_fingerprint_bytes(
    counter: Counter, bank: Bank, caplog: pytest.LogCaptureFixture, session_factory: sessionmaker[Session]
) -> None:
    caplog.set_level(logging.DEBUG)
    key = {"Idempotency-Key": "leak-1"}
    enrolment = prints.enrolment(ALICE)
    live, stranger = prints.record(ALICE, prints.THUMB, 1), prints.record(BOB, prints.THUMB, 1)
    number = counter.person()
    issued = counter.post(
        f"/api/v1/persons/{number}/cards",
        {"kind": "first", "office": OFFICE_A, "fingerprints": enrolment},
        **key,
    )
    card = issued.json()
    refused = counter.report(
        card, fingerprint=base64.b64encode(stranger).decode(), headers={"Idempotency-Key": "leak-2"}
    )
    accepted = counter.report(
        card, fingerprint=base64.b64encode(live).decode(), headers={"Idempotency-Key": "leak-3"}
    )
    sync(counter)
    answers = [
        issued.text,
        refused.text,
        accepted.text,
        counter.get(f"/api/v1/persons/{card['id_number']}", as_="auditor").text,
        counter.get(f"/api/v1/persons/{card['id_number']}/cards", as_="auditor").text,
        counter.get(f"/api/v1/cards/{card['card_id']}/events", as_="auditor").text,
        counter.get("/api/v1/fingerprint-comparisons", as_="auditor").text,
        bank.verify(card, fingerprint=base64.b64encode(live).decode()).text,
    ]
    flush(counter)
    with session_factory() as s:
        # Every text the registry keeps beside the sealed blobs: check log, idempotent answers,
        # audit trail, ledger, comparisons.
        for table in (
            "checks",
            "idempotency_keys",
            "audit_log",
            "ledger_events",
            "fingerprint_comparisons",
        ):
            answers += [repr(tuple(row)) for row in s.execute(sa.text(f"SELECT * FROM {table}"))]  # noqa: S608 - fixed names
    templates = [build_template(parse(base64.b64decode(str(e["template"])))).to_bytes() for e in enrolment]
    secrets = [
        t
        for raw in (live, stranger, *(base64.b64decode(str(e["template"])) for e in enrolment), *templates)
        for t in traces(raw)
    ]
    for text in [*answers, caplog.text]:
        for secret in secrets:
            assert secret not in text
    assert "FMR" not in caplog.text
    assert "IGMC" not in caplog.text


def test_a_sealed_template_moved_to_another_card_does_not_open(
    counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    """The associated data binds a blob to its card: copying Alice's fingers onto Bob's card row
    (a database-level substitution) makes Bob's comparisons fail closed, not match Alice."""
    alice = enrolled_card(counter)
    bob = enrolled_card(counter, BOB)
    with uow.transaction(session_factory) as s:
        source = {
            f.finger: f
            for f in s.scalars(
                sa.select(Fingerprint).where(Fingerprint.card_id == uuid.UUID(alice["card_id"]))
            )
        }
        for target in s.scalars(
            sa.select(Fingerprint).where(Fingerprint.card_id == uuid.UUID(bob["card_id"]))
        ):
            target.template = source[target.finger].template
    assert_problem(counter.report(bob, fingerprint=prints.capture(ALICE)), 503, says="cannot be read")
    assert_problem(counter.report(bob, fingerprint=prints.capture(BOB)), 503, says="cannot be read")
    with session_factory() as s:
        assert s.scalar(sa.select(Card.status).where(Card.id == uuid.UUID(bob["card_id"]))) == "valid"


def test_cancelling_a_report_needs_the_holders_finger(
    counter: Counter, session_factory: sessionmaker[Session], clock: FixedClock
) -> None:
    """Whoever holds a lost card must not be able to make it valid again: the cancellation of a
    report on a card with fingers needs the holder's live finger, like the report itself."""
    card = enrolled_card(counter)
    report = counter.report(card, fingerprint=prints.capture(ALICE)).json()
    path = f"/api/v1/loss-reports/{report['report_no']}/cancel"
    assert_problem(counter.post(path, {"office": OFFICE_A}), 422, field="fingerprint")
    clock.at += dt.timedelta(minutes=1)
    refused = counter.post(path, {"office": OFFICE_A, "fingerprint": prints.capture(BOB)})
    assert_problem(refused, 409, says="does not match")
    assert counter.cards(card["id_number"])[0]["status"] == "reported_lost"
    clock.at += dt.timedelta(minutes=1)
    r = counter.post(path, {"office": OFFICE_A, "fingerprint": prints.capture(ALICE, prints.LEFT_THUMB, 6)})
    assert r.status_code == 200, r.text
    assert counter.cards(card["id_number"])[0]["status"] == "valid"
    assert [(c.purpose, c.matched) for c in comparisons(session_factory, card)] == [
        ("loss_report", True),
        ("loss_report_cancel", False),
        ("loss_report_cancel", True),
    ]


def test_a_comparison_that_cannot_be_made_is_never_a_pass(
    counter: Counter, bank: Bank, session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    """A sealed blob that does not open, or fingers flagged but missing: the counter refuses (503),
    the unit's check says `comparison_unavailable`, and an error names the card."""
    moved, missing, other = enrolled_card(counter), enrolled_card(counter, BOB), enrolled_card(counter, 13)
    with uow.transaction(session_factory) as s:
        alice = {
            f.finger: f
            for f in s.scalars(
                sa.select(Fingerprint).where(Fingerprint.card_id == uuid.UUID(moved["card_id"]))
            )
        }
        for row in s.scalars(
            sa.select(Fingerprint).where(Fingerprint.card_id == uuid.UUID(other["card_id"]))
        ):
            alice[row.finger].template = row.template  # another card's blob: its AAD does not fit
        s.execute(sa.delete(Fingerprint).where(Fingerprint.card_id == uuid.UUID(missing["card_id"])))
    sync(counter)
    caplog.set_level(logging.ERROR)
    for card, person in ((moved, ALICE), (missing, BOB)):
        body = bank.verify(card, fingerprint=prints.capture(person)).json()
        assert body["result"] == "valid"
        assert body["fingerprint_match"] is None
        assert body["fingerprint_reason"] == "comparison_unavailable"
        assert card["card_id"] in caplog.text
        assert_problem(counter.report(card, fingerprint=prints.capture(person)), 503, says="cannot be read")
