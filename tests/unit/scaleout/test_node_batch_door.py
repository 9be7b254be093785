"""The verifier node's batch door (scaleout/node.py, BatchDoor): it parses a batch body a column
at a time instead of through pydantic, so it is held to pydantic here. On generated bodies, near
the edges of every field's rules, `parse_batch` either leaves the body to the routes (None) or
gives exactly the values the routes' lane validates (`VerifyBatchItems`); and a node app answers
every body with the same status, body bytes and headers with the door as without it (the routes
alone), with the same check-log messages."""

from __future__ import annotations

import datetime as dt
import json
import sys
import typing
from typing import Any, cast
from unittest import mock

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from idguard.config import Environment, Settings
from idguard.core.clock import FixedClock
from idguard.registry.lifecycle import CardStatus
from idguard.scaleout import node as node_module
from idguard.scaleout.compact import CompactIndex
from idguard.scaleout.node import FAST_BATCH_MIN, BatchDoor, NodeVerifier, create_node_app, parse_batch
from idguard.scaleout.relay import index_key
from idguard.scaleout.sink import Sink
from idguard.verification.index import BLACKLISTED, CHECK_REQUIRED, CardFacts
from idguard.verification.routes import verify
from idguard.verification.rules import new_api_key
from idguard.verification.runtime.checklog import _ESCAPES_POSTGRES
from idguard.verification.runtime.keyring import UnitView
from idguard.verification.schemas import VerifyItem

FIELDS = ("id_number", "name", "issued_on", "expires_on", "purpose", "operator")
NUMBERS = [f"1101051990050{i:04d}{'0123456789X'[i % 11]}" for i in range(30)]
NAMES = ["张三", "李四", "O'Brien", "Ab Cd", "名" * 60]
DAYS = ["2016-06-15", "2026-06-15", "2036-06-15", "1984-01-01"]
# Each field's values near its rules' edges: some the routes take unchanged, some they change
# (strip, upper case, full width), some they refuse.
ODD_NUMBERS = [
    "1101051990050001x",
    "11010519900500010x",
    " 110105199005000100",
    "110105199005000100 ",
    "１１０１０５１９９００５０００１００",
    "11010519900500010",
    "1101051990050001000",
    "11010519900500010Y",
    "11010519900500010\u00a0",
    "١١٠١٠٥١٩٩٠٠٥٠٠٠١٠٠",  # Arabic-Indic digits: \d but not [0-9]
    "",
    12345,
    None,
]
ODD_NAMES = [
    "",
    " ",
    " 张三",
    "张三 ",
    "张三\u3000",
    "\u00a0张三",
    "张三\x1f",
    "张三\u0085",
    "张三\u200b",
    "\u180e张三",
    "名" * 61,
    " " + "名" * 60,
    "😀",
    "a\tb",
    7,
    None,
    ["张三"],
]
ODD_DAYS = [
    "2016-6-15",
    "2016-06-15T00:00:00Z",
    "20160615",
    "1983-12-31",
    "2026-02-30",
    "0000-01-01",
    "２０１６-０６-１５",
    " 2016-06-15",
    1465948800,
    True,
    [],
    {},
]
PURPOSES = ["account_opening", "hotel_checkin"]
ODD_PURPOSES = ["", " account_opening", "account_opening ", "x" * 41, "bank", 3, None]
OPERATORS = ["teller-1", "teller-2", "a\tb\\c", "名" * 64]
ODD_OPERATORS = ["", " teller-1", "teller-1 ", "x" * 65, " " * 3, 1, None]


ODD: dict[str, list[Any]] = {
    "id_number": ODD_NUMBERS,
    "name": ODD_NAMES,
    "issued_on": ODD_DAYS,
    "expires_on": ODD_DAYS,
    "purpose": ODD_PURPOSES,
    "operator": ODD_OPERATORS,
}
OPTIONAL: dict[str, list[Any]] = {
    "chip_serial": [None, "C1"],
    "watch": [False, True],
    "fingerprint": [None],
    "extra": [1],
}
good_items = st.fixed_dictionaries(
    {
        "id_number": st.sampled_from(NUMBERS),
        "name": st.sampled_from(NAMES),
        "issued_on": st.sampled_from(DAYS),
        "expires_on": st.sampled_from([*DAYS, None]),
        "purpose": st.sampled_from(PURPOSES),
        "operator": st.sampled_from(OPERATORS),
    }
)


