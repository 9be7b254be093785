"""The verification hot path's shortcuts, each held to the slower code it replaces.

- Batch items are validated as `VerifyItem` (a TypedDict, one call per batch), single checks
  and the error wording stay with `VerifyIn`: the two must agree on every item, accepted or not,
  and on the normalised values.
- The routes' fast lane validates the raw JSON body in one pass (`validate_json`); whatever it
  accepts, FastAPI's way (`json.loads`, then the declared models) must accept with the same
  values (what the lane declines, FastAPI's way answers as before).
- Check ids come from one random draw per request: distinct, valid version-4 UUID strings.
- The check log's HMAC with precomputed key states equals `hmac.new`.
- `CardIndex.check` with the several-cards loop inlined answers as the loop it replaced.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from idguard.registry.lifecycle import CardStatus
from idguard.verification.index import _ANSWERS as ANSWERS
from idguard.verification.index import _CHIP_SHIFT as CHIP_SHIFT
from idguard.verification.index import _DAY_MASK as DAY_MASK
from idguard.verification.index import _EPOCH as EPOCH
from idguard.verification.index import _EXPIRED as EXPIRED
from idguard.verification.index import _H32 as H32
from idguard.verification.index import _MATCH_MASK, CardFacts, CardIndex, Result
from idguard.verification.index import _MISMATCH as MISMATCH
from idguard.verification.runtime.checklog import IdHasher, id_hash
from idguard.verification.schemas import (
    FIRST_CARDS,
    VerifyBatchIn,
    VerifyBatchItems,
    VerifyIn,
    VerifyItem,
    as_item,
)
from idguard.verification.verifier import check_ids

ITEM = TypeAdapter(VerifyItem)
ITEMS = TypeAdapter(list[VerifyItem])
BATCH = TypeAdapter(VerifyBatchItems)
FIELDS = list(VerifyIn.model_fields)

# -- generated items: mostly almost right, often subtly wrong ------------------------------------

# Pydantic strips Unicode White_Space; Python's str.strip() would also strip U+001C..U+001F;
# U+200B and U+FEFF are stripped by neither.
SPACES = st.sampled_from([" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x85", "\xa0", "\u3000", "\u2003", "\x1c", "\x1f", "\u200b", "\ufeff"])  # fmt: skip
padding = st.lists(SPACES, max_size=2).map("".join)
stripped = st.lists(st.sampled_from([" ", "\t", "\n", "\xa0", "\u3000"]), max_size=2).map("".join)
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
# Any code point, lone surrogates included (json.loads makes them from "\ud800" escapes).
any_text = st.text(alphabet=st.characters(codec=None, categories=None), max_size=70)
digits17 = st.text(alphabet="0123456789", min_size=17, max_size=17)
FULL_WIDTH = str.maketrans("0123456789Xx", "０１２３４５６７８９Ｘｘ")
id_numbers = st.one_of(
    st.tuples(padding, digits17, st.sampled_from("0123456789Xx"), padding).map("".join),
    st.tuples(digits17, st.sampled_from(["X", "x", "Y", "١", "٣X", ""])).map("".join),
    # Full-width digits, whole or in part: the same number as in ASCII (one normalisation).
    st.tuples(padding, digits17, st.sampled_from("0123456789Xx"), padding)
    .map("".join)
    .flatmap(lambda s: st.integers(0, len(s)).map(lambda k: s[:k] + s[k:].translate(FULL_WIDTH))),
    any_text,
    junk,
)
names = st.one_of(
    st.tuples(
        padding, st.sampled_from(["张三", "欧阳明远", "O'Brien", "a", "x" * 60, "x" * 61, "\x00"]), padding
    ).map("".join),
    any_text,
    padding,
    junk,
)
days = st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31))
card_days = st.dates(min_value=FIRST_CARDS, max_value=dt.date(9999, 12, 31))  # a well-formed card date
dates = st.one_of(
    days.map(dt.date.isoformat),
    days.map(lambda d: d.isoformat().replace("-", "")),  # 20150301
    days.map(lambda d: f"{d.isocalendar()[0]:04d}-W{d.isocalendar()[1]:02d}-{d.isocalendar()[2]}"),
    days.map(lambda d: d.isoformat() + "T00:00:00"),
    days.map(lambda d: d.isoformat() + "T00:00:00Z"),
    days.map(lambda d: d.isoformat() + "T08:30:00+08:00"),
    st.tuples(padding, days.map(dt.date.isoformat), padding).map("".join),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\Z"),  # mostly impossible dates
    st.sampled_from(["0000-01-01", "2015-02-29", "2016-02-29", "2015-13-01", "１９９０-01-01", ""]),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(min_value=-1e12, max_value=1e12),
    junk,
)
purposes = st.one_of(
    st.sampled_from(["account_opening", "hotel_checkin", "", "x" * 40, "x" * 41]), any_text, junk
)
operators = st.one_of(
    st.tuples(padding, st.sampled_from(["teller-7", "a\tb", "\\", "x" * 64, "x" * 65]), padding).map("".join),
    any_text,
    padding,
    junk,
)
chips = st.one_of(
    st.none(),
    st.tuples(padding, st.text(alphabet="0123456789abcdefABCDEF", max_size=34), padding).map("".join),
    st.sampled_from(["ß", "ǆ", "ﬁ", "İ", "\u0345"]),
    any_text,
    junk,
)
fingerprints = st.one_of(st.none(), st.sampled_from(["", "Rk1SACAyMAA=", "%%%"]), any_text, junk)
watches = st.one_of(
    st.booleans(), st.sampled_from([0, 1, 2, 0.0, 1.0, "true", "yes", "off", "no", "1", "nope", None]), junk
)
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "id_number": id_numbers,
    "name": names,
    "issued_on": dates,
    "expires_on": st.one_of(st.none(), dates),
    "purpose": purposes,
    "operator": operators,
    "chip_serial": chips,
    "fingerprint": fingerprints,
    "watch": watches,
}
REQUIRED = ["id_number", "name", "issued_on", "expires_on", "purpose", "operator"]


@st.composite
def items(draw: st.DrawFn, *, well_formed: bool = False) -> dict[str, Any]:
    """An item dict: well formed; or one such with a field or two replaced by an odd value (or
    removed); or anything: every required field usually there, optional ones sometimes, an extra
    field now and then, each value from its field's mix of good, odd and wrong."""
    if not well_formed and draw(st.booleans()):
        item = draw(items(well_formed=True))
        for field in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=2)):
            if draw(st.floats(0, 1)) < 0.1:
                item.pop(field, None)
            else:
                item[field] = draw(FIELD_VALUES[field])
        return item
    if well_formed:
        item: dict[str, Any] = {
            "id_number": draw(
                st.tuples(stripped, digits17, st.sampled_from("0123456789X"), stripped).map("".join)
            ),
            "name": draw(st.sampled_from([" 张三", "欧阳明远", "O'Brien\u3000"])),
            "issued_on": draw(card_days.map(dt.date.isoformat)),
            "expires_on": draw(st.one_of(st.none(), card_days.map(dt.date.isoformat))),
            "purpose": "account_opening",
            "operator": draw(st.sampled_from(["teller-7", " batch job ", "柜员\t"])),
        }
        if draw(st.booleans()):
            item["chip_serial"] = draw(
                st.tuples(stripped, st.text(alphabet="0123456789abcdefABCDEF", max_size=32), stripped).map(
                    "".join
                )
            )
        if draw(st.booleans()):
            item["watch"] = draw(st.booleans())
        return item
    item = {}
    for field in FIELDS:
        if draw(st.floats(0, 1)) < (0.93 if field in REQUIRED else 0.4):
            item[field] = draw(FIELD_VALUES[field])
    if draw(st.floats(0, 1)) < 0.05:
        item[draw(st.sampled_from(["extra", "ID_NUMBER", "fingerprints"]))] = draw(junk)
    return item


