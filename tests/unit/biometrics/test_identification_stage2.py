"""The second stage (`relaxed.scores`): the matcher's LSS-R over the index cosines, with the
minutiae's geometry kept in the index."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idguard.biometrics import relaxed
from idguard.biometrics.identification import ANGLE_STEPS, _pairs_kept
from idguard.biometrics.matching import DEFAULT_CONSOLIDATION as C

DIST, ANGLE = relaxed.smoothstep_bounds(C.mu_rho, C.tau_rho)


def _quantised(sims: np.ndarray) -> np.ndarray:
    """The cosines the kernel sees: each a live code (127 on one axis) against a row code holding
    127 x the cosine on that axis, so cosine = rint(127 x sims) / 127."""
    return np.rint(np.asarray(sims, dtype=np.float64) * 127.0) / 127.0


def _score(sims: np.ndarray, starts: list[int], b: np.ndarray, a: np.ndarray) -> list[float]:
    """Scores of the fingers whose rows (registered minutiae `b`: x, y, direction in radians) are
    starts[f]:starts[f + 1], against live minutiae `a`; `sims` (rows, live) their cosines."""
    n_b, n_a = sims.shape
    codes = np.zeros((n_b, relaxed.DIMS), dtype=np.int8)
    codes[:, :n_a] = np.rint(np.asarray(sims) * 127.0).astype(np.int8)
    live = np.zeros((n_a, relaxed.DIMS), dtype=np.int16)
    live[np.arange(n_a), np.arange(n_a)] = 127
    out = np.zeros(len(starts) - 1, dtype=np.float64)
    theta = np.rint(np.mod(b[:, 2], 2 * math.pi) * ANGLE_STEPS / (2 * math.pi)).astype(np.int64) % ANGLE_STEPS
    relaxed.scores(
        codes,
        np.ascontiguousarray(np.rint(b[:, :2]), dtype=np.int16),
        theta.astype(np.uint8),
        np.array(starts[:-1], dtype=np.int64),
        np.array(starts[1:], dtype=np.int64),
        live,
        np.ascontiguousarray(a[:, 0], dtype=np.float32),
        np.ascontiguousarray(a[:, 1], dtype=np.float32),
        np.ascontiguousarray(a[:, 2], dtype=np.float32),
        DIST,
        ANGLE,
        C.w_r,
        C.n_rel,
        _pairs_kept(C),
        out,
    )
    return out.tolist()


def _minutiae(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.stack([rng.uniform(0, 300, n), rng.uniform(0, 400, n), rng.uniform(0, 2 * math.pi, n)], axis=1)


def _moved(m: np.ndarray, degrees: float, dx: float, dy: float) -> np.ndarray:
    """The minutiae `m` turned by `degrees` about the origin and shifted: the same finger placed
    elsewhere on the scanner."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    return np.stack([c * m[:, 0] - s * m[:, 1] + dx, s * m[:, 0] + c * m[:, 1] + dy, m[:, 2] + t], axis=1)


