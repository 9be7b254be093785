"""1:N identification (指纹查重): find a live finger among many registered fingers.

Exhaustive 1:N costs one 1:1 comparison (~1 ms) per registered finger. The gallery instead
indexes every finger's MCC cylinders with locality-sensitive hashing, after Cappelli, Ferrara
and Maltoni, "Fingerprint Indexing Based on Minutia Cylinder-Code", IEEE TPAMI 33(5), 2011:

* each cylinder is a fixed-length vector; l hash functions each map it to an h-bit code, so
  similar cylinders share codes (collide) in many of the l tables, different ones in few;
* a search hashes the live finger's cylinders, looks their codes up in the l tables and counts,
  for every (live cylinder, registered cylinder) pair, the tables in which they collide;
* the registered fingers are ranked by those collisions, and only the first few (`candidates`)
  are compared with the 1:1 matcher (`matching.similarity`), whose score decides.

Measured departures from the paper (docs/fingerprints.md, "1:N search of the blacklist"),
because on the synthetic set the paper's choices found the true finger too rarely:

* the hash functions are random hyperplanes (sign of a random +-1 combination, SimHash) over
  the cylinder coarsened to 8 x 8 cells x 3 layers, instead of sampled bits of the binary
  cylinder: a genuine pair of cylinders shares only ~70 % of its neighbours (missed and spurious
  minutiae), and single bits flip too often for any h that keeps the tables selective;
  multi-probe LSH (Lv et al., VLDB 2007) also looks up the codes with the `probes` least
  certain bits flipped;
* collisions are consolidated geometrically, not summed: a colliding pair of minutiae implies a
  placement of the registered finger on the live one (rotation and shift), and a finger scores
  the largest number of collisions that agree on one placement (a Hough vote), each live and
  each registered cylinder counted once per placement (one-to-one). Impostor collisions scatter
  over placements; a true mate's pile up.

Removed fingers leave the tables when the run holding them is next merged; until then searches
skip them. A finger slot is never reused: a replaced or removed finger leaves 17 bytes behind.

Memory per registered finger: the stored template, zlib-compressed (~14 KB), plus per cylinder
its l codes and sorted-table position (8 l bytes) and its minutia (16 bytes); see `bytes_used`.
"""

from __future__ import annotations

import math
import struct
import threading
import zlib
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from idguard.biometrics.matching import DEFAULT_THRESHOLD, similarity
from idguard.biometrics.mcc import Template
from idguard.biometrics.record import TemplateError

I32 = NDArray[np.int32]
I64 = NDArray[np.int64]
F32 = NDArray[np.float32]

_HEADER = struct.Struct("<4sBBBHH")  # as mcc.Template.to_bytes writes it
_MAGIC, _FORMAT, _NS, _ND = b"IGMC", 1, 16, 6


@dataclass(frozen=True, slots=True)
class IndexParams:
    """LSH and consolidation parameters (measured on the synthetic set, docs/fingerprints.md)."""

    tables: int = 32  # l, hash functions (tables)
    bits: int = 12  # h, bits per code
    probes: int = 3  # multi-probe: extra look-ups per table, each with one uncertain bit flipped
    candidates: int = 30  # fingers compared 1:1 per search
    angle_bins: int = 12  # Hough cells: rotation (30 degrees)...
    shift_bin: float = 48.0  # ... and shift (pixels at 500 dpi), on two grids offset by half a cell
    seed: int = 2011  # the hyperplanes; fixed, so every worker builds the same index


DEFAULT_INDEX = IndexParams()


def _pooled(levels: NDArray[np.uint8]) -> F32:
    """Cylinder levels (n, 16*16*6) -> (n, 192): cells above 'empty' (level 2, Psi(0)), summed over
    2 x 2 cells and 2 layers, centred per cylinder. Invalid cells are 0 like empty ones."""
    n = levels.shape[0]
    v = levels.astype(np.float32)
    v -= 2.0
    np.maximum(v, 0.0, out=v)
    # Pairwise adds of strided views: numpy's reductions over short axes are slow.
    v = v[:, 0::2] + v[:, 1::2]  # layers: (n, 16 * 16 * 3)
    w = v.reshape(n, 16, 8, 6)
    w = w[:, :, :, 0:3] + w[:, :, :, 3:6]  # columns: (n, 16, 8, 3)
    x = w.reshape(n, 8, 2, 24)
    pooled = (x[:, :, 0] + x[:, :, 1]).reshape(n, 192)  # rows
    pooled -= pooled.mean(axis=1, keepdims=True)
    return pooled