def model_values(model: VerifyIn) -> tuple[Any, ...]:
    return (*as_item(VerifyItem(**model.model_dump())), model.fingerprint)  # type: ignore[typeddict-item]


def item_values(item: VerifyItem) -> tuple[Any, ...]:
    return (*as_item(item), item.get("fingerprint"))


def verdict(validate: Any, value: Any) -> tuple[bool, Any]:
    try:
        return True, validate(value)
    except ValidationError as exc:
        return False, exc
    except ValueError:  # json.loads: not JSON (FastAPI's 422 "JSON decode error")
        return False, None


# -- VerifyItem (batch items) and VerifyIn (single checks, error wording) ------------------------


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items())
def test_verify_item_agrees_with_verify_in(raw: dict[str, Any]) -> None:
    model_ok, model = verdict(VerifyIn.model_validate, raw)
    item_ok, item = verdict(ITEM.validate_python, raw)
    event("accepted" if model_ok else "rejected")
    assert item_ok == model_ok, (raw, model if not model_ok else item)
    if model_ok:
        assert item_values(item) == model_values(model)


@settings(max_examples=300, deadline=None)
@given(items(well_formed=True))
def test_well_formed_items_are_accepted(raw: dict[str, Any]) -> None:
    """The generator's well-formed items are accepted (so the agreement above is not vacuous)."""
    ok, item = verdict(ITEM.validate_python, raw)
    assert ok, item
    assert item_values(item) == model_values(VerifyIn.model_validate(raw))


