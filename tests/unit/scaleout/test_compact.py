"""The compact index answers as CardIndex does (issue 15), over random ledgers: cards issued,
replaced, reported, listed with and without an end date, some before a snapshot (`freeze`, and a
round trip through `dump`/`restore`) and some after it, then random checks of what is printed on
those cards and of near misses."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from siphashc import siphash

from idguard.registry.lifecycle import CardStatus
from idguard.scaleout.compact import BYTES_PER_CARD_LIMIT, CompactIndex, Hasher, SnapshotFormatError
from idguard.verification.index import BLACKLISTED, CHECK_REQUIRED, CardFacts, CardIndex

KEY = b"k" * 32
# Few numbers, names and dates, so that cards of one number collide in every field often.
NUMBERS = ["110105199005040014", "11010519900504003X", "440301198001010021", "odd-number", "a\ud800"]
NAMES = ["张三", "李四", "王\udc80"]  # a lone surrogate: JSON can carry one
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
        assert header["cards"] == len(reference)
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


def test_the_keyed_hash_is_siphash_2_4() -> None:
    # The reference vector of SipHash-2-4 (Aumasson and Bernstein's paper, appendix A): key
    # 00..0f, message 00..0e, out a129ca6149be45e5 (read little-endian).
    assert siphash(bytes(range(16)), bytes(range(15))) == 0xA129CA6149BE45E5
    hasher = Hasher(KEY)
    assert hasher.number("110105199005040014") == siphash(hasher.number_key, b"110105199005040014")
    assert hasher.name("张三") == siphash(hasher.name_key, "张三".encode())
    assert hasher.chip("C1") == siphash(hasher.chip_key, b"C1") & 0xFFFFFFFF
    assert len({hasher.number_key, hasher.name_key, hasher.chip_key}) == 3  # a key each
    assert Hasher(b"j" * 32).number("110105199005040014") != hasher.number("110105199005040014")
    lone = "王\udc80"
    assert hasher.name(lone) == siphash(hasher.name_key, lone.encode("utf-8", "surrogatepass"))
    assert list(hasher.names(["张三", lone])) == [hasher.name("张三"), hasher.name(lone)]
    assert list(hasher.numbers(["110105199005040014", "a\ud800"])) == [
        hasher.number("110105199005040014"),
        hasher.number("a\ud800"),
    ]


def test_a_snapshot_holds_no_id_number_or_name() -> None:
    index = CompactIndex(KEY)
    card = CardFacts(
        id_number="110105199005040014",
        name="张三",
        issued_on=dt.date(2016, 6, 15),
        expires_on=dt.date(2036, 6, 15),
        chip_serial="C1",
        status=CardStatus.VALID,
        flags=BLACKLISTED,
        blacklisted_until=dt.date(2027, 1, 1),
    )
    index.upsert(card)
    blob = index.dump(1, {})
    for text in ("110105199005040014", "11010519900504001"):
        assert text.encode() not in blob
    assert (11010519900504001 * 11 + 4).to_bytes(8, "little") not in blob  # nor as a number
    assert "张三".encode() not in blob
    restored, _ = CompactIndex.restore(KEY, blob)
    assert restored.blacklisted(card.id_number, dt.date(2027, 1, 1))
    assert not restored.blacklisted(card.id_number, dt.date(2027, 1, 2))
    assert (
        restored.check(card.id_number, "张三", card.issued_on, card.expires_on, dt.date(2026, 1, 1))[0]
        == "valid"
    )


def test_a_snapshot_of_another_format_is_refused() -> None:
    blob = CompactIndex(KEY).dump(1, {})
    header, rest = blob.split(b"\n", 1)
    older = header.replace(b'"format":2,', b"")  # format 1 wrote none
    assert older != header
    with pytest.raises(SnapshotFormatError, match="format 1"):
        CompactIndex.restore(KEY, older + b"\n" + rest)


def test_at_most_32_bytes_per_card() -> None:
    n = 1_000_000
    rng = np.random.default_rng(1)
    h = np.sort(rng.integers(0, 2**63, n, dtype=np.uint64))
    index = CompactIndex.from_arrays(
        KEY, h, np.zeros(n, np.uint64), np.zeros(n, np.uint64), np.zeros(n, np.uint32)
    )
    assert index.nbytes() / n <= BYTES_PER_CARD_LIMIT
    assert len(index) == n
