"""Threshold calibration and error-rate arithmetic, checked on score sets small enough to count by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idguard.biometrics import calibrate_threshold, equal_error_rate, error_rates, fnmr_at_fmr
from idguard.biometrics.calibration import genuine_pairs, impostor_pairs


def test_threshold_allows_exactly_floor_fmr_times_n_false_matches() -> None:
    impostor = np.arange(10_000) / 10_000  # 0.0000 .. 0.9999
    t = calibrate_threshold(impostor, 1e-3)  # 10 may match: 0.9990 .. 0.9999
    assert 0.9989 < t <= 0.9990
    fmr, _ = error_rates([1.0], impostor, t)
    assert fmr == pytest.approx(1e-3)


def test_ties_are_resolved_against_matching() -> None:
    impostor = [0.5] * 5 + [0.1] * 9_995
    t = calibrate_threshold(impostor, 1e-4)  # one false match allowed, but five tie at 0.5
    assert t > 0.5
    assert error_rates([1.0], impostor, t)[0] == 0.0


def test_threshold_is_just_above_the_first_rejected_score() -> None:
    impostor = [0.9, 0.8, 0.7] + [0.0] * 97
    t = calibrate_threshold(impostor, 0.02)  # two may match: 0.9 and 0.8
    assert t == np.nextafter(0.7, 1.0)


def test_too_few_impostors_are_refused() -> None:
    with pytest.raises(ValueError, match="need at least 10000"):
        calibrate_threshold(np.zeros(9_999), 1e-4)
    with pytest.raises(ValueError, match="fmr"):
        calibrate_threshold(np.zeros(10), 0.0)
    with pytest.raises(ValueError, match="no impostor"):
        calibrate_threshold([], 0.5)


@settings(database=None, max_examples=100, deadline=None)
@given(
    st.lists(st.floats(0, 1), min_size=1, max_size=300),
    st.sampled_from([0.5, 0.1, 0.05, 0.01]),
)
def test_calibrated_fmr_never_exceeds_the_target(scores: list[float], fmr: float) -> None:
    if len(scores) < math.ceil(1 / fmr):
        return
    t = calibrate_threshold(scores, fmr)
    achieved = float(np.mean(np.asarray(scores) >= t))
    assert achieved <= fmr
    # and it is the smallest such threshold: any lower score would let more in than allowed
    lower = [s for s in scores if s < t]
    if lower:
        assert float(np.mean(np.asarray(scores) >= max(lower))) > fmr


def test_error_rates_count_ties_as_matches() -> None:
    assert error_rates([0.3, 0.5, 0.7], [0.1, 0.5], 0.5) == (0.5, 1 / 3)


def test_eer_of_separated_scores_is_zero() -> None:
    assert equal_error_rate([0.8, 0.9], [0.1, 0.2]) == 0.0


def test_eer_of_identical_distributions_is_one_half() -> None:
    assert equal_error_rate([0.5] * 4, [0.5] * 4) == 0.5


def test_eer_counts_the_crossing() -> None:
    # One genuine below one impostor out of four each: FMR = FNMR = 1/4 at the crossing.
    assert equal_error_rate([0.2, 0.6, 0.7, 0.8], [0.1, 0.3, 0.4, 0.65]) == pytest.approx(0.25)


def test_fnmr_at_fmr() -> None:
    genuine = [0.2, 0.5, 0.9, 0.95]
    impostor = list(np.linspace(0, 0.6, 100))  # the 1 % quantile from the top: above 0.6 * 98/99
    assert fnmr_at_fmr(genuine, impostor, 0.01) == 0.5  # 0.2 and 0.5 fall below it
    assert math.isnan(fnmr_at_fmr(genuine, impostor, 0.001))  # 100 impostors cannot show 1/1000


def test_fvc_pairs() -> None:
    assert len(genuine_pairs(100, 8)) == 100 * 28
    assert len(impostor_pairs(100)) == 4950
    assert ((0, 0), (0, 1)) in genuine_pairs(2, 2)
    assert impostor_pairs(3) == [((0, 0), (1, 0)), ((0, 0), (2, 0)), ((1, 0), (2, 0))]


# ---- 1:N ------------------------------------------------------------------------------------------


def test_identification_threshold_counts_one_best_score_per_search() -> None:
    from idguard.biometrics.calibration import calibrate_identification_threshold, identification_error_rates

    best_nonmated = [0.30, 0.20] + [0.05] * 98  # 100 strangers: at FPIR 1 % one may be answered
    t = calibrate_identification_threshold(best_nonmated, 0.01)
    assert t == np.nextafter(0.20, 1.0)
    # mated: right finger first and high; right finger but low; wrong finger first (high)
    fpir, fnir = identification_error_rates([0.5, 0.1, 0.9], [True, True, False], best_nonmated, t)
    assert fpir == pytest.approx(0.01)
    assert fnir == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="need at least 100"):
        calibrate_identification_threshold(best_nonmated[:99], 0.01)
    with pytest.raises(ValueError, match="one mate_found flag"):
        identification_error_rates([0.5], [True, False], best_nonmated, t)


def test_index_model_training_is_deterministic_and_well_formed() -> None:
    from idguard.biometrics.calibration import train_index_model

    a = train_index_model(fingers=12, dims=8, lists=16, seed=5, iterations=3)
    b = train_index_model(fingers=12, dims=8, lists=16, seed=5, iterations=3)
    assert a.basis.shape == (192, 8)
    assert a.centroids.shape == (16, 8)
    assert a.mean.shape == (192,)
    np.testing.assert_array_equal(a.centroids, b.centroids)
    np.testing.assert_allclose(a.basis.T @ a.basis, np.eye(8), atol=1e-4)  # principal axes
    np.testing.assert_allclose(np.linalg.norm(a.centroids, axis=1), 1.0, atol=1e-5)


def test_the_shipped_index_model_loads() -> None:
    from idguard.biometrics.calibration import INDEX_DIMS, INDEX_LISTS
    from idguard.biometrics.identification import default_model

    m = default_model()
    assert (m.dims, m.lists) == (INDEX_DIMS, INDEX_LISTS)
    assert np.isfinite(m.basis).all()
    assert np.isfinite(m.centroids).all()
