"""The compact verification index of a verifier node: at most 32 bytes per card, the same answers as
verification/index.py's CardIndex (a property test over random ledgers holds them equal).

CardIndex keeps a dict of Python ints (about 150 bytes a card) and hashes names with Python's
per-process hash: fine for one process that loads from the database, impossible to ship. A node
loads its index from a snapshot that another process (the relay) wrote, so the hashes must mean
the same in both: id numbers, names and chip serials are hashed with SipHash-2-4 (the keyed hash
made for short inputs, which Python's own `hash` was), each under its own 128-bit key derived from
the deployment's secret (`Settings.derived_key("scaleout-index")`). The snapshot holds no id
number, name or chip serial, only these keyed hashes (the few listed holders' end dates and
`odd` entries excepted, see `dump`).

Layout: numpy arrays sorted by h, one entry per card,

    h      uint64   keyed hash of the id number
    low    uint64   bits 0-44 of CardIndex's packing: status, the holder's flags, issue and expiry
    name   uint64   keyed hash of the name
    chip   uint32   keyed hash of the chip serial (its low 32 bits)

= 28 bytes, plus a directory of 4-byte offsets, one per two cards (the top bits of h select a
bucket of about two entries): 30 bytes a card. A lookup is one hash, two directory reads and a
scan of one or two entries through memoryviews (Python ints, no numpy scalars).

Two numbers share an h with probability 2**-64 a pair (nationally, about a 5 % chance that some
pair among 1.3 billion cards does). They then share a bucket's run of entries, and each card
still matches only its own dates, name and chip: answers do not change, and no one can find such
a pair without the key. (Until format 2 h was the number itself, times an odd constant: exact,
but a snapshot then held every id number in the clear, and parsing the number cost a single
check more than the whole dict lookup of CardIndex.)

A batch is looked up at once by `check_many` (a verifier node's batch path): the keys, buckets
and entries of the whole batch as numpy arrays, the numbers and names hashed in one pass each,
the answers as numbers into ANSWER_TABLE; whatever is not the common case (overlay, several cards
of a number, a chip serial) goes through `check`.

Changes after the snapshot go to a small dict `overlay` (id number -> the number's cards, in
CardIndex's order), which wins over the arrays; `freeze()` folds it in (the relay does before each
snapshot).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import typing
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
from siphashc import siphash

from idguard.verification.index import (
    BLACKLISTED,
    STATUS_CODES,
    CardFacts,
    CardIndex,
    Reason,
    Result,
    pack,
)

FORMAT = 2  # the snapshot's layout and hashes (a node refuses a snapshot of another)
_LOW = (1 << 45) - 1  # status, flags, issue and expiry
_ISSUE_SHIFT = 5
_EXPIRY_SHIFT = 25
_DAY_MASK = (1 << 20) - 1
_DATES = _LOW & ~31  # issue and expiry
_CODE_MASK = 31
_FLAG_SHIFT = 3
_EPOCH = dt.date(1900, 1, 1).toordinal()

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

# One card in the overlay: (low, name hash, chip hash).
Packed = tuple[int, int, int]
U64 = npt.NDArray[np.uint64]
U32 = npt.NDArray[np.uint32]
BYTES_PER_CARD_LIMIT = 32


class Hasher:
    """The keyed hashes the relay and every node share: SipHash-2-4 of the UTF-8 bytes, 64 bits
    for an id number and a name, the low 32 for a chip serial, each under its own key (BLAKE2b
    of the index key, personalised). A str is hashed as UTF-8 by siphashc itself; one holding a
    lone surrogate (JSON can carry one) as `encode("utf-8", "surrogatepass")` gives it."""

    __slots__ = ("_chip", "_name", "_number", "chip_key", "name_key", "number_key")

    def __init__(self, key: bytes) -> None:
        self.number_key, self.name_key, self.chip_key = (
            hashlib.blake2b(key=key[:64], digest_size=16, person=person).digest()
            for person in (b"idg-numb", b"idg-name", b"idg-chip")
        )
        self._number = partial(siphash, self.number_key)
        self._name = partial(siphash, self.name_key)
        self._chip = partial(siphash, self.chip_key)

    def number(self, id_number: str) -> int:
        try:
            return self._number(id_number)
        except UnicodeEncodeError:
            return self._number(id_number.encode("utf-8", "surrogatepass"))

    def name(self, name: str) -> int:
        try:
            return self._name(name)
        except UnicodeEncodeError:
            return self._name(name.encode("utf-8", "surrogatepass"))

    def chip(self, chip_serial: str) -> int:
        try:
            digest: int = self._chip(chip_serial)
        except UnicodeEncodeError:
            digest = self._chip(chip_serial.encode("utf-8", "surrogatepass"))
        return digest & 0xFFFFFFFF

    def numbers(self, id_numbers: Sequence[str]) -> U64:
        """`number` of each, as one array."""
        try:
            return np.fromiter(map(self._number, id_numbers), dtype=np.uint64, count=len(id_numbers))
        except UnicodeEncodeError:
            return np.fromiter(map(self.number, id_numbers), dtype=np.uint64, count=len(id_numbers))

    def names(self, names: Sequence[str]) -> U64:
        """`name` of each, as one array."""
        try:
            return np.fromiter(map(self._name, names), dtype=np.uint64, count=len(names))
        except UnicodeEncodeError:
            return np.fromiter(map(self.name, names), dtype=np.uint64, count=len(names))


class SnapshotFormatError(ValueError):
    """A snapshot written in another format than this release reads."""


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
    CardIndex's storage is used. It knows id numbers only by their keyed hash h: the overlay and
    the listings' end dates are keyed by h too."""

    __slots__ = (
        "_base_cards",
        "_bits",
        "_chip",
        "_dir",
        "_ends",
        "_h",
        "_hasher",
        "_low",
        "_name",
        "_name_key",
        "_number_key",
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
        # the keys `check` hands siphashc itself (Hasher.number and Hasher.name are the same with
        # the surrogate fallback, which `check` takes on its own)
        self._number_key, self._name_key = self._hasher.number_key, self._hasher.name_key
        self._over: dict[int, tuple[Packed, ...]] = {}  # h -> the number's cards
        self._ends: dict[int, int] = {}  # h -> last day of a listing with an end date
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

    def _base(self, h: int) -> tuple[Packed, ...]:
        """The cards under h in the arrays."""
        if not self._base_cards:
            return ()
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
        h = self._hasher.number(id_number)
        if low & BLACKLISTED and blacklisted_until is not None:
            self._ends[h] = blacklisted_until.toordinal() - _EPOCH
        elif self._ends:
            self._ends.pop(h, None)
        current = self._over.get(h)
        if current is None:
            current = self._base(h)  # the number moves to the overlay whole
        identity = (low >> _ISSUE_SHIFT, name, chip)
        kept = tuple(p for p in current if (p[0] >> _ISSUE_SHIFT, p[1], p[2]) != identity)
        self._over[h] = (*kept, (low, name, chip))
        self.cards += len(kept) + 1 - len(current)

    def blacklisted(self, id_number: str, today: dt.date) -> bool:
        """CardIndex.blacklisted (read only for a card carrying the flag)."""
        until = self._ends.get(self._hasher.number(id_number)) if self._ends else None
        return until is None or today.toordinal() - _EPOCH <= until

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
        try:
            h = siphash(self._number_key, id_number)
        except UnicodeEncodeError:
            h = self._hasher.number(id_number)
        entry = self._over.get(h) if self._over else None
        if entry is None:  # (an empty index's directory is all zeros: no entry to scan)
            v_h = self._v_h
            lo = self._v_dir[h >> self._shift]
            end = self._base_cards
            while lo < end and (seen := v_h[lo]) < h:  # sorted: past h, it is not there
                lo += 1
            if lo == end or seen != h:
                return _MISMATCH
            if lo + 1 < end and v_h[lo + 1] == h:  # several cards of the number: the general loop
                entry = self._base(h)
            else:  # one card: the common case, inlined (this is the hot path)
                low = self._v_low[lo]
                want = (issued_on.toordinal() - _EPOCH) << _ISSUE_SHIFT | (
                    0 if expires_on is None else expires_on.toordinal() - _EPOCH
                ) << _EXPIRY_SHIFT
                if low & _DATES != want:
                    return _MISMATCH
                try:
                    named = siphash(self._name_key, name)
                except UnicodeEncodeError:
                    named = self._hasher.name(name)
                if self._v_name[lo] != named:
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
        `check` answers). Numpy does the common case (a number with one card in the arrays, no
        chip serial): the directory's buckets, the entries and the comparisons, with the numbers
        and the names hashed in one pass each; a number in the overlay, one with several cards or
        a chip serial is answered by `check` itself."""
        n = len(id_numbers)
        answers = np.full(n, MISMATCH_ANSWER, dtype=np.intp)
        if n == 0:
            return answers
        h = self._hasher.numbers(id_numbers)
        scalar = np.zeros(n, dtype=bool)  # answered one by one, by check()
        if chips is not None:
            scalar |= np.fromiter((c is not None for c in chips), dtype=bool, count=n)
        over = self._over
        if over:
            scalar |= np.isin(h, np.fromiter(over, dtype=np.uint64, count=len(over)))
        todo = ~scalar
        if self._base_cards and todo.any():
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
        h = self._hasher.number(id_number)
        return bool(self._over.get(h) or self._base(h))

    # -- snapshots ---------------------------------------------------------------------------

    def freeze(self) -> None:
        """Fold the overlay into the arrays."""
        if not self._over:
            return
        rows = [(h, low, name, chip) for h, cards in self._over.items() for low, name, chip in cards]
        replaced = np.fromiter(self._over, dtype=np.uint64, count=len(self._over))
        new = np.array(rows, dtype=np.uint64).reshape(-1, 4)
        stay = ~np.isin(self._h, replaced)
        h = np.concatenate([self._h[stay], new[:, 0]])
        # Stable: a number's cards keep their order (base before overlay never mixes: an h is
        # wholly in one or the other).
        order = np.argsort(h, kind="stable")
        self._over = {}
        self._set_arrays(
            h[order],
            np.concatenate([self._low[stay], new[:, 1]])[order],
            np.concatenate([self._name[stay], new[:, 2]])[order],
            np.concatenate([self._chip[stay], new[:, 3].astype(np.uint32)])[order],
        )

    def dump(self, seq: int, extra: dict[str, Any]) -> bytes:
        """The index as a snapshot: a JSON header line (the format, seq, the count, the end dates
        of listings by h, `extra`) and the raw arrays. Folds the overlay in first."""
        self.freeze()
        header = {
            "format": FORMAT,
            "seq": seq,
            "cards": len(self._h),
            "ends": {str(h): day for h, day in self._ends.items()},
            **extra,
        }
        out = io.BytesIO()
        out.write(json.dumps(header, separators=(",", ":")).encode() + b"\n")
        for array in (self._h, self._low, self._name, self._chip, self._dir):
            out.write(np.ascontiguousarray(array).tobytes())
        return out.getvalue()

    @classmethod
    def restore(cls, key: bytes, blob: bytes | bytearray) -> tuple[CompactIndex, dict[str, Any]]:
        """An index from `dump`'s bytes, the arrays read in place (no copy), and the rest of its
        header. A snapshot of another format (another layout or other hashes) is refused: its
        answers would all be wrong (a relay of this release writes a new one when it starts)."""
        end = blob.index(b"\n")
        header: dict[str, Any] = json.loads(blob[:end])
        found = header.pop("format", 1)
        if found != FORMAT:
            raise SnapshotFormatError(f"the snapshot is of format {found}; this node reads format {FORMAT}")
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
        index._ends = {int(h): int(day) for h, day in header.pop("ends").items()}
        index._set_arrays(*arrays)
        return index, header