def _reference(sims: np.ndarray, b: np.ndarray, a: np.ndarray) -> float:
    """One finger's score the obvious way, in float64 with arctangents: the n_R = min(n_A, n_B)
    pairs by the same histogram rule, rho from each pair's distances, direction differences and
    radial angles (as `matching._relax` measures them), each factor the same smoothstep, then the
    relaxation and the mean of the n_P most efficient."""
    n_b, n_a = sims.shape
    n_r = min(n_a, n_b)
    b = np.concatenate([np.rint(b[:, :2]), b[:, 2:]], axis=1)  # the index keeps whole pixels
    sims = _quantised(sims)
    theta_b = (
        np.rint(np.mod(b[:, 2], 2 * math.pi) * ANGLE_STEPS / (2 * math.pi))
        % ANGLE_STEPS
        * (2 * math.pi / ANGLE_STEPS)
    )
    gate = np.cos(a[None, :, 2] - theta_b[:, None]) >= 0
    v = sims.astype(np.float32)
    dots = np.rint(sims * 127.0 * 127.0).astype(np.float32)  # the kernel's inner products
    ok = (v > 0) & gate
    bins = np.minimum((dots * np.float32(64 / 127.0**2)).astype(int), 63)
    hist = np.bincount(bins[ok], minlength=64)
    above = np.cumsum(hist[::-1])[::-1]  # values in bin >= c
    cut = max([c for c in range(64) if above[c] >= n_r], default=0)
    room = n_r - (above[cut] - hist[cut])
    pairs = []
    for r in range(n_b):
        for i in range(n_a):
            if not ok[r, i] or bins[r, i] < cut:
                continue
            if bins[r, i] == cut:
                if room == 0:
                    continue
                room -= 1
            pairs.append((i, r, float(v[r, i])))
    if not pairs:
        return 0.0

    def step(t: float) -> float:
        t = min(max(t, 0.0), 1.0)
        return t * t * (3 - 2 * t)

    def wrap(x: float) -> float:
        return (x + math.pi) % (2 * math.pi) - math.pi

    n = len(pairs)
    rho = np.zeros((n, n))
    for k, (ik, rk, _) in enumerate(pairs):
        for l, (il, rl, _) in enumerate(pairs):  # noqa: E741
            if k == l:
                continue
            da = math.hypot(a[il, 0] - a[ik, 0], a[il, 1] - a[ik, 1])
            db = math.hypot(b[rl, 0] - b[rk, 0], b[rl, 1] - b[rk, 1])
            z1 = step((DIST[0] + DIST[1] - abs(da - db)) / (2 * DIST[1]))
            d2 = wrap((a[ik, 2] - a[il, 2]) - (theta_b[rk] - theta_b[rl]))
            z2 = step((math.cos(d2) - ANGLE[0]) / (ANGLE[1] - ANGLE[0]))
            if da == 0 or db == 0:
                z3 = step((0.0 - ANGLE[0]) / (ANGLE[1] - ANGLE[0]))
            else:
                ra = wrap(math.atan2(a[il, 1] - a[ik, 1], a[il, 0] - a[ik, 0]) - a[ik, 2])
                rb = wrap(math.atan2(b[rl, 1] - b[rk, 1], b[rl, 0] - b[rk, 0]) - theta_b[rk])
                z3 = step((math.cos(ra - rb) - ANGLE[0]) / (ANGLE[1] - ANGLE[0]))
            rho[k, l] = z1 * z2 * z3
    g0 = np.array([p[2] for p in pairs])
    lam = g0.copy()
    for _ in range(C.n_rel):
        lam = C.w_r * lam + (1 - C.w_r) / max(1, n_r - 1) * (rho @ lam)
    n_p = int(_pairs_kept(C)[n_r])
    best = np.argsort(-(lam / g0), kind="stable")[:n_p]
    return min(1.0, float(lam[best].sum()) / n_p)


def test_a_finger_placed_elsewhere_scores_one_wherever_it_lies() -> None:
    """Every live minutia paired with its own (cosine 1), the finger turned and shifted on the
    scanner: every pair supports every other, so the relaxed score is 1 at any rotation the
    matcher accepts (directions within 90 degrees, its gate: turned 170 degrees, nothing pairs,
    as in a 1:1 comparison); the same minutiae moved apart from each other score far less."""
    rng = np.random.default_rng(3)
    a = _minutiae(rng, 30)
    sims = np.eye(30)
    for degrees in (0.0, 25.0, -40.0, 85.0):
        assert _score(sims, [0, 30], _moved(a, degrees, 40.0, -25.0), a) == [pytest.approx(1.0, abs=1e-4)]
    assert _score(sims, [0, 30], _moved(a, 170.0, 40.0, -25.0), a) == [0.0]
    scattered = _moved(a, 0.0, 0.0, 0.0)
    scattered[:, :2] = rng.permutation(scattered[:, :2])  # the same places, the wrong minutiae there
    assert _score(sims, [0, 30], scattered, a)[0] < 0.6


