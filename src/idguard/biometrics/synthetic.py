"""Seeded synthetic fingers and impressions, as ISO/IEC 19794-2:2005 minutiae records.

No public fingerprint set can be fetched here, so tests and the benchmark use minutiae sets made
by a documented model (docs/fingerprints.md, "Synthetic data"). Everything is deterministic in
(seed, finger, difficulty, impression): the same arguments give the same record (numpy's PCG64
streams, seeded per finger and impression, so a finger does not depend on how many are made).

Master finger (the "true" minutiae of one finger, 500 dpi pixels, finger frame with y up):

* pad: an ellipse of half-width 135-160 px and half-height 180-215 px;
* ridge orientation: the Sherlock-Monro zero-pole model
  O(z) = 1/2 [sum arg(z - delta) - sum arg(z - core)] for loops, whorls and tented arches, a
  bowed-line field for plain arches, plus a smooth random perturbation (a few low sinusoids);
* minutiae: a hard-core point process (no two closer than 10 px) of 45-75 points on the pad,
  ~57 % ridge endings, ~38 % bifurcations, ~5 % "other"; each points along the local ridge
  orientation, one of its two senses at random.

Impression (one capture of a master, `DIFFICULTIES` gives the parameters per level):

* contact region: an ellipse around a shifted pad centre, 70-100 % of the pad (pressure);
* non-linear skin distortion: Cappelli, Maio & Maltoni's plastic distortion model (2001) - no
  displacement in a central ellipse, a rigid rotation + shift far from it, a raised-cosine "brake"
  in between - applied to positions and, by a finite difference, to directions;
* rigid placement: rotation and translation of the finger on the scanner, crop to a 300 x 400
  image (partial overlap between impressions follows);
* extraction errors: missed minutiae (more near the contact border), spurious minutiae, ending and
  bifurcation swapped, position and angle noise, minutia and finger qualities;
* output order shuffled, as matchers must not rely on it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from idguard.biometrics.record import (
    ANGLE_STEPS,
    FingerView,
    Minutia,
    MinutiaeRecord,
    MinutiaType,
)

F64 = NDArray[np.float64]
WIDTH, HEIGHT = 300, 400  # impression image, pixels at 500 dpi
RESOLUTION = 197  # pixels per centimetre, 500 dpi as ISO records write it
BORDER = 6  # extractors find no minutiae this close to the image edge


class PatternClass(enum.StrEnum):
    LEFT_LOOP = "left_loop"
    RIGHT_LOOP = "right_loop"
    WHORL = "whorl"
    ARCH = "arch"
    TENTED_ARCH = "tented_arch"


# Roughly the frequencies of the Henry classes in large ten-print collections.
PATTERN_FREQUENCIES = {
    PatternClass.LEFT_LOOP: 0.33,
    PatternClass.RIGHT_LOOP: 0.31,
    PatternClass.WHORL: 0.28,
    PatternClass.ARCH: 0.04,
    PatternClass.TENTED_ARCH: 0.04,
}


class Difficulty(enum.StrEnum):
    EASY = "easy"
    MEDIUM = "medium"
    HARD = "hard"


@dataclass(frozen=True, slots=True)
class ImpressionModel:
    rotation_deg: float  # finger rotation on the scanner, uniform in +-value
    translation_px: float  # placement offset of the pad centre, normal sigma per axis
    distortion_rotation_deg: float  # plastic distortion: rigid part rotation, uniform in +-value
    distortion_shift_px: float  # plastic distortion: rigid part shift, uniform length 0..value
    contact_scale: tuple[float, float]  # contact ellipse / pad ellipse, uniform range
    missing: float  # probability a true minutia is not extracted
    spurious: float  # mean number of spurious minutiae (Poisson)
    type_swap: float  # probability an ending is read as a bifurcation or back
    position_sigma_px: float
    angle_sigma_deg: float
    finger_quality: tuple[int, int]  # uniform range of the view's finger quality


DIFFICULTIES = {
    Difficulty.EASY: ImpressionModel(
        rotation_deg=20,
        translation_px=18,
        distortion_rotation_deg=3,
        distortion_shift_px=6,
        contact_scale=(0.85, 1.0),
        missing=0.10,
        spurious=4,
        type_swap=0.10,
        position_sigma_px=2.0,
        angle_sigma_deg=6,
        finger_quality=(65, 95),
    ),
    Difficulty.MEDIUM: ImpressionModel(
        rotation_deg=28,
        translation_px=28,
        distortion_rotation_deg=5,
        distortion_shift_px=10,
        contact_scale=(0.75, 1.0),
        missing=0.15,
        spurious=6,
        type_swap=0.12,
        position_sigma_px=2.8,
        angle_sigma_deg=8.5,
        finger_quality=(50, 85),
    ),
    Difficulty.HARD: ImpressionModel(
        rotation_deg=35,
        translation_px=40,
        distortion_rotation_deg=7,
        distortion_shift_px=14,
        contact_scale=(0.7, 0.95),
        missing=0.20,
        spurious=9,
        type_swap=0.15,
        position_sigma_px=3.5,
        angle_sigma_deg=11,
        finger_quality=(35, 75),
    ),
}
_LEVEL_INDEX = {d: i for i, d in enumerate(Difficulty)}


@dataclass(frozen=True, eq=False)
class MasterFinger:
    """The true minutiae of one synthetic finger (finger frame: pad centre origin, y up, radians)."""

    finger: int
    pattern: PatternClass
    half_width: float
    half_height: float
    cores: F64  # (k, 2)
    deltas: F64  # (k, 2)
    x: F64
    y: F64
    angle: F64  # counter-clockwise, radians
    type: NDArray[np.uint8]
    perturbation: F64  # (k, 4): amplitude, frequency x, frequency y, phase of the smooth noise

    def orientation(self, x: F64, y: F64) -> F64:
        """Ridge orientation (mod pi) at finger-frame points."""
        return _orientation(self.pattern, self.cores, self.deltas, self.perturbation, x, y)


def _orientation(pattern: PatternClass, cores: F64, deltas: F64, noise: F64, x: F64, y: F64) -> F64:
    if pattern is PatternClass.ARCH:
        # Ridges v = v0 + h exp(-u^2 / 2 s^2), bowing up over the middle of the finger.
        h, s = 55.0, 90.0
        o = np.arctan(-h * x / s**2 * np.exp(-(x**2) / (2 * s**2)))
    else:
        z = x + 1j * y
        o = np.zeros_like(x)
        for d in deltas:
            o += 0.5 * np.angle(z - complex(d[0], d[1]))
        for c in cores:
            o -= 0.5 * np.angle(z - complex(c[0], c[1]))
    for amp, fx, fy, phase in noise:
        o += amp * np.sin(fx * x + fy * y + phase)
    out: F64 = np.mod(o, math.pi)
    return out


def _singularities(pattern: PatternClass, rng: np.random.Generator) -> tuple[F64, F64]:
    u = rng.uniform
    if pattern in (PatternClass.LEFT_LOOP, PatternClass.RIGHT_LOOP):
        side = 1.0 if pattern is PatternClass.LEFT_LOOP else -1.0  # delta opposite the loop's opening
        cores = [(u(-20, 20), u(10, 50))]
        deltas = [(side * u(60, 110), u(-130, -70))]
    elif pattern is PatternClass.WHORL:
        c1 = (u(-15, 15), u(20, 50))
        cores = [c1, (c1[0] + u(-15, 15), c1[1] - u(20, 40))]
        deltas = [(-u(90, 130), u(-140, -80)), (u(90, 130), u(-140, -80))]
    elif pattern is PatternClass.TENTED_ARCH:
        c = (u(-15, 15), u(0, 40))
        cores = [c]
        deltas = [(c[0] + u(-5, 5), c[1] - u(40, 70))]
    else:
        cores, deltas = [], []
    return np.array(cores, dtype=np.float64).reshape(-1, 2), np.array(deltas, dtype=np.float64).reshape(-1, 2)


def master_finger(seed: int, finger: int) -> MasterFinger:
    """The master minutiae of `finger` (any non-negative int) under `seed`."""
    rng = np.random.default_rng([seed, finger, 0])
    classes = list(PATTERN_FREQUENCIES)
    pattern = classes[rng.choice(len(classes), p=list(PATTERN_FREQUENCIES.values()))]
    half_w, half_h = rng.uniform(135, 160), rng.uniform(180, 215)
    cores, deltas = _singularities(pattern, rng)
    k = 3
    perturbation = np.column_stack(
        [
            rng.uniform(0.03, 0.12, k),  # amplitude (rad): individual, not class, variation
            rng.uniform(-1, 1, k) / 60.0,  # spatial frequencies: wavelengths of a few hundred px
            rng.uniform(-1, 1, k) / 60.0,
            rng.uniform(0, 2 * math.pi, k),
        ]
    )
    target = int(rng.integers(45, 76))
    x, y = _hard_core_points(rng, target, half_w, half_h, min_distance=10.0)
    orient = _orientation(pattern, cores, deltas, perturbation, x, y)
    angle = np.mod(orient + math.pi * rng.integers(0, 2, x.size), 2 * math.pi)
    kinds = rng.choice(
        [MinutiaType.ENDING, MinutiaType.BIFURCATION, MinutiaType.OTHER], size=x.size, p=[0.57, 0.38, 0.05]
    ).astype(np.uint8)
    return MasterFinger(finger, pattern, half_w, half_h, cores, deltas, x, y, angle, kinds, perturbation)


def _hard_core_points(
    rng: np.random.Generator, count: int, half_w: float, half_h: float, min_distance: float
) -> tuple[F64, F64]:
    """Points in the pad ellipse, none closer than min_distance (sequential rejection)."""
    pts = np.empty((0, 2))
    for _ in range(20):  # batches of candidates; a few rounds always suffice at these densities
        cand = rng.uniform(-1, 1, (4 * count, 2)) * (half_w, half_h)
        cand = cand[(cand[:, 0] / half_w) ** 2 + (cand[:, 1] / half_h) ** 2 <= 1.0]
        for c in cand:
            if pts.shape[0] == 0 or np.min(np.sum((pts - c) ** 2, axis=1)) >= min_distance**2:
                pts = np.vstack([pts, c])
                if pts.shape[0] == count:
                    return pts[:, 0].copy(), pts[:, 1].copy()
    return pts[:, 0].copy(), pts[:, 1].copy()


def _brake(d: F64, k: float) -> F64:
    """Cappelli's brake: 0 inside the undistorted region, 1 beyond k, raised cosine between."""
    t = np.clip(d / k, 0.0, 1.0)
    out: F64 = 0.5 * (1.0 - np.cos(math.pi * t))
    return out


