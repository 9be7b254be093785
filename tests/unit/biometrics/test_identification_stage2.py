"""The second stage's score (`Gallery._aligned`): a finger's rotation first, then, per live
cylinder, its heaviest pair that agrees with that rotation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from idguard.biometrics.identification import ANGLE_STEPS, Gallery


def _score(pairs: list[tuple[int, int, float, float]], live_count: int, fingers: int) -> list[float]:
    """pairs: (live cylinder, finger, rotation in degrees, weight); live directions 0, so a pair's
    registered direction is minus its rotation."""
    live, finger, rot, weight = (np.array(x) for x in zip(*pairs, strict=True))
    theta = (-np.rint(rot * ANGLE_STEPS / 360.0).astype(np.int64) % ANGLE_STEPS).astype(np.uint8)
    probe = SimpleNamespace(theta=np.zeros(live_count, dtype=np.float32), count=live_count)
    score = Gallery()._aligned(
        probe,  # type: ignore[arg-type]
        live.astype(np.int64),
        finger.astype(np.int64),
        theta,
        weight.astype(np.float32),
        fingers,
    )
    return [round(float(s), 4) for s in score]


def test_a_live_cylinder_counts_its_pair_that_agrees_with_the_rotation() -> None:
    """Live cylinder 3's heaviest pair in finger 0 lies at 200 degrees, against the finger's 30;
    its lighter pair at 32 degrees counts instead. (The second stage before issue 10's fifth
    round took each live cylinder's heaviest pair first and scored this finger 1.5.)"""
    pairs = [(0, 0, 30.0, 0.5), (1, 0, 28.0, 0.5), (2, 0, 33.0, 0.5), (3, 0, 200.0, 0.6), (3, 0, 32.0, 0.3)]
    assert _score(pairs, 4, 1) == [pytest.approx(1.8)]


def test_pairs_far_from_the_rotation_do_not_count_and_piles_wrap_around() -> None:
    """Finger 0: a pair 50 degrees from the other two is left out. Finger 1: rotations 355, 5 and
    12 degrees are one pile across 0/360. Finger 2: one pair per live cylinder at most."""
    pairs = [
        (0, 0, 100.0, 0.5),
        (1, 0, 100.0, 0.5),
        (2, 0, 150.0, 0.4),
        (0, 1, 355.0, 0.2),
        (1, 1, 5.0, 0.3),
        (2, 1, 12.0, 0.4),
        (0, 2, 60.0, 0.2),
        (0, 2, 61.0, 0.25),
    ]
    assert _score(pairs, 3, 3) == [pytest.approx(1.0), pytest.approx(0.9), pytest.approx(0.25)]
