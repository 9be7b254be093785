"""1:N identification (指纹查重): find a live finger among many registered fingers.

Exhaustive 1:N costs one 1:1 comparison (~1-2 ms with the decoding) per registered finger. The
gallery instead indexes every finger's MCC cylinders, after Cappelli, Ferrara and Maltoni,
"Fingerprint Indexing Based on Minutia Cylinder-Code", IEEE TPAMI 33(5), 2011: the cylinders are
the index keys (they are invariant to where the finger lies on the scanner), a search finds, for
each live cylinder, the registered cylinders similar to it and scores the registered fingers by
those cylinder matches. A cascade of three stages then decides:

1. *Shortlist* (`IndexParams.shortlist`, 2 % of the gallery): the inverted file's vote below,
   then, since issue 10's tenth round, the vote's first 20 % (`consistency_share`) ranked again by
   the geometry of the cylinder pairs the scan found (`scan.consistency`): per finger, the largest
   set of its pairs that agree with one pair on where their minutiae lie (distance and direction
   seen from that pair's minutia, on both sides). The vote alone shortlisted 96.0 % of 200 mates
   at 100,000; with the geometry, 99.0 % (docs/fingerprints.md, "Tenth round").
2. *Rescoring*: every cylinder of the shortlisted fingers against every live one, cosines of
   the index vectors (no list missed; int8 x int8 products in the scan's blocks, `scan.above`,
   since issue 10's eleventh round; the live float32 vector x the registered int8 code before)
   above `rescore_similarity` (0.40); each finger's rotation from the vote over all its pairs, then
   per live cylinder its heaviest pair within `rotation_tolerance` (20 degrees) of that rotation,
   summed (`_aligned`; until issue 10's fifth round each live cylinder's heaviest pair first,
   whatever its rotation, then voted by rotation, at 0.45: it passed 95 of the 97 shortlisted
   mates to the 1:1 matcher at 100,000, against 97 now); the first `candidates` (16) go on.
3. *1:1*: the matcher (`matching.similarity`) on those; its score against the threshold decides.

Measured departures from the paper (docs/fingerprints.md, "1:N search of the blacklist"), because
on the synthetic set its hash collisions found the true finger too rarely (80 % at 100,000):

* *Similar cylinders* are found by an inverted file (IVF, Jegou et al., TPAMI 2011) instead of
  locality-sensitive hashing: each cylinder, coarsened to 8 x 8 cells x 3 layers and projected on
  the 64 principal components of synthetic cylinders (`IndexModel`, trained once, shipped in
  index_model.npz), is a unit vector, kept in int8 (`quantise`, as `index_data` stores it), filed
  under its nearest of K centroids; a live cylinder visits the `lists_probed` lists nearest to it
  and computes its cosine with every cylinder there: int8 x int8 inner products, exact integers.
  Pairs above `min_similarity` (0.45) count. The scan and the vote are one compiled pass
  (`scan.vote`, numba, since issue 10's seventh round; faiss's range search before; sixteen rows
  at a time in AVX-512 VNNI where the machine has it, since the eleventh, `scan._dots`): each pair
  found is added at once to its finger's vote, read from the row's label (`_labels`: finger slot
  and direction byte, kept in the inverted file's order, `_Segment.by_list`).
* *Consolidation*: a registered finger scores the largest sum of its pair weights over the
  cylinder pairs that agree on the finger's rotation (a window of 30 degrees sliding in steps of
  10: 36 cells, 3 consecutive; directions kept as bytes, `angle_codes`): impostor pairs scatter
  over rotations, a mate's pile up. A pair weighs 1 + 5 x (similarity - 0.45) (`vote_slope`):
  nearly a count, since issue 10's sixth round; before, (similarity - 0.45), which let a few
  strong look-alike pairs outweigh a mate's many pairs near the bar. One dense int32 array of
  (rotation cell, finger) votes, the weights exact integers (`scan.weight_table`): no sorting per
  search.

The paper's own keys, bit-based cylinders compared by popcounts and hashed by sampling their bits,
were measured against these vectors and not adopted: exhaustively they rank mates no better (99-
100 % in the first 2 % at 10,000 either way), comparing them costs ~60 times more in numpy, and
the bit-sampling hashes find the mate's finger in the first 2 % for only 30-40 % of probes (sparse
cells: sampled bits agree mostly on zeros). Figures in docs/fingerprints.md.

Removed fingers leave the lists when the run holding them is next merged; until then searches
skip them. A finger slot is never reused: a replaced or removed finger leaves 17 bytes behind.

Loading: `index_data` (per cylinder its direction, list, position and int8 vector, ~3.1 KB per
finger; format 2 since the tenth round added the positions) is stored sealed beside each
template at enrolment; `add_indexed_many` files a finger from it without decompressing or
projecting anything (the template, kept compressed, is decoded only for stage 3).

Memory per registered finger: the stored template, zlib-compressed (~14 KB), plus per cylinder its
int8 code twice (in slot order for the second stage and merges, in list order for the scan), its
label in the inverted file's order (8 bytes, `_Segment.by_list`: slot, position and direction),
list, slot, direction byte and position (149 bytes), plus per run 8 bytes per finger slot it spans (where
each finger's rows start: a run keeps its rows in slot order, so a finger's rows are one block);
see `bytes_used`.
"""

from __future__ import annotations

import math
import struct
import threading
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from idguard.biometrics.matching import similarity
from idguard.biometrics.mcc import Template
from idguard.biometrics.record import TemplateError

# The compiled scan (`scan`) imports numba (~0.5 s): imported where a search or a weight table
# needs it, so that processes that never search (the command line, most workers' start) do not pay.

I8 = NDArray[np.int8]
I16 = NDArray[np.int16]
I32 = NDArray[np.int32]
I64 = NDArray[np.int64]
F32 = NDArray[np.float32]
U8 = NDArray[np.uint8]

