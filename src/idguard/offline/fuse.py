"""Keyed 64-bit key hashes and 4-wise binary fuse filters with k-bit fingerprints, in numpy.

Pure: numpy only. Everything here is vectorised over arrays of keys; nothing uses Python's
per-process `hash()`, so a set built by the server answers the same in every reader.

The key hash. A key is at most 64 ASCII bytes (`KEY_BYTES`), zero-padded and read as eight
little-endian 64-bit words; a 16-byte salt gives two 64-bit seeds. The hash chains MurmurHash3's
64-bit finaliser (`fmix64`, a bijection of 64-bit words) over the words:

    h = s0;  for i in 0..7:  h = fmix64(h ^ (w[i] + s1 + i * 0x9E3779B97F4A7C15))

so distinct keys collide with probability about 2^-64 per pair, and a new salt gives new hashes.
The salt is no secret (it is in the file): it makes each generation's hashes independent of the
last and lets the builder re-draw when two keys of a universe share a hash.

The filter. Binary fuse filters (Graf and Lemire, "Binary Fuse Filters: Fast and Smaller Than
Xor Filters", ACM JEA 2022), arity 4: an array of `length` k-bit slots split into segments of a
power-of-two length; a key hashes to one slot in each of four consecutive segments, and the
filter holds the key iff the XOR of its four slots equals its k-bit fingerprint. For n keys the
array has about 1.075 n slots (parameters from the paper), so a filter costs about 1.075 k bits
per key and accepts a key it was not built from with probability 2^-k. Construction is the
paper's peeling, done in rounds: every slot that holds a single key is peeled at once (a key
peeled in a round uses no other key's peeling slot of that round), then values are assigned in
reverse round order, each round at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
KEY_BYTES = 64
ARITY = 4
_C1 = np.uint64(0xFF51AFD7ED558CCD)
_C2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLDEN = 0x9E3779B97F4A7C15
_FP_SALT = 0xD6E8FEB86659FD93  # mixed in for the fingerprint bits
_M64 = (1 << 64) - 1
_S33 = np.uint64(33)


def _fmix(h: U64) -> U64:
    """MurmurHash3's fmix64, in place on `h` (returned)."""
    h ^= h >> _S33
    h *= _C1
    h ^= h >> _S33
    h *= _C2
    h ^= h >> _S33
    return h


def seeds(salt: bytes) -> tuple[int, int]:
    if len(salt) != 16:
        raise ValueError("a salt has 16 bytes")
    return int.from_bytes(salt[:8], "little"), int.from_bytes(salt[8:], "little")


def key_array(keys: list[bytes]) -> npt.NDArray[np.bytes_]:
    """Keys (ASCII, at most KEY_BYTES, no NUL) as a fixed-width array for `hash_keys`."""
    return np.array(keys, dtype=f"S{KEY_BYTES}")


