"""Synthetic fingerprint captures for tests: person `p`'s finger at the scanner, as base64 ISO
records. A person is a seed of the synthetic generator; a finger position 1-10 is its finger
index, so the record carries the right ISO finger position."""

from __future__ import annotations

import base64
import dataclasses

from idguard.biometrics import FormatVersion, Minutia, QualityBlock, Representation2011, encode, synthetic
from idguard.biometrics.synthetic import Difficulty

THUMB, LEFT_THUMB = 1, 6
ENROLLED = 0  # impression index used at enrolment; later indices are new captures


def record(person: int, finger: int, impression: int = 1, difficulty: Difficulty = Difficulty.EASY) -> bytes:
    master = synthetic.master_finger(person, finger - 1)
    return encode(synthetic.impression(master, impression, difficulty, seed=person))


def capture(person: int, finger: int = THUMB, impression: int = 1) -> str:
    """A live capture of `person`'s `finger`: a new impression, not the enrolled one."""
    return base64.b64encode(record(person, finger, impression)).decode()


def enrolment(person: int, fingers: tuple[int, int] = (THUMB, LEFT_THUMB)) -> list[dict[str, object]]:
    """The `fingerprints` of an issue request: two fingers of `person`, captured at enrolment."""
    return [{"finger": f, "template": capture(person, f, ENROLLED)} for f in fingers]


def poor(person: int, finger: int = THUMB, *, minutiae: int = 8, quality: int | None = 60) -> str:
    """A capture the quality gate refuses: too few minutiae and/or a low finger quality."""
    rec = synthetic.impression(synthetic.master_finger(person, finger - 1), ENROLLED, seed=person)
    view = rec.views[0]
    kept: tuple[Minutia, ...] = view.minutiae[:minutiae]
    rec = dataclasses.replace(rec, views=(dataclasses.replace(view, minutiae=kept, finger_quality=quality),))
    return base64.b64encode(encode(rec)).decode()


def capture_2011(person: int, finger: int = THUMB, impression: int = 1) -> str:
    """The same capture as `capture`, written as an ISO/IEC 19794-2:2011 record (quality in a
    quality block, as 2011 scanners report it)."""
    rec = synthetic.impression(synthetic.master_finger(person, finger - 1), impression, seed=person)
    view = rec.views[0]
    assert view.finger_quality is not None
    view = dataclasses.replace(
        view,
        finger_quality=None,
        representation=Representation2011(quality_blocks=(QualityBlock(view.finger_quality, 0x0101, 1),)),
    )
    return base64.b64encode(
        encode(dataclasses.replace(rec, views=(view,), version=FormatVersion.V2011))
    ).decode()