@dataclass(frozen=True, eq=False)
class _Hasher:
    params: IndexParams
    planes: F32 = field(init=False)  # (192, l * h), entries -1, 0, +1
    weights: I64 = field(init=False)

    def __post_init__(self) -> None:
        p = self.params
        if not 1 <= p.bits <= 30:
            raise ValueError("bits per code must be 1..30")
        rng = np.random.default_rng(p.seed)
        planes = rng.choice(np.array([-1.0, 0.0, 1.0], dtype=np.float32), size=(192, p.tables * p.bits))
        object.__setattr__(self, "planes", planes)
        object.__setattr__(self, "weights", np.left_shift(1, np.arange(p.bits, dtype=np.int64)))

    def project(self, levels: NDArray[np.uint8]) -> F32:
        out: F32 = (_pooled(levels) @ self.planes).reshape(-1, self.params.tables, self.params.bits)
        return out

    def codes(self, levels: NDArray[np.uint8]) -> I32:
        """(n, l) codes of registered cylinders."""
        out: I32 = ((self.project(levels) > 0).astype(np.int64) @ self.weights).astype(np.int32)
        return out

    def probe_codes(self, levels: NDArray[np.uint8]) -> I32:
        """(n, l, 1 + probes): each code, then the code with one of its least certain bits flipped."""
        proj = self.project(levels)
        code = (proj > 0).astype(np.int64) @ self.weights
        if self.params.probes == 0:
            return code[:, :, None].astype(np.int32)
        shaky = np.argsort(np.abs(proj), axis=2)[:, :, : self.params.probes]
        flipped = code[:, :, None] ^ self.weights[shaky]
        out: I32 = np.concatenate([code[:, :, None], flipped], axis=2).astype(np.int32)
        return out


@dataclass(frozen=True, eq=False)
class _Segment:
    """An immutable run of indexed cylinders: per table, the codes sorted and where each came from."""

    codes: I32  # (l, m) sorted per table
    order: I32  # (l, m) row of each sorted code in the arrays below
    slot: I32  # (m,) finger slot of each cylinder
    geo: F32  # (3, m) x, y, theta of each cylinder's minutia

    @property
    def size(self) -> int:
        return int(self.slot.shape[0])

    @classmethod
    def build(cls, codes: I32, slot: I32, geo: F32) -> _Segment:
        """codes (m, l) unsorted."""
        by_table = np.ascontiguousarray(codes.T)  # (l, m)
        order = np.argsort(by_table, axis=1, kind="stable").astype(np.int32)
        return cls(np.take_along_axis(by_table, order, axis=1), order, slot, geo)

    def unsorted_codes(self) -> I32:
        out = np.empty((self.codes.shape[1], self.codes.shape[0]), dtype=np.int32)
        np.put_along_axis(out.T, self.order, self.codes, axis=1)
        return out


def _merge(a: _Segment, b: _Segment, alive: NDArray[np.bool_]) -> _Segment:
    codes = np.concatenate([a.unsorted_codes(), b.unsorted_codes()])
    slot = np.concatenate([a.slot, b.slot])
    geo = np.concatenate([a.geo, b.geo], axis=1)
    keep = alive[slot]
    if not keep.all():  # cylinders of removed fingers leave the index here
        codes, slot, geo = codes[keep], slot[keep], geo[:, keep]
    return _Segment.build(codes, slot, geo)


@dataclass(frozen=True, eq=False)
class _State:
    """What a search reads: replaced as a whole by the writer, never changed in place (except
    `alive`, whose entries only go from True to False)."""

    segments: tuple[_Segment, ...]
    alive: NDArray[np.bool_]
    blobs: list[bytes | None]  # appended to and cleared in place (readers check for None)
    keys: list[str | None]