_HEADER = struct.Struct("<4sBBBHH")  # as mcc.Template.to_bytes writes it
_MAGIC, _FORMAT, _NS, _ND = b"IGMC", 1, 16, 6
MODEL_PATH = Path(__file__).with_name("index_model.npz")
POOLED = 192  # 8 x 8 cells x 3 layers
CODE_SCALE = 127.0  # an index vector in int8: rint(127 x the unit vector), as `index_data` stores it
ANGLE_STEPS = 256  # a minutia direction in the index: a byte, 2 pi / 256 (1.4 degrees) a step
# A row's label (`_labels`): its finger slot, minutia position and direction in one int64, so that
# the scan reads a found pair's finger, direction and position at once.
SLOT_SHIFT = 36  # slot << 36 | (x + 8192) << 22 | (y + 8192) << 8 | direction byte
POSITION_BITS = 14
POSITION_OFFSET = 1 << (POSITION_BITS - 1)  # positions -8192..8191 pixels (ISO 19794-2's are 14-bit)
# The first stage's scan reads its codes biased, code + 128 as unsigned bytes (AVX-512 VNNI multiplies
# unsigned by signed bytes), `BLOCK` rows at a time (`scan._dots`): `biased`.
BLOCK = 16
BIAS = 128


@dataclass(frozen=True, slots=True)
class IndexParams:
    """Search parameters (measured on the synthetic set, docs/fingerprints.md)."""

    # IVF lists each live cylinder visits, at least... (8 before faiss's scan, 16 until issue 10's
    # sixth round, whose scan costs less per list, 24 until the tenth, whose geometry finds at 20
    # the mates the vote found at 24)
    lists_probed: int = 20
    visit_budget: int = 25_000  # ... or as many as hold about this many cylinders (small galleries)
    min_similarity: float = 0.45  # cosine of two reduced cylinders that counts as a match (stage 1)
    # Stage 1's vote: a pair weighs 1 + vote_slope x (cosine - min_similarity), nearly a count
    # (0: a count; ties then fall to the lower slot); None weighs it (cosine - min_similarity), as
    # until issue 10's sixth round.
    vote_slope: float | None = 5.0
    rescore_similarity: float = 0.40  # the same in the second stage (0.45 until issue 10's fifth round)
    rotation_tolerance: float = 20.0  # stage 2: degrees from the finger's rotation (`_aligned`)
    shortlist_share: float = 0.02  # fingers the first stage passes to the second: this share...
    shortlist_min: int = 50  # ... but at least this many (small galleries)
    candidates: int = 16  # fingers the second stage passes to the 1:1 matcher
    angle_bins: int = 36  # rotation cells (10 degrees; at most 63: the geometry masks them in an int64) ...
    angle_window: int = 3  # ... a finger's rotation: the best run of this many (30 degrees, every 10)
    # Stage 1's geometry (`scan.consistency`, issue 10's tenth round): the vote's first share of the
    # gallery is ranked again by how its found pairs agree on where their minutiae lie; None: the
    # vote alone, as before. Two pairs agree when their rotations differ by at most
    # `pair_rotation` degrees, their minutiae lie as far apart on both sides within
    # `pair_distance` pixels and in the same direction within `pair_angle` degrees.
    consistency_share: float | None = 0.2
    # Stage 2 ranking its fingers by the same geometry over its own exact pairs, the aligned score
    # breaking ties (issue 10's eleventh round): off. It passes 98.5 % of 200 mates to the 1:1
    # matcher at 100,000 (95.0 % off) for +7 ms, but the strangers' look-alikes it passes score
    # alike: rank-1 at equal FPIR 1 % rose by one probe of 200 (94.5 -> 95.0 %), and at the shipped
    # threshold 27 strangers of 1,000 were answered (9 off). docs/fingerprints.md, "Eleventh round".
    rescore_geometry: bool = False
    pair_rotation: float = 30.0
    pair_distance: float = 15.0
    pair_angle: float = 20.0

    def shortlist(self, fingers: int) -> int:
        """How many fingers the first stage passes to the second in a gallery of `fingers`."""
        return min(fingers, max(self.shortlist_min, math.ceil(self.shortlist_share * fingers)))

    def checked(self, fingers: int) -> int:
        """How many of the vote's first fingers the first stage's geometry ranks again (0: none)."""
        if self.consistency_share is None:
            return 0
        return min(fingers, math.ceil(self.consistency_share * fingers))


DEFAULT_INDEX = IndexParams()

# The 1:N decision threshold: a search answers with a registered finger when its 1:1 score reaches
# this. `calibration.calibrate_identification_threshold` on the best 1:1 scores of 2,000 non-mated
# searches of a 100,000-finger medium gallery (issue 10's fifth round, whose second stage compares
# closer look-alikes: 26 of the 2,000 reached the fourth round's 0.081) gave 0.0822 for FPIR 1 %
# (docs/fingerprints.md), rounded up. The 1:1 threshold (FMR 1/10,000 per comparison) answered 1-2
# of 20 strangers with someone, because the fingers compared are chosen for resembling the probe.
# Synthetic data only: recalibrate on the deployed gallery.
IDENTIFICATION_THRESHOLD = 0.083


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

    @cached_property
    def id(self) -> int:
        """CRC-32 of the model's numbers: index data made with another model is not used."""
        crc = 0
        for a in (self.mean, self.basis, self.centroids):
            crc = zlib.crc32(np.ascontiguousarray(a, dtype="<f4").tobytes(), crc)
        return crc

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


def quantise(vectors: F32) -> I8:
    """Unit index vectors -> int8 codes (`CODE_SCALE`): what `index_data` stores and the index scans."""
    out: I8 = np.clip(np.rint(vectors * np.float32(CODE_SCALE)), -127, 127).astype(np.int8)
    return out


def angle_codes(theta: F32) -> U8:
    """Directions (radians) -> bytes, `ANGLE_STEPS` to the turn: the vote subtracts them in uint8
    (wrapping is the modulo) and reads the rotation cells from a table."""
    steps = np.rint(np.mod(theta.astype(np.float64), 2 * math.pi) * (ANGLE_STEPS / (2 * math.pi)))
    out: U8 = (steps.astype(np.int64) % ANGLE_STEPS).astype(np.uint8)
    return out


