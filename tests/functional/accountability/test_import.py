"""`idguard transactions import UNIT FILE`: CSV and JSONL, errors naming row and field with
nothing imported, resumable (refs already stored are skipped), classified like the API's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from idguard.accountability.models import Transaction
from idguard.cli.main import app
from idguard.config import Settings
from tests.functional.accountability.conftest import CheckLog, Unit, number, tx


def run(settings: Settings, *args: str) -> Any:
    env = {"IDGUARD_DATABASE_URL": settings.database_url, "IDGUARD_SECRET_KEY": settings.secret_key}
    return CliRunner().invoke(app, ["transactions", "import", *args], env=env)


def stored(sessions: sessionmaker[Session], unit: str) -> dict[str, str | None]:
    with sessions() as session:
        return {
            ref: (cls.value if cls else None)
            for ref, cls in session.execute(
                sa.select(Transaction.ref, Transaction.classification).where(Transaction.unit_code == unit)
            )
        }


def write_csv(path: Path, items: list[dict[str, Any]]) -> Path:
    lines = ["ref,at,id_number,purpose,check_id"]
    lines += [f"{i['ref']},{i['at']},{i['id_number']},{i['purpose']},{i.get('check_id', '')}" for i in items]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_csv_import_classifies_and_resumes(
    tmp_path: Path, settings: Settings, bank: Unit, checks: CheckLog, session_factory: sessionmaker[Session]
) -> None:
    checked, unchecked = number(), number()
    checks.add(bank, checked, -10)
    items = [tx(checked, 0), tx(unchecked, 0)]
    path = write_csv(tmp_path / "t.csv", items)
    r = run(settings, bank.code, str(path))
    assert r.exit_code == 0, r.output
    assert "2 transactions imported" in r.output
    assert stored(session_factory, bank.code) == {items[0]["ref"]: "compliant", items[1]["ref"]: "unchecked"}
    # Interrupted after the first rows? Run it again with more: stored refs are skipped.
    more = [*items, tx(number(), 0)]
    r = run(settings, bank.code, str(write_csv(tmp_path / "t.csv", more)))
    assert r.exit_code == 0, r.output
    assert "1 transactions imported" in r.output
    assert "2 already stored" in r.output
    assert len(stored(session_factory, bank.code)) == 3


def test_jsonl_import(
    tmp_path: Path, settings: Settings, bank: Unit, session_factory: sessionmaker[Session]
) -> None:
    items = [tx(number(), 0) for _ in range(3)]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(i) for i in items) + "\n\n", encoding="utf-8")
    r = run(settings, bank.code, str(path))
    assert r.exit_code == 0, r.output
    assert set(stored(session_factory, bank.code)) == {i["ref"] for i in items}


def test_a_bad_file_names_row_and_field_and_imports_nothing(
    tmp_path: Path, settings: Settings, bank: Unit, session_factory: sessionmaker[Session]
) -> None:
    items = [
        tx(number(), 0),
        {**tx(number(), 0), "at": "2026-06-15"},
        tx(number(), 0),
        {**tx(number(), 0), "purpose": "x"},
    ]
    path = tmp_path / "t.jsonl"
    lines = [json.dumps(i) for i in items] + ["{not json"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = run(settings, bank.code, str(path))
    assert r.exit_code == 1
    assert "row 2: at:" in r.output
    assert "row 4: purpose:" in r.output
    assert "row 5: row: not JSON" in r.output
    assert "3 bad rows" in r.output
    assert "nothing imported" in r.output
    assert stored(session_factory, bank.code) == {}


def test_a_stored_ref_with_other_content_is_a_bad_row(
    tmp_path: Path, settings: Settings, bank: Unit, session_factory: sessionmaker[Session]
) -> None:
    item = tx(number(), 0)
    bank.report(item)
    path = write_csv(tmp_path / "t.csv", [tx(number(), 0), {**item, "purpose": "hotel_checkin"}])
    r = run(settings, bank.code, str(path))
    assert r.exit_code == 1
    assert "row 3: ref: ref already reported with other content" in r.output
    assert list(stored(session_factory, bank.code)) == [item["ref"]]


def test_bad_header_and_unknown_unit(tmp_path: Path, settings: Settings, bank: Unit) -> None:
    path = tmp_path / "t.csv"
    path.write_text("reference,when\nA,B\n", encoding="utf-8")
    r = run(settings, bank.code, str(path))
    assert r.exit_code == 1
    assert "row 1: header" in r.output
    r = run(settings, "NO-SUCH-UNIT", str(write_csv(tmp_path / "u.csv", [tx(number(), 0)])))
    assert r.exit_code == 1
    assert "no unit NO-SUCH-UNIT" in r.output
