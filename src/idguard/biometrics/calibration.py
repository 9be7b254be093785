"""Decision thresholds and error rates (FVC protocol definitions).

A comparison *matches* when score >= threshold. For impostor scores s and a target false match
rate f, `calibrate_threshold` returns the smallest threshold whose empirical FMR (the share of
impostor scores >= threshold) is at most f: with n scores sorted high to low, k = floor(f n) may
be accepted, so the threshold is the smallest float above the (k+1)-th highest score. Ties are
resolved against matching, so the empirical FMR never exceeds f.

Run `python -m idguard.biometrics` to recompute `matching.DEFAULT_THRESHOLD` (a few minutes).
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    from idguard.biometrics.identification import IndexModel

F64 = NDArray[np.float64]

CALIBRATION_SEED = 20_100  # held out: the benchmark and the tests use other seeds
CALIBRATION_FINGERS = 150  # per difficulty level
CALIBRATION_IMPRESSIONS = 3
DEFAULT_FMR = 1e-4


def _scores(values: ArrayLike, name: str) -> F64:
    s = np.asarray(values, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError(f"no {name} scores")
    if not np.isfinite(s).all():
        raise ValueError(f"{name} scores must be finite")
    return s


def _threshold_at(impostor: F64, fmr: float) -> float:
    ordered = np.sort(impostor)[::-1]
    allowed = math.floor(fmr * ordered.size + 1e-9)  # 1e-9: 1e-4 * 10_000 must give exactly 1
    if allowed >= ordered.size:
        return float(ordered[-1])
    return float(np.nextafter(ordered[allowed], math.inf))


def calibrate_threshold(impostor_scores: ArrayLike, fmr: float = DEFAULT_FMR) -> float:
    """The smallest threshold with empirical FMR <= fmr on these impostor scores.

    Refuses fewer than 1/fmr scores: below that the threshold is just above the highest impostor
    score and says nothing about the rate asked for (with no false match among n comparisons, the
    95 % upper bound on the FMR is still about 3/n).
    """
    if not 0.0 < fmr < 1.0:
        raise ValueError(f"fmr must be in (0, 1), got {fmr}")
    impostor = _scores(impostor_scores, "impostor")
    needed = math.ceil(1.0 / fmr - 1e-9)
    if impostor.size < needed:
        raise ValueError(
            f"{impostor.size} impostor scores cannot calibrate FMR {fmr:g}: need at least {needed}"
        )
    return _threshold_at(impostor, fmr)


def error_rates(
    genuine_scores: ArrayLike, impostor_scores: ArrayLike, threshold: float
) -> tuple[float, float]:
    """(FMR, FNMR) at `threshold`: impostors scoring >= it, genuine pairs scoring below it."""
    genuine, impostor = _scores(genuine_scores, "genuine"), _scores(impostor_scores, "impostor")
    return float(np.mean(impostor >= threshold)), float(np.mean(genuine < threshold))


def fnmr_at_fmr(genuine_scores: ArrayLike, impostor_scores: ArrayLike, fmr: float) -> float:
    """Lowest FNMR with FMR <= fmr (FVC's FMR100 for fmr=0.01, FMR1000 for 0.001); NaN if too few impostors."""
    genuine, impostor = _scores(genuine_scores, "genuine"), _scores(impostor_scores, "impostor")
    if impostor.size < math.ceil(1.0 / fmr - 1e-9):
        return math.nan
    return float(np.mean(genuine < _threshold_at(impostor, fmr)))


def equal_error_rate(genuine_scores: ArrayLike, impostor_scores: ArrayLike) -> float:
    """EER as FVC estimates it: at the thresholds t1 (last with FNMR <= FMR) and t2 (first with
    FNMR >= FMR) around the crossing, take the pair of rates with the smaller sum and average it."""
    genuine, impostor = (
        np.sort(_scores(genuine_scores, "genuine")),
        np.sort(_scores(impostor_scores, "impostor")),
    )
    t = np.unique(np.concatenate([genuine, impostor, [math.inf]]))
    fmr = (impostor.size - np.searchsorted(impostor, t, side="left")) / impostor.size
    fnmr = np.searchsorted(genuine, t, side="left") / genuine.size
    below = np.flatnonzero(fnmr <= fmr)
    above = np.flatnonzero(fnmr >= fmr)
    i1 = below[-1] if below.size else 0
    i2 = above[0] if above.size else t.size - 1
    s1, s2 = fmr[i1] + fnmr[i1], fmr[i2] + fnmr[i2]
    return float(min(s1, s2) / 2.0)


def genuine_pairs(fingers: int, impressions: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """FVC genuine pairs: every unordered pair of impressions of the same finger."""
    return [((f, i), (f, j)) for f in range(fingers) for i, j in combinations(range(impressions), 2)]


def impostor_pairs(fingers: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """FVC impostor pairs: the first impression of every finger against every other finger's first."""
    return [((f, 0), (g, 0)) for f, g in combinations(range(fingers), 2)]


def calibrate_default_threshold(fmr: float = DEFAULT_FMR) -> tuple[float, int]:
    """Recompute `matching.DEFAULT_THRESHOLD`: (threshold, number of impostor scores used).

    Held-out synthetic set (seed CALIBRATION_SEED, 150 fingers x 3 impressions at each level):
    every pair of impressions of *different* fingers within a level is an impostor comparison,
    ~100,000 per level, pooled over the three levels.
    """
    from idguard.biometrics.matching import similarity
    from idguard.biometrics.mcc import build_template
    from idguard.biometrics.synthetic import Difficulty, dataset

    scores: list[float] = []
    for level in Difficulty:
        sets = dataset(CALIBRATION_FINGERS, CALIBRATION_IMPRESSIONS, level, seed=CALIBRATION_SEED)
        templates = [[build_template(r) for r in finger] for finger in sets]
        flat = [(f, t) for f, finger in enumerate(templates) for t in finger]
        for (fa, ta), (fb, tb) in combinations(flat, 2):
            if fa != fb:
                scores.append(similarity(ta, tb))
    return calibrate_threshold(scores, fmr), len(scores)


# ---- 1:N: the index model and the identification threshold -------------------------------------

INDEX_TRAINING_SEED = 42_011  # held out too: neither the benchmark's, the tests' nor CALIBRATION_SEED
INDEX_TRAINING_FINGERS = 1_000  # per difficulty level (medium and hard), impression 0
INDEX_DIMS = 64
INDEX_LISTS = 512
DEFAULT_FPIR = 0.01


def train_index_model(
    fingers: int = INDEX_TRAINING_FINGERS,
    dims: int = INDEX_DIMS,
    lists: int = INDEX_LISTS,
    seed: int = INDEX_TRAINING_SEED,
    iterations: int = 20,
) -> IndexModel:
    """The shipped `identification.IndexModel` (index_model.npz): principal axes of synthetic
    cylinders and spherical k-means centroids over their projections (the IVF lists).

    Synthetic cylinders of a seed of their own, medium and hard levels: the axes and lists describe
    what cylinders look like in general, not the fingers a gallery will hold, so any gallery can
    be indexed with them and every worker files a cylinder under the same list.
    `python -m idguard.biometrics.calibration` rewrites the file (about a minute).
    """
    from idguard.biometrics.identification import IndexModel, pooled
    from idguard.biometrics.mcc import build_template
    from idguard.biometrics.synthetic import Difficulty, impression, master_finger

    rows = [
        pooled(build_template(impression(master_finger(seed, f), 0, level, seed=seed)).cell_levels)
        for level in (Difficulty.MEDIUM, Difficulty.HARD)
        for f in range(fingers)
    ]
    x = np.concatenate(rows).astype(np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    basis = vt[:dims].T
    r = (x - mean) @ basis
    r /= np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-6)
    rng = np.random.default_rng(seed)
    centroids = r[rng.choice(r.shape[0], lists, replace=False)]
    for _ in range(iterations):
        nearest = (r @ centroids.T).argmax(axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, nearest, r)
        empty = np.flatnonzero(np.bincount(nearest, minlength=lists) == 0)
        sums[empty] = r[rng.choice(r.shape[0], empty.size, replace=False)]  # reseed empty lists
        centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return IndexModel(mean.astype(np.float32), basis.astype(np.float32), centroids.astype(np.float32))


def calibrate_identification_threshold(best_nonmated_scores: ArrayLike, fpir: float = DEFAULT_FPIR) -> float:
    """The smallest 1:N threshold with empirical FPIR <= fpir.

    A 1:N search answers with someone when its best candidate's 1:1 score reaches the threshold,
    so its false positive identification rate is the share of non-mated searches whose *best*
    candidate scores at least that: the same computation as `calibrate_threshold`, over one score
    per non-mated search (of a gallery of the size deployed: the rate grows with it) instead of
    one per comparison. Searches with no candidate count with score 0.
    """
    return calibrate_threshold(best_nonmated_scores, fpir)


def identification_error_rates(
    best_mated: ArrayLike, mate_found: ArrayLike, best_nonmated: ArrayLike, threshold: float
) -> tuple[float, float]:
    """(FPIR, FNIR) at `threshold`: non-mated searches answered with someone, and mated searches
    whose first answer is not the true finger (it was not a candidate, scored below the threshold
    or below an impostor: `mate_found[i]` says whether search i's best candidate was the mate)."""
    mated = _scores(best_mated, "mated")
    found = np.asarray(mate_found, dtype=bool).ravel()
    if found.shape != mated.shape:
        raise ValueError("one mate_found flag per mated search")
    nonmated = _scores(best_nonmated, "non-mated")
    fpir = float(np.mean(nonmated >= threshold))
    fnir = float(np.mean(~(found & (mated >= threshold))))
    return fpir, fnir


if __name__ == "__main__":
    from idguard.biometrics.identification import MODEL_PATH

    train_index_model().save(MODEL_PATH)
    print(f"wrote {MODEL_PATH}")
