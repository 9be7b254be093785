"""The 1:N search's first stage, compiled (numba): the inverted file's scan and vote in one pass.

For each live cylinder and each list it visits, every registered cylinder of the list is compared
with it (the int8 index vectors' inner product, an exact integer) and, above the bar, its weight
is added at once to its finger's vote in the rotation cell the pair agrees on. Nothing is kept of
a pair: before issue 10's seventh round faiss's range search returned every pair above the bar
(a virtual call, a branch and a list of results per pair, ~30 ns against ~3 for a pair only
compared) and numpy's `bincount` then voted them; both were most of a search's time.

The found pairs' (finger, cell) places and weights are written one after another into a small
buffer and added to the votes in bursts: added as they are found, each addition waits for its
cache miss in a 14 MB array behind the comparisons' branches (measured ~3x slower).

Weights are integers (`weight_table`: the pair weight for each inner product above the bar, in
units of 1/4096), so a vote is exact and does not depend on the order pairs are added. The
functions release the GIL: concurrent searches of one worker run in parallel.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np
from numpy.typing import NDArray

I8 = NDArray[np.int8]
I16 = NDArray[np.int16]
I32 = NDArray[np.int32]
I64 = NDArray[np.int64]

WEIGHT_UNIT = 4096  # a pair weighing 1 adds this much to its finger's vote
MAX_CYLINDERS = 255  # an ISO 19794-2 record holds at most 255 minutiae, so a template as many cylinders
_BUFFER = 1 << 14  # found pairs kept before they are added to the votes
DIMS = 64  # an index vector's length: a constant, so the compiled inner product is unrolled
# The largest inner product of two quantised unit vectors: 127^2, a little more after rounding (a
# code's length is at most 127 + 0.5 x sqrt(64)); `vote` reads larger ones as this.
MAX_PRODUCT = 131 * 131


def weight_table(
    min_product: int, scale: float, weight: Callable[[NDArray[np.float64]], NDArray[np.float64]]
) -> I32:
    """The weight of a pair for each inner product p from min_product to `MAX_PRODUCT` (entry
    p - min_product; entry 0, at the bar, is never read), in `WEIGHT_UNIT`s: `weight(p x scale)`
    rounded; `vote` reads the last entry for any larger product. Capped so that no cell of a vote
    can overflow int32: one finger's pairs are at most 255 x 255."""
    products = np.arange(min_product, MAX_PRODUCT + 1, dtype=np.float64)
    table = np.rint(WEIGHT_UNIT * weight(products * scale))
    table[0] = 0.0
    cap = (2**31 - 1) // (MAX_CYLINDERS * MAX_CYLINDERS)
    out: I32 = np.clip(table, 0, cap).astype(np.int32)
    return out


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _add(at: I64, weight: I32, count: int, votes: I32) -> None:
    for j in range(count):
        votes[at[j]] += weight[j]


@numba.njit(cache=True, nogil=True, boundscheck=False)
def vote(
    codes: I8,
    offsets: I64,
    labels: I64,
    live: I16,
    live_theta: I64,
    lists: I64,
    min_product: int,
    weights: I32,
    cell: I64,
    bins: int,
    votes: I32,
) -> int:
    """Add to `votes` ((bins x fingers,) int32, cell-major) every pair of a live cylinder
    (`live[i]`, its int8 code widened to int16; direction byte `live_theta[i]`) and a row of a list
    it visits (`lists[i]`, -1: none; list j is rows offsets[j]:offsets[j + 1] of `codes`, labelled
    `labels`: finger slot x 256 + direction byte) whose inner product exceeds `min_product`: at the
    row's finger and the cell `cell[(live direction - row direction) mod 256]`, weighing
    `weights[product - min_product]` (the last entry for larger products). Returns the number of pairs added."""
    visits = lists.shape[1]
    fingers = votes.shape[0] // bins
    # The visits grouped by list (each list is visited by ~2.3 live cylinders): a list's rows come
    # from memory once, then from the cache (~10 % faster than live cylinder after live cylinder).
    flat = lists.ravel()
    at = np.empty(_BUFFER, np.int64)
    weight = np.empty(_BUFFER, np.int32)
    q = np.empty(DIMS, np.int16)
    last = weights.shape[0] - 1
    held = 0
    added = 0
    for o in np.argsort(flat, kind="mergesort"):
        j = flat[o]
        if j < 0:
            continue
        i = o // visits
        for k in range(DIMS):
            q[k] = live[i, k]
        theta = live_theta[i]
        for r in range(offsets[j], offsets[j + 1]):
            p = np.int32(0)
            for k in range(DIMS):  # int8 x int8 in int32 lanes: compiled to vpmaddwd
                p = np.int32(p + np.int32(q[k]) * np.int32(np.int16(codes[r, k])))
            if p > min_product:
                label = labels[r]
                at[held] = cell[(theta - label) & 255] * fingers + (label >> 8)
                weight[held] = weights[min(p - min_product, last)]
                held += 1
                if held == _BUFFER:
                    _add(at, weight, held, votes)
                    added += held
                    held = 0
    _add(at, weight, held, votes)
    return added + held


def warm() -> None:
    """Compile `vote` now (numba: ~1 s, or ~0.1 s from its cache on disk) instead of in the first
    search of the process: one live cylinder against one row, with the types a search passes."""
    codes = np.zeros((1, DIMS), np.int8)
    vote(
        codes,
        np.array([0, 1], np.int64),
        np.zeros(1, np.int64),
        codes.astype(np.int16),
        np.zeros(1, np.int64),
        np.zeros((1, 1), np.int64),
        0,
        np.zeros(2, np.int32),
        np.zeros(256, np.int64),
        1,
        np.zeros(1, np.int32),
    )
