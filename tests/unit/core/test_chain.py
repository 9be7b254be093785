"""The hash chain's text and links, checkpoints' export form, and the walk that names the first
bad row: any single change to any row of a chain (a value, its hash, its position; a row removed,
two rows swapped) is found, at that row and not later."""

from __future__ import annotations

import base64
import datetime as dt
import enum
import json
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idguard.core import chain as hash_chain
from idguard.core.chain import ChainName, Checkpoint
from idguard.core.signing import KeyRing, verifies
from idguard.registry.chains import ChainResult, _walk

AT = dt.datetime(2026, 6, 15, 2, 0, 0, 123, tzinfo=dt.UTC)


class Colour(enum.StrEnum):
    RED = "red"


def test_the_canonical_text_is_plain_compact_json_in_utc() -> None:
    card = uuid.UUID("12345678-1234-5678-1234-567812345678")
    beijing = dt.timezone(dt.timedelta(hours=8))
    odd = '引号"\\\n'  # a quote, a backslash, a newline
    row: list[hash_chain.Value] = [card, Colour.RED, None, AT.astimezone(beijing), odd, 3, True]
    text = hash_chain.canonical(7, row)
    assert text == (
        '[7,"12345678-1234-5678-1234-567812345678","red",null,"2026-06-15T02:00:00.000123Z",'
        '"引号\\"\\\\\\n",3,true]'
    )
    assert text == "[7," + hash_chain.canonical_tail(row)  # what PostgreSQL is given to hash
    with pytest.raises(ValueError, match="naive"):
        hash_chain.canonical(1, [dt.datetime(2026, 1, 1)])  # noqa: DTZ001 - the refused case


def test_a_link_depends_on_the_previous_hash_and_on_the_text() -> None:
    first = hash_chain.link(hash_chain.GENESIS, '[1,"a"]')
    assert len(first) == 64
    assert int(first, 16) >= 0
    assert hash_chain.link(hash_chain.GENESIS, '[1,"b"]') != first
    assert hash_chain.link(first, '[1,"a"]') != first


def test_a_checkpoint_survives_its_export_and_its_signature_verifies() -> None:
    ring = KeyRing({"k1": bytes(range(32))})
    message = hash_chain.checkpoint_message(ChainName.LEDGER, 42, "ab" * 32, AT)
    signature = base64.b64encode(ring.sign(message)).decode()
    checkpoint = Checkpoint(ChainName.LEDGER, 42, "ab" * 32, AT, "k1", signature)
    again = Checkpoint.from_json(checkpoint.to_json())
    assert again == checkpoint
    key = ring.public_key("k1")
    assert key is not None
    assert verifies(key, base64.b64decode(again.signature), again.message())
    moved = Checkpoint(ChainName.LEDGER, 41, "ab" * 32, AT, "k1", signature)
    assert not verifies(key, base64.b64decode(signature), moved.message())


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("{not json", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"chain_name":"ledger","seq":"1"}', "seq: missing or not a int"),
        ('{"chain_name":"ledger","seq":true}', "seq: missing or not a int"),
        (
            '{"chain_name":"other","seq":1,"chain":"x","at":"y","key_id":"k","signature":"s"}',
            "chain_name: 'other' is neither ledger nor audit",
        ),
        (
            '{"chain_name":"audit","seq":1,"chain":"x","at":"2026-01-01","key_id":"k","signature":"s"}',
            "at: not a UTC time",
        ),
        (
            '{"chain_name":"audit","seq":1,"chain":"x","at":"2026-01-01T00:00:00.000000Z","key_id":"k","signature":"s"}',
            "chain: expected 64 hex characters",
        ),
    ],
)
def test_a_bad_exported_line_is_refused_naming_the_field(line: str, error: str) -> None:
    with pytest.raises(ValueError, match="^" + error.replace("(", r"\(").replace(")", r"\)")):
        Checkpoint.from_json(line)


# ------------------------------------------------------------------------------------------------
# The walk over a chain (registry.chains._walk; the database only feeds it rows)


