"""The 1:N search's second stage, compiled (numba): the matcher's LSS-R over the index cosines.

For each shortlisted finger, its cylinders' cosines with the live ones (the index vectors, computed
by the caller as one matrix product) stand in for the matcher's local similarities, and the
minutiae's positions and directions kept in the index give the geometry: the n_R = min(n_A, n_B)
best pairs (cosine > 0, directions within the matcher's 90 degrees) are relaxed as in
`matching.similarity` (Cappelli, Ferrara, Maltoni, TPAMI 32(12), 2010, section 5) and the finger
scores the mean relaxed similarity of its n_P most efficient pairs. A live cylinder resembling a
registered one is weak evidence at 2,000 look-alike fingers; pairs that also agree on where their
minutiae lie relative to each other are not (docs/fingerprints.md, "Ninth round").

Departures from `matching._relax`, for speed (no table of pairwise geometry per template, no
arctangent and no exponential in the pairs' loop, which the compiler then vectorises):

* rho's three factors are compared in the forms the positions give directly: the distance, the
  cosine of the two pairs' rotation difference (d_phi of the directions' differences) and the
  cosine of the radial angles' difference (the B side's vector turned by the first pair's
  rotation, against the A side's);
* each sigmoid Z(d; mu, tau) is a smoothstep over mu +- 3 / |tau| (the same value and slope at
  mu; 0 and 1 beyond), for the angles in their cosines' terms;
* the n_R pairs are chosen by a 64-bin histogram of the cosines (the ties of the last bin taken in
  row order), not sorted.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]
I8 = NDArray[np.int8]
F64 = NDArray[np.float64]
I16 = NDArray[np.int16]
I64 = NDArray[np.int64]
U8 = NDArray[np.uint8]

MAX_CYLINDERS = 255  # an ISO 19794-2 record holds at most 255 minutiae
DIMS = 64  # an index vector's length (a constant: the compiled inner product is unrolled)
SCALE = 127.0  # an index vector in int8: rint(127 x the unit vector) (identification.CODE_SCALE)
_BINS = 64  # the selection's histogram of cosines in (0, 1]
ANGLE_STEPS = 256  # a registered direction is a byte (identification.angle_codes)


@numba.njit(cache=True, nogil=True, fastmath=True, inline="always")
def _step(t: float) -> float:
    """Smoothstep of t clipped to [0, 1]: 0 below, 1 above, 3t^2 - 2t^3 between."""
    t = min(max(t, 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


@numba.njit(cache=True, nogil=True, fastmath=True, boundscheck=False)
def scores(
    codes: I8,
    xy: I16,
    btheta: U8,
    lo: I64,
    hi: I64,
    live: I16,
    ax: F32,
    ay: F32,
    atheta: F32,
    dist: tuple[float, float],
    angle: tuple[float, float],
    w_r: float,
    n_rel: int,
    n_p_of: I64,
    out: F64,
) -> None:
    """`out[f]`: the LSS-R score of the finger whose cylinders are rows lo[f]:hi[f] of `codes`
    (int8 index vectors, `DIMS` long), at positions `xy` with direction bytes `btheta`, against the
    live cylinders `live` (their int8 codes widened to int16) at `ax`, `ay`, directions `atheta`
    (radians). A pair's similarity is its codes' cosine (inner product / `SCALE`^2). `dist` (d1's
    mu and half-width) and `angle` (the cosines of mu -+ the angles' half-width) set the
    smoothsteps; `n_p_of[min(n_A, n_B)]` is n_P."""
    n_a = live.shape[0]
    ac = np.cos(atheta).astype(np.float32)
    asn = np.sin(atheta).astype(np.float32)
    table = np.arange(ANGLE_STEPS) * (2.0 * math.pi / ANGLE_STEPS)
    tc = np.cos(table).astype(np.float32)
    ts = np.sin(table).astype(np.float32)
    to_bin = np.float32(_BINS / SCALE**2)
    to_cosine = np.float32(1.0 / SCALE**2)
    hist = np.zeros(_BINS + 1, np.int64)
    dots = np.empty(MAX_CYLINDERS * MAX_CYLINDERS, np.int32)
    bins = np.empty(MAX_CYLINDERS * MAX_CYLINDERS, np.int32)
    found = np.empty(MAX_CYLINDERS * MAX_CYLINDERS + 1, np.int64)
    q = np.empty(DIMS, np.int16)
    g0 = np.empty(MAX_CYLINDERS, np.float32)
    px = np.empty(MAX_CYLINDERS, np.float32)  # per selected pair: the live minutia's position,
    py = np.empty(MAX_CYLINDERS, np.float32)
    qx = np.empty(MAX_CYLINDERS, np.float32)  # the registered one's,
    qy = np.empty(MAX_CYLINDERS, np.float32)
    rc = np.empty(MAX_CYLINDERS, np.float32)  # and the rotation from it to the live one (cos, sin)
    rs = np.empty(MAX_CYLINDERS, np.float32)
    rho = np.empty((MAX_CYLINDERS, MAX_CYLINDERS), np.float32)
    lam = np.empty(MAX_CYLINDERS, np.float32)
    nxt = np.empty(MAX_CYLINDERS, np.float32)
    eff = np.empty(MAX_CYLINDERS, np.float32)
    d_mu, d_half = dist
    c_lo, c_hi = angle  # cos(mu + half-width) < cos(mu - half-width)
    for f in range(lo.shape[0]):
        r0, r1 = lo[f], hi[f]
        n_b = r1 - r0
        out[f] = 0.0
        if n_b == 0 or n_a == 0:
            continue
        n_r = min(n_a, n_b)
        # Every live code against every row (int8 x int8 in int32 lanes: vpmaddwd), live cylinder
        # after live cylinder, so that its code stays in registers and the rows in the cache.
        for a in range(n_a):
            for k in range(DIMS):
                q[k] = live[a, k]
            for r in range(r0, r1):
                p = np.int32(0)
                for k in range(DIMS):
                    p = np.int32(p + np.int32(q[k]) * np.int32(np.int16(codes[r, k])))
                dots[(r - r0) * n_a + a] = p
        # Each cosine's bin (the negative ones and those the direction gate refuses in an extra
        # bin), computed without a branch, then counted: a branch per cosine, half of them
        # mispredicted, cost ~5 times more.
        hist[:] = 0
        for r in range(r0, r1):
            c, s = tc[btheta[r]], ts[btheta[r]]
            row = (r - r0) * n_a
            for a in range(n_a):
                p = dots[row + a]
                b = min(int(np.float32(p) * to_bin), _BINS - 1)
                bins[row + a] = b if (p > 0) and (ac[a] * c + asn[a] * s >= 0.0) else _BINS
            for a in range(n_a):
                hist[bins[row + a]] += 1
        cut, have = _BINS - 1, hist[_BINS - 1]
        while have < n_r and cut > 0:
            cut -= 1
            have += hist[cut]
        room = n_r - (have - hist[cut])  # how many of the cut bin are taken
        # The cosines in the cut bin or above, gathered without a branch (a store each, the
        # count advanced by the test), then taken in row order, the cut bin's while room lasts.
        m = 0
        for i in range(n_b * n_a):
            b = bins[i]
            found[m] = i
            m += (b >= cut) & (b < _BINS)
        n = 0
        for j in range(m):
            i = found[j]
            if bins[i] == cut:
                if room == 0:
                    continue
                room -= 1
            r, a = r0 + i // n_a, i % n_a
            c, s = tc[btheta[r]], ts[btheta[r]]
            g0[n] = np.float32(dots[i]) * to_cosine
            px[n], py[n] = ax[a], ay[a]
            qx[n], qy[n] = xy[r, 0], xy[r, 1]
            rc[n] = ac[a] * c + asn[a] * s  # cos(theta_a - theta_b)
            rs[n] = asn[a] * c - ac[a] * s  # sin(theta_a - theta_b)
            n += 1
        if n == 0:
            continue
        # rho of every two selected pairs (k, l): distance, rotation and radial-angle consistency.
        for k in range(n):
            ck, sk, xk, yk, uk, vk = rc[k], rs[k], px[k], py[k], qx[k], qy[k]
            for l in range(n):  # noqa: E741 - the paper's index
                ex, ey = px[l] - xk, py[l] - yk  # A: from the pair's minutia to the other's
                fx0, fy0 = qx[l] - uk, qy[l] - vk  # B: the same, turned by the pair's rotation
                fx, fy = ck * fx0 - sk * fy0, sk * fx0 + ck * fy0
                da = math.sqrt(ex * ex + ey * ey)
                db = math.sqrt(fx * fx + fy * fy)
                z1 = _step((d_mu + d_half - abs(da - db)) / (2.0 * d_half))
                z2 = _step((ck * rc[l] + sk * rs[l] - c_lo) / (c_hi - c_lo))
                cos3 = (ex * fx + ey * fy) / max(da * db, 1e-6)
                z3 = _step((cos3 - c_lo) / (c_hi - c_lo))
                rho[k, l] = z1 * z2 * z3
            rho[k, k] = 0.0
        for k in range(n):
            lam[k] = g0[k]
        spread = (1.0 - w_r) / max(1, n_r - 1)
        for _ in range(n_rel):
            for k in range(n):
                acc = np.float32(0.0)
                for l in range(n):  # noqa: E741
                    acc += rho[k, l] * lam[l]
                nxt[k] = w_r * lam[k] + spread * acc
            for k in range(n):
                lam[k] = nxt[k]
        for k in range(n):
            eff[k] = lam[k] / g0[k]
        n_p = n_p_of[n_r]
        order = np.argsort(-eff[:n], kind="mergesort")
        total = 0.0
        for j in range(min(n_p, n)):
            total += lam[order[j]]
        out[f] = min(1.0, total / n_p)


def smoothstep_bounds(
    mu_rho: tuple[float, float, float], tau_rho: tuple[float, float, float]
) -> tuple[tuple[float, float], tuple[float, float]]:
    """`scores`' `dist` and `angle` arguments from the matcher's mu_rho and tau_rho: each sigmoid's
    smoothstep spans mu +- 3 / |tau| (the same slope at mu); the angles' (one for both, as the
    matcher's are equal) in cosines."""
    half_d = 3.0 / abs(tau_rho[0])
    half_a = 3.0 / abs(tau_rho[1])
    mu_a = mu_rho[1]
    return (mu_rho[0], half_d), (math.cos(mu_a + half_a), math.cos(max(0.0, mu_a - half_a)))


def warm() -> None:
    """Compile `scores` now (numba: a few seconds, or ~0.1 s from its cache on disk)."""
    codes = np.zeros((2, DIMS), np.int8)
    codes[:, 0] = 127
    scores(
        codes,
        np.array([[0, 0], [10, 0]], np.int16),
        np.zeros(2, np.uint8),
        np.array([0], np.int64),
        np.array([2], np.int64),
        codes.astype(np.int16),
        np.array([0.0, 10.0], np.float32),
        np.zeros(2, np.float32),
        np.zeros(2, np.float32),
        (8.0, 1.875),
        (0.8, 0.99),
        0.5,
        5,
        np.full(MAX_CYLINDERS + 1, 4, np.int64),
        np.zeros(1, np.float64),
    )
