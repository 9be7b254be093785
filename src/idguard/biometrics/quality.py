"""Enrolment quality gate: refuse a poor capture with a message a counter clerk can act on.

A template enrolled from a poor capture fails every later comparison of that citizen (at a loss
report, at a bank), so the registry refuses it at the counter, where capturing again is cheap.
The messages say what was found, what is needed and what to do, in that order.
"""

from __future__ import annotations

from dataclasses import dataclass

from idguard.biometrics.record import FingerView
from idguard.core.errors import DomainError


@dataclass(frozen=True, slots=True)
class QualityPolicy:
    """Thresholds for enrolment. Defaults: 12 minutiae is the usual floor for a reliable minutiae
    comparison; finger quality 40 of 100 rejects the captures the scanner itself rates poor."""

    min_minutiae: int = 12
    min_finger_quality: int = 40
    require_quality_score: bool = True  # a capture whose scanner reports no quality is refused


DEFAULT_POLICY = QualityPolicy()


class PoorCapture(DomainError):
    """The capture is too poor to enrol; `problems` lists each finding with what to do."""

    status = 422
    title = "Poor fingerprint capture"
    code = "poor_capture"

    def __init__(self, problems: tuple[str, ...]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class QualityVerdict:
    accepted: bool
    problems: tuple[str, ...]  # empty when accepted

    @property
    def message(self) -> str:
        return "; ".join(self.problems) if self.problems else "capture accepted"


def assess_capture(view: FingerView, policy: QualityPolicy = DEFAULT_POLICY) -> QualityVerdict:
    """Check one finger view against the policy; every failed check gives one message."""
    problems = []
    found = len(view.minutiae)
    if found < policy.min_minutiae:
        problems.append(
            f"only {found} minutiae found (need {policy.min_minutiae}): "
            "clean the finger and the scanner, press flatter, capture again"
        )
    score = view.quality_score
    if score is None:
        if policy.require_quality_score:
            problems.append(
                "the scanner reported no finger quality: "
                "check that the scanner is set to report quality, then capture again"
            )
    elif score < policy.min_finger_quality:
        problems.append(
            f"finger quality {score} is below {policy.min_finger_quality}: "
            "wipe the finger (moisten it if very dry), place it flat in the middle of the scanner "
            "without moving, capture again"
        )
    return QualityVerdict(accepted=not problems, problems=tuple(problems))


def require_enrolment_quality(view: FingerView, policy: QualityPolicy = DEFAULT_POLICY) -> None:
    """Raise PoorCapture unless the view passes the policy."""
    verdict = assess_capture(view, policy)
    if not verdict.accepted:
        raise PoorCapture(verdict.problems)
