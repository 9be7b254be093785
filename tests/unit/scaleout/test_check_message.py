"""The check stream's message (issue 15): a node seals a request's checks whole (sink.seal_checks)
and the sink makes of it the row lines, watches and signals an API server's check log makes of
the same checks (CheckLog._format, the Verifier's signals). A message of the text form (row
lines, then one sealed line a signal: a small request's, and every message of nodes before the
sealed form) is read as before; a sealed message sealed with another secret is not read at all
(the sink leaves it in the stream); no id number travels in the clear."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any
from unittest import mock

import pytest
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idguard.config import Environment, Settings
from idguard.scaleout.node import SEALED_MIN, StreamCheckLog
from idguard.scaleout.sink import (
    TAG,
    CheckSeal,
    Sink,
    following,
    open_checks,
    seal_checks,
    seal_entries,
    signal_lines,
)
from idguard.verification.runtime.checklog import (
    _ESCAPES_POSTGRES,
    _ESCAPES_SQLITE,
    CheckEntry,
    CheckLog,
    IdHasher,
    Signal,
    WatchSeal,
    watch_line,
)
from idguard.verification.verifier import check_ids

SETTINGS = Settings(env=Environment.TEST, secret_key="s" * 32, nats_url="nats://unused", nats_prefix="t")
KEY = SETTINGS.check_hash_key
AT = dt.datetime(2026, 6, 15, 8, 30, 1, 123456, tzinfo=dt.UTC)
NUMBERS = ["110105199005040014", "11010519900504003X", "440301198001010021", "odd-number", "号码" * 9]
TEXTS = ["BANK1", "teller-1", "a\tb\\c", "line\nbreak\r", "nul\0here", "账户"]
KINDS = [
    ("lost_card_presented",),
    ("blacklisted_holder_checked",),
    ("lost_card_presented", "person_check_failed"),
]
OUTCOMES = [("valid", None), ("mismatch", None), ("invalid", "reported_lost"), ("invalid", "expired")]


def formatted(entries: list[CheckEntry], escapes: dict[int, str]) -> list[str]:
    """The row lines an API server's check log writes for `entries` (CheckLog._format)."""
    log = object.__new__(CheckLog)  # its formatter only: no database
    log._id_hash = IdHasher(KEY)
    log._escapes = escapes
    plain, watched, _ = log._format(entries)
    return plain + watched


@st.composite
def requests(draw: st.DrawFn) -> tuple[list[CheckEntry], list[Signal]]:
    """A request's entries as the Verifier makes them (its ids from check_ids, one time, one unit)
    but with any operators, purposes, outcomes and rare fields, and signals of some of them."""
    n = draw(st.integers(1, 30))
    unit = draw(st.sampled_from(TEXTS))
    at = draw(st.sampled_from([AT, AT.astimezone(dt.timezone(dt.timedelta(hours=8)))]))
    entries: list[CheckEntry] = []
    signals: list[Signal] = []
    for check_id in check_ids(n):
        result, reason = draw(st.sampled_from(OUTCOMES))
        number = draw(st.sampled_from(NUMBERS))
        watch_on = draw(st.one_of(st.none(), st.none(), st.just(dt.date(2016, 6, 15))))
        entries.append(
            (
                check_id,
                unit,
                draw(st.sampled_from(TEXTS)),
                draw(st.sampled_from(TEXTS[:2])),
                at,
                result,
                reason,
                number,
                watch_on,
                draw(st.integers(0, 10**9)),
                draw(st.sampled_from([None, None, True, False])),
                draw(st.sampled_from([None, None, "blacklisted", "blacklisted,check_required"])),
            )
        )
        if draw(st.integers(0, 3)) == 0:
            detail = draw(st.sampled_from([None, "5d0c1b8e-0000-4000-8000-000000000001"]))
            signals.append(
                (check_id, unit, at, number, dt.date(2016, 6, 15), draw(st.sampled_from(KINDS)), detail)
            )
    return entries, signals


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests(), postgres=st.booleans())
def test_the_sink_reads_a_sealed_message_as_the_api_servers_check_log_writes_the_checks(
    request: tuple[list[CheckEntry], list[Signal]], postgres: bool
) -> None:
    entries, signals = request
    seal = CheckSeal(KEY, b"salt" * 4)
    message = seal_entries(seal, entries, signals)
    escapes = _ESCAPES_POSTGRES if postgres else _ESCAPES_SQLITE
    lines, watches, got = open_checks(message, seal, IdHasher(KEY), escapes)
    assert Counter(lines) == Counter(formatted(entries, escapes))
    assert watches == [
        (e[0], e[1], e[4], e[7], e[8], e[9]) for e in entries if e[8] is not None
    ]  # what CheckLog._format hands the Watch rows
    assert got == signals
    assert message.startswith(TAG)
    for number in {e[7] for e in entries}:  # sealed: no number in the clear, nor its masked form
        assert number.encode() not in message
        assert f"{number[:6]}********".encode() not in message


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests())
def test_a_nodes_message_reads_as_its_checks_in_either_form(
    request: tuple[list[CheckEntry], list[Signal]],
) -> None:
    """The node's log: a request of SEALED_MIN checks or more sealed, a smaller one as text;
    the sink reads either as the API server's check log writes the checks."""
    entries, signals = request
    log = StreamCheckLog(KEY, "t.checks")
    message, first_id, n = log._pending[log.append(entries, signals)]
    assert (first_id, n) == (entries[0][0], len(entries))
    assert message.startswith(TAG) == (len(entries) >= SEALED_MIN)
    sink = _sink()
    sink._writer._escapes = _ESCAPES_POSTGRES  # (the text form's rows are formatted for PostgreSQL)
    lines, watches, got = sink.decode_all(message, log._salt.hex())
    assert Counter(lines) == Counter(formatted(entries, _ESCAPES_POSTGRES))
    assert watches == [(e[0], e[1], e[4], e[7], e[8], e[9]) for e in entries if e[8] is not None]
    assert got == signals
    assert sink.sealed_off == 0