@dataclass(frozen=True, slots=True)
class _Placement:
    centre: tuple[float, float]  # contact centre, finger frame
    axes: tuple[float, float]  # contact ellipse half-axes
    rot_d: float  # plastic distortion rotation
    shift_d: tuple[float, float]
    rot: float  # rigid rotation on the scanner
    offset: tuple[float, float]  # where the contact centre lands, image-centred y-up frame

    def inside_contact(self, x: F64, y: F64) -> NDArray[np.float64]:
        """Normalised elliptic radius: < 1 inside the contact region."""
        r: NDArray[np.float64] = np.hypot(
            (x - self.centre[0]) / self.axes[0], (y - self.centre[1]) / self.axes[1]
        )
        return r

    def map(self, x: F64, y: F64) -> tuple[F64, F64]:
        """Finger frame -> image pixel coordinates (origin top-left, y down)."""
        cx, cy = self.centre
        px, py = x - cx, y - cy
        # Plastic distortion: undistorted core ellipse of 40 % of the contact axes, brake over k.
        r = np.hypot(px / (0.4 * self.axes[0]), py / (0.4 * self.axes[1]))
        mean_axis = 0.4 * (self.axes[0] + self.axes[1]) / 2
        b = _brake((r - 1.0) * mean_axis, k=110.0)
        c, s = math.cos(self.rot_d), math.sin(self.rot_d)
        qx = px + b * ((c * px - s * py + self.shift_d[0]) - px)
        qy = py + b * ((s * px + c * py + self.shift_d[1]) - py)
        c, s = math.cos(self.rot), math.sin(self.rot)
        ux = c * qx - s * qy + self.offset[0]
        uy = s * qx + c * qy + self.offset[1]
        return WIDTH / 2 + ux, HEIGHT / 2 - uy


