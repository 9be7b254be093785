"""The citizens' pure rules: activation codes, passwords, masking, certificates' sectors,
the retention horizon, and declaration signatures."""

from __future__ import annotations

import base64
import datetime as dt
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idguard.citizens import rules
from idguard.citizens.declarations import DeclarationKeys, canonical, parse_keys
from idguard.core.errors import InvalidField

BIRTH = dt.date(1990, 5, 4)
NUMBER = "11010519900504001X"


def test_a_new_code_has_80_bits_in_four_groups_and_normalises_to_itself() -> None:
    code = rules.new_activation_code()
    groups = code.split("-")
    assert [len(g) for g in groups] == [4, 4, 4, 4]
    assert len(rules.CODE_ALPHABET) ** rules.CODE_SYMBOLS == 2**80
    assert rules.normalise_code(code) == code.replace("-", "")
    assert len({rules.new_activation_code() for _ in range(200)}) == 200


@given(
    st.lists(st.sampled_from(rules.CODE_ALPHABET), min_size=16, max_size=16), st.sampled_from(["-", " ", ""])
)
def test_a_code_typed_in_any_case_with_any_separator_is_the_same_code(symbols: list[str], sep: str) -> None:
    code = "".join(symbols)
    typed = sep.join(code[i : i + 4] for i in range(0, 16, 4)).lower()
    assert rules.normalise_code(typed) == code


def test_misread_letters_are_folded() -> None:
    assert rules.normalise_code("IL0O-UUUU-0000-0000") == "1100VVVV00000000"


@given(st.text(max_size=30))
def test_anything_else_is_not_a_code_or_is_one_in_the_alphabet(text: str) -> None:
    folded = rules.normalise_code(text)
    assert folded is None or (len(folded) == 16 and set(folded) <= set(rules.CODE_ALPHABET))


def test_the_stored_hash_depends_on_the_key() -> None:
    code = "0123456789ABCDEF"
    assert rules.code_hash(b"k1", code) == rules.code_hash(b"k1", code)
    assert rules.code_hash(b"k1", code) != rules.code_hash(b"k2", code)
    assert code not in rules.code_hash(b"k1", code)


@pytest.mark.parametrize(
    ("password", "says"),
    [
        ("short", "at least 10"),
        ("x" * 201, "at most"),
        ("password123", "most common"),
        ("QWERTYUIOP", "most common"),
        ("abababababab", "four different"),
        (f"my{NUMBER}", "id number"),
        ("pw-19900504-x", "birth date"),
        ("hello-04001X!", "id number"),
    ],
)
def test_weak_passwords_are_refused_naming_the_field(password: str, says: str) -> None:
    with pytest.raises(InvalidField) as refused:
        rules.check_password(password, id_number=NUMBER, birth_date=BIRTH)
    assert refused.value.field == "password"
    assert says in refused.value.detail


@given(st.text(alphabet=string.ascii_letters + string.digits + " -", min_size=10, max_size=40))
def test_a_password_is_refused_only_for_a_stated_reason(password: str) -> None:
    lowered = password.lower()
    stated = (
        lowered in rules.common_passwords()
        or len(set(lowered)) < 4
        or NUMBER.lower()[-6:] in lowered
        or "19900504" in lowered
    )
    if stated:
        with pytest.raises(InvalidField):
            rules.check_password(password, id_number=NUMBER, birth_date=BIRTH)
    else:
        rules.check_password(password, id_number=NUMBER, birth_date=BIRTH)


def test_the_bundled_list_is_loaded_lower_case() -> None:
    common = rules.common_passwords()
    assert "qwertyuiop" in common
    assert "woaini1314" in common
    assert all(p == p.lower() for p in common)


@pytest.mark.parametrize(("name", "masked"), [("张三", "张*"), ("欧阳娜娜", "欧***"), ("王", "*")])
def test_names_are_masked_to_the_first_character(name: str, masked: str) -> None:
    assert rules.mask_name(name) == masked


@pytest.mark.parametrize(
    ("purpose", "sector", "allowed"),
    [
        ("rail", "railway", True),
        ("air", "airline", True),
        ("lodging", "hotel", True),
        ("lodging", "Hotel ", True),
        ("rail", "airline", False),
        ("air", "railway", False),
        ("lodging", "bank", False),
        ("rail", "rail", False),
    ],
)
def test_the_units_sector_decides_which_certificates_it_may_accept(
    purpose: str, sector: str, allowed: bool
) -> None:
    assert rules.sector_allows(purpose, sector) is allowed


