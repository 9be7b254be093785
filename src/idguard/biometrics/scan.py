"""The 1:N search's first stage, compiled (numba): the inverted file's scan and vote in one pass,
and the geometry of the pairs it found (`consistency`, since issue 10's tenth round).

For each live cylinder and each list it visits, every registered cylinder of the list is compared
with it (the int8 index vectors' inner product, an exact integer) and, above the bar, its weight
is added at once to its finger's vote in the rotation cell the pair agrees on, and the pair is
kept (its row's label, the live cylinder, its weight: 14 bytes) for `consistency`, which ranks
the vote's first fingers again. Before issue 10's seventh round faiss's range search returned every pair above the bar
(a virtual call, a branch and a list of results per pair, ~30 ns against ~3 for a pair only
compared) and numpy's `bincount` then voted them; both were most of a search's time.

Since issue 10's eleventh round the rows are compared sixteen at a time (`_dots`, written in LLVM's
IR): each row's 64 bytes against the live code in one AVX-512 VNNI instruction where the machine
has it, then one tree of shuffles for the sixteen sums and one comparison with the bar, a bit mask
whose set bits (~1 row in 10) are the pairs. Compared row by row, widening each byte to 16 bits
and summing each row alone, the shuffles were the bottleneck: 4.0 ns a row from the cache, 0.9
now; a search's scan 67 ms -> 37 at 100,000 fingers (docs/fingerprints.md, "Eleventh round").
The scanned codes are stored biased (code + 128: VNNI multiplies unsigned by signed bytes), and
the bar is raised by 128 x the live code's byte sum to match.

The found pairs' (finger, cell) places and weights are written one after another into a small
buffer and added to the votes in bursts: added as they are found, each addition waits for its
cache miss in a 14 MB array behind the comparisons' branches (measured ~3x slower).

Weights are integers (`weight_table`: the pair weight for each inner product above the bar, in
units of 1/4096), so a vote is exact and does not depend on the order pairs are added. The
functions release the GIL: concurrent searches of one worker run in parallel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import llvmlite.binding
import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic
from numpy.typing import NDArray

from idguard.biometrics.identification import BIAS, BLOCK, POSITION_BITS, POSITION_OFFSET, SLOT_SHIFT, biased

I8 = NDArray[np.int8]
U8 = NDArray[np.uint8]
I16 = NDArray[np.int16]
F32 = NDArray[np.float32]
I32 = NDArray[np.int32]
I64 = NDArray[np.int64]

WEIGHT_UNIT = 4096  # a pair weighing 1 adds this much to its finger's vote
MAX_CYLINDERS = 255  # an ISO 19794-2 record holds at most 255 minutiae, so a template as many cylinders
_BUFFER = 1 << 14  # found pairs kept before they are added to the votes
DIMS = 64  # an index vector's length: a constant, so the compiled inner product is unrolled
# The largest inner product of two quantised unit vectors: 127^2, a little more after rounding (a
# code's length is at most 127 + 0.5 x sqrt(64)); `vote` reads larger ones as this.
MAX_PRODUCT = 131 * 131
# AVX-512 VNNI (Intel since Cascade Lake, AMD since Zen 4) multiplies 64 bytes and sums them in fours
# in one instruction (vpdpbusd: unsigned x signed bytes); elsewhere LLVM compiles the same
# arithmetic from plain vector operations (on this machine 1.5x slower, still ~1.6x faster than
# comparing row by row).
VNNI = "+avx512vnni" in llvmlite.binding.get_host_cpu_features().flatten().split(",")


_declare: Any = cgutils.get_or_insert_function  # an LLVM function of the module, declared once


def _shuffle(builder: ir.IRBuilder, a: Any, b: Any, lanes: list[int]) -> Any:
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), len(lanes)), lanes))


def _dots_for(vnni: bool) -> Any:
    """A compiled `_dots(codes, row, q, bar, out) -> mask`: the inner products of `BLOCK`
    consecutive rows of `codes` ((m + BLOCK, 64) uint8, `identification.biased`) from `row` on with the int8 code
    `q` (64,), written to `out` (BLOCK,) int32, and the bit mask of those above `bar`. Each row
    gives 16 sums of 4 byte products (one vpdpbusd, or the same arithmetic in plain vector
    operations); a tree of shuffles then sums all 16 rows' at once (30 shuffles, where summing
    each row alone takes 64)."""
    i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
    v8, v32 = ir.VectorType(i8, DIMS), ir.VectorType(i32, DIMS // 4)
    wide = ir.VectorType(i32, DIMS)
    # Level by level, pairs of vectors of partial sums become one: lane t of the last is row t's sum.
    tree = [
        ([*range(0, 8), *range(16, 24)], [*range(8, 16), *range(24, 32)]),
        (
            [i + 8 * g for g in range(4) for i in range(4)],
            [i + 4 + 8 * g for g in range(4) for i in range(4)],
        ),
        (
            [i + 4 * g for g in range(8) for i in range(2)],
            [i + 2 + 4 * g for g in range(8) for i in range(2)],
        ),
        (list(range(0, 32, 2)), list(range(1, 32, 2))),
    ]

    def typer(context: Any, codes: Any, row: Any, q: Any, bar: Any, out: Any) -> Any:
        ok = (
            isinstance(codes, types.Array)
            and codes.dtype == types.uint8
            and codes.ndim == 2
            and codes.layout == "C"
            and isinstance(q, types.Array)
            and q.dtype == types.int8
            and q.layout == "C"
            and isinstance(out, types.Array)
            and out.dtype == types.int32
            and out.layout == "C"
        )
        if not ok:
            return None
        sig = types.uint32(codes, types.int64, q, types.int32, out)

        def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
            codes_v, row_v, q_v, bar_v, out_v = args
            arrays = [
                context.make_array(signature.args[k])(context, builder, v)
                for k, v in ((0, codes_v), (2, q_v), (4, out_v))
            ]
            rows, code, sums = (a.data for a in arrays)
            qv = builder.load(builder.bitcast(code, v8.as_pointer()), align=1)
            base = builder.gep(rows, [builder.mul(row_v, ir.Constant(i64, DIMS))])
            if vnni:  # declared only where used: other targets have no such intrinsic
                dp = _declare(
                    builder.module, ir.FunctionType(v32, [v32, v8, v8]), "llvm.x86.avx512.vpdpbusd.512"
                )
            level = []
            for t in range(BLOCK):
                at = builder.gep(base, [ir.Constant(i64, DIMS * t)])
                a = builder.load(builder.bitcast(at, v8.as_pointer()), align=1)
                if vnni:
                    level.append(builder.call(dp, [ir.Constant(v32, None), a, qv]))
                else:  # the same sums of four products: unsigned row bytes x signed code bytes
                    products = builder.mul(builder.zext(a, wide), builder.sext(qv, wide))
                    fours = [_shuffle(builder, products, products, list(range(j, DIMS, 4))) for j in range(4)]
                    level.append(
                        builder.add(builder.add(fours[0], fours[1]), builder.add(fours[2], fours[3]))
                    )
            for lo, hi in tree:
                level = [
                    builder.add(_shuffle(builder, x, y, lo), _shuffle(builder, x, y, hi))
                    for x, y in zip(level[::2], level[1::2], strict=True)
                ]
            builder.store(level[0], builder.bitcast(sums, v32.as_pointer()), align=4)
            bars = builder.insert_element(ir.Constant(v32, None), bar_v, ir.Constant(i32, 0))
            above = builder.icmp_signed(">", level[0], _shuffle(builder, bars, bars, [0] * BLOCK))
            return builder.zext(builder.bitcast(above, ir.IntType(BLOCK)), i32)

        return sig, codegen

    return intrinsic(typer)


_dots: Any = _dots_for(VNNI)


def _lowest_typer(typingctx: Any, mask: Any) -> Any:
    """`_lowest(mask)`: the index of the lowest set bit of a non-zero uint32 (tzcnt)."""
    sig = types.uint32(types.uint32)

    def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
        i32 = ir.IntType(32)
        fn = _declare(builder.module, ir.FunctionType(i32, [i32, ir.IntType(1)]), "llvm.cttz.i32")
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 1)])

    return sig, codegen


_lowest: Any = intrinsic(_lowest_typer)


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
    codes: U8,
    offsets: I64,
    labels: I64,
    live: I8,
    live_theta: I64,
    lists: I64,
    min_product: int,
    weights: I32,
    cell: I64,
    bins: int,
    votes: I32,
    found_label: I64,
    found_live: I16,
    found_weight: I32,
    found: int,
) -> int:
    """Add to `votes` ((bins x fingers,) int32, cell-major) every pair of a live cylinder
    (`live[i]`, its int8 code; direction byte `live_theta[i]`) and a row of a list it visits
    (`lists[i]`, -1: none; list j is rows offsets[j]:offsets[j + 1] of `codes`, `biased`,
    labelled `labels`: slot, position and direction, `SLOT_SHIFT`) whose inner product exceeds
    `min_product`: at the row's finger and the cell `cell[(live direction - row direction) mod
    256]`, weighing `weights[product - min_product]` (the last entry for larger products). Each
    pair is also kept, from place `found` on, in `found_label` (the row's label), `found_live` (i)
    and `found_weight`, for `consistency`: the arrays must hold every row the visits reach. Returns
    the places used, `found` + the pairs added."""
    visits = lists.shape[1]
    fingers = votes.shape[0] // bins
    # The visits grouped by list (each list is visited by ~2.3 live cylinders): a list's rows come
    # from memory once, then from the cache (~10 % faster than live cylinder after live cylinder).
    flat = lists.ravel()
    at = np.empty(_BUFFER, np.int64)
    weight = np.empty(_BUFFER, np.int32)
    sums = np.empty(BLOCK, np.int32)
    # A biased row's product with q is the code's plus 128 x the sum of q's bytes.
    bias = np.empty(live.shape[0], np.int32)
    for i in range(live.shape[0]):
        s = np.int32(0)
        for k in range(DIMS):
            s += np.int32(live[i, k])
        bias[i] = BIAS * s
    last = weights.shape[0] - 1
    held = 0
    for o in np.argsort(flat, kind="mergesort"):
        j = flat[o]
        if j < 0:
            continue
        i = o // visits
        q = live[i]
        theta = live_theta[i]
        bar = np.int32(min_product + bias[i])
        r, end = offsets[j], offsets[j + 1]
        while r < end:
            mask = _dots(codes, r, q, bar, sums)
            if end - r < BLOCK:  # rows past the list's end
                mask &= np.uint32((1 << (end - r)) - 1)
            while mask:  # the pairs above the bar: ~1 row in 10
                t = _lowest(mask)
                mask &= mask - np.uint32(1)
                label = labels[r + t]
                w = weights[min(sums[t] - bar, last)]
                at[held] = cell[(theta - label) & 255] * fingers + (label >> SLOT_SHIFT)
                weight[held] = w
                found_label[found] = label
                found_live[found] = i
                found_weight[found] = w
                found += 1
                held += 1
                if held == _BUFFER:
                    _add(at, weight, held, votes)
                    held = 0
            r += BLOCK
    _add(at, weight, held, votes)
    return found


@numba.njit(cache=True, nogil=True, boundscheck=False)
def above(codes: I8, rows: I64, live: I8, min_product: int, row: I32, which: I16, product: I32) -> int:
    """Every pair of a row `rows[j]` of `codes` ((m, 64) int8) and a live code (`live`, (n, 64)
    int8) whose inner product exceeds `min_product`, for the second stage: j, the live cylinder and
    the product of each, written to `row`, `which` and `product` (room for rows x n). Returns how
    many. Sixteen rows at a time are copied biased into a block (1 KB, in the L1 cache) and
    compared with every live code there."""
    n = live.shape[0]
    m = rows.shape[0]
    sums = np.empty(BLOCK, np.int32)
    block = np.zeros((BLOCK, DIMS), np.uint8)
    bias = np.empty(n, np.int32)
    for i in range(n):
        s = np.int32(0)
        for k in range(DIMS):
            s += np.int32(live[i, k])
        bias[i] = BIAS * s
    found = 0
    for r in range(0, m, BLOCK):
        for t in range(min(BLOCK, m - r)):
            at = rows[r + t]
            for k in range(DIMS):
                block[t, k] = np.uint8(codes[at, k]) ^ np.uint8(BIAS)
        for i in range(n):
            mask = _dots(block, 0, live[i], np.int32(min_product + bias[i]), sums)
            if m - r < BLOCK:
                mask &= np.uint32((1 << (m - r)) - 1)
            while mask:
                t = _lowest(mask)
                mask &= mask - np.uint32(1)
                row[found] = r + t
                which[found] = i
                product[found] = sums[t] - bias[i]
                found += 1
    return found


@numba.njit(cache=True, nogil=True, boundscheck=False)
def windows(votes: I32, bins: int, window: int, score: I32, start: I8) -> None:
    """Each finger's score from its votes ((bins x fingers,) cell-major): the largest sum of
    `window` consecutive cells around the circle, in `score`, and in `start` the first cell of its
    first window reaching it (0 for a finger with no vote). One pass over the votes, 2,048 fingers
    at a time (their 36 cells, 288 KB, stay in the L2 cache), each step a vector operation across
    fingers: 1.2 ms for 100,000 fingers, where numpy's passes (one per cell and operation) took
    9 ms with the first cells, 1.5 without. Rows are read through slices: indexing with a computed
    offset would compile to gathers (numba's wraparound of negative indices)."""
    fingers = score.shape[0]
    chunk = 2048
    run = np.empty(chunk, np.int32)
    best = np.empty(chunk, np.int32)
    first = np.empty(chunk, np.int32)
    for lo in range(0, fingers, chunk):
        m = min(chunk, fingers - lo)
        best[:] = 0
        first[:] = 0
        for c in range(bins):
            cells = votes[c * fingers + lo : c * fingers + lo + m]
            for f in range(m):
                run[f] = cells[f]
            for d in range(1, window):
                at = ((c + d) % bins) * fingers + lo
                cells = votes[at : at + m]
                for f in range(m):
                    run[f] += cells[f]
            for f in range(m):  # branch-free: a select per lane
                r, b = run[f], best[f]
                first[f] = c if r > b else first[f]
                best[f] = r if r > b else b
        to_score, to_start = score[lo : lo + m], start[lo : lo + m]
        for f in range(m):
            to_score[f] = best[f]
            to_start[f] = first[f]


@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath=True)
def consistency(
    found_label: I64,
    found_live: I16,
    found_weight: I32,
    found: int,
    place: I32,
    start: I8,
    cell: I64,
    bins: int,
    window: int,
    live_xy: F32,
    live_theta: I64,
    unit: F32,
    distance: float,
    cos_angle: float,
    rotation: int,
    out: I64,
) -> None:
    """The geometric consistency of the pairs `vote` found, for the fingers `place` names (slot ->
    its place in `out`, -1 for the others): per finger, the pairs within a cell of its best
    rotation window (`window` cells of the vote from `start[slot]`, `windows`) are compared two by two. Pair b *agrees* with
    pair a when their rotations (live direction - registered direction) differ by at most
    `rotation` steps (of 256 to the turn), their minutiae lie as far apart on both sides (within
    `distance` pixels), and in the same direction seen from a's minutia (within the angle whose
    cosine is `cos_angle`). A finger scores, over its pairs a, the largest weight of a plus, per
    other live cylinder, its heaviest pair agreeing with a (a star of the pairs' graph). `unit` is
    (cos, sin) of each direction byte; `live_xy` (n, 2) and `live_theta` the live minutiae."""
    fingers = start.shape[0]
    n = out.shape[0]
    named = np.empty(n, np.int64)
    bits = np.zeros((fingers >> 6) + 1, np.uint64)  # the named slots as bits: a 12 KB test per pair
    m = 0
    for slot in range(fingers):
        if place[slot] >= 0:
            named[m] = slot
            bits[slot >> 6] |= np.uint64(1) << np.uint64(slot & 63)
            m += 1
    # The cells each finger keeps pairs in: its window and a cell either side (a bit mask).
    kept = np.zeros(n, np.int64)
    for k in range(m):
        slot = named[k]
        for d in range(-1, window + 1):
            kept[place[slot]] |= np.int64(1) << ((start[slot] + d) % bins)
    # The pairs of each named finger within a cell of its window, finger after finger (a counting
    # sort: the finger of each pair, or -1, then each finger's pairs copied in place).
    whose = np.empty(found, np.int32)
    count = np.zeros(n + 1, np.int64)
    for j in range(found):
        label = found_label[j]
        slot = label >> SLOT_SHIFT
        whose[j] = -1
        if not (bits[slot >> 6] >> np.uint64(slot & 63)) & np.uint64(1):
            continue
        f = place[slot]
        if (kept[f] >> cell[(live_theta[found_live[j]] - label) & 255]) & 1:
            whose[j] = f
            count[f + 1] += 1
    most = 0
    for f in range(n):
        most = max(most, count[f + 1])
        count[f + 1] += count[f]
    at = count[:-1].copy()
    kept_label = np.empty(count[n], np.int64)
    kept_live = np.empty(count[n], np.int64)
    kept_weight = np.empty(count[n], np.int64)
    for j in range(found):
        f = whose[j]
        if f >= 0:
            k = at[f]
            kept_label[k], kept_live[k], kept_weight[k] = found_label[j], found_live[j], found_weight[j]
            at[f] = k + 1
    # Per finger, its pairs decoded: live cylinder, rotation byte, the minutiae's places and
    # directions on both sides; then every two compared.
    mask = (1 << POSITION_BITS) - 1
    lv = np.empty(most, np.int64)
    rot = np.empty(most, np.int64)
    row = np.empty(most, np.int64)
    w = np.empty(most, np.int64)
    g = np.empty((most, 8), np.float32)  # live x, y, cos, sin; registered x, y, cos, sin
    heaviest = np.zeros(live_xy.shape[0], np.int64)
    d2 = np.float32(distance * distance)
    cos_a = np.float32(cos_angle)
    for f in range(n):
        lo, hi = count[f], count[f + 1]
        k = hi - lo
        for t in range(k):
            label = kept_label[lo + t]
            i = kept_live[lo + t]
            t_live, t_reg = live_theta[i], label & 255
            lv[t], w[t], row[t] = i, kept_weight[lo + t], label
            rot[t] = (t_live - t_reg) & 255
            g[t, 0], g[t, 1] = live_xy[i, 0], live_xy[i, 1]
            g[t, 2], g[t, 3] = unit[t_live, 0], unit[t_live, 1]
            g[t, 4] = np.float32(((label >> (8 + POSITION_BITS)) & mask) - POSITION_OFFSET)
            g[t, 5] = np.float32(((label >> 8) & mask) - POSITION_OFFSET)
            g[t, 6], g[t, 7] = unit[t_reg, 0], unit[t_reg, 1]
        best = np.int64(0)
        for a in range(k):
            ax, ay, ac, as_ = g[a, 0], g[a, 1], g[a, 2], g[a, 3]
            bx, by, bc, bs = g[a, 4], g[a, 5], g[a, 6], g[a, 7]
            for b in range(k):  # branch-free: whether b agrees decides only what it adds
                d = (rot[a] - rot[b]) & 255
                # b's minutia seen from a's, in a's own frame, on each side
                dx, dy = g[b, 0] - ax, g[b, 1] - ay
                ux, uy = ac * dx + as_ * dy, ac * dy - as_ * dx
                dx, dy = g[b, 4] - bx, g[b, 5] - by
                vx, vy = bc * dx + bs * dy, bc * dy - bs * dx
                ll, rr = ux * ux + uy * uy, vx * vx + vy * vy
                lr = np.sqrt(ll * rr)
                # |l - r| <= distance, and the angle between u and v within the tolerance
                agree = (
                    (lv[b] != lv[a])
                    & (row[b] != row[a])
                    & (min(d, 256 - d) <= rotation)
                    & (ll + rr - 2 * lr <= d2)
                    & (ux * vx + uy * vy >= cos_a * lr)
                )
                heaviest[lv[b]] = max(heaviest[lv[b]], w[b] * agree)
            total = w[a]
            for b in range(k):
                total += heaviest[lv[b]]
                heaviest[lv[b]] = 0
            if total > best:
                best = total
        out[f] = best


def warm() -> None:
    """Compile `vote`, `windows`, `above` and `consistency` now (numba: ~2 s, or ~0.2 s from its cache on disk) instead
    of in the first search of the process: one live cylinder against one row, with the types a
    search passes."""
    codes = biased(np.zeros((1, DIMS), np.int8))
    labels = np.zeros(1, np.int64)
    live = np.zeros(1, np.int16)
    weight = np.zeros(1, np.int32)
    votes = np.zeros(1, np.int32)
    found = vote(
        codes,
        np.array([0, 1], np.int64),
        np.zeros(1, np.int64),
        np.zeros((1, DIMS), np.int8),
        np.zeros(1, np.int64),
        np.zeros((1, 1), np.int64),
        0,
        np.zeros(2, np.int32),
        np.zeros(256, np.int64),
        1,
        votes,
        labels,
        live,
        weight,
        0,
    )
    above(
        np.zeros((1, DIMS), np.int8),
        np.zeros(1, np.int64),
        np.zeros((1, DIMS), np.int8),
        0,
        np.zeros(1, np.int32),
        live,
        weight,
    )
    start = np.zeros(1, np.int8)
    windows(votes, 1, 1, np.zeros(1, np.int32), start)
    consistency(
        labels,
        live,
        weight,
        found,
        np.zeros(1, np.int32),
        start,
        np.zeros(256, np.int64),
        1,
        1,
        np.zeros((1, 2), np.float32),
        np.zeros(1, np.int64),
        np.zeros((256, 2), np.float32),
        1.0,
        0.5,
        1,
        np.zeros(1, np.int64),
    )