def test_a_request_of_ids_not_in_check_ids_form_keeps_them_all() -> None:
    entries: list[CheckEntry] = [
        (f"id-{k}", "U", "o", "p", AT, "valid", None, NUMBERS[0], None, 1, None, None) for k in range(3)
    ]
    seal = CheckSeal(KEY, b"salt" * 4)
    lines, _, _ = open_checks(seal_entries(seal, entries), seal, IdHasher(KEY), _ESCAPES_POSTGRES)
    assert [line.split("\t", 1)[0] for line in lines] == ["id-0", "id-1", "id-2"]


@pytest.mark.parametrize("low", [0, (1 << 48) - 5])  # the counter wrapping within a request
def test_a_requests_check_ids_follow_from_the_first(low: int) -> None:
    """The message carries a request's first check id only: `check_ids` counts up the last group."""
    draw = (0x1234_5678_9ABC_DEF0_1234 << 48 | low).to_bytes(16, "big")
    with mock.patch("idguard.verification.verifier.token_bytes", return_value=draw):
        ids = check_ids(10)
    assert following(ids[0], 10) == ids
    assert len(set(ids)) == 10


def test_a_signal_of_a_check_not_in_the_message_is_refused() -> None:
    entry: CheckEntry = (check_ids(1)[0], "U", "o", "p", AT, "valid", None, NUMBERS[0], None, 1, None, None)
    with pytest.raises(ValueError, match="not in the message"):
        seal_entries(
            CheckSeal(KEY, b"salt" * 4),
            [entry],
            [(entry[0], "U", AT, NUMBERS[1], dt.date(2016, 6, 15), KINDS[0], None)],
        )


def test_a_message_sealed_with_another_secret_is_not_read() -> None:
    seal = CheckSeal(KEY, b"salt" * 4)
    message = seal_checks(
        seal, check_ids(2), NUMBERS[:2], [("U", "o", "p", AT.isoformat())], None, OUTCOMES[:1], None
    )
    with pytest.raises(InvalidTag):
        open_checks(
            message, CheckSeal("another-secret-0123456789", b"salt" * 4), IdHasher(KEY), _ESCAPES_POSTGRES
        )
    with pytest.raises(InvalidTag):  # nor with another node's salt
        open_checks(message, CheckSeal(KEY, b"tlas" * 4), IdHasher(KEY), _ESCAPES_POSTGRES)
    altered = bytearray(message)
    altered[-20] ^= 1
    with pytest.raises(InvalidTag):
        open_checks(bytes(altered), seal, IdHasher(KEY), _ESCAPES_POSTGRES)


def _sink() -> Sink:
    return Sink(SETTINGS, sa.create_engine("sqlite://"))


