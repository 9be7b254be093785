"""The compact verification index of a verifier node: at most 32 bytes per card, the same answers as
verification/index.py's CardIndex (a property test over random ledgers holds them equal).

CardIndex keeps a dict of Python ints (about 150 bytes a card) and hashes names with Python's
per-process hash: fine for one process that loads from the database, impossible to ship. A node
loads its index from a snapshot that another process (the relay) wrote, so the hashes must mean
the same in both: names and chip serials are hashed with BLAKE2b keyed by a key derived from the
deployment's secret (`Settings.derived_key("scaleout-index")`). Neither the snapshot nor the
ledger stream holds a name or a chip serial, only these keyed hashes.

Layout: numpy arrays sorted by h, one entry per card,

    h      uint64   the id number as an integer (17 digits * 11 + check character), times an odd
                    constant mod 2**64: a bijection, so h *is* the number, spread evenly
    low    uint64   bits 0-44 of CardIndex's packing: status, the holder's flags, issue and expiry
    name   uint64   keyed hash of the name
    chip   uint32   keyed hash of the chip serial

= 28 bytes, plus a directory of 4-byte offsets, one per two cards (the top bits of h select a
bucket of about two entries): 30 bytes a card. A lookup is a multiplication, two directory reads
and a scan of one or two entries through memoryviews (Python ints, no numpy scalars).

A batch is looked up at once by `check_many` (a verifier node's batch path): the keys, buckets
and entries of the whole batch as numpy arrays, the names hashed in one pass, the answers as
numbers into ANSWER_TABLE; whatever is not the common case (overlay, several cards of a number, a
chip serial) goes through `check`.

Changes after the snapshot go to a small dict `overlay` (id number -> the number's cards, in
CardIndex's order), which wins over the arrays; `freeze()` folds it in (the relay does before each
snapshot). Numbers not of the 18-character shape (never admitted by the API, but the index does
not rely on it) live in the overlay only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import typing
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from idguard.verification.index import (
    BLACKLISTED,
    STATUS_CODES,
    CardFacts,
    CardIndex,
    Reason,
    Result,
    pack,
)

_MULT = 0x9E3779B97F4A7C15  # odd: multiplication mod 2**64 is a bijection
_MASK64 = (1 << 64) - 1
_LOW = (1 << 45) - 1  # status, flags, issue and expiry
_ISSUE_SHIFT = 5
_EXPIRY_SHIFT = 25
_DAY_MASK = (1 << 20) - 1
_DATES = _LOW & ~31  # issue and expiry
_CODE_MASK = 31
_FLAG_SHIFT = 3
_EPOCH = dt.date(1900, 1, 1).toordinal()
_CHECK = {str(d): d for d in range(10)} | {"X": 10}

_STATUS_ANSWERS: tuple[tuple[Result, Reason | None], ...] = (
    (Result.VALID, None),
    (Result.INVALID, Reason.REPORTED_LOST),
    (Result.INVALID, Reason.REPORTED_STOLEN),
    (Result.INVALID, Reason.SUPERSEDED),
    (Result.INVALID, Reason.REVOKED),
    (Result.INVALID, Reason.SUPERSEDED),
)
assert len(_STATUS_ANSWERS) == len(STATUS_CODES)  # noqa: S101 - one row per packed status
_ANSWERS: tuple[tuple[Result, Reason | None, int], ...] = tuple(
    (*_STATUS_ANSWERS[code & 7], code & 24) if code & 7 < len(_STATUS_ANSWERS) else (Result.MISMATCH, None, 0)
    for code in range(32)
)
_EXPIRED: tuple[tuple[Result, Reason | None, int], ...] = tuple(
    (Result.INVALID, Reason.EXPIRED, flags << _FLAG_SHIFT) for flags in range(4)
)
_MISMATCH: tuple[Result, Reason | None, int] = (Result.MISMATCH, None, 0)
# `check_many`'s answers by number: 0-31 the packed status and flags (`_ANSWERS`), 32-35 expired
# with the flags (`_EXPIRED`), 36 a mismatch.
ANSWER_TABLE: tuple[tuple[Result, Reason | None, int], ...] = (*_ANSWERS, *_EXPIRED, _MISMATCH)
EXPIRED_ANSWER = 32
_ANSWER_NUMBER = {answer: k for k, answer in reversed(list(enumerate(ANSWER_TABLE)))}
MISMATCH_ANSWER = 36
_DIGITS = np.array([10**e for e in range(16, -1, -1)], dtype=np.uint64)  # weights of 17 digits

# One card in the overlay: (low, name hash, chip hash).
Packed = tuple[int, int, int]
U64 = npt.NDArray[np.uint64]
U32 = npt.NDArray[np.uint32]
BYTES_PER_CARD_LIMIT = 32


def number_key(id_number: str) -> int | None:
    """The id number as an integer, None when it is not 17 digits and a check character."""
    if len(id_number) != 18:
        return None
    head, last = id_number[:17], _CHECK.get(id_number[17])
    if last is None or not head.isdigit() or not head.isascii():
        return None
    return int(head) * 11 + last


def spread(key: int) -> int:
    return (key * _MULT) & _MASK64


class Hasher:
    """The keyed hashes the relay and every node share (BLAKE2b, 8 bytes for a name, 4 for a chip
    serial, each with its own personalisation)."""

    __slots__ = ("_chip", "_name")

    def __init__(self, key: bytes) -> None:
        self._name = hashlib.blake2b(key=key[:64], digest_size=8, person=b"idg-name")
        self._chip = hashlib.blake2b(key=key[:64], digest_size=4, person=b"idg-chip")

    @property
    def name_state(self) -> Any:
        """The keyed state `name` copies (for a caller that inlines it)."""
        return self._name

    def name(self, name: str) -> int:
        h = self._name.copy()
        h.update(name.encode("utf-8", "surrogatepass"))
        return int.from_bytes(h.digest(), "little")

    def chip(self, chip_serial: str) -> int:
        h = self._chip.copy()
        h.update(chip_serial.encode("utf-8", "surrogatepass"))
        return int.from_bytes(h.digest(), "little")

    def names(self, names: Sequence[str]) -> U64:
        """`name` of each, as one array (the digests' bytes joined and read as little-endian
        uint64: the values `name` gives)."""
        copy = self._name.copy
        digests: list[bytes] = []
        add = digests.append
        for name in names:
            h = copy()
            h.update(name.encode("utf-8", "surrogatepass"))
            add(h.digest())
        return np.frombuffer(b"".join(digests), dtype="<u8").astype(np.uint64, copy=False)


def _view(array: Any) -> memoryview:
    """A memoryview of a 1-d array in the machine's own format ('Q' or 'I'), which memoryview
    indexes (it refuses numpy's '=I'), giving Python ints."""
    array = np.ascontiguousarray(array)
    return memoryview(array.view(np.uint8)).cast("Q" if array.itemsize == 8 else "I")


def _empty64() -> U64:
    return np.zeros(0, dtype=np.uint64)


class CompactIndex(CardIndex):
    """A CardIndex in at most 32 bytes a card (see the module's docstring). It subclasses CardIndex
    so that the verifier (verification/verifier.py) answers from it unchanged; none of
    CardIndex's storage is used."""

    __slots__ = (
        "_base_cards",
        "_bits",
        "_chip",
        "_dir",
        "_h",
        "_hasher",
        "_low",
        "_name",
        "_name_state",
        "_over",
        "_shift",
        "_v_chip",
        "_v_dir",
        "_v_h",
        "_v_low",
        "_v_name",
    )

    def __init__(self, key: bytes) -> None:
        super().__init__()
        self._hasher = Hasher(key)
        self._name_state = self._hasher.name_state
        self._over: dict[str, tuple[Packed, ...]] = {}
        self._set_arrays(_empty64(), _empty64(), _empty64(), np.zeros(0, dtype=np.uint32))

    # -- the arrays --------------------------------------------------------------------------

    def _set_arrays(self, h: U64, low: U64, name: U64, chip: U32, directory: Any = None) -> None:
        n = len(h)
        bits = max(1, (max(n, 2) // 2 - 1).bit_length())  # about two entries a bucket
        shift = 64 - bits
        if directory is None:
            buckets = h >> np.uint64(shift)
            dtype = np.uint32 if n < (1 << 32) else np.uint64
            directory = np.searchsorted(buckets, np.arange((1 << bits) + 1, dtype=np.uint64)).astype(dtype)
        self._h, self._low, self._name, self._chip, self._dir = h, low, name, chip, directory
        self._bits, self._shift = bits, shift
        # memoryviews: indexing one gives a Python int (a numpy scalar costs ten times more)
        self._v_h = _view(h)
        self._v_low = _view(low)
        self._v_name = _view(name)
        self._v_chip = _view(chip)
        self._v_dir = _view(directory)
        self._base_cards = n
        self.cards = n + sum(len(v) for v in self._over.values())

    def nbytes(self) -> int:
        """Bytes held by the arrays (the overlay is not counted: it is folded in by `freeze`)."""
        return int(
            self._h.nbytes + self._low.nbytes + self._name.nbytes + self._chip.nbytes + self._dir.nbytes
        )

    @classmethod
    def from_arrays(cls, key: bytes, h: U64, low: U64, name: U64, chip: U32) -> CompactIndex:
        """An index of arrays already in order (sorted by h; a number's cards in CardIndex order)."""
        index = cls(key)
        index._set_arrays(h, low, name, chip)
        return index

    def _base(self, id_number: str) -> tuple[Packed, ...]:
        key = number_key(id_number)
        if key is None or not self._base_cards:
            return ()
        h = spread(key)
        b = h >> self._shift
        found: list[Packed] = []
        v_h = self._v_h
        for i in range(self._v_dir[b], self._v_dir[b + 1]):
            if v_h[i] == h:
                found.append((self._v_low[i], self._v_name[i], self._v_chip[i]))
        return tuple(found)

    # -- CardIndex's interface ---------------------------------------------------------------

    def __len__(self) -> int:
        return self.cards

    def load(self, cards: Iterable[CardFacts]) -> None:
        """Add many cards at once (an empty index loading from the database: each card once)."""
        for card in cards:
            self.upsert(card)
        self.freeze()

    def upsert(self, card: CardFacts) -> None:
        """CardIndex.upsert: add a card, or replace the same card (same dates, name and chip)."""
        self.upsert_packed(
            card.id_number,
            pack(card) & _LOW,
            self._hasher.name(card.name),
            self._hasher.chip(card.chip_serial),
            card.blacklisted_until if card.flags & BLACKLISTED else None,
        )

    def upsert_packed(
        self, id_number: str, low: int, name: int, chip: int, blacklisted_until: dt.date | None
    ) -> None:
        """The same with the card already packed and hashed (as the ledger stream carries it)."""
        if low & BLACKLISTED and blacklisted_until is not None:
            self._until[id_number] = blacklisted_until.toordinal() - _EPOCH
        elif self._until:
            self._until.pop(id_number, None)
        current = self._over.get(id_number)
        if current is None:
            current = self._base(id_number)  # the number moves to the overlay whole
        identity = (low >> _ISSUE_SHIFT, name, chip)
        kept = tuple(p for p in current if (p[0] >> _ISSUE_SHIFT, p[1], p[2]) != identity)
        self._over[id_number] = (*kept, (low, name, chip))
        self.cards += len(kept) + 1 - len(current)

    def check(
        self,
        id_number: str,
        name: str,
        issued_on: dt.date,
        expires_on: dt.date | None,
        today: dt.date,
        chip_serial: str | None = None,
    ) -> tuple[Result, Reason | None, int]:
        """CardIndex.check, answer for answer."""
        entry = self._over.get(id_number) if self._over else None
        if entry is None:
            # number_key, inlined (this is the hot path)
            if len(id_number) != 18 or (last := _CHECK.get(id_number[17])) is None:
                return _MISMATCH
            head = id_number[:17]
            if not head.isdigit() or not head.isascii() or not self._base_cards:
                return _MISMATCH
            h = ((int(head) * 11 + last) * _MULT) & _MASK64
            b = h >> self._shift
            v_h = self._v_h
            lo, hi = self._v_dir[b], self._v_dir[b + 1]
            while lo < hi and v_h[lo] != h:
                lo += 1
            if lo == hi:
                return _MISMATCH
            if lo + 1 < hi and v_h[lo + 1] == h:  # several cards of the number: the general loop
                entry = self._base(id_number)
            else:  # one card: the common case, inlined
                low = self._v_low[lo]
                want = (issued_on.toordinal() - _EPOCH) << _ISSUE_SHIFT | (
                    0 if expires_on is None else expires_on.toordinal() - _EPOCH
                ) << _EXPIRY_SHIFT
                if low & _DATES != want:
                    return _MISMATCH
                hashed = self._name_state.copy()  # Hasher.name, inlined
                hashed.update(name.encode("utf-8", "surrogatepass"))
                if self._v_name[lo] != int.from_bytes(hashed.digest(), "little"):
                    return _MISMATCH
                if chip_serial is not None and self._v_chip[lo] != self._hasher.chip(chip_serial):
                    return _MISMATCH
                code = low & _CODE_MASK
                if not code & 7:
                    expires = (low >> _EXPIRY_SHIFT) & _DAY_MASK
                    if expires and today.toordinal() - _EPOCH > expires:
                        return _EXPIRED[code >> _FLAG_SHIFT]
                return _ANSWERS[code]
        want = (issued_on.toordinal() - _EPOCH) << _ISSUE_SHIFT | (
            0 if expires_on is None else expires_on.toordinal() - _EPOCH
        ) << _EXPIRY_SHIFT
        name_h = self._hasher.name(name)
        chip_h = None if chip_serial is None else self._hasher.chip(chip_serial)
        answer = _MISMATCH
        for low, card_name, card_chip in entry:
            if low & _DATES != want or card_name != name_h or (chip_h is not None and card_chip != chip_h):
                continue
            code = low & _CODE_MASK
            if code & 7:
                return _ANSWERS[code]
            expires = (low >> _EXPIRY_SHIFT) & _DAY_MASK
            if expires and today.toordinal() - _EPOCH > expires:
                return _EXPIRED[code >> _FLAG_SHIFT]
            answer = _ANSWERS[code]
        return answer

    def check_many(
        self,
        id_numbers: Sequence[str],
        names: Sequence[str],
        issued: Sequence[dt.date],
        expires: Sequence[dt.date | None],
        today: dt.date,
        chips: Sequence[str | None] | None = None,
    ) -> npt.NDArray[np.intp]:
        """`check` of many at once, as numbers into ANSWER_TABLE (`ANSWER_TABLE[k]` is what
        `check` answers). Numpy does the common case (a number of the 18-character shape with
        one card in the arrays, no chip serial): the numbers' keys, the directory's buckets, the
        entries and the comparisons, with the names hashed in one pass; a number in the overlay,
        one with several cards, a chip serial or another shape is answered by `check` itself."""
        n = len(id_numbers)
        answers = np.full(n, MISMATCH_ANSWER, dtype=np.intp)
        if n == 0:
            return answers
        scalar = np.zeros(n, dtype=bool)  # answered one by one, by check()
        joined = "".join(id_numbers)
        # (18 characters each: n of them, none longer)
        shaped = len(joined) == 18 * n and joined.isascii() and max(map(len, id_numbers)) == 18
        if shaped:
            raw = np.frombuffer(joined.encode("ascii"), dtype=np.uint8).reshape(n, 18)
            digits = raw[:, :17] - np.uint8(48)
            last = raw[:, 17]
            good = (digits <= 9).all(axis=1) & ((last - np.uint8(48) <= 9) | (last == ord("X")))
            check_digit = np.where(last == ord("X"), np.uint64(10), (last - np.uint8(48)).astype(np.uint64))
            keys = digits.astype(np.uint64) @ _DIGITS * np.uint64(11) + check_digit
            scalar |= ~good
        else:
            scalar[:] = True
            keys = np.zeros(n, dtype=np.uint64)
        if chips is not None:
            scalar |= np.fromiter((c is not None for c in chips), dtype=bool, count=n)
        over = self._over
        if over and not over.keys().isdisjoint(id_numbers):
            scalar |= np.fromiter((x in over for x in id_numbers), dtype=bool, count=n)
        todo = ~scalar
        if self._base_cards and todo.any():
            h = keys * np.uint64(_MULT)  # mod 2**64, as spread()
            bucket = (h >> np.uint64(self._shift)).astype(np.intp)
            lo = self._dir[bucket].astype(np.intp)
            hi = self._dir[bucket + 1].astype(np.intp)
            arrays_h = self._h
            last_entry = len(arrays_h) - 1
            position = np.full(n, -1, dtype=np.intp)
            step = 0
            open_ = todo & (lo < hi)
            while open_.any():  # a bucket holds about two entries: a few rounds
                at = np.minimum(lo + step, last_entry)
                hit = open_ & (arrays_h[at] == h)
                position[hit] = at[hit]
                open_ &= ~hit & (lo + step + 1 < hi)
                step += 1
            found = position >= 0
            at = np.where(found, position, 0)
            nxt = np.minimum(at + 1, last_entry)
            several = found & (at + 1 < hi) & (arrays_h[nxt] == h)
            scalar |= several
            one = found & ~several
            if one.any():
                low = self._low[at]
                # In Python's integers as `check` computes it (a date before 1900 is negative and
                # never matches; no date reaches 64 bits).
                ordinal = dt.date.toordinal  # (mapped: no generator's frame a date)
                issued_days = np.fromiter(map(ordinal, issued), dtype=np.int64, count=n)
                if None in expires:  # long-term cards (the epoch: day 0, as `check` packs them)
                    expiring: Iterable[int] = (_EPOCH if d is None else d.toordinal() for d in expires)
                else:
                    expiring = map(ordinal, typing.cast("Sequence[dt.date]", expires))
                expiry_days = np.fromiter(expiring, dtype=np.int64, count=n)
                want = (issued_days - _EPOCH) << _ISSUE_SHIFT | (expiry_days - _EPOCH) << _EXPIRY_SHIFT
                if one.all():
                    name_h = self._hasher.names(names)
                else:
                    name_h = np.zeros(n, dtype=np.uint64)
                    chosen = np.flatnonzero(one)
                    name_h[chosen] = self._hasher.names([names[i] for i in chosen.tolist()])
                match = (
                    one & ((low & np.uint64(_DATES)).astype(np.int64) == want) & (self._name[at] == name_h)
                )
                code = (low & np.uint64(_CODE_MASK)).astype(np.intp)
                expiry = ((low >> np.uint64(_EXPIRY_SHIFT)) & np.uint64(_DAY_MASK)).astype(np.int64)
                expired = ((code & 7) == 0) & (expiry != 0) & (today.toordinal() - _EPOCH > expiry)
                answers = np.where(
                    match, np.where(expired, EXPIRED_ANSWER + (code >> _FLAG_SHIFT), code), answers
                )
        for i in np.flatnonzero(scalar).tolist():
            answers[i] = _ANSWER_NUMBER[
                self.check(
                    id_numbers[i],
                    names[i],
                    issued[i],
                    expires[i],
                    today,
                    None if chips is None else chips[i],
                )
            ]
        return answers

    def bare_lookup(self, id_number: str) -> bool:
        return bool(self._over.get(id_number) or self._base(id_number))

    # -- snapshots ---------------------------------------------------------------------------

    def freeze(self) -> None:
        """Fold the overlay into the arrays (numbers of another shape stay in the overlay)."""
        keep: dict[str, tuple[Packed, ...]] = {}
        rows: list[tuple[int, int, int, int]] = []
        replaced: list[int] = []
        for id_number, cards in self._over.items():
            key = number_key(id_number)
            if key is None:
                keep[id_number] = cards
                continue
            spread_key = spread(key)
            replaced.append(spread_key)
            rows.extend((spread_key, low, name, chip) for low, name, chip in cards)
        if not rows:
            return
        new = np.array(rows, dtype=np.uint64).reshape(-1, 4)
        stay = ~np.isin(self._h, np.array(replaced, dtype=np.uint64))
        h = np.concatenate([self._h[stay], new[:, 0]])
        # Stable: a number's cards keep their order (base before overlay never mixes: a number
        # is wholly in one or the other).
        order = np.argsort(h, kind="stable")
        self._over = keep
        self._set_arrays(
            h[order],
            np.concatenate([self._low[stay], new[:, 1]])[order],
            np.concatenate([self._name[stay], new[:, 2]])[order],
            np.concatenate([self._chip[stay], new[:, 3].astype(np.uint32)])[order],
        )

    def dump(self, seq: int, extra: dict[str, Any]) -> bytes:
        """The index as a snapshot: a JSON header line (seq, counts, end dates of listings,
        numbers of another shape, `extra`) and the raw arrays. `freeze` first."""
        self.freeze()
        header = {
            "seq": seq,
            "cards": len(self._h),
            "until": self._until,
            "odd": {k: list(v) for k, v in self._over.items()},
            **extra,
        }
        out = io.BytesIO()
        out.write(json.dumps(header, separators=(",", ":")).encode() + b"\n")
        for array in (self._h, self._low, self._name, self._chip, self._dir):
            out.write(np.ascontiguousarray(array).tobytes())
        return out.getvalue()

    @classmethod
    def restore(cls, key: bytes, blob: bytes | bytearray) -> tuple[CompactIndex, dict[str, Any]]:
        """An index from `dump`'s bytes, the arrays read in place (no copy), and its header."""
        end = blob.index(b"\n")
        header: dict[str, Any] = json.loads(blob[:end])
        n = int(header["cards"])
        view = memoryview(blob)[end + 1 :]
        arrays: list[Any] = []
        offset = 0
        bits = max(1, (max(n, 2) // 2 - 1).bit_length())
        dir_type = np.uint32 if n < (1 << 32) else np.uint64
        for dtype, count in (
            (np.uint64, n),
            (np.uint64, n),
            (np.uint64, n),
            (np.uint32, n),
            (dir_type, (1 << bits) + 1),
        ):
            arrays.append(np.frombuffer(view, dtype=dtype, count=count, offset=offset))
            offset += count * np.dtype(dtype).itemsize
        index = cls(key)
        index._until = {k: int(v) for k, v in header.pop("until").items()}
        index._over = {k: tuple((c[0], c[1], c[2]) for c in v) for k, v in header.pop("odd").items()}
        index._set_arrays(*arrays)
        return index, header