def hash_keys(keys: npt.NDArray[np.bytes_], salt: bytes) -> U64:
    """The salted 64-bit hash of each key of a fixed-width S64 array (see the module's doc)."""
    if keys.dtype != np.dtype(f"S{KEY_BYTES}"):
        keys = keys.astype(f"S{KEY_BYTES}")
    n = len(keys)
    words = np.ascontiguousarray(keys).view("<u8").reshape(n, KEY_BYTES // 8)
    s0, s1 = seeds(salt)
    h = np.full(n, s0, dtype=np.uint64)
    for i in range(KEY_BYTES // 8):
        add = np.uint64((s1 + i * _GOLDEN) & _M64)
        with np.errstate(over="ignore"):
            h ^= words[:, i] + add
        _fmix(h)
    return h


def mix(h: U64, seed: int) -> U64:
    """A filter's own view of the key hashes: fmix64(h ^ seed), a new array."""
    return _fmix(h ^ np.uint64(seed & _M64))


@dataclass(frozen=True, slots=True)
class Params:
    """A filter's shape: `segment_length` a power of two; `length` = (count + 3) * segment_length."""

    segment_length: int
    segment_count: int

    @property
    def length(self) -> int:
        return (self.segment_count + ARITY - 1) * self.segment_length

    @property
    def segment_count_length(self) -> int:
        return self.segment_count * self.segment_length


def params_for(n: int, *, slack: float = 1.0) -> Params:
    """The paper's arity-4 parameters for n keys: segment length 2^floor(ln n / ln 2.91 - 0.5),
    size factor max(1.075, 0.77 + 0.305 ln 600000 / ln n); `slack` > 1 after failed builds."""
    n = max(n, 2)
    segment_length = 1 << max(1, min(18, math.floor(math.log(n) / math.log(2.91) - 0.5)))
    factor = max(1.075, 0.77 + 0.305 * math.log(600_000) / math.log(n)) * slack
    capacity = max(round(n * factor), 4 * segment_length)
    count = max(1, math.ceil(capacity / segment_length) - (ARITY - 1))
    return Params(segment_length, count)


_S18 = np.uint64(18)
_S21 = np.uint64(21)
_S32 = np.uint64(32)
_S42 = np.uint64(42)


def positions(g: U64, params: Params) -> npt.NDArray[np.int64]:
    """The four slots of each mixed hash `g`: shape (n, 4)."""
    scl = params.segment_count_length
    seg = params.segment_length
    mask = np.uint64(seg - 1)
    h0 = ((g >> _S32) * np.uint64(scl)) >> _S32  # in [0, count * segment_length)
    g2 = _fmix(g ^ np.uint64(_GOLDEN))
    out = np.empty((len(g), ARITY), dtype=np.int64)
    out[:, 0] = h0
    out[:, 1] = (h0 + np.uint64(seg)) ^ (g2 & mask)
    out[:, 2] = (h0 + np.uint64(2 * seg)) ^ ((g2 >> _S21) & mask)
    out[:, 3] = (h0 + np.uint64(3 * seg)) ^ ((g2 >> _S42) & mask)
    return out


def fingerprints(g: U64, k: int) -> U64:
    """Each key's k-bit fingerprint (bits independent of its slots)."""
    f = _fmix(g ^ np.uint64(_FP_SALT))
    return f & np.uint64((1 << k) - 1)


def build(g: U64, params: Params, k: int) -> npt.NDArray[np.uint32] | None:
    """The slots of a filter holding the keys whose mixed hashes are `g` (distinct), or None
    when peeling fails (the caller retries with another seed).

    Each slot keeps how many unpeeled keys use it and the sum of their indices, so a slot used
    by one key names it (the paper keeps an XOR; a sum is as good and numpy adds in bulk). Keys
    are numbered in the order of their first slot, so each round touches nearby memory."""
    n = len(g)
    length = params.length
    fps = np.zeros(length, dtype=np.uint32)
    if n == 0:
        return fps
    pos = positions(g, params)
    order = np.argsort(pos[:, 0], kind="stable")
    pos = pos[order]
    flat = pos.ravel()
    count = np.bincount(flat, minlength=length)
    total = np.bincount(
        flat, weights=np.repeat(np.arange(n, dtype=np.float64), ARITY), minlength=length
    ).astype(np.int64)
    owner_slot = np.full(n, -1, dtype=np.int64)
    slot_mark = np.full(length, -1, dtype=np.int64)
    rounds: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] = []
    peeled = 0
    queue = np.flatnonzero(count == 1)
    while queue.size:
        keys = total[queue]
        # A key may be alone in two of its slots: peel it through one (the last write wins).
        owner_slot[keys] = queue
        alone = owner_slot[keys] == queue
        keys, slots = keys[alone], queue[alone]
        rounds.append((keys, slots))
        peeled += len(keys)
        touched = pos[keys].ravel()
        np.subtract.at(count, touched, 1)
        np.subtract.at(total, touched, np.repeat(keys, ARITY))
        queue = touched[count[touched] == 1]
        if queue.size:  # each slot once (no sort: the last write names the one kept)
            slot_mark[queue] = np.arange(len(queue))
            queue = queue[slot_mark[queue] == np.arange(len(queue))]
    if peeled != n:
        return None
    want = fingerprints(g, k).astype(np.uint32)[order]
    for keys, slots in reversed(rounds):
        p = pos[keys]
        fps[slots] = want[keys] ^ fps[p[:, 0]] ^ fps[p[:, 1]] ^ fps[p[:, 2]] ^ fps[p[:, 3]]
    return fps


def contains(fps: npt.NDArray[np.uint32], g: U64, params: Params, k: int) -> npt.NDArray[np.bool_]:
    """Whether the filter accepts each mixed hash."""
    if len(g) == 0:
        return np.zeros(0, dtype=bool)
    p = positions(g, params)
    got = fps[p[:, 0]] ^ fps[p[:, 1]] ^ fps[p[:, 2]] ^ fps[p[:, 3]]
    return np.asarray(got == fingerprints(g, k).astype(np.uint32))


def pack_bits(values: npt.NDArray[np.uint32], k: int) -> bytes:
    """k-bit values packed little-endian, value after value (ceil(n * k / 8) bytes)."""
    if k == 8:
        return values.astype("<u1").tobytes()
    if k == 16:
        return values.astype("<u2").tobytes()
    if k == 32:
        return values.astype("<u4").tobytes()
    bits = ((values[:, None] >> np.arange(k, dtype=np.uint32)) & 1).astype(np.uint8)
    return np.packbits(bits.ravel(), bitorder="little").tobytes()


def unpack_bits(data: bytes, n: int, k: int) -> npt.NDArray[np.uint32]:
    """`pack_bits`' inverse."""
    if len(data) != (n * k + 7) // 8:
        raise ValueError("packed slots have the wrong length")
    if k == 8:
        return np.frombuffer(data, dtype="<u1").astype(np.uint32)
    if k == 16:
        return np.frombuffer(data, dtype="<u2").astype(np.uint32)
    if k == 32:
        return np.frombuffer(data, dtype="<u4").astype(np.uint32)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")[: n * k]
    weights = (np.uint32(1) << np.arange(k, dtype=np.uint32)).astype(np.uint32)
    return np.asarray((bits.reshape(n, k).astype(np.uint32) * weights).sum(axis=1, dtype=np.uint32))


# --- one key at a time, in Python integers (the reader's single lookups): the same values as the
# array functions above, without numpy's per-call overhead.

_M = (1 << 64) - 1
_IC1 = int(_C1)
_IC2 = int(_C2)


def _fmix_int(h: int) -> int:
    h ^= h >> 33
    h = (h * _IC1) & _M
    h ^= h >> 33
    h = (h * _IC2) & _M
    return h ^ (h >> 33)


def hash_one(key: bytes, salt: bytes) -> int:
    """`hash_keys` of one key (at most KEY_BYTES, no NUL)."""
    s0, s1 = seeds(salt)
    padded = key.ljust(KEY_BYTES, b"\0")
    h = s0
    for i in range(KEY_BYTES // 8):
        word = int.from_bytes(padded[8 * i : 8 * i + 8], "little")
        h = _fmix_int(h ^ ((word + s1 + i * _GOLDEN) & _M))
    return h


def contains_one(fps: npt.NDArray[np.uint32], h: int, seed: int, params: Params, k: int) -> bool:
    """`contains` of one key hash."""
    g = _fmix_int(h ^ (seed & _M))
    seg = params.segment_length
    mask = seg - 1
    h0 = ((g >> 32) * params.segment_count_length) >> 32
    g2 = _fmix_int(g ^ _GOLDEN)
    item = fps.item
    got = (
        item(h0)
        ^ item((h0 + seg) ^ (g2 & mask))
        ^ item((h0 + 2 * seg) ^ ((g2 >> 21) & mask))
        ^ item((h0 + 3 * seg) ^ ((g2 >> 42) & mask))
    )
    return bool(got == _fmix_int(g ^ _FP_SALT) & ((1 << k) - 1))