def test_the_sink_reads_a_message_of_the_text_form() -> None:
    """What nodes before the sealed message published (row lines, watch lines, one sealed line a
    signal), as a stream may hold it after an upgrade: its rows, watches and signals; a signal
    sealed with another secret skipped and counted, its row still written."""
    salt = b"salt" * 4
    ids = check_ids(3)
    entries: list[CheckEntry] = [
        (ids[0], "U", "o", "p", AT, "invalid", "reported_lost", NUMBERS[0], None, 5, None, None),
        (ids[1], "U", "o", "p", AT, "valid", None, NUMBERS[1], dt.date(2016, 6, 15), 5, None, None),
        (ids[2], "U", "o", "p", AT, "invalid", "reported_lost", NUMBERS[2], None, 5, None, None),
    ]
    rows = formatted(entries, _ESCAPES_POSTGRES)
    watched = (ids[1], "U", AT, NUMBERS[1], dt.date(2016, 6, 15), 5)
    ours: Signal = (ids[0], "U", AT, NUMBERS[0], dt.date(2016, 6, 15), KINDS[0], None)
    theirs: Signal = (ids[2], "U", AT, NUMBERS[2], dt.date(2016, 6, 15), KINDS[0], None)
    data = (
        "".join(rows)
        + watch_line(watched, WatchSeal(KEY, salt))
        + signal_lines([ours], WatchSeal(KEY, salt))
        + signal_lines([theirs], WatchSeal("another-secret-0123456789", salt))
    ).encode()
    sink = _sink()
    lines, watches, signals = sink.decode_all(data, salt.hex())
    assert lines == rows
    assert watches == [watched]
    assert signals == [ours]
    assert sink.sealed_off == 1
    # and a former message without signals or watches: its rows as they are
    assert sink.decode_all("".join(rows[:1]).encode(), salt.hex()) == (rows[:1], [], [])


def test_the_sink_reads_a_nodes_message_with_the_databases_escapes() -> None:
    """The sink formats the rows: SQLite's escapes on SQLite (a NUL kept), as an API server's
    check log there writes them."""
    entries: list[CheckEntry] = [
        (check_id, "U", "nul\0here", "p", AT, "valid", None, NUMBERS[0], None, 1, None, None)
        for check_id in check_ids(SEALED_MIN)
    ]
    log = StreamCheckLog(KEY, "t.checks")
    message = log._pending[log.append(entries)][0]
    assert message.startswith(TAG)
    lines, _, _ = _sink().decode_all(message, log._salt.hex())
    assert lines == formatted(entries, _ESCAPES_SQLITE)
    assert "nul\\0here" in lines[0]


def test_a_batch_message_costs_a_few_bytes_a_check() -> None:
    """The point of the sealed form: 1000 checks of one head, ~19 bytes each (18 of them the id
    number), where the row lines took ~205."""
    n = 1000
    ids = check_ids(n)
    numbers = [f"{11010519800000000 + k * 13:017d}0" for k in range(n)]
    outcome_of = [k % 3 for k in range(n)]
    seal = CheckSeal(KEY, b"salt" * 4)
    heads = [("BENCH", "teller-1", "account_opening", AT.isoformat())]
    message = seal_checks(seal, ids, numbers, heads, None, OUTCOMES[:3], outcome_of, from_check_ids=True)
    assert len(message) < 20 * n
    entries: list[Any] = [
        (ids[k], *heads[0][:3], AT, *OUTCOMES[outcome_of[k]], numbers[k], None, 1, None, None)
        for k in range(n)
    ]
    assert len("".join(formatted(entries, _ESCAPES_POSTGRES))) > 200 * n


def test_a_request_of_many_heads_names_each_checks_head_in_two_bytes() -> None:
    """Past 256 heads (operators) a check's head index takes two bytes: still the right head."""
    ids = check_ids(300)
    entries: list[CheckEntry] = [
        (
            check_id,
            "U",
            f"teller-{k}",
            "p",
            AT,
            OUTCOMES[k % 4][0],
            OUTCOMES[k % 4][1],
            NUMBERS[k % 3],
            None,
            1,
            None,
            None,
        )
        for k, check_id in enumerate(ids)
    ]
    seal = CheckSeal(KEY, b"salt" * 4)
    lines, _, _ = open_checks(seal_entries(seal, entries), seal, IdHasher(KEY), _ESCAPES_POSTGRES)
    assert lines == formatted(entries, _ESCAPES_POSTGRES)