def test_a_certificate_is_for_today_up_to_a_week_ahead() -> None:
    today = dt.date(2026, 6, 15)
    rules.check_valid_on(today, today)
    rules.check_valid_on(today + dt.timedelta(days=7), today)
    for day in (today - dt.timedelta(days=1), today + dt.timedelta(days=8)):
        with pytest.raises(InvalidField):
            rules.check_valid_on(day, today)


@given(
    st.datetimes(
        min_value=dt.datetime(2001, 1, 1),  # noqa: DTZ001 - hypothesis' bounds are naive
        max_value=dt.datetime(2200, 1, 1),  # noqa: DTZ001
        timezones=st.just(dt.UTC),
    ),
    st.integers(min_value=1, max_value=240),
)
def test_the_retention_horizon_is_that_many_calendar_months_back(now: dt.datetime, months: int) -> None:
    horizon = rules.retention_horizon(now, months)
    assert (now.year * 12 + now.month) - (horizon.year * 12 + horizon.month) == months
    assert horizon.day == min(now.day, horizon.day)
    assert horizon.time() == now.time()
    assert horizon < now


def test_the_horizon_clamps_to_the_end_of_a_short_month() -> None:
    at = dt.datetime(2026, 3, 31, 12, tzinfo=dt.UTC)
    assert rules.retention_horizon(at, 24) == dt.datetime(2024, 3, 31, 12, tzinfo=dt.UTC)
    assert rules.retention_horizon(at, 25) == dt.datetime(2024, 2, 29, 12, tzinfo=dt.UTC)


# --- declarations ----------------------------------------------------------------------------------

SEED = base64.b64encode(b"\x11" * 32).decode()


def _fields(**over: object) -> dict[str, object]:
    return {
        "declaration_no": "LDABC",
        "name_masked": "张*",
        "place": "北京西站",
        "expires_on": None,
        "key_id": "k1",
        **over,
    }


def test_canonical_bytes_are_sorted_compact_utf8_and_ignore_the_signature() -> None:
    fields = _fields()
    assert canonical(fields) == canonical(dict(reversed(list(fields.items()))))
    assert canonical({**fields, "signature": "x"}) == canonical(fields)
    assert canonical({"b": 1, "a": "张"}) == '{"a":"张","b":1}'.encode()


@given(
    st.sampled_from(["declaration_no", "name_masked", "place", "expires_on", "key_id"]),
    st.one_of(st.text(max_size=20), st.none(), st.integers()),
)
def test_any_change_to_a_signed_field_breaks_the_signature(field: str, value: object) -> None:
    keys = DeclarationKeys(parse_keys(f"k1:{SEED}"))
    fields = _fields()
    signed = {**fields, "signature": keys.sign(fields)}
    assert keys.verify(signed)
    changed = {**signed, field: value}
    assert keys.verify(changed) is (value == fields[field])


def test_only_the_first_key_signs_and_every_listed_key_verifies() -> None:
    old = DeclarationKeys(parse_keys(f"k1:{SEED}"))
    signed = {**_fields(), "signature": old.sign(_fields())}
    other = base64.b64encode(b"\x22" * 32).decode()
    rotated = DeclarationKeys(parse_keys(f"k2:{other},k1:{SEED}"))
    assert rotated.signing_key_id == "k2"
    assert rotated.verify(signed)
    with pytest.raises(ValueError, match="names the key"):
        rotated.sign(_fields())  # key_id k1 is not the signing key
    assert not DeclarationKeys(parse_keys(f"k2:{other}")).verify(signed)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("nokey", "expected key_id:base64"),
        ("k1:!!!", "not valid base64"),
        ("k1:AAAA", "needs 32"),
        (f"k1:{SEED},k1:{SEED}", "twice"),
        (f"bad id:{SEED}", "expected key_id"),
    ],
)
def test_bad_key_settings_are_refused_without_echoing_the_key(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as refused:
        parse_keys(text)
    assert SEED not in str(refused.value)
