"""MCC templates and 1:1 matching: invariances, storage, and the decision on synthetic fingers."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest

from idguard.biometrics import (
    DEFAULT_THRESHOLD,
    FingerView,
    Minutia,
    MinutiaeRecord,
    Template,
    TemplateError,
    build_template,
    local_similarities,
    match_any,
    similarity,
)
from idguard.biometrics.synthetic import Difficulty, dataset


@pytest.fixture(scope="module")
def easy() -> list[list[Template]]:
    """12 fingers x 4 impressions at the easy level, seed 2026 (not the calibration seed)."""
    return [[build_template(r) for r in finger] for finger in dataset(12, 4, Difficulty.EASY, seed=2026)]


def record_of(
    minutiae: list[Minutia], *, width: int = 600, height: int = 800, resolution: int = 197
) -> MinutiaeRecord:
    return MinutiaeRecord(
        views=(FingerView(2, 0, 0, width, height, resolution, resolution, tuple(minutiae), 80),)
    )


def moved(record: MinutiaeRecord, *, turns: int, dx: int, dy: int) -> MinutiaeRecord:
    """Rotate by `turns` angle units (1.40625 degrees, counter-clockwise on screen) about (300, 400), then shift."""
    phi = turns * 2 * math.pi / 256
    c, s = math.cos(phi), math.sin(phi)
    out = []
    for m in record.views[0].minutiae:
        x, y = m.x - 300, m.y - 400
        # Counter-clockwise on screen with y pointing down.
        nx, ny = x * c + y * s, -x * s + y * c
        out.append(
            Minutia(m.type, round(nx + 300 + dx), round(ny + 400 + dy), (m.angle + turns) % 256, m.quality)
        )
    return record_of(out)


@pytest.fixture(scope="module")
def finger() -> MinutiaeRecord:
    rng = np.random.default_rng(7)
    ms = [
        Minutia(1, int(x), int(y), int(a), 60)  # type: ignore[arg-type]
        for x, y, a in zip(
            rng.integers(180, 420, 45), rng.integers(220, 580, 45), rng.integers(0, 256, 45), strict=True
        )
    ]
    return record_of(ms)


def test_a_template_matches_itself_perfectly(finger: MinutiaeRecord) -> None:
    t = build_template(finger)
    assert t.count > 30
    assert similarity(t, t) == pytest.approx(1.0)


@pytest.mark.parametrize(("turns", "dx", "dy"), [(0, 25, -40), (21, 0, 0), (-43, 30, 15), (57, -10, 10)])
def test_rotation_and_translation_do_not_matter(finger: MinutiaeRecord, turns: int, dx: int, dy: int) -> None:
    # Up to 80 degrees either way; only the rounding of moved coordinates to whole pixels
    # separates the two.
    assert similarity(build_template(finger), build_template(moved(finger, turns=turns, dx=dx, dy=dy))) > 0.8


def test_beyond_ninety_degrees_nothing_matches(finger: MinutiaeRecord) -> None:
    # delta_theta = pi/2 (the paper's): a finger is never laid on a scanner upside down, and
    # refusing such rotations removes impostor pairs that only align that way.
    upside_down = moved(finger, turns=128, dx=0, dy=0)
    assert similarity(build_template(finger), build_template(upside_down)) < DEFAULT_THRESHOLD


def test_a_mirrored_finger_does_not_match(finger: MinutiaeRecord) -> None:
    # Catches a sign error in the angle convention: a mirror image is not the same finger.
    mirrored = record_of(
        [Minutia(m.type, 599 - m.x, m.y, (128 - m.angle) % 256, m.quality) for m in finger.views[0].minutiae]
    )
    assert similarity(build_template(finger), build_template(mirrored)) < 0.3


def test_resolution_is_honoured(finger: MinutiaeRecord) -> None:
    doubled = record_of(
        [Minutia(m.type, 2 * m.x, 2 * m.y, m.angle, m.quality) for m in finger.views[0].minutiae],
        width=1200,
        height=1600,
        resolution=394,  # 1000 dpi
    )
    assert similarity(build_template(finger), build_template(doubled)) == pytest.approx(1.0, abs=1e-3)


def test_similarity_is_symmetric(easy: list[list[Template]]) -> None:
    a, b = easy[0][0], easy[0][1]
    assert similarity(a, b) == pytest.approx(similarity(b, a), abs=1e-6)
    gamma = local_similarities(a, b)
    assert np.allclose(gamma, local_similarities(b, a).T, atol=1e-6)
    assert gamma.min() >= 0.0
    assert gamma.max() <= 1.0


def test_storage_round_trip(easy: list[list[Template]]) -> None:
    a, b = easy[3][0], easy[3][2]
    data = a.to_bytes()
    again = Template.from_bytes(data)
    assert again.to_bytes() == data
    assert similarity(again, b) == pytest.approx(similarity(a, b), abs=1e-6)  # coordinates stored as float32
    assert len(data) < 50_000


@pytest.mark.parametrize(
    ("mangle", "field"),
    [
        (lambda d: b"XXXX" + d[4:], "template.magic"),
        (lambda d: d[:4] + b"\x09" + d[5:], "template.version"),
        (lambda d: d[:-1], "template.length"),
        (lambda d: d[:5], "template.length"),
        (lambda d: d + b"\x00", "template.length"),
    ],
)
def test_stored_template_faults(easy: list[list[Template]], mangle: object, field: str) -> None:
    data = easy[0][0].to_bytes()
    with pytest.raises(TemplateError) as info:
        Template.from_bytes(mangle(data))  # type: ignore[operator]
    assert info.value.field == field


def test_too_few_minutiae_give_no_cylinders() -> None:
    lonely = build_template(record_of([Minutia(1, 300, 400, 0, 60), Minutia(1, 320, 400, 0, 60)]))  # type: ignore[arg-type]
    assert lonely.count == 0  # minM = 2 neighbours are required
    assert similarity(lonely, lonely) == 0.0
    assert Template.from_bytes(lonely.to_bytes()).count == 0


def test_a_record_without_that_view() -> None:
    with pytest.raises(TemplateError):
        build_template(record_of([]), view=1)


def test_easy_genuine_pairs_clear_the_threshold_and_impostors_stay_below(easy: list[list[Template]]) -> None:
    """The stated property, at the easy level (seed 2026, 12 fingers x 4 impressions):

    * every one of the 72 genuine pairs scores at least DEFAULT_THRESHOLD + 0.1;
    * every one of the 1,056 pairs of impressions of different fingers scores below DEFAULT_THRESHOLD.
    """
    genuine = [similarity(f[i], f[j]) for f in easy for i, j in combinations(range(4), 2)]
    flat = [(n, t) for n, f in enumerate(easy) for t in f]
    impostor = [similarity(a, b) for (fa, a), (fb, b) in combinations(flat, 2) if fa != fb]
    assert len(genuine) == 72
    assert len(impostor) == 1056
    assert min(genuine) >= DEFAULT_THRESHOLD + 0.1
    assert max(impostor) < DEFAULT_THRESHOLD


def test_match_any_checks_both_registered_fingers(easy: list[list[Template]]) -> None:
    live = easy[5][1]
    ok, best = match_any(live, [easy[4][0], easy[5][0]])
    assert ok
    assert best == pytest.approx(similarity(live, easy[5][0]))
    ok, best = match_any(live, [easy[4][0], easy[6][0]])
    assert not ok
    assert best < DEFAULT_THRESHOLD
    assert match_any(live, []) == (False, 0.0)
    assert match_any(live, [easy[5][0]], threshold=1.01)[0] is False


def test_the_configured_default_threshold_is_the_calibrated_one() -> None:
    from idguard.biometrics.matching import DEFAULT_THRESHOLD
    from idguard.config import Settings

    assert Settings.model_fields["fingerprint_threshold"].default == DEFAULT_THRESHOLD
