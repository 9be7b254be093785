"""Hash chains and signed checkpoints: what makes the ledger and the audit log tamper-evident.

Each row carries `chain = SHA-256(previous chain, "\\n", canonical text of the row)` in hex, the
first row chaining from GENESIS. The canonical text is a compact JSON array whose first element is
the row's position (the ledger's `seq`, the audit log's chain `seq`): a row altered, removed, or
moved to another position changes every chain value after it. Nothing here knows a database:
the values are the row's as the application reads them (UUIDs, enums, UTC datetimes), so a
re-encoding of a column (a key rotation of sealed data, a dump and restore) leaves the chain valid.

PostgreSQL computes the same link in SQL for the ledger's one-statement append
(`registry.ledger`): `encode(sha256(convert_to(prev || E'\\n[' || seq || ',' || tail, 'UTF8')),
'hex')`, where `tail` is `canonical_tail(values)`. `link(prev, canonical(seq, values))` is
byte-for-byte that text, and a test keeps the two equal.

A checkpoint is an Ed25519 signature over (chain name, seq, chain hash, time): kept outside the
database, it catches even a rewrite of the whole chain with every hash recomputed.

Pure: only the standard library (the signature is made by a `core.signing.KeyRing`).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64  # what the first row of a chain links from
HASH_CHARS = 64
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
Value = str | int | bool | None | uuid.UUID | dt.datetime | dt.date | enum.Enum


def _utc(value: dt.datetime) -> str:
    """A datetime in UTC with microseconds (what both databases keep), so the text does not depend
    on the zone a caller used. isoformat: several times faster than strftime, and a 4-digit year
    on every platform."""
    if value.tzinfo is None:
        raise ValueError("a naive datetime cannot be chained (its instant is unknown)")
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _as_is(value: str | int | bool | None) -> str | int | bool | None:
    return value


def _enum_value(value: enum.Enum) -> str:
    return str(value.value)


def _converter(kind: type) -> Callable[[Any], str | int | bool | None]:
    """How a value of type `kind` enters the canonical text: a str, None, a bool or an int (an
    IntEnum too) as it is; any other enum as its value's text; a UUID hyphenated; a datetime in
    UTC (`_utc`); a date in ISO form; anything else as its str()."""
    if kind is str or kind is type(None) or issubclass(kind, bool | int):
        return _as_is
    if issubclass(kind, enum.Enum):
        return _enum_value
    if issubclass(kind, uuid.UUID):
        return str
    if issubclass(kind, dt.datetime):
        return _utc
    if issubclass(kind, dt.date):
        return dt.date.isoformat
    return str


# Per type met, its converter: one dict look-up a value instead of a chain of isinstance checks
# (a ledger event's ten values are made canonical on every status change, the loss report's hot
# path; `verify` walks millions).
_CONVERTERS: dict[type, Callable[[Any], str | int | bool | None]] = {}


def _plain(value: Value) -> str | int | bool | None:
    """One column's value as it enters the canonical text (`_converter`)."""
    kind = type(value)
    convert = _CONVERTERS.get(kind)
    if convert is None:
        convert = _CONVERTERS[kind] = _converter(kind)
    return convert(value)


def utc_text(at: dt.datetime) -> str:
    """A time as the chain and the checkpoints write it: UTC, microseconds, a trailing Z."""
    return str(_plain(at))


def canonical_tail(values: Sequence[Value]) -> str:
    """The canonical text after "[seq,": the row's other values, then the closing bracket."""
    converters = _CONVERTERS
    plain = [convert(v) if (convert := converters.get(type(v))) is not None else _plain(v) for v in values]
    return _JSON.encode(plain)[1:]


def canonical(seq: int, values: Sequence[Value]) -> str:
    """The row at position `seq` as one line of text: `[seq,v1,v2,...]`."""
    tail = canonical_tail(values)
    return f"[{seq}," + tail if values else f"[{seq}]"


def link(previous: str, text: str) -> str:
    """The chain value of a row: SHA-256 over the previous row's chain value and the row's text."""
    return hashlib.sha256(f"{previous}\n{text}".encode()).hexdigest()


class ChainName(enum.StrEnum):
    """The two chained logs, as named in checkpoints and in `idguard ledger verify`'s output."""

    LEDGER = "ledger"
    AUDIT = "audit"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement: chain `name` had hash `chain` at position `seq`, at time `at`."""

    name: ChainName
    seq: int
    chain: str
    at: dt.datetime
    key_id: str
    signature: str  # base64 Ed25519 over `message()`

    def message(self) -> bytes:
        return checkpoint_message(self.name, self.seq, self.chain, self.at)

    def to_json(self) -> str:
        return json.dumps(
            {
                "chain_name": self.name.value,
                "seq": self.seq,
                "chain": self.chain,
                "at": _plain(self.at),
                "key_id": self.key_id,
                "signature": self.signature,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, line: str) -> Checkpoint:
        """One exported line back; ValueError naming the field when it is not a checkpoint."""
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        for key, kind in (
            ("chain_name", str),
            ("seq", int),
            ("chain", str),
            ("at", str),
            ("key_id", str),
            ("signature", str),
        ):
            if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
                raise ValueError(f"{key}: missing or not a {kind.__name__}")
        try:
            name = ChainName(data["chain_name"])
        except ValueError:
            raise ValueError(f"chain_name: {data['chain_name']!r} is neither ledger nor audit") from None
        try:
            at = dt.datetime.strptime(data["at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
        except ValueError:
            raise ValueError("at: not a UTC time like 2026-01-02T03:04:05.000000Z") from None
        if len(data["chain"]) != HASH_CHARS:
            raise ValueError(f"chain: expected {HASH_CHARS} hex characters")
        return cls(name, data["seq"], data["chain"], at, data["key_id"], data["signature"])


def checkpoint_message(name: ChainName, seq: int, chain: str, at: dt.datetime) -> bytes:
    """The bytes a checkpoint's signature covers (versioned: a later format cannot be confused)."""
    return f"idguard-checkpoint/v1\n{name.value}\n{seq}\n{chain}\n{_plain(at)}".encode()
