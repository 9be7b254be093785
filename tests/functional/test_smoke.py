from tests.factories import OFFICE_A, auth, id_number
import datetime as dt


def test_smoke(client):
    n = id_number(dt.date(1990, 5, 4))
    r = client.post(
        "/api/v1/persons",
        headers=auth("clerk_a"),
        json={
            "id_number": n,
            "name": "张三",
            "sex": "male",
            "ethnicity": "汉",
            "birth_date": "1990-05-04",
            "address": "北京",
            "hukou_office": OFFICE_A,
        },
    )
    assert r.status_code == 201, r.text
    r = client.post(
        f"/api/v1/persons/{n}/cards", headers=auth("clerk_a"), json={"kind": "first", "office": OFFICE_A}
    )
    assert r.status_code == 201, r.text
    print(r.json())
    card = r.json()["card_id"]
    r = client.post(
        "/api/v1/loss-reports",
        headers=auth("clerk_a"),
        json={"card_id": card, "reason": "lost", "office": OFFICE_A, "applicant_id_number": n},
    )
    assert r.status_code == 201, r.text
    print(r.json())
    r = client.get(f"/api/v1/cards/{card}/events", headers=auth("auditor"))
    print(r.json())
    r = client.get(f"/api/v1/persons/{n}", headers=auth("auditor"))
    print(r.json())
