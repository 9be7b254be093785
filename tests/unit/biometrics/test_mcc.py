"""MCC construction: the pruned build equals a plain dense one, to the byte.

`build_cylinders` skips work whose result is known (far neighbours, cut Gaussians, cells that are
valid without a test, dropped cylinders). `dense_build` below is the model written out with no
such shortcut: every cell against every minutia, every cell centre through the full hull test.
They must agree on every stored byte; a shortcut that changes a result fails here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray

from idguard.biometrics import CylinderParams, MinutiaArrays, Template, build_cylinders, minutiae_arrays
from idguard.biometrics.mcc import (
    CELL_CHUNK,
    DEFAULT_CYLINDERS,
    LEVELS,
    PIXELS_PER_CM_500_DPI,
    SPATIAL_CHUNK,
    _convex_hull,
    _directional_mass,
    angle_diff,
    chunked,
    disc_cells,
)
from idguard.biometrics.synthetic import Difficulty, dataset

F64 = NDArray[np.float64]


def dense_inside_enlarged_hull(px: F64, py: F64, hull: F64, omega: float) -> NDArray[np.bool_]:
    """Every point against every hull edge: inside (left of all edges) or within omega of one."""
    hx, hy = hull[:, 0], hull[:, 1]
    ex, ey = np.roll(hx, -1) - hx, np.roll(hy, -1) - hy
    rx, ry = px[..., None] - hx, py[..., None] - hy
    t = np.clip((rx * ex + ry * ey) / np.maximum(ex * ex + ey * ey, 1e-12), 0.0, 1.0)
    near: NDArray[np.bool_] = ((rx - t * ex) ** 2 + (ry - t * ey) ** 2).min(axis=-1) <= omega * omega
    if hull.shape[0] >= 3:
        near |= (ex * ry - ey * rx >= 0).all(axis=-1)
    return near


def dense_build(arrays: MinutiaArrays, p: CylinderParams = DEFAULT_CYLINDERS) -> bytes:
    """The stored bytes of the template, computed for all cells of all cylinders against all minutiae."""
    x = arrays.x * (PIXELS_PER_CM_500_DPI / arrays.x_resolution)
    y = -arrays.y * (PIXELS_PER_CM_500_DPI / arrays.y_resolution)
    theta: F64 = np.mod(arrays.angle, 2.0 * math.pi)
    n = x.shape[0]
    disc = disc_cells(p.ns)
    offs = (np.arange(p.ns) - (p.ns - 1) / 2.0) * (2.0 * p.radius / p.ns)
    oi, oj = (g.ravel()[disc] for g in np.meshgrid(offs, offs, indexing="ij"))
    cos_t, sin_t = np.cos(theta)[:, None], np.sin(theta)[:, None]
    cx = x[:, None] + cos_t * oi - sin_t * oj
    cy = y[:, None] + sin_t * oi + cos_t * oj
    valid_cell = dense_inside_enlarged_hull(cx, cy, _convex_hull(np.column_stack([x, y])), p.omega)

    # (n, cells, n): the Gaussian of every cell-to-minutia distance, cut at 3 sigma_S, self excluded.
    d2 = np.square(cx.astype(np.float32)[:, :, None] - x.astype(np.float32))
    d2 += np.square(cy.astype(np.float32)[:, :, None] - y.astype(np.float32))
    gs = np.exp(d2 * np.float32(-1.0 / (2.0 * p.sigma_s**2)))
    gs *= np.float32(1.0 / (p.sigma_s * math.sqrt(2.0 * math.pi)))
    gs[d2 > (3.0 * p.sigma_s) ** 2] = 0.0
    gs[np.arange(n), :, np.arange(n)] = 0.0
    delta_d = 2.0 * math.pi / p.nd
    layer: F64 = -math.pi + (np.arange(p.nd, dtype=np.float64) + 0.5) * delta_d
    dtheta = angle_diff(theta[:, None], theta[None, :])
    gd = _directional_mass(angle_diff(layer[None, None, :], dtheta[:, :, None]), p.sigma_d, delta_d)
    contribution = np.matmul(gs, gd.astype(np.float32))
    z = np.clip(-p.tau_psi * (contribution - p.mu_psi), -60.0, 60.0)
    values = valid_cell[:, :, None] / (1.0 + np.exp(z))

    dist2 = (x[:, None] - x[None, :]) ** 2 + (y[:, None] - y[None, :]) ** 2
    neighbours = (dist2 <= (p.radius + 3.0 * p.sigma_s) ** 2).sum(axis=1) - 1
    keep = (valid_cell.sum(axis=1) >= p.min_vc * disc.size) & (neighbours >= p.min_m)
    kept = int(keep.sum())
    levels = np.zeros((kept, p.ns * p.ns, p.nd), dtype=np.uint8)
    levels[:, disc, :] = np.rint(values[keep] * LEVELS)
    masks = np.zeros((kept, p.ns * p.ns), dtype=bool)
    masks[:, disc] = valid_cell[keep]
    template = Template(
        x=x[keep],
        y=y[keep],
        theta=theta[keep],
        levels=levels.reshape(kept, p.ns * p.ns * p.nd),
        masks=np.packbits(masks, axis=1),
        ns=p.ns,
        nd=p.nd,
        source_minutiae=n,
    )
    return template.to_bytes()


def arrays_of(x: list[float], y: list[float], angle: list[float], resolution: float = 197.0) -> MinutiaArrays:
    count = len(x)
    return MinutiaArrays(
        x=np.array(x, dtype=np.float64),
        y=np.array(y, dtype=np.float64),
        angle=np.array(angle, dtype=np.float64),
        type=np.ones(count, dtype=np.uint8),
        quality=np.full(count, 60, dtype=np.uint8),
        x_resolution=resolution,
        y_resolution=resolution,
        width=1000,
        height=1000,
    )


def scattered(
    seed: int, count: int, *, spread: float = 300.0, offset: float = 0.0, resolution: float = 197.0
) -> MinutiaArrays:
    """`count` minutiae anywhere in a spread x 1.3 spread box, any direction."""
    rng = np.random.default_rng(seed)
    return arrays_of(
        list(offset + rng.random(count) * spread),
        list(offset + rng.random(count) * spread * 1.3),
        list(rng.random(count) * 2 * math.pi),
        resolution,
    )


@pytest.mark.parametrize(
    ("level", "finger", "impression"),
    [
        (Difficulty.EASY, 0, 0),
        (Difficulty.EASY, 3, 2),
        (Difficulty.MEDIUM, 1, 1),
        (Difficulty.HARD, 2, 3),
        (Difficulty.HARD, 4, 0),
    ],
)
def test_synthetic_views_match_the_dense_construction(
    level: Difficulty, finger: int, impression: int
) -> None:
    record = dataset(finger + 1, impression + 1, level, seed=99)[finger][impression]
    arrays = minutiae_arrays(record.views[0])
    built = build_cylinders(arrays)
    assert built.count > 10
    assert built.to_bytes() == dense_build(arrays)


@pytest.mark.parametrize(
    ("case", "arrays"),
    [
        ("one minutia", arrays_of([100.0], [100.0], [1.0])),
        (
            "three in a line: the hull is a segment",
            arrays_of([100.0, 130.0, 160.0], [200.0] * 3, [0.0, 2.0, 4.0]),
        ),
        ("the same point three times", arrays_of([150.0] * 3, [150.0] * 3, [0.5, 0.5, 3.0])),
        ("a dense cluster", scattered(1, 60, spread=60.0)),
        ("sparse, few neighbours", scattered(2, 12, spread=900.0)),
        ("far from the origin", scattered(3, 40, offset=40_000.0)),
        ("a 1000 dpi capture", scattered(4, 50, spread=600.0, resolution=394.0)),
    ],
)
def test_edge_cases_match_the_dense_construction(case: str, arrays: MinutiaArrays) -> None:
    assert build_cylinders(arrays).to_bytes() == dense_build(arrays), case


@pytest.mark.parametrize(
    "params",
    [
        CylinderParams(ns=8, nd=4),
        CylinderParams(omega=0.5, min_m=0),  # no cell is valid without a test; lone cylinders kept
        CylinderParams(radius=40.0, sigma_s=5.0, min_vc=0.5),
        CylinderParams(nd=9),  # more than 8 layers
        CylinderParams(radius=3.0, ns=8, sigma_s=1.0, omega=0.1, min_vc=0.0, min_m=0),  # Omega < 1 px
    ],
)
def test_other_parameters_match_the_dense_construction(params: CylinderParams) -> None:
    for seed in (5, 6):
        arrays = scattered(seed, 45)
        assert build_cylinders(arrays, params).to_bytes() == dense_build(arrays, params)


@pytest.mark.parametrize("nd", [6, 8, 10])
def test_derived_arrays_are_the_plain_expressions(nd: int) -> None:
    """What a comparison multiplies: the disc cells' values, |c|^2 per base cell, the masks."""
    template = build_cylinders(scattered(7, 50), CylinderParams(nd=nd))
    n, ns, disc = template.count, template.ns, disc_cells(template.ns)
    levels = template.cell_levels.reshape(n, ns * ns, nd)[:, disc, :]
    values = levels.astype(np.float32) * np.float32(1.0 / LEVELS)
    mask = np.unpackbits(template.mask_bits, axis=1, count=ns * ns)[:, disc].astype(np.float32)
    energy = (values * values).sum(axis=2)
    assert np.array_equal(template.cells, chunked(values.reshape(n, -1), CELL_CHUNK))
    assert np.array_equal(template.spatial_left, chunked(np.concatenate([energy, mask]), SPATIAL_CHUNK))
    assert np.array_equal(template.spatial_right, chunked(np.concatenate([mask, energy]), SPATIAL_CHUNK))


@pytest.mark.parametrize(
    ("rows", "width", "k"), [(5, 64, 32), (5, 70, 32), (3, 7, 16), (0, 20, 16), (4, 0, 8)]
)
def test_chunked_is_zero_padded_slices(rows: int, width: int, k: int) -> None:
    matrix = np.random.default_rng(8).random((rows, width)).astype(np.float32)
    parts = -(-width // k)
    padded = np.zeros((rows, parts * k), dtype=np.float32)
    padded[:, :width] = matrix
    out = chunked(matrix, k)
    assert out.shape == (parts, rows, k)
    assert out.flags.c_contiguous
    assert np.array_equal(out, padded.reshape(rows, parts, k).transpose(1, 0, 2))
