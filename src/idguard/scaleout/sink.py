"""`idguard checklog-sink`: the check stream ({P}_CHECKS) into the database's check log.

A durable pull consumer ({P}_sink) fetches up to FETCH messages (each one node request's checks),
turns them into the check log's row lines, writes them in one transaction — COPY on PostgreSQL
through a temporary table, then INSERT … ON CONFLICT (id, at) DO NOTHING, skipping checks already
there (a check's id and time are fixed when it is made, so the pair is exact; the table's key,
partitioned by month on PostgreSQL), the same INSERT on SQLite (CheckLog._write, idempotent) —
and only then acknowledges them. So a check is in the stream until it is in the database: a sink
killed between the write and the acknowledgement writes the batch again on its next fetch,
changing nothing; a database that is unreachable makes the sink retry the same batch every
RETRY_SECONDS while the checks wait in the stream (file storage) and nodes keep answering.
Watched checks also get their Watch rows.

The sealed form (a node's request of node.SEALED_MIN checks or more; `seal_checks`, read by
`open_checks`): TAG, then the request's checks sealed whole
(AES-256-GCM, CheckSeal: a key derived from the check log's key and the node's salt, which the
message's Idg-Salt header carries): a JSON line (the count, the first check id — a request's ids
are consecutive, `verifier.check_ids` — the request's heads: unit, operator, purpose, time; the
outcomes: result, reason; the rare fields of a few checks: fingerprint verdict, alerts, watch;
the signals), then the id numbers (18 bytes each) and a column of one or two bytes a check
saying which head and outcome it has. The sink formats the row lines as CheckLog._format does on
an API server (masked number, keyed hash: the same key), so a node spends nothing a check on
them, and a check costs ~20 bytes in the stream instead of a ~220-byte row line. No id number
is in the stream in the clear; sealed, it is what the keyed hash is to anyone holding the key
(the mask leaves 8 digits, a birth date, to find). A message sealed with another secret cannot
be read: it is counted (`sealed_off`), logged and left in the stream, never acknowledged, so its
checks are not lost (redelivered every ack_wait until a sink with that secret takes them).

The text form (a node's request of fewer than node.SEALED_MIN checks, where sealing a message
costs more than formatting its rows; every message of nodes before the sealed form, which a
stream may still hold after an upgrade): the row lines as text (`W\t` lines for watches, the
number sealed with WatchSeal), then one line per signal, `S\t<check id>\t<sealed>`
(signal_lines, split_signals); a signal sealed with another secret is skipped and counted, its
row written.

Incidents from node checks: a message holds the signals of its checks worth an incident (a lost
card presented, a failed person-card check…: the Verifier's signals, the same an API server hands
its watchlist thread). The sink hands them to the watchlist's derivation
(`incidents.record_signals`), in a transaction of its own before it writes the checks, skipping
the signals of checks the database already holds (a redelivered message: counted when first
written). So an incident is opened at least once for every signal; only a sink that dies between
the incidents' commit and the checks' counts those signals again on the day's incident (never a
second incident: one per card, kind, unit and day).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig

from idguard import uow
from idguard.config import Settings
from idguard.core.idnumber import mask
from idguard.db.engine import make_sessionmaker
from idguard.scaleout import streams
from idguard.verification.models import Check
from idguard.verification.runtime.checklog import (
    CheckEntry,
    CheckLog,
    IdHasher,
    Signal,
    Watched,
    WatchSeal,
    decode_payload,
)
from idguard.watchlist import incidents

log = logging.getLogger("idguard.sink")

FETCH = 256  # messages per transaction (each up to a batch of 1000 checks)
RETRY_SECONDS = 1.0
SIGNAL_TAG = "S\t"  # the text form: a line holding a check's signal, after every row and watch line
TAG = b"\x01ck2"  # a sealed check message (a text-form one starts with a row line's hex id, W or S)
_NONCE = 12
_LOW = (1 << 48) - 1  # a check id's last group: the counter of a request's ids
_NULL = "\\N"
_BOOL = {None: _NULL, True: "t", False: "f"}
_WIDTH = 18  # an id number's characters, as the API admits them
_PLAIN_END = "f\t\\N\t\\N\n"  # a row line's end: no watch, no verdict, no alerts

# The rare fields of a check: (its position, fingerprint verdict, alerts, watched card's issue
# date, ledger seq); a check's signal by position: (position, issue date, kinds, detail).
Extra = tuple[int, bool | None, str | None, dt.date | None, int]
IndexedSignal = tuple[int, dt.date, tuple[str, ...], str | None]
Head = tuple[str, str, str, str]  # unit code, operator, purpose, time (isoformat)
Outcome = tuple[str, str | None]  # result, reason


class CheckSeal:
    """A check message's seal: AES-256-GCM under a key derived (HMAC-SHA256) from the check log's
    key and the node's salt, a random nonce a message, the tag as associated data."""

    def __init__(self, secret_key: str, salt: bytes) -> None:
        key = hmac.new(secret_key.encode(), b"idguard check stream: check messages\0" + salt, hashlib.sha256)
        self._aead = AESGCM(key.digest())

    def seal(self, plain: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return TAG + nonce + self._aead.encrypt(nonce, plain, TAG)

    def open(self, data: bytes) -> bytes:
        """InvalidTag: not sealed with this key (another secret), or altered."""
        at = len(TAG)
        return self._aead.decrypt(data[at : at + _NONCE], data[at + _NONCE :], TAG)


def following(first: str, n: int) -> list[str]:
    """The `n` check ids from `first` on, as `verifier.check_ids` makes a request's (its last
    group counting up, mod 2**48)."""
    prefix, low = first[:24], int(first[24:], 16)
    if low + n <= _LOW:
        return [f"{prefix}{last:012x}" for last in range(low, low + n)]
    return [f"{prefix}{(low + k) & _LOW:012x}" for k in range(n)]


def _consecutive(ids: Sequence[str], *, checked: bool) -> bool:
    """Whether `ids` are `following(ids[0], len(ids))`; `checked`: the caller made them with
    `check_ids` (whose contract that is), so the first and the last are looked at only."""
    first, n = ids[0], len(ids)
    tail = first[24:]
    if len(first) != 36 or len(tail) != 12 or any(c not in "0123456789abcdef" for c in tail):
        return False
    if checked:
        return ids[-1] == f"{first[:24]}{(int(tail, 16) + n - 1) & _LOW:012x}"
    return list(ids) == following(first, n)


def _column(of: Any, count: int) -> tuple[bytes, int]:
    """A per-check column of indexes into a table of `count` entries: its bytes and their width."""
    width = 1 if count <= 1 << 8 else 2 if count <= 1 << 16 else 4
    return np.asarray(of, dtype=f"<u{width}").tobytes(), width


def seal_checks(
    seal: CheckSeal,
    check_ids: Sequence[str],
    id_numbers: Sequence[str],
    heads: Sequence[Head],
    head_of: Any,
    outcomes: Sequence[Outcome],
    outcome_of: Any,
    extras: Sequence[Extra] = (),
    signals: Sequence[IndexedSignal] = (),
    *,
    from_check_ids: bool = False,
) -> bytes:
    """A request's checks as one sealed message: check i has id `check_ids[i]`, number
    `id_numbers[i]`, head `heads[head_of[i]]` and outcome `outcomes[outcome_of[i]]` (`head_of`,
    `outcome_of`: sequences or numpy arrays of indexes, ignored for a table of one), and its
    rare fields and signals by position. `from_check_ids`: the ids are `check_ids(n)`'s."""
    n = len(check_ids)
    meta: dict[str, Any] = {
        "n": n,
        "ids": [check_ids[0]] if n and _consecutive(check_ids, checked=from_check_ids) else list(check_ids),
        "heads": heads,
        "outcomes": outcomes,
    }
    numbers = "".join(id_numbers).encode("utf-8", "surrogatepass")
    if n and len(numbers) == _WIDTH * n and numbers.isascii() and max(map(len, id_numbers)) == _WIDTH:
        parts = [b"", numbers]
    else:  # (never from the API: every number it admits has 18 characters)
        meta["numbers"] = list(id_numbers)
        parts = [b""]
    if len(heads) > 1:
        column, meta["head_width"] = _column(head_of, len(heads))
        parts.append(column)
    if len(outcomes) > 1:
        column, meta["outcome_width"] = _column(outcome_of, len(outcomes))
        parts.append(column)
    if extras:
        meta["extras"] = [
            [i, match, alerts, None if on is None else on.toordinal(), seq]
            for i, match, alerts, on, seq in extras
        ]
    if signals:
        meta["signals"] = [[i, issued.toordinal(), kinds, detail] for i, issued, kinds, detail in signals]
    parts[0] = json.dumps(meta, separators=(",", ":")).encode() + b"\n"
    return seal.seal(b"".join(parts))


def seal_entries(seal: CheckSeal, entries: Sequence[CheckEntry], signals: Iterable[Signal] = ()) -> bytes:
    """`seal_checks` of check-log entries and their signals (Verifier's paths); every signal is
    one of an entry's checks, with its unit, time and number."""
    heads: dict[Head, int] = {}
    outcomes: dict[Outcome, int] = {}
    head_of: list[int] = []
    outcome_of: list[int] = []
    extras: list[Extra] = []
    when: dt.datetime | None = None
    at_text = ""
    for i, (
        _,
        unit_code,
        operator,
        purpose,
        at,
        result,
        reason,
        _,
        watch_on,
        seq,
        match,
        alerts,
    ) in enumerate(entries):
        if at is not when:  # (a request's entries share one)
            if at.tzinfo is None:
                raise ValueError("naive datetime in the check log")
            when, at_text = at, at.isoformat()
        head_of.append(heads.setdefault((unit_code, operator, purpose, at_text), len(heads)))
        outcome_of.append(outcomes.setdefault((result, reason), len(outcomes)))
        if match is not None or alerts is not None or watch_on is not None:
            extras.append((i, match, alerts, watch_on, seq))
    ids = [e[0] for e in entries]
    indexed: list[IndexedSignal] = []
    if signals:
        position = {check_id: i for i, check_id in enumerate(ids)}
        for check_id, unit_code, at, id_number, issued_on, kinds, detail in signals:
            i = position.get(check_id, -1)
            entry = entries[i] if i >= 0 else None
            if entry is None or (entry[1], entry[4], entry[7]) != (unit_code, at, id_number):
                raise ValueError("a signal of a check not in the message")
            indexed.append((i, issued_on, tuple(kinds), detail))
    return seal_checks(
        seal, ids, [e[7] for e in entries], list(heads), head_of, list(outcomes), outcome_of, extras, indexed
    )


def open_checks(
    data: bytes, seal: CheckSeal, hasher: IdHasher, escapes: dict[int, str]
) -> tuple[list[str], list[Watched], list[Signal]]:
    """A sealed check message's row lines (as CheckLog._format makes them, with `escapes`: the
    database's), watches and signals. InvalidTag: sealed with another secret."""
    plain = seal.open(data)
    cut = plain.index(b"\n")
    meta = json.loads(plain[:cut])
    n: int = meta["n"]
    ids: list[str] = meta["ids"]
    check_ids = ids if len(ids) == n else following(ids[0], n)
    at = cut + 1
    numbers: list[str]
    if "numbers" in meta:
        numbers = meta["numbers"]
    else:
        text = plain[at : at + _WIDTH * n].decode("ascii")
        at += _WIDTH * n
        numbers = [text[k : k + _WIDTH] for k in range(0, _WIDTH * n, _WIDTH)]
    heads: list[list[str]] = meta["heads"]
    outcomes: list[list[str | None]] = meta["outcomes"]
    head_of: list[int] | None = None
    outcome_of: list[int] | None = None
    if len(heads) > 1:
        width = meta["head_width"]
        head_of = np.frombuffer(plain, dtype=f"<u{width}", count=n, offset=at).tolist()
        at += width * n
    if len(outcomes) > 1:
        width = meta["outcome_width"]
        outcome_of = np.frombuffer(plain, dtype=f"<u{width}", count=n, offset=at).tolist()
    # Each row line as CheckLog._format makes it: the head's text, the outcome's, the number
    # masked and keyed-hashed (IdHasher: its states copied), then watch, verdict and alerts.
    texts = [
        "\t".join(
            ("", unit.translate(escapes), operator.translate(escapes), purpose.translate(escapes), when, "")
        )
        for unit, operator, purpose, when in heads
    ]
    middles = [f"{result}\t{_NULL if reason is None else reason}\t" for result, reason in outcomes]
    inner_copy, outer_copy = hasher.inner.copy, hasher.outer.copy
    digests: list[str] = []
    digest = digests.append
    for number in numbers:
        inner = inner_copy()
        inner.update(number.encode("utf-8", "surrogatepass"))
        outer = outer_copy()
        outer.update(inner.digest())
        digest(outer.hexdigest())
    masked = [
        f"{number[:6]}********{number[14:]}" if len(number) == _WIDTH else mask(number) for number in numbers
    ]
    if head_of is None and outcome_of is None:
        head = texts[0] + middles[0]
        lines = [
            f"{check_id}{head}{m}\t{d}\t{_PLAIN_END}"
            for check_id, m, d in zip(check_ids, masked, digests, strict=True)
        ]
    else:
        hs = head_of if head_of is not None else [0] * n
        os_ = outcome_of if outcome_of is not None else [0] * n
        lines = [
            f"{check_id}{texts[h]}{middles[o]}{m}\t{d}\t{_PLAIN_END}"
            for check_id, h, o, m, d in zip(check_ids, hs, os_, masked, digests, strict=True)
        ]
    times: dict[int, dt.datetime] = {}

    def head_at(i: int) -> tuple[str, dt.datetime]:
        h = 0 if head_of is None else head_of[i]
        when = times.get(h)
        if when is None:
            when = times[h] = dt.datetime.fromisoformat(heads[h][3])
        return heads[h][0], when

    watches: list[Watched] = []
    for i, match, alerts, on, seq in meta.get("extras", ()):
        lines[i] = (
            f"{lines[i][: -len(_PLAIN_END)]}{'f' if on is None else 't'}\t{_BOOL[match]}\t"
            f"{_NULL if alerts is None else alerts}\n"
        )
        if on is not None:
            unit, when = head_at(i)
            watches.append((check_ids[i], unit, when, numbers[i], dt.date.fromordinal(on), seq))
    signals: list[Signal] = []
    for i, issued, kinds, detail in meta.get("signals", ()):
        unit, when = head_at(i)
        signals.append(
            (check_ids[i], unit, when, numbers[i], dt.date.fromordinal(issued), tuple(kinds), detail)
        )
    return lines, watches, signals


def signal_lines(signals: Iterable[Signal], seal: WatchSeal) -> str:
    """The text form's signal lines, sealed one by one (a small request has one or two)."""
    out = []
    for check_id, unit_code, at, id_number, issued_on, kinds, detail in signals:
        plain = json.dumps([unit_code, at.isoformat(), id_number, issued_on.isoformat(), list(kinds), detail])
        out.append(f"{SIGNAL_TAG}{check_id}\t{seal.seal(check_id, plain)}\n")
    return "".join(out)


def split_signals(data: bytes, seal: WatchSeal) -> tuple[bytes, list[Signal], int]:
    """A text-form message's rows and watches (for `decode_payload`), and its signals; the count
    is signals that could not be opened (another secret): skipped."""
    tag = SIGNAL_TAG.encode()
    at = 0 if data.startswith(tag) else data.find(b"\n" + tag) + 1
    if at <= 0 and not data.startswith(tag):
        return data, [], 0
    signals: list[Signal] = []
    sealed_off = 0
    for line in data[at:].decode().split("\n"):
        if not line:
            continue
        _, check_id, sealed = line.split("\t")
        try:
            unit_code, when, id_number, issued_on, kinds, detail = json.loads(seal.open(check_id, sealed))
        except Exception:  # another secret, or not ours
            sealed_off += 1
            continue
        signals.append(
            (
                check_id,
                unit_code,
                dt.datetime.fromisoformat(when),
                id_number,
                dt.date.fromisoformat(issued_on),
                tuple(kinds),
                detail,
            )
        )
    return data[:at], signals, sealed_off


class Sink:
    def __init__(self, settings: Settings, engine: sa.Engine) -> None:
        self.settings = settings
        self.names = streams.names(settings)
        self._key = settings.check_hash_key
        self._writer = CheckLog(engine, self._key)  # its writer only: no journal, no thread
        self._hasher = IdHasher(self._key)
        self._seals: dict[str, tuple[CheckSeal, WatchSeal]] = {}  # by salt: a node's, while it runs
        self._sessions = make_sessionmaker(engine)
        self.written = 0  # check rows handed to the database (duplicates skipped there)
        self.signals = 0  # signals handed to the incidents' derivation
        self.sealed_off = 0  # messages (and text-form signal and watch lines) sealed with another secret
        self.failures = 0

    def decode(self, data: bytes, salt_hex: str) -> tuple[list[str], list[Watched]]:
        lines, watches, _signals = self.decode_all(data, salt_hex)
        return lines, watches

    def decode_all(self, data: bytes, salt_hex: str) -> tuple[list[str], list[Watched], list[Signal]]:
        """A message's row lines, watches and signals, either form. InvalidTag: a sealed message
        sealed with another secret (nothing of it can be read)."""
        seals = self._seals.get(salt_hex)
        if seals is None:
            if len(self._seals) >= 1024:  # salts of nodes long gone
                self._seals.clear()
            salt = bytes.fromhex(salt_hex)
            seals = self._seals[salt_hex] = (CheckSeal(self._key, salt), WatchSeal(self._key, salt))
        if data.startswith(TAG):
            return open_checks(data, seals[0], self._hasher, self._writer._escapes)
        rows, signals, sealed_off = split_signals(data, seals[1])
        lines, watches, watches_off = decode_payload(rows, seals[1])
        self.sealed_off += sealed_off + watches_off
        return lines, watches, signals

    def _record_signals(self, signals: list[Signal]) -> None:
        """The incidents of the signals whose checks are not in the database yet (one transaction)."""
        if not signals:
            return
        with uow.transaction(self._sessions) as session:
            ids = {uuid.UUID(s[0]) for s in signals}
            present = {str(i) for i in session.scalars(sa.select(Check.id).where(Check.id.in_(ids)))}
            new = [s for s in signals if str(uuid.UUID(s[0])) not in present]
            incidents.record_signals(session, new)
        self.signals += len(new)

    async def run(self, stop: asyncio.Event, *, idle: asyncio.Event | None = None) -> None:
        nc = await streams.connect(self.settings, name="idguard-checklog-sink")
        js = nc.jetstream()
        try:
            await streams.ensure_streams(js, self.names)
            sub = await js.pull_subscribe(
                self.names.checks_subject,
                durable=self.names.sink_consumer,
                stream=self.names.checks_stream,
                config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=120, max_ack_pending=-1),
            )
            while not stop.is_set():
                try:
                    msgs = await sub.fetch(FETCH, timeout=0.5)
                except (TimeoutError, NatsTimeout):
                    if idle is not None:
                        idle.set()
                    continue
                if idle is not None:
                    idle.clear()
                lines: list[str] = []
                watches: list[Watched] = []
                signals: list[Signal] = []
                taken = []
                for msg in msgs:
                    try:
                        got, watched, signalled = self.decode_all(
                            msg.data, (msg.headers or {}).get("Idg-Salt", "00")
                        )
                    except InvalidTag:  # another secret: left in the stream, never acknowledged
                        self.sealed_off += 1
                        log.error(
                            "a check message sealed with another secret (stream position %s): "
                            "left in the stream; a sink with that node's secret must take it",
                            msg.metadata.sequence.stream if msg.metadata.sequence else "?",
                        )
                        continue
                    taken.append(msg)
                    lines += got
                    watches += watched
                    signals += signalled
                while not stop.is_set():
                    try:
                        await asyncio.to_thread(self._record_signals, signals)
                        signals = []  # recorded: a retry of the checks' write does not repeat them
                        await asyncio.to_thread(self._writer._write, lines, watches, idempotent=True)
                        break
                    except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as exc:
                        self.failures += 1
                        log.warning(
                            "check log write failed (%s); %d checks wait in the stream",
                            type(exc).__name__,
                            len(lines),
                        )
                        await asyncio.sleep(RETRY_SECONDS)
                else:
                    break  # stopped before written: not acknowledged, redelivered to the next sink
                for msg in taken:
                    await msg.ack()
                self.written += len(lines)
        finally:
            await nc.close()
