"""Enrolment quality gate: a poor capture is refused with a message a counter clerk can act on."""

from __future__ import annotations

import pytest

from idguard.biometrics import (
    FingerView,
    FormatVersion,
    Minutia,
    MinutiaeRecord,
    MinutiaType,
    PoorCapture,
    QualityBlock,
    QualityPolicy,
    Representation2011,
    assess_capture,
    encode,
    parse,
    require_enrolment_quality,
)


def view(
    minutiae: int, quality: int | None = 80, blocks: tuple[QualityBlock, ...] | None = None
) -> FingerView:
    ms = tuple(Minutia(MinutiaType.ENDING, 10 + 5 * i, 20, 0, 60) for i in range(minutiae))
    if blocks is None:
        return FingerView(2, 0, 0, 300, 400, 197, 197, ms, quality)
    return FingerView(2, 0, 0, 300, 400, 197, 197, ms, None, (), Representation2011(quality_blocks=blocks))


def test_good_capture_is_accepted() -> None:
    verdict = assess_capture(view(30))
    assert verdict.accepted
    assert verdict.problems == ()
    assert verdict.message == "capture accepted"
    require_enrolment_quality(view(30))


def test_too_few_minutiae_says_what_to_do() -> None:
    verdict = assess_capture(view(7))
    assert not verdict.accepted
    assert verdict.problems == (
        "only 7 minutiae found (need 12): clean the finger and the scanner, press flatter, capture again",
    )


def test_low_finger_quality_says_what_to_do() -> None:
    (message,) = assess_capture(view(30, quality=25)).problems
    assert message.startswith("finger quality 25 is below 40: ")
    assert "capture again" in message


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(PoorCapture) as info:
        require_enrolment_quality(view(3, quality=10))
    assert len(info.value.problems) == 2
    assert info.value.detail == "; ".join(info.value.problems)
    assert info.value.status == 422


def test_policy_is_configurable() -> None:
    strict = QualityPolicy(min_minutiae=40, min_finger_quality=90)
    assert not assess_capture(view(30, quality=85), strict).accepted
    assert assess_capture(view(5, quality=30), QualityPolicy(min_minutiae=5, min_finger_quality=30)).accepted


def test_boundaries_are_inclusive() -> None:
    assert assess_capture(view(12, quality=40)).accepted
    assert not assess_capture(view(11, quality=40)).accepted
    assert not assess_capture(view(12, quality=39)).accepted


def test_2011_uses_the_most_pessimistic_quality_block() -> None:
    blocks = (QualityBlock(90, 1, 1), QualityBlock(35, 2, 2), QualityBlock(255, 3, 3))  # 255: failed
    v = view(30, blocks=blocks)
    record = parse(encode(MinutiaeRecord(views=(v,), version=FormatVersion.V2011)))
    assert record.views[0].quality_score == 35
    assert "finger quality 35 is below 40" in assess_capture(record.views[0]).message


def test_no_reported_quality_is_refused_unless_allowed() -> None:
    v = view(30, blocks=())
    assert "reported no finger quality" in assess_capture(v).message
    assert assess_capture(v, QualityPolicy(require_quality_score=False)).accepted
