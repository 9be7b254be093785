"""1:1 comparison of MCC templates: local similarities, then LSS-R consolidation.

Cappelli, Ferrara, Maltoni, IEEE TPAMI 32(12), 2010, sections 4-5:

* local similarity (eq. 11): gamma(a, b) = 1 - |c_a|b - c_b|a| / (|c_a|b| + |c_b|a|), the
  cylinders restricted to the cells valid in both; 0 when their directions differ by more than
  delta_theta = pi/2, when fewer than minME = 0.60 of all cells are matchable, or when both are
  empty. All pairs are computed at once as float32 matrix products.
* Local Similarity Sort with Relaxation (LSS-R, section 5): the best pairs (LSS) are relaxed
  n_rel = 5 times with weight w_R = 0.5 by how compatible each pair is with the others (rho:
  distance, direction and radial-angle consistency, each a sigmoid Z with tau_rho1 = -8/5,
  tau_rho2 = tau_rho3 = -30); the global score is the mean relaxed similarity of the n_P pairs
  of highest efficiency (relaxed / initial similarity), with n_P = minNP + round(Z(min(n_A, n_B);
  mu_P = 20, tau_P = 2/5) (maxNP - minNP)), minNP = 4, maxNP = 12.

Two measured changes to LSS-R (docs/fingerprints.md, "Matcher"): n_R = 3 min(n_A, n_B) pairs
enter the relaxation instead of min(n_A, n_B), and the compatibility tolerances are wider,
mu_rho1 = 8 px and mu_rho2 = mu_rho3 = pi/8 instead of 5 px and pi/12, because skin distortion
moves far-apart minutiae further than the paper's tolerances allow.

The score is in [0, 1]; a comparison takes a few hundred microseconds (bench/fingerprints.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from idguard.biometrics.mcc import Template, pairwise_dot

F64 = NDArray[np.float64]

# Decision threshold at FMR = 1/10,000: `calibration.calibrate_default_threshold()` gives
# 0.064213... from 301,725 held-out synthetic impostor comparisons (at most 30 score above it);
# rounded up. Synthetic data only: recalibrate on real captures before relying on the stated FMR.
DEFAULT_THRESHOLD = 0.0643


@dataclass(frozen=True, slots=True)
class ConsolidationParams:
    """Local similarity gates and LSS-R parameters: the paper's (TPAMI 2010, Table 3) except
    `relaxed_pairs` and `mu_rho` (module docstring)."""

    delta_theta: float = math.pi / 2  # delta_theta: larger direction differences never match
    min_me: float = 0.60  # minME: fraction of all N_S^2 N_D cells that must be matchable
    mu_p: float = 20.0  # mu_P
    tau_p: float = 2.0 / 5.0  # tau_P
    min_np: int = 4  # minNP
    max_np: int = 12  # maxNP
    relaxed_pairs: float = 3.0  # n_R = 3 min(n_A, n_B) pairs enter the relaxation (paper: 1 x)
    n_rel: int = 5  # n_rel, relaxation iterations
    w_r: float = 0.5  # w_R
    # mu_rho1 = 8 px and mu_rho2 = mu_rho3 = pi/8 (paper: 5 px, pi/12): skin distortion moves
    # far-apart minutiae by more than 5 px relative to each other (docs/fingerprints.md).
    mu_rho: tuple[float, float, float] = (8.0, math.pi / 8, math.pi / 8)
    tau_rho: tuple[float, float, float] = (-8.0 / 5.0, -30.0, -30.0)


DEFAULT_CONSOLIDATION = ConsolidationParams()


def local_similarities(a: Template, b: Template, params: ConsolidationParams = DEFAULT_CONSOLIDATION) -> F64:
    """The local similarity matrix Gamma (n_A x n_B), eq. 11 of the paper, for every pair at once.

    gamma = 1 - |c_a|b - c_b|a| / (|c_a|b| + |c_b|a|), c_a|b being c_a on the cells valid in both
    cylinders. Cells of c_a are 0 where a is invalid, so <c_a|b, c_b|a> = <c_a, c_b> and
    |c_a|b - c_b|a|^2 = |c_a|b|^2 + |c_b|a|^2 - 2 <c_a, c_b>: three dot products per pair.
    """
    if (a.ns, a.nd) != (b.ns, b.nd):
        raise ValueError(f"templates built with different cylinders: {a.ns}x{a.nd} vs {b.ns}x{b.nd}")
    na, nb = a.count, b.count
    cross = pairwise_dot(a.cells, b.cells)
    spatial = pairwise_dot(a.spatial_left, b.spatial_right)
    a_in_b, b_in_a = spatial[:na, :nb], spatial[na:, nb:]
    matchable = spatial[na:, :nb] * a.nd
    diff = np.sqrt(np.maximum(a_in_b + b_in_a - 2.0 * cross, 0.0))
    norm = np.sqrt(a_in_b) + np.sqrt(b_in_a)
    gate = (norm > 0.0) & (matchable >= params.min_me * a.ns * a.ns * a.nd)
    gate &= a.direction @ b.direction.T >= math.cos(params.delta_theta)  # |d_phi| <= delta_theta
    gamma: F64 = np.where(gate, 1.0 - diff / np.maximum(norm, 1e-9), 0.0).astype(np.float64)
    return gamma


def _pairs_to_keep(na: int, nb: int, params: ConsolidationParams) -> int:
    z = 1.0 / (1.0 + math.exp(-params.tau_p * (min(na, nb) - params.mu_p)))  # Z(min(n_A, n_B); mu_P, tau_P)
    return params.min_np + round(z * (params.max_np - params.min_np))


def similarity(a: Template, b: Template, params: ConsolidationParams = DEFAULT_CONSOLIDATION) -> float:
    """Global MCC score of two templates in [0, 1] (LSS-R)."""
    na, nb = a.count, b.count
    if na == 0 or nb == 0:
        return 0.0
    gamma = local_similarities(a, b, params)
    flat = gamma.ravel()
    n_r = min(round(params.relaxed_pairs * min(na, nb)), flat.size)
    top = np.argpartition(flat, flat.size - n_r)[flat.size - n_r :]
    g0 = np.take(flat, top)
    top, g0 = top[g0 > 0.0], g0[g0 > 0.0]  # a zero pair has nothing to relax and no efficiency
    n_p = _pairs_to_keep(na, nb, params)
    if top.size == 0:
        return 0.0
    ia, ib = np.divmod(top, nb)
    lam = _relax(a, b, ia, ib, g0, params, support=min(na, nb) - 1)
    efficiency = lam / g0
    best = np.argsort(-efficiency, kind="stable")[:n_p]
    # Divide by n_P even when fewer pairs exist: a handful of pairs must not score like many.
    return float(min(1.0, lam[best].sum() / n_p))


def _relax(
    a: Template,
    b: Template,
    ia: NDArray[np.int64],
    ib: NDArray[np.int64],
    g0: F64,
    p: ConsolidationParams,
    *,
    support: int,
) -> F64:
    """LSS-R relaxation (eq. 20-21) over the selected pairs.

    The support term is averaged over min(n_A, n_B) - 1 as in the paper, not over the (larger)
    number of relaxed pairs: extra candidates may add support but do not dilute it, so a
    template compared with itself still scores 1.
    """
    n = g0.size
    if n < 2:
        return g0 * p.w_r**p.n_rel
    na, nb = a.count, b.count
    # Distance, direction difference and radial angle of every two selected pairs, in A and B.
    # (np.take: an order of magnitude faster than fancy indexing for these few thousand columns.)
    d = np.take(a.geometry, (ia[:, None] * na + ia[None, :]).ravel(), axis=1)
    d -= np.take(b.geometry, (ib[:, None] * nb + ib[None, :]).ravel(), axis=1)
    np.abs(d, out=d)
    d[1:] = math.pi - np.abs(d[1:] - math.pi)  # |d_phi| of a difference of two angles in [-pi, pi)
    # rho = Z(d1) Z(d2) Z(d3) (eq. 23) with Z = 1 / (1 + exp(-tau (d - mu))): one exp, one division.
    # The exponent is capped at 25: Z is then ~1e-11, i.e. 0, and float32 cannot overflow.
    d -= np.array(p.mu_rho, dtype=np.float32)[:, None]
    d *= -np.array(p.tau_rho, dtype=np.float32)[:, None]
    np.minimum(d, 25.0, out=d)
    e = np.exp(d, out=d)
    e += 1.0
    rho = (1.0 / (e[0] * e[1] * e[2])).reshape(n, n).astype(np.float64)
    np.fill_diagonal(rho, 0.0)
    lam = g0.copy()
    spread = (1.0 - p.w_r) / max(1, support)
    for _ in range(p.n_rel):  # five tiny matrix-vector products, not a loop over pairs
        lam = p.w_r * lam + spread * (rho @ lam)
    return lam


def match_any(
    live: Template,
    registered: Sequence[Template],
    threshold: float = DEFAULT_THRESHOLD,
    params: ConsolidationParams = DEFAULT_CONSOLIDATION,
) -> tuple[bool, float]:
    """Compare a live capture with each registered finger; (best score >= threshold, best score).

    Every registered template is compared, whatever the first result, so the time taken does not
    tell which finger matched.
    """
    best = max((similarity(live, t, params) for t in registered), default=0.0)
    return best >= threshold, best
