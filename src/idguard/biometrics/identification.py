"""1:N identification (指纹查重): find a live finger among many registered fingers.

Exhaustive 1:N costs one 1:1 comparison (~1-2 ms with the decoding) per registered finger. The
gallery instead indexes every finger's MCC cylinders, after Cappelli, Ferrara and Maltoni,
"Fingerprint Indexing Based on Minutia Cylinder-Code", IEEE TPAMI 33(5), 2011: the cylinders are
the index keys (they are invariant to where the finger lies on the scanner), a search finds, for
each live cylinder, the registered cylinders similar to it, scores the registered fingers by those
cylinder matches, and only the first few fingers (`candidates`) go through the 1:1 matcher
(`matching.similarity`), whose score against the threshold decides.

Measured departures from the paper (docs/fingerprints.md, "1:N search of the blacklist"), because
on the synthetic set its hash collisions found the true finger too rarely (80 % at 100,000):

* *Similar cylinders* are found by an inverted file (IVF, Jegou et al., TPAMI 2011) instead of
  locality-sensitive hashing: each cylinder, coarsened to 8 x 8 cells x 3 layers and projected on
  the 64 principal components of synthetic cylinders (`IndexModel`, trained once, shipped in
  index_model.npz), is a unit vector filed under its nearest of K centroids; a live cylinder visits
  the `lists_probed` lists nearest to it and computes its exact cosine similarity with every
  cylinder there (one small matrix product per list). Pairs above `min_similarity` count. With
  real-valued similarities the paper's idea works (the true finger among the first 1 % for 99 % of
  probes at 10,000); with h-bit hash collisions it does not (82 %).
* *Consolidation*: a registered finger scores the largest sum of (similarity - min_similarity)
  over the cylinder pairs that agree on the finger's rotation (12 cells of 30 degrees, on two
  grids offset by half a cell): impostor pairs scatter over rotations, a mate's pile up. One dense
  `np.bincount` over (finger, rotation cell): no sorting per search.

Removed fingers leave the lists when the run holding them is next merged; until then searches
skip them. A finger slot is never reused: a replaced or removed finger leaves 17 bytes behind.

Memory per registered finger: the stored template, zlib-compressed (~14 KB), plus per cylinder its
64-float vector, list, slot and direction (270 bytes); see `bytes_used`.
"""

from __future__ import annotations

import math
import struct
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from idguard.biometrics.matching import similarity
from idguard.biometrics.mcc import Template
from idguard.biometrics.record import TemplateError

I32 = NDArray[np.int32]
I64 = NDArray[np.int64]
F32 = NDArray[np.float32]
U8 = NDArray[np.uint8]

_HEADER = struct.Struct("<4sBBBHH")  # as mcc.Template.to_bytes writes it
_MAGIC, _FORMAT, _NS, _ND = b"IGMC", 1, 16, 6
MODEL_PATH = Path(__file__).with_name("index_model.npz")
POOLED = 192  # 8 x 8 cells x 3 layers


@dataclass(frozen=True, slots=True)
class IndexParams:
    """Search parameters (measured on the synthetic set, docs/fingerprints.md)."""

    lists_probed: int = 16  # IVF lists each live cylinder visits, at least...
    visit_budget: int = 25_000  # ... or as many as hold about this many cylinders (small galleries)
    min_similarity: float = 0.45  # cosine of two reduced cylinders that counts as a match
    candidates: int = 30  # fingers compared 1:1 per search
    angle_bins: int = 12  # rotation cells (30 degrees), on two grids offset by half a cell


DEFAULT_INDEX = IndexParams()

