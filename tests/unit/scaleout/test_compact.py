"""The compact index answers as CardIndex does (issue 15), over random ledgers: cards issued,
replaced, reported, listed with and without an end date, some before a snapshot (`freeze`, and a
round trip through `dump`/`restore`) and some after it, then random checks of what is printed on
those cards and of near misses."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idguard.registry.lifecycle import CardStatus
from idguard.scaleout.compact import BYTES_PER_CARD_LIMIT, CompactIndex, number_key
from idguard.verification.index import BLACKLISTED, CHECK_REQUIRED, CardFacts, CardIndex

KEY = b"k" * 32
# Few numbers, names and dates, so that cards of one number collide in every field often.
NUMBERS = ["110105199005040014", "11010519900504003X", "440301198001010021", "odd-number"]
NAMES = ["张三", "李四"]
DAYS = [dt.date(2016, 6, 15), dt.date(2016, 6, 16), dt.date(2026, 6, 15), dt.date(2036, 6, 15)]
CHIPS = ["C1", "C2", "C3"]
TODAYS = [dt.date(2026, 6, 14), dt.date(2026, 6, 15), dt.date(2026, 6, 16), dt.date(2040, 1, 1)]

cards = st.builds(
    CardFacts,
    id_number=st.sampled_from(NUMBERS),
    name=st.sampled_from(NAMES),
    issued_on=st.sampled_from(DAYS),
    expires_on=st.one_of(st.none(), st.sampled_from(DAYS)),
    chip_serial=st.sampled_from(CHIPS),
    status=st.sampled_from(list(CardStatus)),
    flags=st.sampled_from([0, BLACKLISTED, CHECK_REQUIRED, BLACKLISTED | CHECK_REQUIRED]),
    blacklisted_until=st.one_of(st.none(), st.sampled_from(TODAYS)),
)
queries = st.tuples(
    st.sampled_from(NUMBERS),
    st.sampled_from(NAMES),
    st.sampled_from(DAYS),
    st.one_of(st.none(), st.sampled_from(DAYS)),
    st.sampled_from(TODAYS),
    st.one_of(st.none(), st.sampled_from(CHIPS)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=st.lists(cards, max_size=12),
    after=st.lists(cards, max_size=12),
    checks=st.lists(queries, min_size=1, max_size=30),
    round_trip=st.booleans(),
)
def test_same_answers_as_card_index(
    before: list[CardFacts], after: list[CardFacts], checks: list[tuple[Any, ...]], round_trip: bool
) -> None:
    reference = CardIndex()
    compact = CompactIndex(KEY)
    for card in before:
        reference.upsert(card)
        compact.upsert(card)
    compact.freeze()
    if round_trip:
        compact, header = CompactIndex.restore(KEY, compact.dump(7, {"stream_seq": 3}))
        assert header == {"seq": 7, "cards": header["cards"], "stream_seq": 3}
    for card in after:
        reference.upsert(card)
        compact.upsert(card)
    assert len(compact) == len(reference)
    for id_number, name, issued_on, expires_on, today, chip in checks:
        expected = reference.check(id_number, name, issued_on, expires_on, today, chip)
        assert compact.check(id_number, name, issued_on, expires_on, today, chip) == expected
        assert compact.blacklisted(id_number, today) == reference.blacklisted(id_number, today)
    # Folding the overlay in changes no answer either.
    compact.freeze()
    for id_number, name, issued_on, expires_on, today, chip in checks:
        expected = reference.check(id_number, name, issued_on, expires_on, today, chip)
        assert compact.check(id_number, name, issued_on, expires_on, today, chip) == expected


def test_the_number_key_is_the_number() -> None:
    assert number_key("110105199005040014") == 11010519900504001 * 11 + 4
    assert number_key("11010519900504001X") == 11010519900504001 * 11 + 10
    assert number_key("11010519900504001x") is None
    assert number_key("1101051990050400") is None
    assert number_key("１10105199005040014") is None  # a full-width digit is not ours to fold


def test_at_most_32_bytes_per_card() -> None:
    n = 1_000_000
    rng = np.random.default_rng(1)
    h = np.sort(rng.integers(0, 2**63, n, dtype=np.uint64))
    index = CompactIndex.from_arrays(
        KEY, h, np.zeros(n, np.uint64), np.zeros(n, np.uint64), np.zeros(n, np.uint32)
    )
    assert index.nbytes() / n <= BYTES_PER_CARD_LIMIT
    assert len(index) == n