@st.composite
def bodies(draw: st.DrawFn, odd: bool) -> bytes:
    """A batch of good items (sometimes too few for the door), with `odd`: one to three of its
    fields given a value near the field's rules' edge, a field dropped or one more added."""
    batch: list[dict[str, Any]] = draw(st.lists(good_items, min_size=1, max_size=FAST_BATCH_MIN + 6))
    for _ in range(draw(st.integers(1, 3)) if odd else 0):
        item = batch[draw(st.integers(0, len(batch) - 1))]
        how = draw(st.sampled_from(["odd", "odd", "odd", "odd", "drop", "add"]))
        if how == "odd":
            name = draw(st.sampled_from(FIELDS))
            item[name] = draw(st.sampled_from(ODD[name]))
        elif how == "drop":
            item.pop(draw(st.sampled_from(FIELDS)), None)
        else:
            name = draw(st.sampled_from(sorted(OPTIONAL)))
            item[name] = draw(st.sampled_from(OPTIONAL[name]))
    doc: Any = draw(
        st.sampled_from([{"items": batch}, {"items": batch}, {"items": batch, "more": 1}, [batch]])
    )
    ascii_only, spaced = draw(st.booleans()), draw(st.booleans())
    separators = (", ", ": ") if spaced else (",", ":")
    return json.dumps(doc, ensure_ascii=ascii_only, separators=separators).encode()


def lane_columns(body: bytes) -> tuple[Any, ...] | None:
    """What the routes' lane validates the body to, as the door's columns (None: it refuses)."""
    try:
        validated = verify._LANE_BATCH.validate_json(body)["items"]
    except ValidationError:
        return None
    return tuple(tuple(cast(dict[str, Any], item)[f] for item in validated) for f in FIELDS)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies(odd=True))
def test_the_door_takes_only_what_the_lane_takes_and_reads_it_alike(body: bytes) -> None:
    door = parse_batch(body)
    if door is None:
        return
    expected = lane_columns(body)
    assert expected is not None, body
    assert tuple(tuple(column) for column in door) == expected
    # ...and only the six fields (and optional ones sent with their defaults), FAST_BATCH_MIN
    # items or more
    doc = json.loads(body)
    assert len(doc["items"]) >= FAST_BATCH_MIN
    assert all(defaults_only(item) for item in doc["items"])


DEFAULTS = {"chip_serial": None, "watch": False, "fingerprint": None}


def defaults_only(item: dict[str, Any]) -> bool:
    """Whether an item holds the six fields and besides them only optional ones at their
    defaults (what the door takes)."""
    extra = item.keys() - set(FIELDS)
    return set(FIELDS) <= item.keys() and all(
        name in DEFAULTS and item[name] is DEFAULTS[name] for name in extra
    )


GOOD = dict(zip(FIELDS, [NUMBERS[0], NAMES[0], DAYS[0], None, PURPOSES[0], OPERATORS[0]], strict=True))


@pytest.mark.parametrize(
    ("name", "value"),
    [(name, value) for name, values in ODD.items() for value in values]
    + [(name, value) for name, values in OPTIONAL.items() for value in values],
)
def test_each_odd_value_in_a_common_batch(name: str, value: Any) -> None:
    """Every odd value above, alone in a batch the door would take: the door leaves it to the
    routes or reads it as they do."""
    batch = [dict(GOOD) for _ in range(FAST_BATCH_MIN)]
    batch[3][name] = value
    for ascii_only in (True, False):
        body = json.dumps({"items": batch}, ensure_ascii=ascii_only).encode()
        door = parse_batch(body)
        if door is not None:
            assert tuple(tuple(column) for column in door) == lane_columns(body)
            assert defaults_only(batch[3])
        else:  # an optional field at its default is the door's
            assert not (name in DEFAULTS and value is DEFAULTS[name]), (name, value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies(odd=False))