@settings(max_examples=300, deadline=None)
@given(st.lists(items(), min_size=1, max_size=8))
def test_a_batch_finds_its_bad_items(raws: list[dict[str, Any]]) -> None:
    """The batch validates all items at once; the failing positions are exactly the items
    VerifyIn rejects, and the others validate to the same values when validated alone."""
    ok, result = verdict(ITEMS.validate_python, raws)
    rejected = {i for i, raw in enumerate(raws) if not verdict(VerifyIn.model_validate, raw)[0]}
    if ok:
        assert not rejected
        assert [item_values(i) for i in result] == [item_values(ITEM.validate_python(r)) for r in raws]
    else:
        assert {e["loc"][0] for e in result.errors()} == rejected


# -- the fast lane: validate_json of the raw body vs json.loads and the declared models ----------


@st.composite
def json_texts(draw: st.DrawFn, value: dict[str, Any]) -> bytes:
    """`value` as JSON a client might send: ASCII-escaped or raw UTF-8 (lone surrogates as a
    hostile client would encode them), sometimes a key twice (the last one counts)."""
    pairs = list(value.items())
    if pairs and draw(st.floats(0, 1)) < 0.1:
        key, _ = draw(st.sampled_from(pairs))
        pairs.insert(0, (key, draw(junk)))
    ascii_only = draw(st.booleans())

    def dump(v: Any) -> str:
        return json.dumps(v, ensure_ascii=ascii_only)

    text = "{" + ", ".join(f"{dump(k)}: {dump(v)}" for k, v in pairs) + "}"
    return text.encode("utf-8", "surrogatepass")


def fastapi_single(body: bytes) -> VerifyIn:
    return VerifyIn.model_validate(json.loads(body))


def fastapi_batch(body: bytes) -> list[VerifyIn]:
    batch = VerifyBatchIn.model_validate(json.loads(body))
    return [VerifyIn.model_validate(item) for item in batch.items]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_lane_single_accepts_only_what_fastapi_accepts_alike(data: st.DataObject) -> None:
    body = data.draw(json_texts(data.draw(items(well_formed=data.draw(st.booleans())))))
    lane_ok, lane = verdict(ITEM.validate_json, body)
    declared_ok, declared = verdict(fastapi_single, body)
    event(f"lane {'takes' if lane_ok else 'declines'}, FastAPI {'accepts' if declared_ok else 'rejects'}")
    if lane_ok:
        assert declared_ok, (body, declared)
        assert item_values(lane) == model_values(declared)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_lane_single_takes_well_formed_bodies(data: st.DataObject) -> None:
    body = data.draw(json_texts(data.draw(items(well_formed=True))))
    assert verdict(ITEM.validate_json, body)[0]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_lane_batch_accepts_only_what_fastapi_accepts_alike(data: st.DataObject) -> None:
    well_formed = data.draw(st.booleans())
    batch: dict[str, Any] = {"items": data.draw(st.lists(items(well_formed=well_formed), max_size=6))}
    if data.draw(st.floats(0, 1)) < 0.1:
        batch["extra"] = data.draw(junk)
    body = data.draw(json_texts(batch))
    lane_ok, lane = verdict(BATCH.validate_json, body)
    declared_ok, declared = verdict(fastapi_batch, body)
    event(f"lane {'takes' if lane_ok else 'declines'}, FastAPI {'accepts' if declared_ok else 'rejects'}")
    if lane_ok:
        assert declared_ok, (body, declared)
        assert [item_values(i) for i in lane["items"]] == [model_values(m) for m in declared]
    if well_formed and batch["items"] and len(batch) == 1:
        assert lane_ok, lane


