"""The synthetic generator: deterministic by seed, realistic in count and layout, valid ISO records."""

from __future__ import annotations

import numpy as np
import pytest

from idguard.biometrics import MinutiaType, encode, parse
from idguard.biometrics.synthetic import (
    HEIGHT,
    WIDTH,
    Difficulty,
    PatternClass,
    dataset,
    impression,
    master_finger,
)


def test_same_seed_same_records() -> None:
    a = dataset(3, 2, Difficulty.MEDIUM, seed=5)
    b = dataset(3, 2, Difficulty.MEDIUM, seed=5)
    assert [[encode(r) for r in f] for f in a] == [[encode(r) for r in f] for f in b]


def test_a_finger_does_not_depend_on_how_many_are_generated() -> None:
    few = dataset(2, 2, Difficulty.HARD, seed=5)
    many = dataset(6, 3, Difficulty.HARD, seed=5, first_finger=0)
    assert few[1][1] == many[1][1]
    assert dataset(1, 2, Difficulty.HARD, seed=5, first_finger=1)[0] == many[1][:2]


def test_other_seed_or_level_gives_other_records() -> None:
    base = impression(master_finger(5, 0), 0, Difficulty.EASY, seed=5)
    assert impression(master_finger(6, 0), 0, Difficulty.EASY, seed=6) != base
    assert impression(master_finger(5, 0), 0, Difficulty.HARD, seed=5) != base
    assert impression(master_finger(5, 0), 1, Difficulty.EASY, seed=5) != base


def test_records_are_valid_iso_2005_at_500_dpi() -> None:
    for finger in dataset(4, 3, Difficulty.HARD, seed=11):
        for record in finger:
            assert parse(encode(record)) == record
            view = record.views[0]
            assert (view.width, view.height, view.x_resolution) == (WIDTH, HEIGHT, 197)


def test_counts_and_types_look_like_real_captures() -> None:
    records = [r for f in dataset(30, 2, Difficulty.EASY, seed=3) for r in f]
    counts = np.array([len(r.views[0].minutiae) for r in records])
    assert 30 <= counts.mean() <= 60
    assert counts.min() >= 12
    types = np.array([m.type for r in records for m in r.views[0].minutiae])
    endings, bifurcations = np.mean(types == MinutiaType.ENDING), np.mean(types == MinutiaType.BIFURCATION)
    assert 0.45 < endings < 0.65
    assert 0.3 < bifurcations < 0.5


def test_harder_levels_lose_more_minutiae() -> None:
    def mean_count(level: Difficulty) -> float:
        return float(np.mean([len(r.views[0].minutiae) for f in dataset(20, 2, level, seed=3) for r in f]))

    assert mean_count(Difficulty.EASY) > mean_count(Difficulty.MEDIUM) > mean_count(Difficulty.HARD)


def test_pattern_classes_have_their_singular_points() -> None:
    seen = {}
    for f in range(60):
        m = master_finger(9, f)
        seen[m.pattern] = (len(m.cores), len(m.deltas))
    assert seen[PatternClass.WHORL] == (2, 2)
    assert seen[PatternClass.LEFT_LOOP] == (1, 1)
    assert seen[PatternClass.RIGHT_LOOP] == (1, 1)


def test_minutiae_follow_the_ridge_flow() -> None:
    m = master_finger(4, 2)
    along = np.mod(m.angle - m.orientation(m.x, m.y), np.pi)  # direction mod pi vs orientation
    assert np.all(np.minimum(along, np.pi - along) < 1e-9)


@pytest.mark.parametrize("level", list(Difficulty))
def test_minutiae_stay_inside_the_image(level: Difficulty) -> None:
    for finger in dataset(5, 3, level, seed=1):
        for r in finger:
            for p in r.views[0].minutiae:
                assert 0 <= p.x < WIDTH
                assert 0 <= p.y < HEIGHT
