"""A verifier node's batch path (issue 15) held to the per-check code it replaces, over random
ledgers: `CompactIndex.check_many` answers what `check` answers for each check, and
`NodeVerifier.check_items` gives the answers, and check messages that the sink reads as the
row lines, watches and signals, that `Verifier.check_items` gives for the same batch (same clock,
same check ids)."""

from __future__ import annotations

import datetime as dt
from typing import Any
from unittest import mock

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idguard.config import Environment, Settings
from idguard.core.clock import FixedClock
from idguard.registry.lifecycle import CardStatus
from idguard.scaleout.compact import ANSWER_TABLE, CompactIndex
from idguard.scaleout.node import FAST_BATCH_MIN, NodeVerifier
from idguard.scaleout.relay import index_key
from idguard.scaleout.sink import Sink
from idguard.verification.index import BLACKLISTED, CHECK_REQUIRED, CardFacts, Result
from idguard.verification.runtime.checklog import _ESCAPES_POSTGRES
from idguard.verification.runtime.keyring import UnitView
from idguard.verification.verifier import Item, Verifier

KEY = b"k" * 32
# Many numbers with one card (numpy's case) beside a few with several, one of another shape (the
# overlay's) and numbers no card has.
SINGLE = [f"1101051990050{i:04d}{'0123456789X'[i % 11]}" for i in range(80)]
SHARED = ["110105199005040014", "11010519900504003X"]
UNKNOWN = ["440301198001010021", "44030119800101002X", "4403011980010100x1", "odd-number"]
NAMES = ["张三", "李四", "O'Brien"]
DAYS = [dt.date(2016, 6, 15), dt.date(2016, 6, 16), dt.date(2026, 6, 15), dt.date(2036, 6, 15)]
CHIPS = ["C1", "C2"]
TODAYS = [dt.date(2026, 6, 14), dt.date(2026, 6, 15), dt.date(2026, 6, 16), dt.date(2040, 1, 1)]
FLAGS = [0, 0, 0, BLACKLISTED, CHECK_REQUIRED, BLACKLISTED | CHECK_REQUIRED]

cards = st.builds(
    CardFacts,
    id_number=st.one_of(st.sampled_from(SINGLE), st.sampled_from([*SHARED, "odd-number"])),
    name=st.sampled_from(NAMES),
    issued_on=st.sampled_from(DAYS),
    expires_on=st.one_of(st.none(), st.sampled_from(DAYS)),
    chip_serial=st.sampled_from(CHIPS),
    status=st.sampled_from(list(CardStatus)),
    flags=st.sampled_from(FLAGS),
    blacklisted_until=st.one_of(st.none(), st.sampled_from(TODAYS)),
)
numbers = st.sampled_from(SINGLE + SHARED + UNKNOWN)
checks = st.tuples(
    numbers,
    st.sampled_from(NAMES),
    st.sampled_from(DAYS),
    st.one_of(st.none(), st.sampled_from(DAYS)),
    st.one_of(st.none(), st.none(), st.sampled_from(CHIPS)),
)


def ledger(
    before: list[CardFacts], after: list[CardFacts], round_trip: bool, key: bytes = KEY
) -> CompactIndex:
    """Cards in the arrays (before a snapshot), then in the overlay (after it)."""
    index = CompactIndex(key)
    for card in before:
        index.upsert(card)
    index.freeze()
    if round_trip:
        index, _ = CompactIndex.restore(key, index.dump(1, {}))
    for card in after:
        index.upsert(card)
    return index


def printed(data: st.DataObject, on: list[CardFacts], other: st.SearchStrategy[Any], n: int) -> list[Any]:
    """`n` checks: half of them what is printed on one of the cards `on` (their chip serial
    sometimes), the others from `other`."""
    out = []
    for _ in range(n):
        if on and data.draw(st.booleans()):
            card = data.draw(st.sampled_from(on))
            chip = data.draw(st.sampled_from([None, None, card.chip_serial]))
            out.append((card.id_number, card.name, card.issued_on, card.expires_on, chip))
        else:
            out.append(data.draw(other))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=st.lists(cards, max_size=20),
    after=st.lists(cards, max_size=6),
    size=st.integers(1, 40),
    today=st.sampled_from(TODAYS),
    round_trip=st.booleans(),
    with_chips=st.booleans(),
    data=st.data(),
)
def test_check_many_answers_as_check(
    before: list[CardFacts],
    after: list[CardFacts],
    size: int,
    today: dt.date,
    round_trip: bool,
    with_chips: bool,
    data: st.DataObject,
) -> None:
    index = ledger(before, after, round_trip)
    batch = printed(data, before + after, checks, size)
    ids, names, issued, expires, chips = zip(*batch, strict=True)
    got = index.check_many(ids, names, issued, expires, today, chips if with_chips else None)
    for k, (id_number, name, issued_on, expires_on, chip) in zip(got.tolist(), batch, strict=True):
        expected = index.check(id_number, name, issued_on, expires_on, today, chip if with_chips else None)
        assert ANSWER_TABLE[k] == expected