def _labels(slot: I32, theta: U8, xy: I16) -> I64:
    """What the first stage's scan reads of a row it finds (`SLOT_SHIFT`): its finger slot, minutia
    position and direction in one int64, so that a found pair costs one read instead of gathering
    them from 4-million-row arrays (a cache miss each)."""
    pos = np.clip(xy.astype(np.int64), -POSITION_OFFSET, POSITION_OFFSET - 1) + POSITION_OFFSET
    out: I64 = (
        (slot.astype(np.int64) << SLOT_SHIFT)
        | (pos[:, 0] << (8 + POSITION_BITS))
        | (pos[:, 1] << 8)
        | theta.astype(np.int64)
    )
    return out


def _min_product(min_similarity: float) -> int:
    """The first stage's bar as an inner product of int8 codes: a pair counts above it."""
    return math.floor(min_similarity * CODE_SCALE * CODE_SCALE)


@cache
def _weights(min_similarity: float, slope: float | None) -> I32:
    """The first stage's pair weights by inner product (`scan.weight_table`): 1 + slope x (cosine -
    min_similarity), nearly a count; or (slope None) cosine - min_similarity, as until issue 10's
    sixth round."""
    from idguard.biometrics import scan

    tau = min_similarity
    if slope is None:
        return scan.weight_table(_min_product(tau), 1.0 / CODE_SCALE**2, lambda c: c - tau)
    return scan.weight_table(_min_product(tau), 1.0 / CODE_SCALE**2, lambda c: 1.0 + slope * (c - tau))


@cache
def _unit_table() -> F32:
    """Direction byte -> (cos, sin) of its angle, for the first stage's geometry."""
    angle = np.arange(ANGLE_STEPS) * (2 * math.pi / ANGLE_STEPS)
    out: F32 = np.stack([np.cos(angle), np.sin(angle)], axis=1).astype(np.float32)
    return out


@cache
def _cell_table(bins: int) -> I64:
    """Rotation byte -> its cell (of `bins`)."""
    out: I64 = np.arange(ANGLE_STEPS, dtype=np.int64) * bins // ANGLE_STEPS
    return out


def biased(codes: I8, rows: int | None = None) -> U8:
    """Int8 codes as the first stage's scan reads them: code + 128 as unsigned bytes, and `BLOCK`
    rows of zeros after the last (a block of rows is read whole; rows past a list's end are masked).
    With `rows`, room for that many rows (the padding zeroed, the rows to fill)."""
    n = codes.shape[0] if rows is None else rows
    out = np.empty((n + BLOCK, codes.shape[1]), dtype=np.uint8)
    out[n:] = 0
    if rows is None:
        np.bitwise_xor(codes.view(np.uint8), np.uint8(BIAS), out=out[:n])
    return out


def _by_list(codes: I8, lists: I32, labels: I64, k: int) -> tuple[U8, I64, I64]:
    """A run's inverted file, for the first stage's scan (`scan.vote`): its codes sorted by list
    (stable: in slot order within a list), biased and padded as the scan reads them
    (`biased`), where each list starts among them (K + 1 offsets), and the rows' `_labels` in
    that order."""
    order = np.argsort(lists, kind="stable")
    offsets = np.searchsorted(lists[order], np.arange(k + 1)).astype(np.int64)
    return biased(codes[order]), offsets, np.ascontiguousarray(labels[order])


@dataclass(slots=True)
class _Found:
    """The pairs a search's scan found, for the first stage's geometry (`scan.consistency`): room
    for every row the visits reach (pages never written cost nothing), `count` used."""

    label: I64
    live: NDArray[np.int16]
    weight: I32
    count: int = 0

    @classmethod
    def room(cls, rows: int) -> _Found:
        return cls(np.empty(rows, np.int64), np.empty(rows, np.int16), np.empty(rows, np.int32))


