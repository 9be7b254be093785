"""The offline set, pure: exact over its universe, 2^-k outside it, deltas in order, signatures."""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idguard.offline import fuse, sets, signing

BUILT_AT = dt.datetime(2026, 6, 15, 2, 0, tzinfo=dt.UTC)
TODAY = dt.date(2026, 6, 15)
KEYS = signing.SigningKeys({"t1": bytes(range(32))})
PUBLIC = {k.key_id: k.public_key for k in KEYS.public()}


def key(i: int) -> bytes:
    return f"1101051990010{i % 100000:05d}|{i:032X}|20360101".encode()


def build(universe: list[bytes], valid: list[bool], *, k: int = 16, salt: bytes | None = None) -> bytes:
    built = sets.build(
        fuse.key_array(universe),
        np.array(valid, dtype=bool),
        salt=salt or os.urandom(16),
        k=k,
        version=7,
        generation=1,
        built_at=BUILT_AT,
        today=TODAY,
    )
    return KEYS.sign_file(sets.SNAPSHOT_MAGIC, built.header, built.body)


def load(data: bytes) -> sets.OfflineSet:
    _, header, body = signing.verify_file(data, PUBLIC)
    return sets.OfflineSet.from_snapshot(header, body)


def delta(current: sets.OfflineSet, changes: list[sets.Change], start: int, end: int) -> bytes:
    built = sets.build_delta(
        changes, salt=current.salt, generation=1, from_version=start, to_version=end, built_at=BUILT_AT
    )
    return KEYS.sign_file(sets.DELTA_MAGIC, built.header, built.body)


def apply(current: sets.OfflineSet, data: bytes) -> None:
    _, header, body = signing.verify_file(data, PUBLIC)
    current.apply(header, body)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.booleans(), min_size=0, max_size=400),
    st.integers(min_value=8, max_value=20),
    st.binary(min_size=16, max_size=16),
)
def test_exact_over_the_whole_universe(valid: list[bool], k: int, salt: bytes) -> None:
    universe = [key(i) for i in range(len(valid))]
    current = load(build(universe, valid, k=k, salt=salt))
    assert current.contains_keys(universe).tolist() == valid
    assert [current.contains_key(k) for k in universe] == valid  # the one-key path agrees
    assert current.header["exceptions"] <= len(valid)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.booleans(), min_size=1, max_size=200),
    st.lists(st.lists(st.tuples(st.integers(0, 260), st.booleans()), max_size=20), max_size=6),
)
def test_deltas_keep_it_exact(valid: list[bool], rounds: list[list[tuple[int, bool]]]) -> None:
    """Cards change validity (both ways) and new cards are issued (indices past the universe)."""
    universe = [key(i) for i in range(len(valid))]
    truth = {key(i): v for i, v in enumerate(valid)}
    current = load(build(universe, valid))
    version = 7
    for changes in rounds:
        latest = dict(changes)
        apply(
            current, delta(current, [sets.Change(key(i), v) for i, v in latest.items()], version, version + 3)
        )
        version += 3
        truth.update({key(i): v for i, v in latest.items()})
        keys = list(truth)
        assert current.contains_keys(keys).tolist() == [truth[k] for k in keys]
        assert [current.contains_key(k) for k in keys] == [truth[k] for k in keys]
        assert current.version == version


def test_a_forged_key_passes_at_about_two_to_the_minus_k() -> None:
    """Keys outside the universe (forged chip serials): valid at about 2^-k, k = 8 and 16."""
    universe = [key(i) for i in range(20_000)]
    valid = [i % 5 < 2 for i in range(20_000)]  # 40 % valid
    forged = [f"11010519900101{i % 10000:04d}|F{i:031X}|20360101".encode() for i in range(400_000)]
    for k in (8, 16):
        current = load(build(universe, valid, k=k))
        answers = current.contains_keys(forged)
        assert [current.contains_key(k) for k in forged[:20_000]] == answers[:20_000].tolist()
        rate = answers.mean()
        expected = 2.0**-k
        # 400,000 trials: within 4 standard deviations of 2^-k (about 1563 ± 156 for k = 8)
        sd = (expected * (1 - expected) / len(forged)) ** 0.5
        assert abs(rate - expected) <= 4 * sd + 1e-6, (k, rate, expected)