# The 1:N decision threshold: a search answers with a registered finger when its 1:1 score reaches
# this. `calibration.calibrate_identification_threshold` on 100 non-mated searches of a 100,000-
# finger medium gallery gave 0.0808 for FPIR 1 % (bench/identification.py; 2 % measured on 100
# other strangers; docs/fingerprints.md), rounded up. The 1:1 threshold (FMR 1/10,000 per
# comparison) answered 1-2 of 20 strangers with someone, because the 30 fingers compared are
# chosen for resembling the probe. Synthetic data only: recalibrate on the deployed gallery.
IDENTIFICATION_THRESHOLD = 0.081


def _pair_table() -> U8:
    """Byte -> the sum of its two nibbles' levels above 'empty' (level 2, Psi(0)). A stored byte
    holds two consecutive layers of one cell (`Template.to_bytes`), which the pooling adds anyway."""
    hi, lo = np.arange(256) >> 4, np.arange(256) & 0x0F
    out: U8 = (np.maximum(hi - 2, 0) + np.maximum(lo - 2, 0)).astype(np.uint8)
    return out


_PAIRS = _pair_table()


def pooled_nibbles(nibbles: U8) -> F32:
    """Stored cell bytes (n, 16*16*6/2) -> (n, 192): cells above 'empty' summed over 2 layers (one
    table look-up per byte), then 2 x 2 cells, centred per cylinder. Invalid cells are 0 like
    empty ones. The sums stay in uint8 (at most 8 x 13 = 104): a quarter of float32's memory
    traffic, and this is most of what loading a gallery costs per finger."""
    n = nibbles.shape[0]
    v = np.take(_PAIRS, nibbles).reshape(n, 16, 8, 2, 3)  # rows, column pairs, layer pairs
    w = (v[:, :, :, 0] + v[:, :, :, 1]).reshape(n, 8, 2, 24)  # columns
    out = (w[:, :, 0] + w[:, :, 1]).reshape(n, POOLED).astype(np.float32)  # rows
    out -= out.mean(axis=1, keepdims=True)
    return out


def to_nibbles(levels: U8) -> U8:
    """Cell levels (n, 16*16*6) as `Template.to_bytes` stores them: two layers per byte."""
    out: U8 = ((levels[:, 0::2] << 4) | levels[:, 1::2]).astype(np.uint8)
    return out


def pooled(levels: U8) -> F32:
    """`pooled_nibbles` of a template's cell levels (the index model's training input)."""
    return pooled_nibbles(to_nibbles(levels))


@dataclass(frozen=True, eq=False)
class IndexModel:
    """What turns a cylinder into an index vector and a list: principal axes and IVF centroids.

    Trained once on synthetic cylinders of a seed of their own (`calibration.train_index_model`)
    and shipped, so that every worker files every cylinder the same way."""

    mean: F32  # (192,)
    basis: F32  # (192, d)
    centroids: F32  # (K, d), unit rows

    @property
    def dims(self) -> int:
        return int(self.basis.shape[1])

    @property
    def lists(self) -> int:
        return int(self.centroids.shape[0])

    def vectors(self, nibbles: U8) -> F32:
        """(n, d) unit vectors of the cylinders (cell bytes as stored, `to_nibbles`)."""
        # In slices that stay in the processor's cache: loading is memory-bound otherwise.
        r: F32 = np.empty((nibbles.shape[0], self.dims), dtype=np.float32)
        for at in range(0, nibbles.shape[0], 2048):
            r[at : at + 2048] = (pooled_nibbles(nibbles[at : at + 2048]) - self.mean) @ self.basis
        r /= np.maximum(np.sqrt(np.einsum("ij,ij->i", r, r)), np.float32(1e-6))[:, None]
        return r

    def nearest(self, vectors: F32, k: int = 1) -> I64:
        """(n, k) the k lists nearest each vector (any order among them)."""
        sims = vectors @ self.centroids.T
        if k == 1:
            out: I64 = sims.argmax(axis=1)[:, None].astype(np.int64)
            return out
        k = min(k, self.lists)
        nearest: I64 = np.argpartition(-sims, k - 1, axis=1)[:, :k].astype(np.int64)
        return nearest

    def save(self, path: Path) -> None:
        np.savez_compressed(path, mean=self.mean, basis=self.basis, centroids=self.centroids)

    @classmethod
    def load(cls, path: Path = MODEL_PATH) -> IndexModel:
        with np.load(path) as z:
            return cls(
                np.ascontiguousarray(z["mean"], dtype=np.float32),
                np.ascontiguousarray(z["basis"], dtype=np.float32),
                np.ascontiguousarray(z["centroids"], dtype=np.float32),
            )