def _chain(values: list[list[Any]]) -> list[tuple[Any, ...]]:
    """Rows (position, chain, *values) as the database holds them, correctly chained."""
    rows, previous = [], hash_chain.GENESIS
    for position, row in enumerate(values, start=1):
        previous = hash_chain.link(previous, hash_chain.canonical(position, row))
        rows.append((position, previous, *row))
    return rows


def _describe(row: Sequence[Any] | None, seq: int) -> str:
    return f"row {seq}"


def _first_problem(rows: list[tuple[Any, ...]], batch: int = 3) -> tuple[str | None, int]:
    result = ChainResult(ChainName.LEDGER)
    batches = iter([rows[i : i + batch] for i in range(0, len(rows), batch)])
    _walk(result, batches, set(), _describe)
    return result.problem, result.last_seq


values = st.lists(
    st.lists(st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=5)), min_size=1, max_size=3),
    min_size=2,
    max_size=12,
)


@given(values)
def test_an_untouched_chain_holds(rows: list[list[Any]]) -> None:
    assert _first_problem(_chain(rows)) == (None, len(rows))


@given(values, st.data())
def test_any_single_change_is_found_at_its_row(rows: list[list[Any]], data: st.DataObject) -> None:
    chained = _chain(rows)
    k = data.draw(st.integers(0, len(chained) - 1), label="row")
    row = list(chained[k])
    kind = data.draw(st.sampled_from(["value", "hash", "position", "remove", "swap"]), label="change")
    if kind == "value":
        i = data.draw(st.integers(2, len(row) - 1))
        new = data.draw(
            st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=5)).filter(
                lambda v: v != row[i] or type(v) is not type(row[i])
            )
        )
        row[i] = new
        chained[k] = tuple(row)
    elif kind == "hash":
        row[1] = data.draw(
            st.one_of(st.none(), st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)).filter(
                lambda h: h != row[1]
            )
        )
        chained[k] = tuple(row)
    elif kind == "position":  # the row claims another place: a gap or a duplicate
        row[0] = data.draw(st.integers(0, len(chained) + 2).filter(lambda p: p != row[0]))
        chained[k] = tuple(row)
        chained.sort(key=lambda r: r[0])
        k = min(k, next(i for i, r in enumerate(chained) if r[0] != i + 1))
    elif kind == "remove":
        del chained[k]
        if k == len(chained):
            # The last row removed: the walk holds up to it; the head (checked apart) names it.
            assert _first_problem(chained) == (None, k)
            return
    else:
        other = data.draw(st.integers(0, len(chained) - 1).filter(lambda j: j != k), label="other")
        if chained[other][2:] == chained[k][2:]:
            return  # two equal rows swapped: nothing changed
        a, b = sorted((k, other))
        chained[a], chained[b] = (a + 1, *chained[b][1:]), (b + 1, *chained[a][1:])
        k = a
    problem, last = _first_problem(chained)
    assert problem is not None
    assert last == k  # every row before the changed one holds; the changed one does not
    assert problem.startswith(f"row {k + 1} ")


class Level(enum.IntEnum):
    HIGH = 3


class Tag(str):
    """A str subclass that is not an enum: its plain text."""


def _reference_plain(value: Any) -> Any:
    """The canonical value as the rule states it, one isinstance check after another."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, bool | int):
        return value
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


_VALUES = st.one_of(
    st.none(),
    st.text(),
    st.booleans(),
    st.integers(),
    st.sampled_from([Colour.RED, Level.HIGH]),
    st.uuids(),
    st.datetimes(timezones=st.timezones()),
    st.dates(),
    st.text().map(Tag),
)


@given(st.lists(_VALUES, max_size=12))
def test_canonical_text_follows_the_rule_for_every_kind_of_value(row: list[Any]) -> None:
    """The converters chosen per type give what the rule says, for values of every kind mixed
    (a type is looked up once and then cached: a mistake there shows on its second value too)."""
    expected = json.dumps([_reference_plain(v) for v in row], ensure_ascii=False, separators=(",", ":"))
    assert "[1," + hash_chain.canonical_tail(row) == "[1," + expected[1:]