def _placement(master: MasterFinger, m: ImpressionModel, rng: np.random.Generator) -> _Placement:
    scale = rng.uniform(*m.contact_scale)
    centre = (rng.normal(0, m.translation_px / 3), rng.normal(0, m.translation_px / 3))
    shift_len, shift_dir = rng.uniform(0, m.distortion_shift_px), rng.uniform(0, 2 * math.pi)
    return _Placement(
        centre=centre,
        axes=(master.half_width * scale, master.half_height * scale),
        rot_d=math.radians(rng.uniform(-m.distortion_rotation_deg, m.distortion_rotation_deg)),
        shift_d=(shift_len * math.cos(shift_dir), shift_len * math.sin(shift_dir)),
        rot=math.radians(rng.uniform(-m.rotation_deg, m.rotation_deg)),
        offset=(rng.normal(0, m.translation_px), rng.normal(0, m.translation_px)),
    )


def impression(
    master: MasterFinger, index: int, difficulty: Difficulty = Difficulty.EASY, *, seed: int = 0
) -> MinutiaeRecord:
    """Capture number `index` of `master` at `difficulty`, as a one-view ISO 2005 record."""
    m = DIFFICULTIES[difficulty]
    rng = np.random.default_rng([seed, master.finger, 1 + _LEVEL_INDEX[difficulty], index])
    place = _placement(master, m, rng)

    # True minutiae seen in this contact, minus the ones the extractor misses (more at the border).
    r = place.inside_contact(master.x, master.y)
    p_miss = np.where(r > 0.92, 0.5, m.missing)
    keep = (r < 1.0) & (rng.random(r.size) >= p_miss)
    x, y, angle, kind = master.x[keep], master.y[keep], master.angle[keep], master.type[keep].copy()
    swap = (rng.random(kind.size) < m.type_swap) & (kind != MinutiaType.OTHER)
    kind[swap] = np.where(kind[swap] == MinutiaType.ENDING, MinutiaType.BIFURCATION, MinutiaType.ENDING)

    # Spurious minutiae: anywhere in the contact region, roughly along the ridge flow.
    n_sp = int(rng.poisson(m.spurious))
    t = rng.uniform(0, 2 * math.pi, n_sp)
    rad = np.sqrt(rng.uniform(0, 1, n_sp))
    sx = place.centre[0] + place.axes[0] * rad * np.cos(t)
    sy = place.centre[1] + place.axes[1] * rad * np.sin(t)
    s_angle = (
        master.orientation(sx, sy)
        + math.pi * rng.integers(0, 2, n_sp)
        + rng.normal(0, math.radians(15), n_sp)
    )
    s_kind = rng.choice([MinutiaType.ENDING, MinutiaType.BIFURCATION], n_sp).astype(np.uint8)
    spurious_mask = np.r_[np.zeros(x.size, dtype=bool), np.ones(n_sp, dtype=bool)]
    x, y = np.r_[x, sx], np.r_[y, sy]
    angle, kind = np.r_[angle, s_angle], np.r_[kind, s_kind]

    # Map positions, and directions through the same (non-linear) map by a 2-px finite difference.
    ix, iy = place.map(x, y)
    hx, hy = place.map(x + 2 * np.cos(angle), y + 2 * np.sin(angle))
    img_angle = np.arctan2(-(hy - iy), hx - ix)  # image y is down; ISO angles are counter-clockwise
    ix = ix + rng.normal(0, m.position_sigma_px, ix.size)
    iy = iy + rng.normal(0, m.position_sigma_px, iy.size)
    img_angle = img_angle + rng.normal(0, math.radians(m.angle_sigma_deg), img_angle.size)

    qx, qy = np.rint(ix).astype(np.int64), np.rint(iy).astype(np.int64)
    visible = (qx >= BORDER) & (qx < WIDTH - BORDER) & (qy >= BORDER) & (qy < HEIGHT - BORDER)
    finger_quality = int(rng.integers(m.finger_quality[0], m.finger_quality[1] + 1))
    quality = np.clip(rng.normal(finger_quality, 12, ix.size) - 25 * spurious_mask, 1, 100).astype(np.int64)
    steps = np.mod(np.rint(img_angle * ANGLE_STEPS / (2 * math.pi)), ANGLE_STEPS).astype(np.int64)
    order = rng.permutation(np.flatnonzero(visible))
    minutiae = tuple(
        Minutia(
            type=MinutiaType(int(kind[i])),
            x=int(qx[i]),
            y=int(qy[i]),
            angle=int(steps[i]),
            quality=int(quality[i]),
        )
        for i in order[:255]
    )
    view = FingerView(
        finger_position=1 + master.finger % 10,
        view_number=0,
        impression_type=0,  # live-scan plain
        width=WIDTH,
        height=HEIGHT,
        x_resolution=RESOLUTION,
        y_resolution=RESOLUTION,
        minutiae=minutiae,
        finger_quality=finger_quality,
    )
    return MinutiaeRecord(views=(view,))


def dataset(
    fingers: int,
    impressions: int,
    difficulty: Difficulty = Difficulty.EASY,
    *,
    seed: int = 0,
    first_finger: int = 0,
) -> list[list[MinutiaeRecord]]:
    """`impressions` records of each of `fingers` fingers: result[finger][impression]."""
    out = []
    for f in range(first_finger, first_finger + fingers):
        master = master_finger(seed, f)
        out.append([impression(master, i, difficulty, seed=seed) for i in range(impressions)])
    return out