def _parse_levels(data: bytes) -> tuple[NDArray[np.uint8], F32]:
    """Cell levels and minutiae of a stored template, without building the comparison arrays
    (`Template.from_bytes` does that, ~1 ms): the same header and length checks."""
    if len(data) < _HEADER.size:
        raise TemplateError("template.length", f"{len(data)} bytes cannot hold the header")
    magic, version, ns, nd, n, _ = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != _FORMAT:
        raise TemplateError("template.magic", "not an idguard MCC template of format 1")
    if (ns, nd) != (_NS, _ND):
        raise TemplateError("template.geometry", f"the index needs 16 x 6 cylinders, not {ns} x {nd}")
    cell_bytes = ns * ns * nd // 2
    if len(data) != _HEADER.size + n * (12 + cell_bytes + ns * ns // 8):
        raise TemplateError("template.length", f"{len(data)} bytes do not match {n} cylinders")
    geo = np.frombuffer(data, dtype="<f4", count=3 * n, offset=_HEADER.size).reshape(3, n)
    nibbles = np.frombuffer(data, dtype=np.uint8, count=n * cell_bytes, offset=_HEADER.size + 12 * n)
    levels = np.empty((n, 2 * cell_bytes), dtype=np.uint8)
    levels[:, 0::2] = (nibbles >> 4).reshape(n, cell_bytes)
    levels[:, 1::2] = (nibbles & 0x0F).reshape(n, cell_bytes)
    return levels, geo.astype(np.float32)


def _best_per_group(group: I64, weight: NDArray[np.float64]) -> I64:
    """Indices of the heaviest entry of each group (ties: the first)."""
    order = np.lexsort((-weight, group))
    g = group[order]
    out: I64 = order[np.r_[True, g[1:] != g[:-1]]]
    return out


class Gallery:
    """Registered fingers searchable 1:N. Thread-safe for one writer and concurrent searches.

    Keys are opaque strings. `add` replaces a finger already under that key; `remove` forgets
    one (nothing happens if absent). Neither rebuilds anything: a finger is searchable as soon
    as `add` returns and unfindable as soon as `remove` returns.
    """

    def __init__(self, *, threshold: float | None = None, params: IndexParams = DEFAULT_INDEX) -> None:
        self.threshold = DEFAULT_THRESHOLD if threshold is None else threshold
        self.params = params
        self._hasher = _Hasher(params)
        self._write = threading.Lock()
        self._slots: dict[str, int] = {}
        self._state = _State(segments=(), alive=np.zeros(0, dtype=bool), blobs=[], keys=[])

    # ---- writing ---------------------------------------------------------------------------
    def add(self, key: str, template: Template) -> None:
        """Add the finger `key` (replacing the one registered under it, if any)."""
        if (template.ns, template.nd) != (_NS, _ND):
            raise ValueError(f"the index needs 16 x 6 cylinders, not {template.ns} x {template.nd}")
        geo = np.stack([template.x, template.y, template.theta]).astype(np.float32)
        self._insert(key, template.cell_levels, geo, zlib.compress(template.to_bytes(), 1))

    def add_stored(self, key: str, data: bytes) -> None:
        """`add` from stored bytes (`Template.to_bytes()`, optionally zlib-compressed as the registry
        keeps them) without building the template: the fast path for loading a blacklist."""
        raw = data if data[:4] == _MAGIC else zlib.decompress(data)
        levels, geo = _parse_levels(raw)
        self._insert(key, levels, geo, data if raw is not data else zlib.compress(raw, 1))

    def _insert(self, key: str, levels: NDArray[np.uint8], geo: F32, blob: bytes) -> None:
        codes = self._hasher.codes(levels)
        with self._write:
            st = self._state
            alive, blobs, keys = st.alive, st.blobs, st.keys
            old = self._slots.get(key)
            slot = len(keys)
            if slot == alive.shape[0]:  # grow: searches keep reading the old array
                alive = np.concatenate([alive, np.zeros(max(64, slot), dtype=bool)])
            blobs.append(blob)
            keys.append(key)
            segments = [*st.segments, _Segment.build(codes, np.full(codes.shape[0], slot, np.int32), geo)]
            alive[slot] = True
            while len(segments) >= 2 and segments[-2].size <= 2 * segments[-1].size:
                b, a = segments.pop(), segments.pop()
                segments.append(_merge(a, b, alive))
            self._slots[key] = slot
            self._state = _State(tuple(segments), alive, blobs, keys)
            if old is not None:
                self._forget(old)

    def remove(self, key: str) -> None:
        """Forget the finger `key`; nothing happens if it is not registered."""
        with self._write:
            slot = self._slots.pop(key, None)
            if slot is not None:
                self._forget(slot)

    def _forget(self, slot: int) -> None:
        st = self._state
        st.alive[slot] = False
        st.blobs[slot] = None
        st.keys[slot] = None

    def __len__(self) -> int:
        return len(self._slots)

    def bytes_used(self) -> int:
        """Memory held for the registered fingers (templates, codes, table positions, minutiae)."""
        st = self._state
        index = sum(s.codes.nbytes + s.order.nbytes + s.slot.nbytes + s.geo.nbytes for s in st.segments)
        return index + sum(len(b) for b in st.blobs if b is not None) + st.alive.nbytes

    # ---- searching -------------------------------------------------------------------------
    def candidates(self, probe: Template) -> list[str]:
        """The registered fingers the index ranks first for `probe`, best first: those `search`
        compares 1:1 (at most `params.candidates`)."""
        st = self._state
        return [k for s in self._ranked(st, probe) if (k := st.keys[s]) is not None]

    def search(self, probe: Template, *, limit: int = 5) -> list[tuple[str, float]]:
        """Registered fingers whose 1:1 score with `probe` is at least the threshold, best first,
        at most `limit` of them (empty when none)."""
        return self.search_explained(probe, limit=limit)[0]

    def search_explained(
        self, probe: Template, *, limit: int = 5
    ) -> tuple[list[tuple[str, float]], list[str]]:
        """`search`, and the candidates it compared 1:1 (for the benchmark and the tests)."""
        st = self._state
        hits: list[tuple[str, float]] = []
        compared: list[str] = []
        for slot in self._ranked(st, probe):
            blob, key = st.blobs[slot], st.keys[slot]
            if blob is None or key is None:  # removed meanwhile
                continue
            compared.append(key)
            score = similarity(probe, Template.from_bytes(zlib.decompress(blob)))
            if score >= self.threshold:
                hits.append((key, score))
        hits.sort(key=lambda h: (-h[1], h[0]))
        return hits[:limit], compared

    def _ranked(self, st: _State, probe: Template) -> list[int]:
        """Finger slots by decreasing index score, at most `params.candidates`."""
        p = self.params
        if (probe.ns, probe.nd) != (_NS, _ND):
            raise ValueError(f"the index needs 16 x 6 cylinders, not {probe.ns} x {probe.nd}")
        if probe.count == 0 or not st.segments:
            return []
        q = probe.count
        codes = self._hasher.probe_codes(probe.cell_levels)  # (q, l, 1 + probes)
        live = np.repeat(np.arange(q, dtype=np.int64), codes.shape[2])
        pairs_v: list[I64] = []
        pairs_u: list[I64] = []
        geos: list[F32] = []
        slots: list[I32] = []
        base = 0
        for seg in st.segments:
            for k in range(p.tables):
                column, wanted = seg.codes[k], codes[:, k, :].ravel()
                lo = np.searchsorted(column, wanted, "left")
                hi = np.searchsorted(column, wanted, "right")
                n = hi - lo
                total = int(n.sum())
                if total == 0:
                    continue
                at = np.repeat(lo - (np.cumsum(n) - n), n) + np.arange(total)
                pairs_v.append(np.repeat(live, n))
                pairs_u.append(seg.order[k][at].astype(np.int64) + base)
            base += seg.size
            geos.append(seg.geo)
            slots.append(seg.slot)
        if not pairs_v:
            return []
        v, u = np.concatenate(pairs_v), np.concatenate(pairs_u)
        # Collisions per (live cylinder, registered cylinder): the number of tables they share.
        pair, count = np.unique(u * q + v, return_counts=True)
        u, v = pair // q, pair % q
        geo = np.concatenate(geos, axis=1)[:, u]
        slot = np.concatenate(slots)[u].astype(np.int64)
        keep = st.alive[slot]
        u, v, count, geo, slot = u[keep], v[keep], count[keep], geo[:, keep], slot[keep]
        if slot.size == 0:
            return []
        # The placement each pair implies: rotation d, then the shift that puts the registered
        # minutia on the live one.
        d = np.mod(probe.theta[v] - geo[2] + math.pi, 2 * math.pi) - math.pi
        c, s = np.cos(d), np.sin(d)
        tx = probe.x[v] - (c * geo[0] - s * geo[1])
        ty = probe.y[v] - (s * geo[0] + c * geo[1])
        weight = count.astype(np.float64)
        n_reg = base
        fingers, inverse = np.unique(slot, return_inverse=True)
        best = np.zeros(fingers.size)
        for offset in (0.0, 0.5):
            ba = (
                np.floor((d + math.pi) * (p.angle_bins / (2 * math.pi)) + offset).astype(np.int64)
                % p.angle_bins
            )
            bx = np.clip(np.floor(tx / p.shift_bin + offset).astype(np.int64) + 512, 0, 1023)
            by = np.clip(np.floor(ty / p.shift_bin + offset).astype(np.int64) + 512, 0, 1023)
            cell = ((inverse * p.angle_bins + ba) * 1024 + bx) * 1024 + by
            # One vote per live cylinder per placement (its best collision there), and one per
            # registered cylinder: pairs are one-to-one, as in the 1:1 consolidation.
            keep = _best_per_group(cell * q + v, weight)
            keep = keep[_best_per_group(cell[keep] * n_reg + u[keep], weight[keep])]
            cells, where = np.unique(cell[keep], return_inverse=True)
            votes = np.bincount(where, weights=weight[keep])
            np.maximum.at(best, cells // (p.angle_bins * 1024 * 1024), votes)
        top = min(p.candidates, fingers.size)
        chosen = np.argpartition(-best, top - 1)[:top]
        chosen = chosen[np.lexsort((fingers[chosen], -best[chosen]))]
        return [int(x) for x in fingers[chosen]]