def test_size_is_near_the_lower_bound() -> None:
    n = 200_000
    universe = [key(i) for i in range(n)]
    valid = [i % 5 < 2 for i in range(n)]
    data = build(universe, valid)
    bound = sets.lower_bound_bits(n, sum(valid), 16) / 8
    assert len(data) <= 1.15 * bound, len(data) / bound


def test_expiry_is_applied_by_the_reader() -> None:
    expiring = b"110105199001011232|00AA|20260620"
    current = load(build([expiring], [True]))
    assert current.check("110105199001011232", "00aa", dt.date(2026, 6, 20), dt.date(2026, 6, 20))
    assert not current.check("110105199001011232", "00aa", dt.date(2026, 6, 20), dt.date(2026, 6, 21))
    # another expiry date than the card's own matches nothing
    assert not current.check("110105199001011232", "00aa", dt.date(2036, 6, 20), dt.date(2026, 6, 20))
    # text no card has
    assert not current.check("110105199001011232", "芯片", None, TODAY)
    assert sets.card_key("1", "x" * 80, None) is None


def test_a_delta_must_follow_the_version() -> None:
    universe = [key(i) for i in range(50)]
    current = load(build(universe, [True] * 50))
    first = delta(current, [sets.Change(key(1), False)], 7, 9)
    second = delta(current, [sets.Change(key(1), True)], 9, 12)
    with pytest.raises(sets.BadFile, match="starts at version 9"):
        apply(current, second)  # out of order: the set is at 7
    apply(current, first)
    with pytest.raises(sets.BadFile, match="starts at version 7"):
        apply(current, first)  # twice
    apply(current, second)
    assert current.version == 12
    assert current.contains_keys([key(1)])[0]
    other = sets.build_delta(
        [], salt=os.urandom(16), generation=2, from_version=12, to_version=13, built_at=BUILT_AT
    )
    with pytest.raises(sets.BadFile, match="another generation"):
        apply(current, KEYS.sign_file(sets.DELTA_MAGIC, other.header, other.body))


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_any_altered_byte_is_refused(data: st.DataObject) -> None:
    universe = [key(i) for i in range(30)]
    signed = build(universe, [i % 2 == 0 for i in range(30)], salt=bytes(16))
    current = load(signed)
    signed_delta = delta(current, [sets.Change(key(3), False)], 7, 8)
    for original in (signed, signed_delta):
        at = data.draw(st.integers(0, len(original) - 1))
        flip = data.draw(st.integers(1, 255))
        altered = bytearray(original)
        altered[at] ^= flip
        with pytest.raises(sets.BadFile):
            signing.verify_file(bytes(altered), PUBLIC)
    with pytest.raises(sets.BadFile, match="unknown key"):
        signing.verify_file(signed, {"other": PUBLIC["t1"]})
    with pytest.raises(sets.BadFile):
        signing.verify_file(signed[:-1], PUBLIC)


def test_keys_from_configuration() -> None:
    import base64

    seed = base64.b64encode(bytes(32)).decode()
    assert list(signing.parse_keys(f"new:{seed},old:{seed}")) == ["new", "old"]
    for bad in ("nocolon", f"a:{seed},a:{seed}", "a:!!", "a:" + base64.b64encode(b"short").decode()):
        with pytest.raises(ValueError, match="IDGUARD_OFFLINE_KEYS") as info:
            signing.parse_keys(bad)
        assert seed not in str(info.value)


def test_bits_pack_both_ways() -> None:
    rng = np.random.default_rng(3)
    for k in (1, 5, 8, 13, 16, 21, 32):
        values = rng.integers(0, 2**k, size=1001, dtype=np.uint64).astype(np.uint32)
        assert (fuse.unpack_bits(fuse.pack_bits(values, k), 1001, k) == values).all()
