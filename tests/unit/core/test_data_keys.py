"""The key ring sealing personal data (core.sealing.KeyRing): what it seals opens only with the
same key and the same place, whatever the text; rotation keeps old values readable."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idguard.core.sealing import KeyRing, KeyRingError, sealing_context

K1, K2 = b"\x01" * 32, b"\x02" * 32
HERE = sealing_context("persons", "name", "0b8e1c52-5f43-4d4f-9a53-1f1d2b3c4d5e")


@given(st.text(max_size=300))
def test_any_text_opens_as_written_and_never_shows_in_the_ciphertext(text: str) -> None:
    ring = KeyRing({"k1": K1})
    sealed = ring.seal(text, context=HERE)
    assert ring.open("k1", sealed, context=HERE) == text
    if len(text.encode()) >= 4:
        assert text.encode() not in sealed


@given(st.text(min_size=1, max_size=50), st.sampled_from(["table", "column", "row"]))
def test_a_value_opens_only_in_its_own_place(text: str, moved: str) -> None:
    ring = KeyRing({"k1": K1})
    sealed = ring.seal(text, context=HERE)
    place = {"table": "persons", "column": "name", "row": "0b8e1c52-5f43-4d4f-9a53-1f1d2b3c4d5e"}
    place[moved] = "elsewhere"
    with pytest.raises(KeyRingError, match="moved from another row"):
        ring.open("k1", sealed, context=sealing_context(place["table"], place["column"], place["row"]))


def test_rotation_seals_with_the_first_key_and_opens_with_any() -> None:
    old = KeyRing({"k1": K1})
    rotated = KeyRing({"k2": K2, "k1": K1})
    before = old.seal("张三", context=HERE)
    assert rotated.active_key_id == "k2"
    assert rotated.open("k1", before, context=HERE) == "张三"
    assert rotated.open("k2", rotated.seal("张三", context=HERE), context=HERE) == "张三"


def test_wrong_or_missing_key_and_tampering_are_named_errors() -> None:
    sealed = KeyRing({"k1": K1}).seal("李四", context=HERE)
    with pytest.raises(KeyRingError, match="'k1' cannot be opened: that key is not in IDGUARD_DATA_KEYS"):
        KeyRing({"k2": K2}).open("k1", sealed, context=HERE)
    with pytest.raises(KeyRingError, match="failed authentication"):
        KeyRing({"k1": K2}).open("k1", sealed, context=HERE)
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(KeyRingError, match="failed authentication"):
        KeyRing({"k1": K1}).open("k1", flipped, context=HERE)
    with pytest.raises(KeyRingError, match="truncated"):
        KeyRing({"k1": K1}).open("k1", sealed[:20], context=HERE)


def test_a_ring_needs_keys_of_32_bytes() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        KeyRing({})
    with pytest.raises(ValueError, match="'short' has 16 bytes, needs 32"):
        KeyRing({"short": b"x" * 16})