@cache
def default_model() -> IndexModel:
    return IndexModel.load()


@dataclass(frozen=True, eq=False)
class _Segment:
    """An immutable run of indexed cylinders, sorted by list."""

    vectors: F32  # (m, d)
    lists: I32  # (m,) sorted
    offsets: I64  # (K + 1,) list j is rows offsets[j]:offsets[j + 1]
    slot: I32  # (m,) finger slot of each cylinder
    theta: F32  # (m,) direction of each cylinder's minutia

    @property
    def size(self) -> int:
        return int(self.slot.shape[0])

    @classmethod
    def build(cls, vectors: F32, lists: I32, slot: I32, theta: F32, k: int) -> _Segment:
        order = np.argsort(lists, kind="stable")
        lists = lists[order]
        offsets = np.searchsorted(lists, np.arange(k + 1)).astype(np.int64)
        return cls(vectors[order], lists, offsets, slot[order], theta[order])


def _merge(a: _Segment, b: _Segment, alive: NDArray[np.bool_], k: int) -> _Segment:
    slot = np.concatenate([a.slot, b.slot])
    keep = alive[slot]
    vectors = np.concatenate([a.vectors, b.vectors])
    lists = np.concatenate([a.lists, b.lists])
    theta = np.concatenate([a.theta, b.theta])
    if not keep.all():  # cylinders of removed fingers leave the index here
        vectors, lists, slot, theta = vectors[keep], lists[keep], slot[keep], theta[keep]
    return _Segment.build(vectors, lists, slot, theta, k)


@dataclass(frozen=True, eq=False)
class _State:
    """What a search reads: replaced as a whole by the writer, never changed in place (except
    `alive`, whose entries only go from True to False)."""

    segments: tuple[_Segment, ...]
    alive: NDArray[np.bool_]
    blobs: list[bytes | None]  # appended to and cleared in place (readers check for None)
    keys: list[str | None]


def _parse_stored(data: bytes) -> tuple[U8, F32]:
    """Cell bytes and minutia directions of a stored template, without building the comparison
    arrays (`Template.from_bytes` does that, ~1 ms): the same header and length checks."""
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
    theta = np.frombuffer(data, dtype="<f4", count=n, offset=_HEADER.size + 8 * n)
    nibbles = np.frombuffer(data, dtype=np.uint8, count=n * cell_bytes, offset=_HEADER.size + 12 * n)
    return nibbles.reshape(n, cell_bytes), theta.astype(np.float32)


def _best_per_group(group: I64, weight: F32, top: float) -> I64:
    """Index of the heaviest entry of each group (weights in (0, top]; ties: any one).

    One argsort of int64 keys that pack the group above the weight quantised to 16 bits, about
    twice as fast as np.lexsort of the two."""
    quantised = np.rint((np.float32(top) - weight) * np.float32(65535.0 / top)).astype(np.int64)
    order = np.argsort((group << 16) | np.clip(quantised, 0, 65535))
    g = group[order]
    out: I64 = order[np.r_[True, g[1:] != g[:-1]]]
    return out


