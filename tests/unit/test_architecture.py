"""The one-unit-of-work rule (tools/check_architecture.py) finds what it must, and the tree obeys it."""

from __future__ import annotations

from pathlib import Path

from tools.check_architecture import check, violations

SOURCE = """
def route(session, engine, sessions):
    session.commit()
    with engine.begin() as conn:
        pass
    with sessions.begin():
        session.begin_nested()
    uow.commit(session)
    session.flush()
    committed = session.commit
"""


def test_every_transaction_call_is_named_with_its_line() -> None:
    found = list(violations(Path("src/idguard/x.py"), SOURCE))
    assert [line.split(":")[1] for line in found] == ["3", "4", "6", "7"]
    assert all(line.startswith("src/idguard/x.py:") for line in found)
    assert ".commit()" in found[0]
    assert ".begin()" in found[1]
    assert ".begin_nested()" in found[3]


def test_the_unit_of_work_itself_is_allowed(tmp_path: Path) -> None:
    assert check([Path("src/idguard/uow.py")]) == []
    other = tmp_path / "elsewhere.py"
    other.write_text("def f(s):\n    s.commit()\n")
    assert len(check([other])) == 1


def test_src_and_tests_commit_only_through_the_unit_of_work() -> None:
    root = Path(__file__).resolve().parents[2]
    assert (root / "src/idguard/uow.py").exists()
    found = check([Path("src"), Path("tests")]) if Path("src").exists() else check([root / "src"])
    assert found == []