def test_the_door_takes_a_common_batch(body: bytes) -> None:
    doc = json.loads(body)
    door = parse_batch(body)
    if isinstance(doc, dict) and len(doc) == 1 and len(doc["items"]) >= FAST_BATCH_MIN:
        assert door is not None
        assert tuple(tuple(column) for column in door) == lane_columns(body)
    else:
        assert door is None


def test_strip_removes_whatever_pydantic_strips_from_a_name() -> None:
    """The door takes a name that str.strip leaves as it is, as pydantic leaves it: for every
    code point that pydantic's strip removes, str.strip removes it too."""
    hints = typing.get_type_hints(VerifyItem, include_extras=True)
    name = TypeAdapter(hints["name"])
    assert name.json_schema()["maxLength"] == node_module._NAME_MAX
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:
            continue
        text = f"a{chr(code)}"
        if name.validate_python(text) != text:
            assert text.strip() != text, hex(code)


def test_an_unhashable_or_unknown_value_is_left_to_the_routes() -> None:
    item = GOOD
    ok = json.dumps({"items": [item] * FAST_BATCH_MIN}).encode()
    assert parse_batch(ok) is not None
    for key, value in [
        ("issued_on", ["2016-06-15"]),
        ("expires_on", {"a": 1}),
        ("purpose", ["x"]),
        ("operator", {"x": 1}),
        ("issued_on", "2016-06-31"),
    ]:
        bad = json.dumps({"items": [item] * (FAST_BATCH_MIN - 1) + [{**item, key: value}]}).encode()
        assert parse_batch(bad) is None, (key, value)
    assert parse_batch(b"\xff" + ok) is None
    assert parse_batch(ok[:-1]) is None


# -- the node app, with the door and without it ------------------------------------------------------

SETTINGS = Settings(env=Environment.TEST, secret_key="s" * 32, nats_url="nats://unused", nats_prefix="t")
KEY, PREFIX, DIGEST = new_api_key()
UNIT = UnitView("BANK", "a bank", frozenset({"account_opening"}), 1_000_000, True, None)
NOW = dt.datetime(2026, 6, 15, 8, tzinfo=dt.UTC)
CARDS = [
    CardFacts(
        number,
        NAMES[i % 3],
        dt.date(2016, 6, 15),
        None if i % 4 == 0 else dt.date(2026, 6, 15 - i % 2),
        f"C{i}",
        [CardStatus.VALID, CardStatus.REPORTED_LOST, CardStatus.VALID, CardStatus.REPORTED_STOLEN][i % 4],
        flags=[0, 0, BLACKLISTED, CHECK_REQUIRED, 0, BLACKLISTED | CHECK_REQUIRED][i % 6],
        blacklisted_until=dt.date(2027, 1, 1) if i % 12 == 2 else None,
    )
    for i, number in enumerate(NUMBERS)
]


def node_app(door: bool) -> tuple[TestClient, list[Any]]:
    """A node's app as create_node_app makes it, without NATS (its lifespan is not run): the
    snapshot's index and keys installed, a lease held, the check stream's messages captured."""
    app = create_node_app(SETTINGS, clock=FixedClock(NOW))
    if not door:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not cast(Any, BatchDoor)]
    verifier: NodeVerifier = app.state.verifier
    index = CompactIndex(index_key(SETTINGS))
    index.load(CARDS)
    verifier.index = verifier.compact = verifier.node_follower.index = index
    verifier.keyring.install([(PREFIX, DIGEST, UNIT.code, None)], [UNIT], 1)
    verifier.node_follower.lease_until = float("inf")
    log = verifier.stream_log
    log.disabled = True  # recorded at once
    sent: list[Any] = []
    enqueue = log.enqueue
    reader = Sink(SETTINGS, sa.create_engine("sqlite://"))  # the sink's reading of a message
    reader._writer._escapes = _ESCAPES_POSTGRES  # (as the node formats a small request's rows)

    def capture(payload: bytes, n: int, first_id: str) -> int:
        # as the sink reads it (the message itself is sealed with a random nonce)
        sent.append((reader.decode_all(payload, log._salt.hex()), n, first_id))
        return enqueue(payload, n, first_id)

    log.enqueue = capture  # type: ignore[method-assign]
    return TestClient(app), sent