class Gallery:
    """Registered fingers searchable 1:N. Thread-safe for one writer and concurrent searches.

    Keys are opaque strings. `add` replaces a finger already under that key; `remove` forgets
    one (nothing happens if absent). Neither rebuilds anything: a finger is searchable as soon
    as `add` returns and unfindable as soon as `remove` returns.
    """

    def __init__(
        self,
        *,
        threshold: float | None = None,
        params: IndexParams = DEFAULT_INDEX,
        model: IndexModel | None = None,
    ) -> None:
        self.threshold = IDENTIFICATION_THRESHOLD if threshold is None else threshold
        self.params = params
        self.model = default_model() if model is None else model
        self._write = threading.Lock()
        self._slots: dict[str, int] = {}
        self._state = _State(segments=(), alive=np.zeros(0, dtype=bool), blobs=[], keys=[])

    # ---- writing ---------------------------------------------------------------------------
    def add(self, key: str, template: Template) -> None:
        """Add the finger `key` (replacing the one registered under it, if any)."""
        if (template.ns, template.nd) != (_NS, _ND):
            raise ValueError(f"the index needs 16 x 6 cylinders, not {template.ns} x {template.nd}")
        theta = np.asarray(template.theta, dtype=np.float32)
        nibbles = to_nibbles(template.cell_levels)
        self._insert([(key, nibbles, theta, zlib.compress(template.to_bytes(), 1))])

    def add_stored(self, key: str, data: bytes) -> None:
        """`add` from stored bytes (`Template.to_bytes()`, optionally zlib-compressed as the registry
        keeps them) without building the template."""
        self.add_stored_many([(key, data)])

    def add_stored_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        """`add_stored` for many fingers at once: one matrix product and one sorted run for the
        lot, the fast path for loading a blacklist. A malformed template raises TemplateError
        before anything of the batch is added."""
        batch = []
        for key, data in items:
            raw = data if data[:4] == _MAGIC else zlib.decompress(data)
            nibbles, theta = _parse_stored(raw)
            batch.append((key, nibbles, theta, data if raw is not data else zlib.compress(raw, 1)))
        if batch:
            self._insert(batch)

    def _insert(self, batch: list[tuple[str, U8, F32, bytes]]) -> None:
        vectors = self.model.vectors(np.concatenate([b[1] for b in batch]))
        lists = self.model.nearest(vectors)[:, 0].astype(np.int32)
        theta = np.concatenate([b[2] for b in batch]).astype(np.float32)
        counts = [b[1].shape[0] for b in batch]
        k = self.model.lists
        with self._write:
            st = self._state
            alive, blobs, keys = st.alive, st.blobs, st.keys
            # A key twice in one batch: the last one stands, like consecutive adds.
            last = {key: i for i, (key, *_) in enumerate(batch)}
            first = len(keys)
            need = first + len(batch)
            if need > alive.shape[0]:  # grow: searches keep reading the old array
                alive = np.concatenate([alive, np.zeros(max(64, need, alive.shape[0]), dtype=bool)])
            replaced = []
            for i, (key, _, _, blob) in enumerate(batch):
                blobs.append(blob)
                keys.append(key)
                alive[first + i] = last[key] == i
                if last[key] == i:
                    old = self._slots.get(key)
                    if old is not None:
                        replaced.append(old)
                    self._slots[key] = first + i
                else:
                    blobs[first + i] = keys[first + i] = None
            slot = np.repeat(np.arange(first, need, dtype=np.int32), counts)
            segments = [*st.segments, _Segment.build(vectors, lists, slot, theta, k)]
            while len(segments) >= 2 and segments[-2].size <= 2 * segments[-1].size:
                b, a = segments.pop(), segments.pop()
                segments.append(_merge(a, b, alive, k))
            self._state = _State(tuple(segments), alive, blobs, keys)
            for old in replaced:
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
        """Memory held for the registered fingers (templates, vectors, lists, slots, directions)."""
        st = self._state
        index = sum(
            s.vectors.nbytes + s.lists.nbytes + s.offsets.nbytes + s.slot.nbytes + s.theta.nbytes
            for s in st.segments
        )
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
    ) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """`search`, and every candidate compared 1:1 with its score, whatever the threshold (for
        the benchmark, the threshold calibration and the tests)."""
        st = self._state
        scored: list[tuple[str, float]] = []
        for slot in self._ranked(st, probe):
            blob, key = st.blobs[slot], st.keys[slot]
            if blob is None or key is None:  # removed meanwhile
                continue
            scored.append((key, similarity(probe, Template.from_bytes(zlib.decompress(blob)))))
        hits = sorted((h for h in scored if h[1] >= self.threshold), key=lambda h: (-h[1], h[0]))
        return hits[:limit], scored

    def _ranked(self, st: _State, probe: Template) -> list[int]:
        """Finger slots by decreasing index score, at most `params.candidates`."""
        p = self.params
        if (probe.ns, probe.nd) != (_NS, _ND):
            raise ValueError(f"the index needs 16 x 6 cylinders, not {probe.ns} x {probe.nd}")
        if probe.count == 0 or not st.segments:
            return []
        q = self.model.vectors(to_nibbles(probe.cell_levels))
        indexed = sum(seg.size for seg in st.segments)
        k = self.model.lists
        near = self.model.nearest(q, max(p.lists_probed, min(k, -(-p.visit_budget * k // max(1, indexed)))))
        # (list, live cylinder) visits grouped by list: one matrix product per list and run.
        lst = near.ravel()
        live = np.repeat(np.arange(q.shape[0], dtype=np.int64), near.shape[1])
        order = np.argsort(lst, kind="stable")
        lst, live = lst[order], live[order]
        starts = np.flatnonzero(np.r_[True, lst[1:] != lst[:-1]])
        ends = np.r_[starts[1:], lst.size]
        wanted = lst[starts]
        vs: list[I64] = []
        slots: list[I32] = []
        thetas: list[F32] = []
        weights: list[F32] = []
        tau = np.float32(p.min_similarity)
        for seg in st.segments:
            lo, hi = seg.offsets[wanted], seg.offsets[wanted + 1]
            for g in np.flatnonzero(hi > lo).tolist():
                a, b = int(lo[g]), int(hi[g])
                group = live[starts[g] : ends[g]]
                sims = q[group] @ seg.vectors[a:b].T
                i, j = np.nonzero(sims > tau)
                if i.size:
                    vs.append(group[i])
                    slots.append(seg.slot[a:b][j])
                    thetas.append(seg.theta[a:b][j])
                    weights.append(sims[i, j] - tau)
        if not vs:
            return []
        v, slot, w = np.concatenate(vs), np.concatenate(slots), np.concatenate(weights)
        # One pair per (registered finger, live cylinder), its most similar: a live cylinder
        # resembling many cylinders of one finger is one piece of evidence, not many.
        keep = _best_per_group(slot.astype(np.int64) * q.shape[0] + v, w, 1.0 - p.min_similarity)
        v, slot, w = v[keep], slot[keep], w[keep]
        rot = np.concatenate(thetas)[keep]
        rot = np.mod(probe.theta[v].astype(np.float32) - rot, np.float32(2 * math.pi))
        n, bins = st.alive.shape[0], p.angle_bins
        score = np.zeros(n, dtype=np.float64)
        for offset in (0.0, 0.5):  # two grids: a rotation near a cell edge still piles up
            cell = (
                np.floor(rot * np.float32(bins / (2 * math.pi)) + np.float32(offset)).astype(np.int64) % bins
            )
            votes = np.bincount(slot.astype(np.int64) * bins + cell, weights=w, minlength=n * bins)
            np.maximum(score, votes.reshape(n, bins).max(axis=1), out=score)
        score[~st.alive] = 0.0
        found = np.flatnonzero(score > 0.0)
        top = min(p.candidates, found.size)
        if top == 0:
            return []
        chosen = found[np.argpartition(-score[found], top - 1)[:top]]
        chosen = chosen[np.lexsort((chosen, -score[chosen]))]
        return [int(x) for x in chosen]
