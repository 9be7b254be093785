"""The console's small rules with many cases: choosing a language from any header, and reading
a fingerprint file in either form a scanner saves."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idguard.console import i18n
from idguard.console.capture import record_text
from idguard.core.errors import InvalidField
from tests import prints


@given(st.text(max_size=300))
def test_any_accept_language_gives_a_supported_language(header: str) -> None:
    assert i18n.negotiate(header) in i18n.LANGUAGES


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("en-US,en;q=0.9", "en"),
        ("zh-TW,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("en;q=0.2, zh;q=0.8", "zh-CN"),
        ("de, fr;q=0.9", "zh-CN"),
        ("en;q=0, zh;q=0", "zh-CN"),
        ("*", "zh-CN"),
    ],
)
def test_negotiation(header: str, expected: str) -> None:
    assert i18n.negotiate(header) == expected


def test_a_capture_file_raw_or_base64() -> None:
    raw = prints.record(5, 1)
    text = base64.b64encode(raw).decode()
    assert record_text(raw, field="f") == text
    assert record_text(text.encode() + b"\n", field="f") == text
    for bad in (b"", b"hello", base64.b64encode(b"not a record"), b"\xff" * 10):
        with pytest.raises(InvalidField):
            record_text(bad, field="f")
    with pytest.raises(InvalidField):
        record_text(b"FMR\x00" + b"0" * 70_000, field="f")


@given(st.binary(max_size=200))
def test_no_file_crashes_the_reader(data: bytes) -> None:
    if data.startswith(b"FMR\x00"):
        assert record_text(data, field="f") == base64.b64encode(data).decode()
        return
    try:
        accepted = base64.b64decode(data.strip(), validate=True).startswith(b"FMR\x00")
    except ValueError:
        accepted = False
    if accepted:
        assert record_text(data, field="f")
        return
    with pytest.raises(InvalidField) as refused:
        record_text(data, field="f")
    assert refused.value.field == "f"