@dataclass(frozen=True, eq=False)
class _Segment:
    """An immutable run of indexed cylinders, in finger slot order (a finger's rows together: the
    second stage reads them as contiguous blocks; the inverted file holds them by list)."""

    codes: I8  # (m, d) int8 index vectors (`quantise`), for the second stage and merges
    lists: I32  # (m,) the list of each cylinder
    offsets: I64  # (K + 1,) list j holds offsets[j + 1] - offsets[j] rows (`_ivf`)
    slot: I32  # (m,) finger slot of each cylinder, ascending
    theta: U8  # (m,) direction of each cylinder's minutia (`angle_codes`)
    xy: I16  # (m, 2) its position (pixels, `positions`), for the first stage's geometry
    first_slot: int  # the lowest finger slot in the run (0 when empty)
    slot_rows: I64  # finger first_slot + i is rows slot_rows[i]:slot_rows[i + 1]
    by_list_codes: U8  # the same codes in list order, `biased`, for stage 1
    by_list: I64  # the rows' `_labels` in that order

    @property
    def size(self) -> int:
        return int(self.slot.shape[0])

    @classmethod
    def build(cls, codes: I8, lists: I32, slot: I32, theta: U8, xy: I16, k: int) -> _Segment:
        if slot.size > 1 and bool((np.diff(slot) < 0).any()):  # batches and merges come in slot order
            order = np.argsort(slot, kind="stable")
            codes, lists, slot, theta, xy = codes[order], lists[order], slot[order], theta[order], xy[order]
        first, last = (int(slot[0]), int(slot[-1])) if slot.size else (0, -1)
        slot_rows = np.searchsorted(slot, np.arange(first, last + 2)).astype(np.int64)
        by_list_codes, offsets, by_list = _by_list(codes, lists, _labels(slot, theta, xy), k)
        return cls(codes, lists, offsets, slot, theta, xy, first, slot_rows, by_list_codes, by_list)

    def reach(self, lists: I64) -> int:
        """How many rows the visits `lists` ((n, visits), -1: none) reach in this run."""
        sizes = np.diff(self.offsets)
        return int(np.where(lists >= 0, sizes[np.maximum(lists, 0)], 0).sum())

    def vote(self, live: I8, live_theta: I64, lists: I64, p: IndexParams, votes: I32, found: _Found) -> None:
        """Add this run's pairs to the first stage's votes (`scan.vote`), and keep them in `found`:
        the live codes `live` ((n, d) int8, `quantise`) against the rows of the lists `lists[i]`
        each visits."""
        from idguard.biometrics import scan

        found.count = int(
            scan.vote(
                self.by_list_codes,
                self.offsets,
                self.by_list,
                live,
                live_theta,
                lists,
                _min_product(p.min_similarity),
                _weights(p.min_similarity, p.vote_slope),
                _cell_table(p.angle_bins),
                p.angle_bins,
                votes,
                found.label,
                found.live,
                found.weight,
                found.count,
            )
        )

    def rows_of(self, slots: I64) -> tuple[I64, I64]:
        """The rows of the fingers `slots` (sorted, distinct), finger after finger (each finger's a
        contiguous block), and for each row the place of its finger in `slots`."""
        at = slots - self.first_slot
        inside = (at >= 0) & (at < self.slot_rows.size - 1)  # slots the run spans
        at = np.where(inside, at, 0)
        lo = self.slot_rows[at]
        counts = np.where(inside, self.slot_rows[np.minimum(at + 1, self.slot_rows.size - 1)] - lo, 0)
        total = int(counts.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        starts = np.repeat(lo - (np.cumsum(counts) - counts), counts)
        out: I64 = starts + np.arange(total)
        return out, np.repeat(np.arange(slots.size, dtype=np.int64), counts)


def _merge(a: _Segment, b: _Segment, alive: NDArray[np.bool_], k: int) -> _Segment:
    """One run of the rows of runs `a` and `b` (b's finger slots all above a's) that are still
    alive. Both inverted files are in list order already, so the merged one interleaves them list
    by list (a's block of a list, then b's: slot order within the list) instead of sorting 4
    million rows again (issue 10's tenth round: loading 100,000 fingers 7.8 s against 9.8)."""
    slot = np.concatenate([a.slot, b.slot])
    keep = alive[slot]
    codes = np.concatenate([a.codes, b.codes])
    lists = np.concatenate([a.lists, b.lists])
    theta = np.concatenate([a.theta, b.theta])
    xy = np.concatenate([a.xy, b.xy])
    if not keep.all():  # cylinders of removed fingers leave the index here
        codes, lists, slot, theta, xy = codes[keep], lists[keep], slot[keep], theta[keep], xy[keep]
    offsets = np.zeros(k + 1, dtype=np.int64)
    if keep.all():  # nothing removed (a load): block copies, list by list
        count_a = np.diff(a.offsets)
        np.cumsum(count_a + np.diff(b.offsets), out=offsets[1:])
        by_list_codes = biased(codes, int(offsets[-1]))
        by_list = np.empty(offsets[-1], dtype=np.int64)
        for j in range(k):
            at, mid, end = int(offsets[j]), int(offsets[j] + count_a[j]), int(offsets[j + 1])
            lo_a, lo_b = int(a.offsets[j]), int(b.offsets[j])
            by_list_codes[at:mid] = a.by_list_codes[lo_a : lo_a + mid - at]
            by_list_codes[mid:end] = b.by_list_codes[lo_b : lo_b + end - mid]
            by_list[at:mid] = a.by_list[lo_a : lo_a + mid - at]
            by_list[mid:end] = b.by_list[lo_b : lo_b + end - mid]
    else:
        parts = []
        for run in (a, b):
            live = alive[run.by_list >> SLOT_SHIFT]
            listed = np.repeat(np.arange(k, dtype=np.int64), np.diff(run.offsets))[live]
            parts.append((run, live, listed, np.bincount(listed, minlength=k)))
        np.cumsum(parts[0][3] + parts[1][3], out=offsets[1:])
        by_list_codes = biased(codes, int(offsets[-1]))
        by_list = np.empty(offsets[-1], dtype=np.int64)
        for (run, live, listed, counts), before in zip(
            parts, (np.zeros(k, dtype=np.int64), parts[0][3]), strict=True
        ):
            first = np.cumsum(counts) - counts  # where each list starts among the run's kept rows
            at_ = offsets[listed] + before[listed] + np.arange(listed.size) - first[listed]  # b's after a's
            by_list_codes[at_] = run.by_list_codes[: live.size][live]
            by_list[at_] = run.by_list[live]
    first_slot, last = (int(slot[0]), int(slot[-1])) if slot.size else (0, -1)
    slot_rows = np.searchsorted(slot, np.arange(first_slot, last + 2)).astype(np.int64)
    return _Segment(codes, lists, offsets, slot, theta, xy, first_slot, slot_rows, by_list_codes, by_list)


@dataclass(frozen=True, eq=False)
class _State:
    """What a search reads: replaced as a whole by the writer, never changed in place (except
    `alive`, whose entries only go from True to False)."""

    segments: tuple[_Segment, ...]
    alive: NDArray[np.bool_]
    blobs: list[bytes | None]  # appended to and cleared in place (readers check for None)
    keys: list[str | None]


def _parse_stored(data: bytes) -> tuple[U8, F32, I16]:
    """Cell bytes, minutia directions and positions (`positions`) of a stored template, without
    building the comparison arrays (`Template.from_bytes` does that, ~1 ms): the same header and
    length checks."""
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
    coords = np.frombuffer(data, dtype="<f4", count=3 * n, offset=_HEADER.size).reshape(3, n)
    nibbles = np.frombuffer(data, dtype=np.uint8, count=n * cell_bytes, offset=_HEADER.size + 12 * n)
    return nibbles.reshape(n, cell_bytes), coords[2].astype(np.float32), positions(coords[0], coords[1])


def positions(x: NDArray[Any], y: NDArray[Any]) -> I16:
    """Minutiae positions (pixels) as the index keeps them: (n, 2) int16, rounded to the pixel
    (the labels keep -8192..8191, `POSITION_BITS`; ISO 19794-2 positions are 14-bit)."""
    xy = np.rint(np.stack([x, y], axis=1).astype(np.float64))
    if not np.isfinite(xy).all():
        raise TemplateError("template.positions", "a minutia position is not a finite number")
    out: I16 = np.clip(xy, -POSITION_OFFSET, POSITION_OFFSET - 1).astype(np.int16)
    return out


_INDEX_HEADER = struct.Struct("<4sBIH")  # magic, format, model id, cylinders
# Format 2 (issue 10's tenth round) added the minutiae's positions, which the first stage's
# geometry needs; data of format 1 is filed from its template (the slow load) until
# `fingerprints.reindex` writes it again.
_INDEX_MAGIC, _INDEX_FORMAT = b"IGIX", 2
_INDEX_PER_CYLINDER = 4 + 2 + 4 + 64  # direction (float32), list (uint16), x, y (int16), vector (64 x int8)


def index_data(stored: bytes, model: IndexModel | None = None) -> bytes:
    """What the gallery files a finger by, from its stored template (`Template.to_bytes()`, raw or
    zlib-compressed): per cylinder its minutia's direction, its list, its position and its index
    vector in int8 (74 bytes), after a header naming the format and the model. Stored beside the
    template at enrolment so that loading a gallery is reading bytes (`Gallery.add_indexed_many`);
    derived from the minutiae, so sealed like the template."""
    model = default_model() if model is None else model
    if model.dims != 64 or model.lists > 65_535:
        raise ValueError("index data holds 64-dimensional vectors and at most 65,535 lists")
    raw = stored if stored[:4] == _MAGIC else zlib.decompress(stored)
    nibbles, theta, xy = _parse_stored(raw)
    vectors = model.vectors(nibbles)
    lists = model.nearest(vectors)[:, 0]
    codes = quantise(vectors)
    return b"".join(
        [
            _INDEX_HEADER.pack(_INDEX_MAGIC, _INDEX_FORMAT, model.id, theta.shape[0]),
            theta.astype("<f4").tobytes(),
            lists.astype("<u2").tobytes(),
            np.ascontiguousarray(xy.T).astype("<i2").tobytes(),
            codes.tobytes(),
        ]
    )


def index_is_current(data: bytes, model: IndexModel | None = None) -> bool:
    """Whether `index_data` bytes were made in this format with `model` (the default model): what
    `fingerprints.reindex` asks to find index data an older model or format made. Reads the header
    only; bytes that are not index data at all are not current either."""
    model = default_model() if model is None else model
    if len(data) < _INDEX_HEADER.size:
        return False
    magic, version, made_with, _ = _INDEX_HEADER.unpack_from(data)
    return bool(magic == _INDEX_MAGIC and version == _INDEX_FORMAT and made_with == model.id)


def _parse_index(data: bytes, model_id: int, lists_in_model: int) -> tuple[F32, I32, I8, I16] | None:
    """Directions, lists, int8 codes and positions from `index_data`; None when it was made with
    another model or in an older format (the template is then filed the slow way). TemplateError
    when it is malformed."""
    if len(data) < _INDEX_HEADER.size:
        raise TemplateError("index.length", f"{len(data)} bytes cannot hold the header")
    magic, version, made_with, n = _INDEX_HEADER.unpack_from(data)
    if magic != _INDEX_MAGIC or not 1 <= version <= _INDEX_FORMAT:
        raise TemplateError("index.magic", f"not idguard index data of format 1 to {_INDEX_FORMAT}")
    if version < _INDEX_FORMAT:
        return None
    if len(data) != _INDEX_HEADER.size + n * _INDEX_PER_CYLINDER:
        raise TemplateError("index.length", f"{len(data)} bytes do not match {n} cylinders")
    if made_with != model_id:
        return None
    off = _INDEX_HEADER.size
    theta = np.frombuffer(data, dtype="<f4", count=n, offset=off).astype(np.float32)
    lists = np.frombuffer(data, dtype="<u2", count=n, offset=off + 4 * n).astype(np.int32)
    xy = np.frombuffer(data, dtype="<i2", count=2 * n, offset=off + 6 * n).reshape(2, n).T.astype(np.int16)
    codes = np.frombuffer(data, dtype=np.int8, count=n * 64, offset=off + 10 * n).reshape(n, 64)
    if not np.isfinite(theta).all():
        raise TemplateError("index.directions", "a direction is not a finite number")
    if n and int(lists.max()) >= lists_in_model:
        raise TemplateError("index.lists", f"a list number is not below {lists_in_model}")
    return theta, lists, codes, xy


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
        codes, lists = self._coded(to_nibbles(template.cell_levels))
        xy = positions(template.x, template.y)
        self._insert_codes([(key, codes, lists, theta, xy, zlib.compress(template.to_bytes(), 1))])

    def add_stored(self, key: str, data: bytes) -> None:
        """`add` from stored bytes (`Template.to_bytes()`, optionally zlib-compressed as the registry
        keeps them) without building the template."""
        self.add_stored_many([(key, data)])

    def add_stored_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        """`add_stored` for many fingers at once: one matrix product and one sorted run for the
        lot, the fast path for loading a blacklist. A malformed template raises TemplateError
        before anything of the batch is added."""
        self.add_indexed_many((key, data, None) for key, data in items)

    def add_indexed_many(self, items: Iterable[tuple[str, bytes, bytes | None]]) -> None:
        """`add_stored_many` with each finger's `index_data` (or None): a finger whose index data
        was made with this gallery's model is filed from it (no decompression, pooling or
        projection: the fast load); the others are filed from their template as
        `add_stored_many` does. Malformed index data or a malformed template raises
        TemplateError before anything of the batch is added."""
        batch: list[tuple[str, I8, I32, F32, I16, bytes]] = []
        model_id = self.model.id
        for key, data, index in items:
            indexed = _parse_index(index, model_id, self.model.lists) if index is not None else None
            if indexed is not None:
                theta, lists, codes, xy = indexed
                batch.append((key, codes, lists, theta, xy, data))
                continue
            raw = data if data[:4] == _MAGIC else zlib.decompress(data)
            nibbles, theta, xy = _parse_stored(raw)
            blob = data if raw is not data else zlib.compress(raw, 1)
            batch.append((key, *self._coded(nibbles), theta, xy, blob))
        if batch:
            self._insert_codes(batch)

    def _coded(self, nibbles: U8) -> tuple[I8, I32]:
        """Codes and lists of cylinders from their cell bytes, as `index_data` makes them."""
        vectors = self.model.vectors(nibbles)
        return quantise(vectors), self.model.nearest(vectors)[:, 0].astype(np.int32)

    def _insert_codes(self, batch: list[tuple[str, I8, I32, F32, I16, bytes]]) -> None:
        """File fingers given their cylinders' int8 codes, lists, directions and positions."""
        codes = np.concatenate([b[1] for b in batch])
        lists = np.concatenate([b[2] for b in batch]).astype(np.int32)
        theta = angle_codes(np.concatenate([b[3] for b in batch]))
        xy = np.concatenate([b[4] for b in batch])
        counts = [b[1].shape[0] for b in batch]
        k = self.model.lists
        with self._write:
            st = self._state
            alive, blobs, keys = st.alive, st.blobs, st.keys
            # A key twice in one batch: the last one stands, like consecutive adds.
            last = {key: i for i, (key, *_) in enumerate(batch)}
            first = len(keys)
            need = first + len(batch)
            if need > 1 << (63 - SLOT_SHIFT):  # a label holds the slot in its top 27 bits
                raise RuntimeError(
                    f"a gallery numbers at most 2^{63 - SLOT_SHIFT} fingers: load it anew to renumber"
                )
            if need > alive.shape[0]:  # grow: searches keep reading the old array
                alive = np.concatenate([alive, np.zeros(max(64, need, alive.shape[0]), dtype=bool)])
            replaced = []
            for i, (key, *_, blob) in enumerate(batch):
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
            segments = [*st.segments, _Segment.build(codes, lists, slot, theta, xy, k)]
            while len(segments) >= 2 and segments[-2].size <= 2 * segments[-1].size:
                b, a = segments.pop(), segments.pop()
                segments.append(_merge(a, b, alive, k))
            self._state = _State(tuple(segments), alive, blobs, keys)
            for old in replaced:
                self._forget(old)

    @staticmethod
    def warm() -> None:
        """Compile the first stage's scan and geometry (`scan.warm`) before the first search needs them."""
        from idguard.biometrics import scan

        scan.warm()

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
            2 * s.codes.nbytes  # in slot order and in list order
            + s.by_list.nbytes
            + s.lists.nbytes
            + s.offsets.nbytes
            + s.slot.nbytes
            + s.theta.nbytes
            + s.xy.nbytes
            + s.slot_rows.nbytes
            for s in st.segments
        )
        return index + sum(len(b) for b in st.blobs if b is not None) + st.alive.nbytes

    # ---- searching -------------------------------------------------------------------------
    def candidates(self, probe: Template) -> list[str]:
        """The registered fingers the index ranks first for `probe`, best first: those `search`
        compares 1:1 (at most `params.candidates`)."""
        st = self._state
        return [k for s in self._ranked(st, probe) if (k := st.keys[s]) is not None]

    def shortlist(self, probe: Template) -> list[str]:
        """The registered fingers the first stage (the inverted file's vote) passes to the
        second, best first: at most `params.shortlist(len(self))`."""
        st = self._state
        q = self._probe_vectors(probe)
        if q is None or not st.segments:
            return []
        return [k for x in self._shortlisted(st, probe, q).tolist() if (k := st.keys[x]) is not None]

    def search(self, probe: Template, *, limit: int = 5) -> list[tuple[str, float]]:
        """Registered fingers whose 1:1 score with `probe` is at least the threshold, best first,
        at most `limit` of them (empty when none)."""
        return self.search_explained(probe, limit=limit)[0]

    def search_explained(
        self, probe: Template, *, limit: int = 5, shortlist: list[str] | None = None
    ) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """`search`, and every candidate compared 1:1 with its score, whatever the threshold (for
        the benchmark, the threshold calibration and the tests). `shortlist`, when given, receives
        the fingers the first stage passed to the second (best first)."""
        st = self._state
        scored: list[tuple[str, float]] = []
        for slot in self._ranked(st, probe, shortlist):
            blob, key = st.blobs[slot], st.keys[slot]
            if blob is None or key is None:  # removed meanwhile
                continue
            scored.append((key, similarity(probe, Template.from_bytes(zlib.decompress(blob)))))
        hits = sorted((h for h in scored if h[1] >= self.threshold), key=lambda h: (-h[1], h[0]))
        return hits[:limit], scored

    def _ranked(self, st: _State, probe: Template, trace: list[str] | None = None) -> list[int]:
        """Finger slots by decreasing second-stage score, at most `params.candidates`."""
        q = self._probe_vectors(probe)
        if q is None or not st.segments:
            return []
        short = self._shortlisted(st, probe, q)
        if trace is not None:
            trace.extend(k for x in short.tolist() if (k := st.keys[x]) is not None)
        if short.size == 0:
            return []
        return self._rescored(st, probe, q, short)

    def _probe_vectors(self, probe: Template) -> F32 | None:
        if (probe.ns, probe.nd) != (_NS, _ND):
            raise ValueError(f"the index needs 16 x 6 cylinders, not {probe.ns} x {probe.nd}")
        if probe.count == 0:
            return None
        return self.model.vectors(to_nibbles(probe.cell_levels))

    def _shortlisted(self, st: _State, probe: Template, q: F32) -> I64:
        """First stage: the inverted file's vote, then the geometry of the pairs found for the
        vote's first `params.checked` fingers. Finger slots, best first, at most
        `params.shortlist(len(self))`."""
        from idguard.biometrics import scan

        p = self.params
        indexed = sum(seg.size for seg in st.segments)
        k = self.model.lists
        near = self.model.nearest(q, max(p.lists_probed, min(k, -(-p.visit_budget * k // max(1, indexed)))))
        keys = np.ascontiguousarray(near, dtype=np.int64)
        live = np.ascontiguousarray(quantise(q))
        live_theta = angle_codes(np.asarray(probe.theta, dtype=np.float32)).astype(np.int64)
        bins = p.angle_bins
        votes = np.zeros(bins * st.alive.shape[0], dtype=np.int32)  # (cell, finger), cell-major
        found = _Found.room(sum(seg.reach(keys) for seg in st.segments))
        for seg in st.segments:
            seg.vote(live, live_theta, keys, p, votes, found)
        if found.count == 0:
            return np.zeros(0, dtype=np.int64)
        score = np.empty(st.alive.shape[0], dtype=np.int32)
        start = np.empty(st.alive.shape[0], dtype=np.int8)
        scan.windows(votes, bins, p.angle_window, score, start)
        score[~st.alive] = 0
        fingers = len(self._slots)
        count, checked = p.shortlist(fingers), p.checked(fingers)
        if checked <= count:
            return _top(score, count)
        return self._consistent(probe, live_theta, start, found, _chosen(score, checked), score, count)

    def _consistent(
        self, probe: Template, live_theta: I64, start: I8, found: _Found, top: I64, vote: I32, count: int
    ) -> I64:
        """The vote's first fingers `top` (in slot order, `_chosen`), ranked again by the geometry
        of their found pairs (`_agreement`; `start`: each finger's first cell of its best rotation
        window), ties by the vote: the first `count` finger slots, best first."""
        agree = self._agreement(
            probe, live_theta, found.label, found.live, found.weight, found.count, top, start
        )
        # The geometry first, the vote (below 2^24) breaking its ties, then the lower slot (as `_top`
        # breaks the vote's own ties): one integer to rank by.
        key = (agree << 24) | np.minimum(vote[top], (1 << 24) - 1).astype(np.int64)
        return top[_top(key, count)]

    def _rescored(self, st: _State, probe: Template, q: F32, short: I64) -> list[int]:
        """Second stage: every cylinder of the shortlisted fingers against every live one (exact
        integer products of the int8 codes, no list missed: `scan.above`), voted by rotation with
        one pair per (finger, live cylinder) (`_aligned`); with `params.rescore_geometry`, ranked
        first by the geometry of those pairs (`_pair_geometry`), that score breaking ties. The
        first `params.candidates` finger slots, best first."""
        from idguard.biometrics import scan

        p = self.params
        short = np.sort(short)
        live = np.ascontiguousarray(quantise(q))
        bar = _min_product(p.rescore_similarity)
        tau = np.float32(p.rescore_similarity)
        lives: list[I64] = []
        places: list[I64] = []
        thetas: list[U8] = []
        weights: list[F32] = []
        labels: list[I64] = []
        products: list[I32] = []
        for seg in st.segments:
            rows, place = seg.rows_of(short)  # each finger's rows a contiguous block of the run
            if rows.size == 0:
                continue
            room = rows.size * live.shape[0]  # pages never written cost nothing
            row, which, product = np.empty(room, np.int32), np.empty(room, np.int16), np.empty(room, np.int32)
            n = scan.above(seg.codes, rows, live, bar, row, which, product)
            r = rows[row[:n]]
            lives.append(which[:n].astype(np.int64))
            places.append(place[row[:n]])
            thetas.append(seg.theta[r])
            weights.append(product[:n].astype(np.float32) * np.float32(1.0 / CODE_SCALE**2) - tau)
            if p.rescore_geometry:
                labels.append(_labels(seg.slot[r], seg.theta[r], seg.xy[r]))
                products.append(product[:n])
        if not lives or sum(x.size for x in lives) == 0:
            return []
        live_of, place_of = np.concatenate(lives), np.concatenate(places)
        score = self._aligned(
            probe, live_of, place_of, np.concatenate(thetas), np.concatenate(weights), short.size
        )
        score[~st.alive[short]] = 0.0
        if not p.rescore_geometry:
            return [int(short[x]) for x in _top(score, p.candidates)]
        agree = self._pair_geometry(
            st, probe, short, np.concatenate(labels), live_of, place_of, np.concatenate(products)
        )
        ranked = np.lexsort((np.arange(short.size), -score, -agree))  # geometry, score, slot
        return [int(short[x]) for x in ranked[score[ranked] > 0][: p.candidates]]

    def _pair_geometry(
        self, st: _State, probe: Template, short: I64, label: I64, live: I64, place: I64, product: I32
    ) -> I64:
        """Stage 2's geometry: `scan.consistency` (the first stage's rule) over stage 2's pairs of
        the fingers `short` (sorted slots; pair i: row label, live cylinder, the finger's place in
        `short`, inner product), weighed as the first stage weighs its pairs, each finger's
        rotation window from the vote over all its pairs. Each finger's score, by place."""
        from idguard.biometrics import scan

        p = self.params
        bins, n = p.angle_bins, short.size
        table = _weights(p.rescore_similarity, p.vote_slope)
        weight = table[np.minimum(product - _min_product(p.rescore_similarity), table.shape[0] - 1)]
        live_theta = angle_codes(np.asarray(probe.theta, dtype=np.float32)).astype(np.int64)
        cell = _cell_table(bins)
        # The vote by (cell, place): small (36 x the shortlist), so a bincount.
        at = cell[(live_theta[live] - label) & 255] * n + place
        votes = np.bincount(at, weights=weight, minlength=bins * n).astype(np.int32)
        first = np.empty(n, dtype=np.int8)
        scan.windows(votes, bins, p.angle_window, np.empty(n, dtype=np.int32), first)
        start = np.zeros(st.alive.shape[0], dtype=np.int8)
        start[short] = first
        return self._agreement(
            probe, live_theta, label, live.astype(np.int16), weight, label.size, short, start
        )

    def _agreement(
        self,
        probe: Template,
        live_theta: I64,
        label: I64,
        live: I16,
        weight: I32,
        count: int,
        named: I64,
        start: I8,
    ) -> I64:
        """`scan.consistency` with this gallery's parameters: the geometry of the first `count`
        pairs (row label, live cylinder, weight) for the finger slots `named`, each finger's window
        from `start[slot]`. Each named finger's score, in `named`'s order."""
        from idguard.biometrics import scan

        p = self.params
        place = np.full(start.shape[0], -1, dtype=np.int32)
        place[named] = np.arange(named.size, dtype=np.int32)
        agree = np.zeros(named.size, dtype=np.int64)
        scan.consistency(
            label,
            live,
            weight,
            count,
            place,
            start,
            _cell_table(p.angle_bins),
            p.angle_bins,
            p.angle_window,
            np.stack([probe.x, probe.y], axis=1).astype(np.float32),
            live_theta,
            _unit_table(),
            p.pair_distance,
            math.cos(math.radians(p.pair_angle)),
            round(p.pair_rotation * ANGLE_STEPS / 360.0),
            agree,
        )
        return agree

    def _aligned(
        self, probe: Template, live: I64, finger: I64, theta: U8, weight: F32, n: int
    ) -> NDArray[np.float64]:
        """The second stage's score of each finger (0..n-1): its rotation first, the best window of
        the vote over all its pairs (`_vote`, as the first stage), then the sum, over live
        cylinders, of each one's heaviest pair within `rotation_tolerance` of that window's centre.
        A live cylinder's heaviest pair in a finger may disagree with the finger's rotation while
        another of its pairs agrees: the one that agrees counts, as in a 1:1 comparison. One pair
        per (finger, live cylinder): a live cylinder resembling many cylinders of one finger is one
        piece of evidence, not many. No sort: a maximum per (finger, live cylinder) in place."""
        p = self.params
        _, start = self._vote(probe, live, finger, theta, weight, n, where=True)
        # The window's centre as a rotation byte; each pair's offset from it, wrapping at 2 pi.
        centre = ((2 * start + p.angle_window) * ANGLE_STEPS // (2 * p.angle_bins) % ANGLE_STEPS).astype(
            np.uint8
        )
        rot = angle_codes(np.asarray(probe.theta, dtype=np.float32))[live] - theta  # uint8: mod 2 pi
        off = (rot - centre[finger]).view(np.int8).astype(np.int16)
        near = np.flatnonzero(np.abs(off) <= round(p.rotation_tolerance * ANGLE_STEPS / 360.0))
        best = np.zeros(n * probe.count, dtype=np.float32)
        np.maximum.at(best, finger[near] * probe.count + live[near], weight[near])
        out: NDArray[np.float64] = best.reshape(n, probe.count).sum(axis=1, dtype=np.float64)
        return out

    def _vote(
        self,
        probe: Template,
        live: I64,
        finger: I64,
        theta: U8,
        weight: F32 | None,
        n: int,
        *,
        where: bool = False,
    ) -> Any:
        """Each finger's score (0..n-1): the largest sum of weights (None: the number) of its
        cylinder pairs that agree on the finger's rotation (every pair counted). With `where`,
        also the first cell of each finger's best window (`_aligned`)."""
        p = self.params
        rot = angle_codes(np.asarray(probe.theta, dtype=np.float32))[live] - theta  # uint8: mod 2 pi
        bins, window = p.angle_bins, p.angle_window
        # Cell-major: (cell, finger) in one bincount; a window's sum and the maximum over windows
        # are then element-wise operations on rows of n (~2x faster than reductions along rows of
        # `bins`). The cell of a rotation byte, times n, is a table look-up.
        at = np.take(_cell_table(bins) * n, rot)
        at += finger
        # Without weights the votes are int64 counts, and the windows' sums stay exact integers.
        votes = np.bincount(at, weights=weight, minlength=n * bins).reshape(bins, n)
        return _windows(votes, window, where=where)


def _windows(votes: NDArray[Any], window: int, *, where: bool = False) -> Any:
    """Each finger's score from its votes ((bins, fingers), cell-major): the largest sum of `window`
    consecutive cells, around the circle. With `where`, also the first cell of each finger's first
    window reaching it. A window's sum and the maximum over windows are element-wise operations on
    rows of fingers (~2x faster than reductions along rows of `bins`)."""
    bins, n = votes.shape
    score = np.zeros(n, dtype=votes.dtype)
    run = np.empty(n, dtype=votes.dtype)
    start = np.zeros(n, dtype=np.int64) if where else None
    for c in range(bins):  # every window of consecutive cells, around the circle
        if window > 1:  # the first two cells in one pass: the same sum as a copy, then +=
            np.add(votes[c], votes[(c + 1) % bins], out=run)
        else:
            np.copyto(run, votes[c])
        for d in range(2, window):
            run += votes[(c + d) % bins]
        if start is not None:
            start[run > score] = c
        np.maximum(score, run, out=score)
    return (score, start) if where else score


def _chosen(score: I32, count: int) -> I64:
    """Indices of the `count` highest positive scores, in index order: `_top`'s set without its
    sort by score (2.8 -> 0.5 ms for 20,000 of 100,000), where only the set matters."""
    found = np.flatnonzero(score > 0)
    if count < found.size:
        found = np.sort(found[np.argpartition(-score[found], count - 1)[:count]])
    return found


def _top(score: NDArray[np.float64] | I32, count: int) -> I64:
    """Indices of the `count` highest positive scores, best first (ties: lower index first)."""
    found = np.flatnonzero(score > 0)
    top = min(count, found.size)
    if top == 0:
        return np.zeros(0, dtype=np.int64)
    if top < found.size:
        found = found[np.argpartition(-score[found], top - 1)[:top]]
    out: I64 = found[np.lexsort((found, -score[found]))]
    return out
