"""Monthly compliance over HTTP: every level, closing a month (stored figures), a unit's own row
and its violations, and who may read what."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from idguard.accountability.models import ClosedMonth, ComplianceMonth
from idguard.cli.main import app as idguard_cli
from idguard.config import Settings
from tests.factories import NOW
from tests.functional.accountability.conftest import CheckLog, Unit, number, tx
from tests.functional.conftest import Counter, assert_problem

MAY = "2026-05"  # closable: NOW is 2026-06-15
JUNE = "2026-06"  # open
IN_MAY = -(31 * 24 * 60)  # minutes: 2026-05-15


def fill(unit: Unit, checks: CheckLog, *, compliant: int, unchecked: int, minutes: float = IN_MAY) -> None:
    items = []
    for _ in range(compliant):
        n = number()
        checks.add(unit, n, minutes - 1)
        items.append(tx(n, minutes))
    items += [tx(number(), minutes) for _ in range(unchecked)]
    for start in range(0, len(items), 1000):
        results = unit.report(*items[start : start + 1000])
        assert {r["status"] for r in results} == {"accepted"}


def rows(counter: Counter, month: str, as_: str = "supervisor") -> dict[str, dict[str, object]]:
    r = counter.get("/api/v1/compliance", as_=as_, month=month)
    assert r.status_code == 200, r.text
    return {row["unit_code"]: row for row in r.json()["items"]}


def test_every_level(counter: Counter, checks: CheckLog) -> None:
    ok, early, standard, excessive, small = (
        Unit(counter, c) for c in ("U-OK", "U-EW", "U-ST", "U-EX", "U-SM")
    )
    fill(ok, checks, compliant=3, unchecked=0)
    fill(early, checks, compliant=1, unchecked=75)
    fill(standard, checks, compliant=0, unchecked=100)
    fill(excessive, checks, compliant=0, unchecked=1000)
    fill(small, checks, compliant=0, unchecked=74)  # 100 % but too few violations for a level
    got = rows(counter, MAY)
    assert {code: row["level"] for code, row in got.items()} == {
        "U-OK": "ok",
        "U-EW": "early_warning",
        "U-ST": "standard",
        "U-EX": "excessive",
        "U-SM": "ok",
    }
    assert got["U-EW"]["transactions"] == 76
    assert got["U-EW"]["unchecked"] == 75
    assert got["U-EW"]["compliant"] == 1
    assert got["U-EW"]["violation_rate"] == round(75 / 76, 6)


def test_a_closed_month_answers_from_stored_figures(
    counter: Counter, bank: Unit, checks: CheckLog, session_factory: sessionmaker[Session]
) -> None:
    n = number()
    [result] = bank.report(tx(n, IN_MAY))
    assert result["classification"] == "unchecked"
    r = counter.get("/api/v1/compliance", as_="auditor", month=MAY)
    assert r.status_code == 200, r.text
    assert r.json()["closed"] is True  # the first read after the month could be closed closed it
    with session_factory() as session:
        assert session.get(ClosedMonth, MAY) is not None
        assert session.get(ComplianceMonth, (MAY, bank.code)) is not None
    # A check written now (too late, and the month is frozen) changes nothing.
    checks.add(bank, n, IN_MAY - 1)
    assert rows(counter, MAY)["BANK-A"]["unchecked"] == 1
    # The month takes no more transactions.
    [late] = bank.report(tx(number(), IN_MAY))
    assert late["status"] == "rejected"
    assert late["errors"][0]["field"] == "at"
    assert "closed" in late["errors"][0]["detail"]


def test_closing_reclassifies_a_check_that_came_after(counter: Counter, bank: Unit, checks: CheckLog) -> None:
    """A transaction reported before its (late) check: unchecked at first, checked_after once
    the month is closed."""
    n = number()
    [result] = bank.report(tx(n, IN_MAY))
    assert result["classification"] == "unchecked"
    checks.add(bank, n, IN_MAY + 30)
    row = rows(counter, MAY)["BANK-A"]
    assert (row["unchecked"], row["checked_after"]) == (0, 1)


def test_an_open_month_is_provisional(counter: Counter, bank: Unit) -> None:
    bank.report(tx(number(), -60))
    r = counter.get("/api/v1/compliance", as_="supervisor", month=JUNE)
    assert r.json()["closed"] is False
    assert {row["unit_code"]: row["unchecked"] for row in r.json()["items"]} == {"BANK-A": 1}


def test_close_from_the_command_line(bank: Unit, settings: Settings) -> None:
    bank.report(tx(number(), IN_MAY))
    env = {"IDGUARD_DATABASE_URL": settings.database_url, "IDGUARD_SECRET_KEY": settings.secret_key}
    runner = CliRunner()
    r = runner.invoke(idguard_cli, ["compliance", "close", "2099-01"], env=env)
    assert r.exit_code == 1
    assert "cannot be closed before" in r.output
    r = runner.invoke(idguard_cli, ["compliance", "close", MAY], env=env)
    assert r.exit_code == 0, r.output
    assert "1 units" in r.output or "1 unit" in r.output
    r = runner.invoke(idguard_cli, ["compliance", "close", MAY], env=env)
    assert r.exit_code == 1
    assert "already closed" in r.output


def test_a_unit_reads_its_own_row_and_violations(
    counter: Counter, bank: Unit, other: Unit, checks: CheckLog
) -> None:
    fill(bank, checks, compliant=2, unchecked=5)
    invalid = number()
    checks.add(bank, invalid, IN_MAY - 1, "invalid")
    bank.report(tx(invalid, IN_MAY))
    r = bank.get(f"/api/v1/units/{bank.code}/compliance", month=MAY, limit=4)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["row"]["transactions"] == 8
    assert body["row"]["violations"] == 6
    assert body["row"]["accepted_invalid"] == 1
    seen = [v["classification"] for v in body["violations"]]
    assert body["next"] is not None
    r = bank.get(f"/api/v1/units/{bank.code}/compliance", month=MAY, limit=4, after=body["next"])
    seen += [v["classification"] for v in r.json()["violations"]]
    assert r.json()["next"] is None
    assert sorted(seen) == ["accepted_invalid"] + ["unchecked"] * 5
    # Another unit's: refused; every unit's: staff only.
    assert_problem(other.get(f"/api/v1/units/{bank.code}/compliance", month=MAY), 403)
    assert_problem(bank.get("/api/v1/compliance", month=MAY), 403)
    # Supervisors and auditors read any unit's.
    assert counter.get(f"/api/v1/units/{bank.code}/compliance", as_="auditor", month=MAY).status_code == 200
    assert_problem(counter.get(f"/api/v1/units/{bank.code}/compliance", as_="clerk_a", month=MAY), 403)


def test_bad_month_is_named(counter: Counter, bank: Unit) -> None:
    assert_problem(counter.get("/api/v1/compliance", as_="supervisor", month="2026-13"), 422, field="month")
    assert_problem(bank.get(f"/api/v1/units/{bank.code}/compliance", month="May"), 422, field="month")
    assert_problem(counter.get("/api/v1/units/NOPE/compliance", as_="supervisor", month=MAY), 404)


def test_top_violators_and_statistics(counter: Counter, bank: Unit, other: Unit, checks: CheckLog) -> None:
    fill(bank, checks, compliant=1, unchecked=3)
    fill(other, checks, compliant=1, unchecked=1)
    r = counter.get("/api/v1/statistics/top-violators", as_="supervisor", month=MAY)
    assert r.status_code == 200, r.text
    assert [row["unit_code"] for row in r.json()["items"]] == ["BANK-A", "BANK-B"]
    checks.add(bank, number(), -30, "mismatch")
    checks.add(bank, number(), -20, "valid", fingerprint_match=True)
    today = (NOW + dt.timedelta(hours=8)).date().isoformat()
    r = counter.get("/api/v1/statistics/units", as_="supervisor", **{"from": today, "to": today})
    assert r.status_code == 200, r.text
    [a] = [u for u in r.json()["items"] if u["unit_code"] == "BANK-A"]
    assert (a["checks"], a["person_checks"], a["mismatch"]) == (2, 1, 1)
    assert a["mismatch_rate"] == 0.5
    r = counter.get(
        "/api/v1/statistics/checks-per-sector", as_="auditor", **{"from": "2026-05-01", "to": today}
    )
    assert r.status_code == 200, r.text
    days = {(i["day"], i["sector"]): i["checks"] for i in r.json()["items"]}
    assert days[(today, "bank")] == 2
    assert days[("2026-05-15", "bank")] == 2  # the two compliant transactions' checks
    assert_problem(
        counter.get("/api/v1/statistics/units", as_="supervisor", **{"from": "2026-01-01", "to": today}),
        422,
        field="to",
    )


def test_statistics_are_for_staff_readers(counter: Counter, bank: Unit) -> None:
    assert_problem(counter.get("/api/v1/statistics/top-violators", as_="clerk_a", month=MAY), 403)
    assert bank.get("/api/v1/statistics/top-violators", month=MAY).status_code == 401
