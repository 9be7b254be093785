"""The one rule for text a request carries (core/text.py): no NUL, no unpaired surrogate."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from idguard.core.text import KEY_FAULT, NUL_FAULT, SURROGATE_FAULT, fault, faults


def test_fault_names_what_cannot_be_stored() -> None:
    assert fault("张三 O'Brien\t\\u0000 😀 김한결") is None
    assert fault("") is None
    assert fault("a\x00b") == NUL_FAULT
    assert fault("\ud800") == SURROGATE_FAULT
    assert fault("x\udfff") == SURROGATE_FAULT
    assert fault("\ud83d\ude00") == SURROGATE_FAULT  # a pair as two code points is still unpaired text
    assert fault("\x00\ud800") == NUL_FAULT


def test_faults_walks_a_json_value_in_document_order() -> None:
    value = json.loads(
        '{"a": "ok", "finder": {"name": "\\u0000", "phone": "\\ud800"},'
        ' "items": [{"operator": "x"}, {"operator": "y\\u0000"}], "n": 1, "\\u0000": 2}'
    )
    assert faults(value) == [
        (("finder", "name"), NUL_FAULT),
        (("finder", "phone"), SURROGATE_FAULT),
        (("items", 1, "operator"), NUL_FAULT),
        ((), KEY_FAULT),
    ]
    assert faults("\x00") == [((), NUL_FAULT)]
    assert faults([1, None, True, 2.5, "fine"]) == []


def test_faults_stops_at_its_limit_and_survives_deep_nesting() -> None:
    assert len(faults(["\x00"] * 500)) == 50
    assert len(faults(["\x00"] * 500, limit=3)) == 3
    deep: object = "\x00"
    for _ in range(5_000):  # deeper than the recursion limit (json.loads stops near it)
        deep = [deep]
    (path, why) = faults(deep)[0]
    assert len(path) == 5_000
    assert why == NUL_FAULT


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, categories=None), max_size=30))
def test_fault_is_exactly_what_utf8_and_postgresql_refuse(text: str) -> None:
    try:
        text.encode("utf-8")
        encodable = True
    except UnicodeEncodeError:
        encodable = False
    assert (fault(text) is None) == (encodable and "\x00" not in text)