def test_lane_declines_what_json_loads_takes_differently() -> None:
    """Texts json.loads reads but the lane's parser refuses go FastAPI's way (never a 500)."""
    good = '"id_number": "11010519491231002X", "name": "张三", "issued_on": "2015-03-01", "expires_on": null, "purpose": "p", "operator": "o"'
    for body in (
        "{" + good + ', "watch": NaN}',
        "{" + good.replace("张三", "\\ud800") + "}",  # a lone surrogate: VerifyIn says string_unicode
        "\ufeff{" + good + "}",  # a BOM
        "{" + good + "} x",
    ):
        assert not verdict(ITEM.validate_json, body.encode())[0], body


def test_an_id_number_has_one_form_in_every_lane() -> None:
    """Full-width digits (and a lower-case x) validate to the ASCII number alike in VerifyIn,
    VerifyItem and the lane's JSON parse; digits NFKC does not fold are refused by all three."""
    good = {"name": "张三", "issued_on": "2015-03-01", "expires_on": None, "purpose": "p", "operator": "o"}
    number = "11010519491231002X"
    for sent in (
        number,
        number.lower(),
        number.translate(FULL_WIDTH),
        "\u3000" + number.lower().translate(FULL_WIDTH),
    ):
        raw = {**good, "id_number": sent}
        assert VerifyIn.model_validate(raw).id_number == number
        assert ITEM.validate_python(raw)["id_number"] == number
        assert ITEM.validate_json(json.dumps(raw))["id_number"] == number
        assert ITEM.validate_json(json.dumps(raw, ensure_ascii=False))["id_number"] == number
    for sent in ("١١٠١٠٥١٩٤٩١٢٣١٠٠٢X", number[:17] + "Y", number + "1", 110105194912310021):
        raw = {**good, "id_number": sent}
        for validate in (VerifyIn.model_validate, ITEM.validate_python):
            with pytest.raises(ValidationError) as info:
                validate(raw)
            assert [(e["loc"], e["type"]) for e in info.value.errors()] == [(("id_number",), "id_number")]


# -- check ids -----------------------------------------------------------------------------------


@given(st.integers(min_value=1, max_value=1000))
def test_check_ids_are_distinct_version_4_uuids(n: int) -> None:
    ids = check_ids(n)
    assert len(ids) == n
    assert len(set(ids)) == n
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_check_ids_of_different_requests_share_nothing() -> None:
    seen: set[str] = set()
    prefixes: set[str] = set()
    for _ in range(2000):
        ids = check_ids(3)
        prefixes.add(ids[0][:24])
        seen.update(ids)
    assert len(seen) == 6000
    assert len(prefixes) == 2000  # each request draws anew