def test_geometry_outranks_cosines() -> None:
    """Finger 0: the live minutiae distorted a little (skin), pairs at cosine 0.55. Finger 1:
    stronger pairs (0.8) whose minutiae lie anywhere. The second stage puts finger 0 first: the
    first stage's cosines alone put finger 1 first (what lost the mates of issue 10's eighth
    round)."""
    rng = np.random.default_rng(11)
    a = _minutiae(rng, 25)
    mate = _moved(a, 15.0, -30.0, 20.0)
    mate[:, :2] += rng.normal(0, 2.5, size=(25, 2))
    mate[:, 2] += rng.normal(0, 0.1, size=25)
    other = _minutiae(rng, 25)
    sims = np.vstack([0.55 * np.eye(25), 0.8 * np.eye(25)])
    mate_score, other_score = _score(sims, [0, 25, 50], np.vstack([mate, other]), a)
    assert mate_score > 2 * other_score


def test_empty_fingers_and_no_pair_score_zero() -> None:
    rng = np.random.default_rng(5)
    a = _minutiae(rng, 10)
    b = _minutiae(rng, 10)
    sims = np.vstack([np.zeros((5, 10)), -np.ones((5, 10))])
    assert _score(sims, [0, 0, 5, 10, 10], b, a) == [0.0, 0.0, 0.0, 0.0]


@settings(max_examples=40, deadline=None)
@given(
    n_a=st.integers(2, 40),
    n_b=st.integers(2, 40),
    seed=st.integers(0, 2**32 - 1),
    density=st.floats(0.02, 1.0),
)
def test_the_compiled_score_is_the_reference(n_a: int, n_b: int, seed: int, density: float) -> None:
    """The compiled kernel (positions turned by each pair's rotation, cosines instead of angles,
    no sort) gives the score the obvious float64 computation with arctangents gives, for any
    sizes, cosines (some negative, many tied in one histogram bin) and geometry: the registered
    finger holds some live minutiae moved (turned, shifted, a few pixels and degrees of skin
    distortion, so that rho's factors fall anywhere in their slopes) among minutiae of its own."""
    rng = np.random.default_rng(seed)
    a = _minutiae(rng, n_a)
    mate = _moved(a, rng.uniform(-40, 40), 10.0, -5.0)
    mate += rng.normal(0, [3.0, 3.0, 0.1], size=mate.shape)
    pick = rng.permutation(n_a + 40)[:n_b]
    b = np.vstack([mate, _minutiae(rng, 40)])[pick]
    b[:, :2] = np.rint(b[:, :2])  # the index keeps whole pixels
    sims = np.round(rng.uniform(-0.3, 0.6, size=(n_b, n_a)) * (rng.random((n_b, n_a)) < density), 2)
    own = np.flatnonzero(pick < n_a)
    sims[own, pick[own]] = np.round(rng.uniform(0.4, 1.0, size=own.size), 2)
    got = _score(sims, [0, n_b], b, a)[0]
    assert got == pytest.approx(_reference(sims, b, a), abs=2e-3)


def test_the_reference_check_sees_the_geometry() -> None:
    """The data of the test above gives scores that depend on rho (not only the cosines times
    w_R^n_rel), so that the comparison with the reference checks the geometry."""
    rng = np.random.default_rng(1)
    a = _minutiae(rng, 30)
    mate = _moved(a, 20.0, 10.0, -5.0) + rng.normal(0, [3.0, 3.0, 0.1], size=(30, 3))
    sims = 0.6 * np.eye(30)
    scores = [_score(sims, [0, 30], b, a)[0] for b in (mate, _minutiae(rng, 30))]
    assert scores[0] > 0.3 > 0.05 > scores[1]