def fixed_ids(n: int) -> list[str]:
    return [f"00000000-0000-4000-8000-{k:012x}" for k in range(n)]


@pytest.fixture(scope="module")
def apps() -> Any:
    with_door, without = node_app(True), node_app(False)
    yield with_door, without
    with_door[0].close()
    without[0].close()


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    body=st.one_of(bodies(odd=False), bodies(odd=True)),
    key=st.sampled_from([KEY, KEY, KEY, "not-a-unit-key"]),
)
def test_a_node_answers_alike_with_the_door_and_without(apps: Any, body: bytes, key: str) -> None:
    answers = []
    for client, sent in apps:
        sent.clear()
        with (
            mock.patch("idguard.scaleout.node.check_ids", fixed_ids),
            mock.patch("idguard.verification.verifier.check_ids", fixed_ids),
        ):
            r = client.post(
                "/api/v1/verify/batch",
                content=body,
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )
        headers = {k: v for k, v in r.headers.items() if k != "x-index-age"}
        answers.append((r.status_code, r.content, headers, list(sent)))
    assert answers[0] == answers[1]


@pytest.mark.parametrize("defaults", [{}, DEFAULTS])
def test_the_door_answers_the_common_batch_itself(apps: Any, defaults: dict[str, Any]) -> None:
    """The door, not the routes, answers a common batch (the test above compares nothing
    otherwise), also with the optional fields sent at their defaults: the lane is not called."""
    (client, sent), _ = apps
    items = [
        {**dict(zip(FIELDS, [c.id_number, c.name, DAYS[0], None, PURPOSES[0], "t"], strict=True)), **defaults}
        for c in CARDS
    ]
    with mock.patch.object(verify._LANE_BATCH, "validate_json", side_effect=AssertionError("the lane")):
        r = client.post(
            "/api/v1/verify/batch",
            content=json.dumps({"items": items}).encode(),
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        )
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == len(CARDS)
    assert sent[-1][1] == len(CARDS)


def test_a_batch_the_check_stream_did_not_take_is_answered_503_alike() -> None:
    """No check stream (JetStream not connected): the door's 503 is the routes' 503, byte for
    byte, and the checks are not acknowledged."""
    body = json.dumps({"items": [GOOD] * FAST_BATCH_MIN}).encode()
    answers = []
    for door in (True, False):
        client, sent = node_app(door)
        client.app.state.verifier.stream_log.disabled = False  # type: ignore[attr-defined]
        r = client.post(
            "/api/v1/verify/batch",
            content=body,
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        )
        assert len(sent) == 1  # checked, then refused before the answer left
        answers.append((r.status_code, r.content, dict(r.headers)))
        assert client.app.state.verifier.stream_log.written == 0  # type: ignore[attr-defined]
    assert answers[0] == answers[1]
    assert answers[0][0] == 503
    assert answers[0][2]["retry-after"] == "5"


@pytest.mark.parametrize("path", ["/api/v1/verify", "/api/v1/verify/batch"])
def test_a_refused_unit_key_on_a_node_is_a_401_saying_so(apps: Any, path: str) -> None:
    """A node has no database to ask why a key is refused (rotated away, revoked, never issued):
    it answers the plain 401, never a 500."""
    (client, _), _ = apps
    other, _, _ = new_api_key()  # well formed, never installed on this node
    r = client.post(path, json={"items": []}, headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == 401, r.text
    assert "unknown API key" in r.json()["detail"]
