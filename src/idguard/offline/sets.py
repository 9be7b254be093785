"""The offline set (离线核查): an exact set of the valid cards over the universe of issued cards,
its file format, its deltas, and the lookup a unit's reader runs. Pure: numpy only.

What a key is. A card is keyed by `card_key(id_number, chip_serial, expires_on)`: the id number,
the chip serial the reader reads from the chip, and the expiry date printed on (and stored in)
the card, `long-term` for a card without one. The expiry date is part of the key so the reader
can apply expiry itself (`OfflineSet.check` answers invalid after the date): a card that expires
needs no delta, and a card presented with another expiry date than its own matches nothing.

The construction (a two-level filter cascade, as in CRLite, Larisch et al., IEEE S&P 2017, with
Clubcards' observation, Schanck 2025, that the universe of issued cards is known, so the second
level only has to be exact on it):

1. U, the universe: every card ever issued; R ⊆ U the cards valid at the set's version (stored
   status valid and not expired on the build date). Every key of U gets a salted 64-bit hash
   (fuse.hash_keys); if two keys of U share one, the builder needs a new salt (HashCollision).
2. Level 1: a binary fuse filter with k-bit fingerprints holding R (fuse.build): every key of R
   passes; any other key passes with probability 2^-k.
3. Level 2: the keys of U \\ R that pass level 1 (about |U \\ R| 2^-k of them), listed exactly as
   a sorted array of hashes: they are refused.

So for every key of U the answer is exact, and a key outside U (a forged chip serial) is valid
with probability at most 2^-k. The size is about 1.075 k |R| bits plus 64 bits per exception,
against an information-theoretic lower bound of about k |R| bits for the same universe and k
(`lower_bound_bits`).

Deltas: the cards whose validity changed between two versions (ledger positions), as (hash,
valid) pairs under the snapshot's salt, 9 bytes each; the reader keeps them in an overlay that
answers before the filter. A delta applies only to the version it starts from.

File layout (snapshot and delta alike): MAGIC (8 bytes), the header's length (4 bytes, little
endian), the header (canonical JSON: keys sorted, no spaces), the body, and the Ed25519
signature (64 bytes) of everything before it, by the key the header names (signing.py).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from idguard.offline import fuse

SNAPSHOT_MAGIC = b"IDGOFS1\0"
DELTA_MAGIC = b"IDGOFD1\0"
FORMAT = 1
SIGNATURE_BYTES = 64
LONG_TERM = "long-term"
KEY_FORMAT = "id_number|chip_serial|expires_on (YYYYMMDD or long-term), ASCII"
DELTA_ENTRY = np.dtype([("hash", "<u8"), ("valid", "u1")])
MAX_SEEDS = 64  # peeling fails rarely (well under 1 % with the paper's parameters)


class HashCollision(Exception):
    """Two keys of the universe share a 64-bit hash under this salt: build with another one."""


class BadFile(Exception):
    """A set file that is malformed, not signed by a known key, or does not follow its version."""


def card_key(id_number: str, chip_serial: str, expires_on: dt.date | None) -> bytes | None:
    """The key of a card, or None for text no issued card can have (non-ASCII, too long)."""
    expiry = LONG_TERM if expires_on is None else f"{expires_on:%Y%m%d}"
    text = f"{id_number.strip().upper()}|{chip_serial.strip().upper()}|{expiry}"
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        return None
    if len(raw) > fuse.KEY_BYTES or b"\0" in raw:
        return None
    return raw


def lower_bound_bits(universe: int, valid: int, k: int) -> float:
    """The fewest bits any structure can have that answers exactly on a universe of `universe`
    keys, `valid` of them valid, and accepts a key outside it with probability at most 2^-k:
    log2 of (#(U, R) pairs) / (#pairs one accepted set can serve), which tends to
    valid * k + (universe - valid) * -log2(1 - 2^-k) as the key space grows."""
    eps = 2.0**-k
    return valid * k + (universe - valid) * -math.log2(1.0 - eps)


def plain_list_bits(valid: int) -> int:
    """The plain alternative: a sorted list of the valid keys' 64-bit hashes."""
    return 64 * valid


# ---------------------------------------------------------------------------------------------
# building


@dataclass(frozen=True, slots=True)
class Built:
    """A set before it is signed: its header fields and its body."""

    header: dict[str, Any]
    body: bytes


def build(
    keys: npt.NDArray[np.bytes_],
    valid: npt.NDArray[np.bool_],
    *,
    salt: bytes,
    k: int,
    version: int,
    generation: int,
    built_at: dt.datetime,
    today: dt.date,
) -> Built:
    """The set of `keys[valid]` over the universe `keys` (every issued card's key, see
    `card_key`), at ledger `version`. HashCollision when two keys share a hash under `salt`."""
    if not 1 <= k <= 32:
        raise ValueError("k is between 1 and 32")
    hashes = fuse.hash_keys(keys, salt)
    if len(np.unique(hashes)) != len(hashes):
        raise HashCollision("two keys of the universe share a hash under this salt")
    members = hashes[valid]
    others = hashes[~valid]
    params = fuse.params_for(len(members))
    for attempt in range(MAX_SEEDS):
        seed = int.from_bytes(salt[:4], "little") ^ (attempt * 0x5BD1E995)
        if attempt >= 4:  # a tiny set can be unlucky with the paper's shape: give it room
            params = fuse.params_for(len(members), slack=1.0 + 0.05 * (attempt - 3))
        slots = fuse.build(fuse.mix(members, seed), params, k)
        if slots is not None:
            break
    else:  # pragma: no cover - vanishingly unlikely
        raise RuntimeError("the filter could not be built")
    exceptions = []
    for start in range(0, len(others), 1 << 20):
        chunk = others[start : start + (1 << 20)]
        passing = fuse.contains(slots, fuse.mix(chunk, seed), params, k)
        exceptions.append(chunk[passing])
    listed = np.sort(np.concatenate(exceptions)) if exceptions else np.zeros(0, dtype=np.uint64)
    header = {
        "format": FORMAT,
        "kind": "snapshot",
        "version": version,
        "generation": generation,
        "salt": salt.hex(),
        "k": k,
        "seed": seed,
        "segment_length": params.segment_length,
        "segment_count": params.segment_count,
        "universe": len(keys),
        "valid": len(members),
        "exceptions": len(listed),
        "built_at": built_at.isoformat(),
        "built_on": today.isoformat(),
        "key": KEY_FORMAT,
        "expiry": "in the key: the reader answers invalid after the card's expiry date (China Standard Time)",
        "false_valid_outside_universe": f"2^-{k}",
    }
    body = fuse.pack_bits(slots, k) + listed.astype("<u8").tobytes()
    return Built(header, body)


@dataclass(frozen=True, slots=True)
class Change:
    """One card whose validity changed: its key and whether it is valid now."""

    key: bytes
    valid: bool


def build_delta(
    changes: Iterable[Change],
    *,
    salt: bytes,
    generation: int,
    from_version: int,
    to_version: int,
    built_at: dt.datetime,
) -> Built:
    """The delta from `from_version` to `to_version`: (hash, valid) per changed card, sorted."""
    listed = list(changes)
    entries = np.zeros(len(listed), dtype=DELTA_ENTRY)
    if listed:
        entries["hash"] = fuse.hash_keys(fuse.key_array([c.key for c in listed]), salt)
        entries["valid"] = [c.valid for c in listed]
        entries.sort(order="hash")
    header = {
        "format": FORMAT,
        "kind": "delta",
        "generation": generation,
        "salt_id": salt.hex()[:16],
        "from_version": from_version,
        "to_version": to_version,
        "changes": len(listed),
        "built_at": built_at.isoformat(),
    }
    return Built(header, entries.tobytes())


# ---------------------------------------------------------------------------------------------
# the file: magic, header, body, signature


def canonical(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def assemble(magic: bytes, header: dict[str, Any], body: bytes) -> bytes:
    """The bytes a signature covers: magic, header length, header, body."""
    encoded = canonical(header)
    return magic + struct.pack("<I", len(encoded)) + encoded + body


def split(data: bytes) -> tuple[bytes, dict[str, Any], bytes, bytes, bytes]:
    """(magic, header, body, signed bytes, signature) of a file; BadFile when malformed."""
    if len(data) < 12 + SIGNATURE_BYTES or data[:8] not in (SNAPSHOT_MAGIC, DELTA_MAGIC):
        raise BadFile("not an idguard offline set file")
    (length,) = struct.unpack("<I", data[8:12])
    if 12 + length + SIGNATURE_BYTES > len(data):
        raise BadFile("the file is truncated")
    try:
        header = json.loads(data[12 : 12 + length])
    except ValueError:
        raise BadFile("the file's header is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise BadFile("unknown offline set format")
    signed = data[:-SIGNATURE_BYTES]
    return data[:8], header, data[12 + length : -SIGNATURE_BYTES], signed, data[-SIGNATURE_BYTES:]


# ---------------------------------------------------------------------------------------------
# reading


def _int(header: dict[str, Any], name: str) -> int:
    value = header.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadFile(f"header field {name} is missing or not a count")
    return value


@dataclass
class OfflineSet:
    """A snapshot and the deltas applied to it, ready to answer (the reader's in-memory set)."""

    header: dict[str, Any]
    salt: bytes
    k: int
    seed: int
    params: fuse.Params
    slots: npt.NDArray[np.uint32]
    exceptions: npt.NDArray[np.uint64]
    version: int
    generation: int
    as_of: dt.datetime  # when the server last vouched for this version (its latest file's time)
    overlay: dict[int, bool] = field(default_factory=dict)
    _overlay_keys: npt.NDArray[np.uint64] = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    _overlay_valid: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    _exceptions: frozenset[int] | None = None

    @classmethod
    def from_snapshot(cls, header: dict[str, Any], body: bytes) -> OfflineSet:
        if header.get("kind") != "snapshot":
            raise BadFile("not a snapshot")
        k = _int(header, "k")
        params = fuse.Params(_int(header, "segment_length"), _int(header, "segment_count"))
        size = (params.length * k + 7) // 8
        n_exceptions = _int(header, "exceptions")
        if not 1 <= k <= 32 or len(body) != size + 8 * n_exceptions:
            raise BadFile("the snapshot's body does not match its header")
        try:
            salt = bytes.fromhex(str(header["salt"]))
            as_of = dt.datetime.fromisoformat(str(header["built_at"]))
        except (KeyError, ValueError):
            raise BadFile("the snapshot's salt or time is malformed") from None
        if len(salt) != 16:
            raise BadFile("the snapshot's salt is malformed")
        return cls(
            header=header,
            salt=salt,
            k=k,
            seed=_int(header, "seed"),
            params=params,
            slots=fuse.unpack_bits(body[:size], params.length, k),
            exceptions=np.frombuffer(body[size:], dtype="<u8").astype(np.uint64),
            version=_int(header, "version"),
            generation=_int(header, "generation"),
            as_of=as_of,
        )

    def apply(self, header: dict[str, Any], body: bytes) -> None:
        """Apply a delta (already verified): it must start at this set's version, for this
        set's generation; BadFile otherwise."""
        if header.get("kind") != "delta":
            raise BadFile("not a delta")
        if _int(header, "generation") != self.generation or header.get("salt_id") != self.salt.hex()[:16]:
            raise BadFile("the delta belongs to another generation of the set: fetch a snapshot")
        start, end = _int(header, "from_version"), _int(header, "to_version")
        if start != self.version:
            raise BadFile(f"the delta starts at version {start}, the set is at version {self.version}")
        if end < start:
            raise BadFile("the delta ends before it starts")
        if len(body) != DELTA_ENTRY.itemsize * _int(header, "changes"):
            raise BadFile("the delta's body does not match its header")
        entries = np.frombuffer(body, dtype=DELTA_ENTRY)
        self.overlay.update(
            zip(entries["hash"].tolist(), entries["valid"].astype(bool).tolist(), strict=True)
        )
        try:
            self.as_of = dt.datetime.fromisoformat(str(header["built_at"]))
        except (KeyError, ValueError):
            raise BadFile("the delta's time is malformed") from None
        self.version = end
        self._overlay_keys = np.zeros(0, dtype=np.uint64)  # rebuilt on the next batch

    def _overlay_arrays(self) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:
        if len(self._overlay_keys) != len(self.overlay):
            keys = np.fromiter(self.overlay.keys(), dtype=np.uint64, count=len(self.overlay))
            valid = np.fromiter(self.overlay.values(), dtype=bool, count=len(self.overlay))
            order = np.argsort(keys)
            self._overlay_keys, self._overlay_valid = keys[order], valid[order]
        return self._overlay_keys, self._overlay_valid

    def contains_hashes(self, hashes: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
        """Whether each key hash is in the set (before expiry)."""
        g = fuse.mix(hashes, self.seed)
        answer = fuse.contains(self.slots, g, self.params, self.k)
        if len(self.exceptions):
            at = np.searchsorted(self.exceptions, hashes)
            listed = self.exceptions[np.minimum(at, len(self.exceptions) - 1)] == hashes
            answer &= ~listed
        keys, valid = self._overlay_arrays()
        if len(keys):
            at = np.minimum(np.searchsorted(keys, hashes), len(keys) - 1)
            hit = keys[at] == hashes
            answer = np.where(hit, valid[at], answer)
        return answer

    def contains_keys(self, keys: Sequence[bytes | None]) -> npt.NDArray[np.bool_]:
        """Whether each key (`card_key`; None: not a card's key) is in the set."""
        known = [key if key is not None else b"" for key in keys]
        answer = self.contains_hashes(fuse.hash_keys(fuse.key_array(known), self.salt))
        if any(key is None for key in keys):
            answer &= np.array([key is not None for key in keys])
        return answer

    def check(self, id_number: str, chip_serial: str, expires_on: dt.date | None, today: dt.date) -> bool:
        """Valid or not: the card is in the set and, the reader's part, not past its expiry
        date `today` (China Standard Time)."""
        if expires_on is not None and today > expires_on:
            return False
        key = card_key(id_number, chip_serial, expires_on)
        return key is not None and self.contains_key(key)

    def contains_key(self, key: bytes) -> bool:
        """`contains_keys` of one key, in Python integers (no numpy call overhead)."""
        h = fuse.hash_one(key, self.salt)
        known = self.overlay.get(h)
        if known is not None:
            return known
        if not fuse.contains_one(self.slots, h, self.seed, self.params, self.k):
            return False
        return h not in self._exception_set()

    def _exception_set(self) -> frozenset[int]:
        if self._exceptions is None:
            self._exceptions = frozenset(self.exceptions.tolist())
        return self._exceptions
