from tests.factories import OFFICE_A, OFFICE_B
from tests.functional.conftest import Counter, assert_problem

FINDER = {"name": "李四", "phone": "13800000000"}


def hand_in(counter: Counter, card: dict[str, str], *, office: str = OFFICE_A, as_: str = "clerk_a"):  # type: ignore[no-untyped-def]
    body = {
        "id_number": card["id_number"],
        "issued_on": card["issued_on"],
        "office": office,
        "finder": FINDER,
    }
    return counter.post("/api/v1/found-cards", body, as_=as_)


def test_found_card_is_held_then_returned_to_verified_owner(counter: Counter) -> None:
    number = counter.person(name="赵六")
    card = counter.card(number)
    counter.report(card)
    r = hand_in(counter, card, office=OFFICE_B, as_="clerk_b")
    assert r.status_code == 201, r.text
    found = r.json()
    assert found["disposition"] == "held"
    assert found["card_status"] == "reported_lost"
    lookup = counter.client.get("/api/v1/found-cards/lookup", params={"id_number": number, "name": "赵六"})
    assert lookup.json() == {"held": True, "office": OFFICE_B, "office_name": "黄浦区外滩派出所"}
    path = f"/api/v1/found-cards/{found['found_no']}/return"
    assert_problem(counter.post(path, {"claimant_id_number": number}), 409, says="another office")
    other = counter.person()
    assert_problem(
        counter.post(path, {"claimant_id_number": other}, as_="clerk_b"), 409, says="not the card's owner"
    )
    assert_problem(
        counter.post(path, {"claimant_id_number": number, "claimant_name": "钱七"}, as_="clerk_b"), 409
    )
    r = counter.post(path, {"claimant_id_number": number, "photo_ref": "IMG-1"}, as_="clerk_b")
    assert r.status_code == 200, r.text
    assert r.json()["disposition"] == "returned"
    assert_problem(counter.post(path, {"claimant_id_number": number}, as_="clerk_b"), 409, says="not held")
    assert (
        counter.client.get("/api/v1/found-cards/lookup", params={"id_number": number, "name": "赵六"}).json()[
            "held"
        ]
        is False
    )
    assert [e["event"] for e in counter.events(card["card_id"])] == [
        "issued:first",
        "reported_lost",
        "found",
        "returned",
    ]


def test_found_card_of_a_replaced_card_is_destroyed(counter: Counter) -> None:
    number = counter.person()
    old = counter.card(number, issued_on="2020-01-01", as_="admin")
    counter.report(old)
    counter.card(number, kind="replacement")
    r = hand_in(counter, old)
    assert r.status_code == 201, r.text
    assert r.json()["disposition"] == "destroyed"
    assert r.json()["card_status"] == "destroyed"
    assert_problem(hand_in(counter, old), 409, says="destroyed")


def test_held_card_cannot_be_handed_in_twice(counter: Counter) -> None:
    card = counter.card(counter.person())
    assert hand_in(counter, card).json()["disposition"] == "held"
    assert_problem(hand_in(counter, card), 409, says="already held")


def test_unknown_card_is_404_and_bad_fields_named(counter: Counter) -> None:
    card = {"id_number": counter.person(), "issued_on": "2001-01-01"}
    assert_problem(hand_in(counter, card), 404, says="suspect")
    r = counter.post(
        "/api/v1/found-cards", {"id_number": "1", "issued_on": "nope", "office": OFFICE_A, "finder": {}}
    )
    assert_problem(r, 422)
    assert {"id_number", "issued_on", "finder.name"} <= {e["field"] for e in r.json()["errors"]}


def test_lookup_reveals_nothing_without_the_right_name(counter: Counter) -> None:
    number = counter.person(name="孙八")
    hand_in(counter, counter.card(number))
    r = counter.client.get("/api/v1/found-cards/lookup", params={"id_number": number, "name": "别人"})
    assert r.json() == {"held": False, "office": None, "office_name": None}
    assert_problem(
        counter.client.get("/api/v1/found-cards/lookup", params={"id_number": "1", "name": "x"}),
        422,
        field="id_number",
    )


def test_held_card_no_longer_returnable_is_destroyed_by_the_holding_office(counter: Counter) -> None:
    number = counter.person(name="孙八")
    card = counter.card(number)
    counter.report(card)
    found = hand_in(counter, card, office=OFFICE_B, as_="clerk_b").json()
    path = f"/api/v1/found-cards/{found['found_no']}/destroy"
    # The owner may still collect it: it is kept.
    assert_problem(counter.post(path, {}, as_="clerk_b"), 409, says="can still be returned")
    # The owner did not wait: a replacement is issued, so the held card can only be destroyed.
    counter.card(number, kind="replacement")
    assert_problem(counter.post(path, {}), 409, says="another office")
    r = counter.post(path, {}, as_="clerk_b")
    assert r.status_code == 200, r.text
    assert r.json()["disposition"] == "destroyed"
    assert r.json()["card_status"] == "destroyed"
    assert counter.events(card["card_id"])[-1]["event"] == "destroyed"
    assert_problem(counter.post(path, {}, as_="clerk_b"), 409, says="not held")
    lookup = counter.client.get("/api/v1/found-cards/lookup", params={"id_number": number, "name": "孙八"})
    assert lookup.json()["held"] is False


def test_public_lookup_is_throttled_per_address(counter: Counter) -> None:
    number = counter.person(name="周九")
    answers = [
        counter.client.get("/api/v1/found-cards/lookup", params={"id_number": number, "name": "周九"})
        for _ in range(21)
    ]
    assert [r.status_code for r in answers[:20]] == [200] * 20
    assert_problem(answers[20], 429, says="lookups")
    assert int(answers[20].headers["Retry-After"]) >= 1


def test_the_lookup_by_post_keeps_number_and_name_out_of_the_url(counter: Counter) -> None:
    """Issue 9, item 7: URLs land in access logs; the POST lookup answers the same as the
    (deprecated) GET, and they share one limit per address."""
    number = counter.person(name="钱七")
    card = counter.card(number)
    counter.report(card)
    assert hand_in(counter, card).status_code == 201
    by_post = counter.client.post("/api/v1/found-cards/lookup", json={"id_number": number, "name": "钱七"})
    assert by_post.status_code == 200, by_post.text
    assert by_post.json()["held"] is True
    assert by_post.json()["office"] == OFFICE_A
    by_get = counter.client.get("/api/v1/found-cards/lookup", params={"id_number": number, "name": "钱七"})
    assert by_get.json() == by_post.json()
    wrong = counter.client.post("/api/v1/found-cards/lookup", json={"id_number": number, "name": "别人"})
    assert wrong.json() == {"held": False, "office": None, "office_name": None}
    assert_problem(
        counter.client.post("/api/v1/found-cards/lookup", json={"id_number": number}), 422, field="name"
    )
    spec = counter.client.get("/api/v1/openapi.json").json()
    assert spec["paths"]["/api/v1/found-cards/lookup"]["get"]["deprecated"] is True
