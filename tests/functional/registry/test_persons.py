import datetime as dt

import pytest
import sqlalchemy as sa

from idguard.core.idnumber import check_character
from idguard.db.common import AuditEntry
from idguard.registry.models import Person
from tests.factories import OFFICE_A, OFFICE_B, id_number
from tests.functional.conftest import Counter, assert_problem


def body(number: str, **over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id_number": number,
        "name": "王芳",
        "sex": "female",
        "ethnicity": "汉",
        "birth_date": f"{number[6:10]}-{number[10:12]}-{number[12:14]}",
        "address": "北京市",
        "hukou_office": OFFICE_A,
    }
    return {**base, **over}


def test_register_and_read_back(counter: Counter) -> None:
    number = id_number(dt.date(1985, 2, 28), female=True)
    r = counter.post("/api/v1/persons", body(number))
    assert r.status_code == 201, r.text
    assert r.json()["id_number"] == number
    assert r.json()["current_card"] is None
    got = counter.get(f"/api/v1/persons/{number}", as_="auditor")
    assert got.status_code == 200
    assert got.json()["name"] == "王芳"
    assert got.json()["sex"] == "female"


def with_check(first17: str) -> str:
    return first17 + check_character(first17)


@pytest.mark.parametrize(
    ("number", "says"),
    [
        ("11010519850228002", "18 characters"),
        ("11010519850228002Y", "17 digits"),
        ("110105198502280021", "check character"),
        (with_check("11010519850229002"), "not a real date"),
        (with_check("11010520990101002"), "in the future"),
        (with_check("99999919850228002"), "region"),
    ],
)
def test_bad_id_number_is_422_naming_field_and_fault(counter: Counter, number: str, says: str) -> None:
    r = counter.post("/api/v1/persons", body(number, birth_date="1985-02-28"))
    assert_problem(r, 422, field="id_number")
    assert says in " ".join(e["detail"] for e in r.json()["errors"]) + r.json()["detail"]


def test_sex_and_birth_date_must_agree_with_number(counter: Counter) -> None:
    number = id_number(dt.date(1985, 2, 28), female=True)
    assert_problem(counter.post("/api/v1/persons", body(number, sex="male")), 422, field="sex")
    assert_problem(
        counter.post("/api/v1/persons", body(number, birth_date="1985-03-01")), 422, field="birth_date"
    )


def test_missing_and_malformed_fields_are_each_named(counter: Counter) -> None:
    r = counter.post("/api/v1/persons", {"id_number": "x", "sex": "other"})
    assert_problem(r, 422)
    named = {e["field"] for e in r.json()["errors"]}
    assert {"id_number", "sex", "name", "birth_date", "address", "hukou_office", "ethnicity"} <= named
    # The bad value itself is never echoed (it could be someone's id number).
    assert "other" not in r.text


def test_unknown_office_duplicate_and_wrong_office(counter: Counter) -> None:
    number = id_number(dt.date(1970, 1, 1))
    assert_problem(counter.post("/api/v1/persons", body(number, sex="male", hukou_office="999")), 403)
    assert_problem(
        counter.post("/api/v1/persons", body(number, sex="male", hukou_office="999"), as_="admin"),
        422,
        field="hukou_office",
    )
    assert counter.post("/api/v1/persons", body(number, sex="male")).status_code == 201
    assert_problem(counter.post("/api/v1/persons", body(number, sex="male")), 409, says="already registered")
    other = id_number(dt.date(1970, 1, 1))
    # A clerk of office B may not register into office A's household register.
    assert_problem(counter.post("/api/v1/persons", body(other, sex="male"), as_="clerk_b"), 403)
    assert (
        counter.post(
            "/api/v1/persons", body(other, sex="male", hukou_office=OFFICE_B), as_="clerk_b"
        ).status_code
        == 201
    )


@pytest.mark.parametrize("role", ["auditor", "supervisor"])
def test_roles_that_do_not_write(counter: Counter, role: str) -> None:
    number = id_number(dt.date(1970, 1, 1))
    assert_problem(counter.post("/api/v1/persons", body(number, sex="male"), as_=role), 403)


def test_unknown_person_is_404_and_bad_number_in_path_is_422(counter: Counter) -> None:
    assert_problem(counter.get(f"/api/v1/persons/{id_number(dt.date(1970, 1, 1))}"), 404)
    assert_problem(counter.get("/api/v1/persons/123"), 422, field="id_number")


def test_every_staff_read_of_a_person_is_audited(counter: Counter, session_factory) -> None:  # type: ignore[no-untyped-def]
    number = counter.person()
    counter.get(f"/api/v1/persons/{number}", as_="auditor")
    counter.get(f"/api/v1/persons/{number}/cards", as_="supervisor")
    with session_factory() as s:
        person_id = s.scalar(sa.select(Person.id).where(Person.id_number == number))
        actions = s.execute(
            sa.select(AuditEntry.action, AuditEntry.staff_id)
            .where(AuditEntry.person_id == person_id)
            .order_by(AuditEntry.id)
        ).all()
    assert [a for a, _ in actions] == ["person.register", "person.read", "person.cards"]
    assert all(staff is not None for _, staff in actions)