@given(raw=st.binary(min_size=16, max_size=16), n=st.sampled_from([1, 2, 1000]))
def test_a_requests_first_check_id_is_uuid4_of_its_draw(raw: bytes, n: int) -> None:
    """The first id of a request is exactly what uuid.uuid4 makes of the same 16 random bytes
    (version and variant bits set); the others count on in the last group."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("idguard.verification.verifier.token_bytes", lambda k: raw[:k])
        ids = check_ids(n)
    first = uuid.UUID(bytes=raw, version=4)
    assert ids[0] == str(first)
    assert [uuid.UUID(i).int & (2**48 - 1) for i in ids] == [(first.int + k) & (2**48 - 1) for k in range(n)]


def test_check_ids_wrap_within_their_last_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """A counter starting near 2**48 wraps inside the last group: still distinct, still UUIDs."""
    monkeypatch.setattr("idguard.verification.verifier.token_bytes", lambda n: b"\xff" * n)
    ids = check_ids(1000)
    assert len(set(ids)) == 1000
    assert ids[0].endswith("-ffffffffffff")
    assert ids[1].endswith("-000000000000")
    assert all(uuid.UUID(i).version == 4 for i in ids)


# -- the check log's keyed hash ------------------------------------------------------------------


@given(st.text(min_size=16, max_size=200), st.text(max_size=30))
def test_id_hasher_is_hmac_sha256(secret: str, id_number: str) -> None:
    assert IdHasher(secret)(id_number) == id_hash(secret, id_number)
    assert (
        id_hash(secret, id_number)
        == hmac.new(secret.encode(), id_number.encode(), hashlib.sha256).hexdigest()
    )


# -- the index -----------------------------------------------------------------------------------


def loop_before_inlining(
    index: CardIndex,
    id_number: str,
    name: str,
    issued_on: dt.date,
    expires_on: dt.date | None,
    today: dt.date,
    chip_serial: str | None,
) -> tuple[Any, ...]:
    """CardIndex.check as it was, with its per-card helper (and the holder's flags, bits 3-4)."""

    def answer(packed: int, want: int) -> tuple[Any, ...]:
        if packed & _MATCH_MASK != want:
            return MISMATCH
        if chip_serial is not None and packed >> CHIP_SHIFT != hash(chip_serial) & H32:
            return MISMATCH
        code = packed & 31
        if code & 7 == 0:
            expires = (packed >> 25) & DAY_MASK
            if expires and today.toordinal() - EPOCH > expires:
                return EXPIRED[code >> 3]
        return ANSWERS[code]

    entry = index._entries.get(id_number)
    if entry is None:
        return MISMATCH
    want = (
        (issued_on.toordinal() - EPOCH) << 5
        | (0 if expires_on is None else expires_on.toordinal() - EPOCH) << 25
        | (hash(name) & ((1 << 64) - 1)) << 45
    )
    found: tuple[Any, ...] = MISMATCH
    for packed in (entry,) if isinstance(entry, int) else entry:
        got = answer(packed, want)
        if got is MISMATCH:
            continue
        if got[0] is not Result.VALID:
            return got
        found = got
    return found


NUMBERS = ["110105194912310021", "11010519491231002X", "360122195311103671"]
DAYS = [dt.date(2010, 1, 1), dt.date(2020, 1, 1), dt.date(2030, 1, 1)]
cards = st.builds(
    CardFacts,
    id_number=st.sampled_from(NUMBERS),
    name=st.sampled_from(["张三", "李四"]),
    issued_on=st.sampled_from(DAYS[:2]),
    expires_on=st.sampled_from([None, *DAYS[1:]]),
    chip_serial=st.sampled_from(["A1", "B2", "C3"]),
    status=st.sampled_from(list(CardStatus)),
    flags=st.sampled_from([0, 8, 16, 24]),
)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(cards, max_size=8),
    st.lists(
        st.tuples(
            st.sampled_from(NUMBERS),
            st.sampled_from(["张三", "李四"]),
            st.sampled_from(DAYS[:2]),
            st.sampled_from([None, *DAYS[1:]]),
            st.sampled_from([dt.date(2019, 12, 31), dt.date(2020, 1, 2), dt.date(2031, 1, 1)]),
            st.sampled_from([None, "A1", "B2", "C3", "D4"]),
        ),
        max_size=10,
    ),
)
def test_index_answers_as_before_inlining(facts: list[CardFacts], queries: list[tuple[Any, ...]]) -> None:
    index = CardIndex()
    index.load(facts)
    for number, name, issued_on, expires_on, today, chip in queries:
        assert index.check(number, name, issued_on, expires_on, today, chip) == loop_before_inlining(
            index, number, name, issued_on, expires_on, today, chip
        )


def test_every_field_of_a_check_entry_is_named_in_order() -> None:
    import typing

    from idguard.verification.runtime.checklog import CHECK_FIELDS, WATCH_ON, CheckEntry

    assert len(CHECK_FIELDS) == len(typing.get_args(CheckEntry)) == 12
    assert len(set(CHECK_FIELDS)) == len(CHECK_FIELDS)
    assert typing.get_args(CheckEntry)[WATCH_ON] == (dt.date | None)