def test_check_many_of_an_empty_index_and_of_nothing() -> None:
    index = CompactIndex(KEY)
    assert index.check_many([], [], [], [], TODAYS[0]).tolist() == []
    got = index.check_many(SINGLE[:3], NAMES, DAYS[:3], [None] * 3, TODAYS[0])
    assert [ANSWER_TABLE[k] for k in got.tolist()] == [(Result.MISMATCH, None, 0)] * 3


# -- the node's batch path against Verifier.check_items ---------------------------------------------

OPERATORS = ["teller-1", "teller-2", "a\tb\\c"]
PURPOSES = ["account_opening", "hotel_checkin"]
UNIT = UnitView("BANK\t1", "a bank", frozenset(PURPOSES), 1000, True, None)
requests = st.tuples(st.sampled_from(PURPOSES), st.sampled_from(OPERATORS))
# What the API admits: numbers of 18 characters (a batch with another goes the plain way whole).
node_checks = st.tuples(
    st.sampled_from([n for n in SINGLE + SHARED + UNKNOWN if len(n) == 18]),
    st.sampled_from(NAMES),
    st.sampled_from(DAYS),
    st.one_of(st.none(), st.sampled_from(DAYS)),
    st.one_of(st.none(), st.none(), st.sampled_from(CHIPS)),
)
SETTINGS = Settings(env=Environment.TEST, secret_key="s" * 32, nats_url="nats://unused", nats_prefix="t")


def run(verifier: NodeVerifier, plain: bool, batch: list[Item]) -> tuple[list[str], list[Any]]:
    """The answers, and what reached the check stream's log as the sink reads it (row lines,
    watches, signals; count, first id), with the check ids of a fixed random draw."""
    recorded: list[Any] = []
    log = verifier.stream_log
    reader = Sink(SETTINGS, sa.create_engine("sqlite://"))  # the sink's reading of a message
    reader._writer._escapes = _ESCAPES_POSTGRES  # (as the node formats a small request's rows)

    def capture(payload: bytes, n: int, first_id: str) -> int:
        recorded.append((reader.decode_all(payload, log._salt.hex()), n, first_id))
        return 0

    with (
        mock.patch.object(log, "enqueue", capture),
        mock.patch("idguard.verification.verifier.token_bytes", lambda n: bytes(range(n))),
    ):
        answers = Verifier.check_items(verifier, UNIT, batch) if plain else verifier.check_items(UNIT, batch)
    return answers, recorded


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=st.lists(cards, max_size=20),
    after=st.lists(cards, max_size=6),
    size=st.integers(FAST_BATCH_MIN, 40),
    at=st.sampled_from(TODAYS),
    hour=st.sampled_from([0, 15, 16, 23]),  # 16:00 UTC is the next day in China
    one_operator=st.booleans(),
    data=st.data(),
)
def test_node_batch_path_equals_the_plain_path(
    before: list[CardFacts],
    after: list[CardFacts],
    size: int,
    at: dt.date,
    hour: int,
    one_operator: bool,
    data: st.DataObject,
) -> None:
    batch: list[Item] = []
    on = [card for card in before + after if len(card.id_number) == 18]
    for number, name, issued_on, expires_on, chip in printed(data, on, node_checks, size):
        # the common batch has one purpose and operator: one head for every row line
        purpose, operator = (PURPOSES[0], OPERATORS[0]) if one_operator else data.draw(requests)
        batch.append((number, name, issued_on, expires_on, purpose, operator, chip, False))
    now = dt.datetime(at.year, at.month, at.day, hour, tzinfo=dt.UTC)
    verifier = NodeVerifier(SETTINGS, clock=FixedClock(now))
    verifier.index = verifier.compact = ledger(before, after, False, index_key(SETTINGS))
    plain_answers, plain_log = run(verifier, True, batch)
    fast_answers, fast_log = run(verifier, False, batch)
    assert fast_answers == plain_answers
    assert fast_log == plain_log


def test_a_watch_or_a_small_request_takes_the_plain_path() -> None:
    verifier = NodeVerifier(SETTINGS, clock=FixedClock(dt.datetime(2026, 6, 15, 8, tzinfo=dt.UTC)))
    item: Item = (SINGLE[0], NAMES[0], DAYS[0], None, PURPOSES[0], OPERATORS[0], None, False)
    with mock.patch.object(
        CompactIndex, "check_many", autospec=True, side_effect=CompactIndex.check_many
    ) as many:
        verifier.check_items(UNIT, [item] * (FAST_BATCH_MIN - 1))
        verifier.check_items(UNIT, [item] * FAST_BATCH_MIN + [(*item[:7], True)])
        assert not many.called
        verifier.check_items(UNIT, [item] * FAST_BATCH_MIN)
        assert many.called
