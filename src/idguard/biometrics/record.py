"""Finger minutiae record (ISO/IEC 19794-2): the object model shared by the 2005 and 2011 codecs.

Conventions are the standard's, kept as stored so a record round-trips byte for byte:

* coordinates are pixels, origin at the top-left corner of the image, x to the right, y **down**;
* a minutia angle is an integer 0..255 in units of 360/256 = 1.40625 degrees, increasing
  **counter-clockwise** (as the image is viewed) from the horizontal axis pointing right;
* resolution is pixels per centimetre (500 dpi = 196.85 px/cm, written 197).

`minutiae_arrays` turns one view into numpy arrays for the matcher (angles in radians, same
counter-clockwise convention). Validation lives in `validate` so that `parse` and `encode` apply
exactly the same rules, and every error names the field (`view[0].minutia[3].angle`).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from idguard.core.errors import InvalidField

ANGLE_STEPS = 256  # one full turn; an angle unit is 360/256 = 1.40625 degrees
MAX_COORDINATE = (1 << 14) - 1  # x and y are 14-bit fields
QUALITY_NOT_REPORTED = 254  # 2011: minutia quality absent (5-byte minutia fields)
QUALITY_FAILED = 255  # 2011: the extractor could not compute a quality


class TemplateError(InvalidField):
    """A minutiae record is malformed, truncated or out of range. `field` names the culprit.

    Subclasses `InvalidField`, so the API answers 422 with the field name without extra mapping.
    """

    code = "invalid_fingerprint"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(field, detail)

    def __str__(self) -> str:
        return f"{self.field}: {self.detail}"


class FormatVersion(enum.Enum):
    V2005 = "2005"  # version bytes " 20\0"
    V2011 = "2011"  # version bytes "030\0"


class MinutiaType(enum.IntEnum):
    """The two type bits stored above the 14-bit x coordinate; 0b11 is reserved."""

    OTHER = 0b00
    ENDING = 0b01
    BIFURCATION = 0b10


class FingerPosition(enum.IntEnum):
    """Finger position codes 0-10 (ISO/IEC 19794-2 table: same in 2005 and 2011)."""

    UNKNOWN = 0
    RIGHT_THUMB = 1
    RIGHT_INDEX = 2
    RIGHT_MIDDLE = 3
    RIGHT_RING = 4
    RIGHT_LITTLE = 5
    LEFT_THUMB = 6
    LEFT_INDEX = 7
    LEFT_MIDDLE = 8
    LEFT_RING = 9
    LEFT_LITTLE = 10


# Impression (scan) type codes each edition defines.
IMPRESSION_TYPES = {
    FormatVersion.V2005: frozenset({0, 1, 2, 3, 8}),  # live/non-live plain/rolled, swipe
    FormatVersion.V2011: frozenset({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 24, 28, 29}),
}


@dataclass(frozen=True, slots=True)
class Minutia:
    type: MinutiaType
    x: int
    y: int
    angle: int  # 0..255, counter-clockwise, 1.40625 degrees per unit
    quality: int  # 0..100; 2011 also 254 (not reported) and 255 (failed)


@dataclass(frozen=True, slots=True)
class ExtendedDataArea:
    """One area of a view's extended data block (ridge counts 0x0001, core/delta 0x0002, vendor...).

    Kept opaque: the matcher does not use it, but it must survive a round trip.
    """

    type_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class QualityBlock:
    """2011 quality record: score 0..100 (255 = failed), with the algorithm that produced it."""

    score: int
    vendor_id: int = 0
    algorithm_id: int = 0


@dataclass(frozen=True, slots=True)
class CertificationBlock:
    authority_id: int
    scheme_id: int


@dataclass(frozen=True, slots=True)
class CaptureDateTime:
    """2011 capture time; all-0xFF (the default) means "not recorded"."""

    year: int = 0xFFFF
    month: int = 0xFF
    day: int = 0xFF
    hour: int = 0xFF
    minute: int = 0xFF
    second: int = 0xFF
    millisecond: int = 0xFFFF


@dataclass(frozen=True, slots=True)
class Representation2011:
    """Fields of a 2011 finger representation header that the 2005 edition does not have."""

    capture_time: CaptureDateTime = field(default_factory=CaptureDateTime)
    device_technology: int = 0
    device_vendor: int = 0
    device_type: int = 0
    quality_blocks: tuple[QualityBlock, ...] = ()
    certification_blocks: tuple[CertificationBlock, ...] = ()
    ridge_ending_type: int = 0  # 0 valley skeleton bifurcation, 1 ridge skeleton end point
    minutia_quality_reported: bool = True  # 6-byte minutia fields (else 5, quality 254)


@dataclass(frozen=True, slots=True)
class FingerView:
    """One finger view (2005) or finger representation (2011).

    Image size and resolution sit in the record header in 2005 and in each representation in
    2011; they are kept per view here, and a 2005 record requires all its views to agree.
    """

    finger_position: int
    view_number: int
    impression_type: int
    width: int
    height: int
    x_resolution: int  # pixels per centimetre
    y_resolution: int
    minutiae: tuple[Minutia, ...]
    finger_quality: int | None = None  # 2005 finger quality 0..100; None in 2011 (see quality_blocks)
    extended_data: tuple[ExtendedDataArea, ...] = ()
    representation: Representation2011 | None = None  # 2011 only

    @property
    def quality_score(self) -> int | None:
        """The finger quality 0..100 a quality gate should use, or None when none was reported."""
        if self.finger_quality is not None:
            return self.finger_quality
        if self.representation is None:
            return None
        scores = [b.score for b in self.representation.quality_blocks if b.score <= 100]
        # Several algorithms may have scored the capture: trust the most pessimistic.
        return min(scores) if scores else None


@dataclass(frozen=True, slots=True)
class MinutiaeRecord:
    views: tuple[FingerView, ...]
    version: FormatVersion = FormatVersion.V2005
    capture_equipment_compliance: int = 0  # 2005 header, 4 bits
    capture_equipment_id: int = 0  # 2005 header, 12 bits
    certification_flag: bool = False  # 2011 header: representations carry certification blocks


@dataclass(frozen=True, eq=False)
class MinutiaArrays:
    """One view as arrays: the standard's frame (origin top-left, y down), angles in radians."""

    x: NDArray[np.float64]  # pixels
    y: NDArray[np.float64]  # pixels, down
    angle: NDArray[np.float64]  # radians in [0, 2*pi), counter-clockwise as the image is viewed
    type: NDArray[np.uint8]  # MinutiaType values
    quality: NDArray[np.uint8]
    x_resolution: float  # pixels per centimetre
    y_resolution: float
    width: int
    height: int


def minutiae_arrays(view: FingerView) -> MinutiaArrays:
    m = view.minutiae
    return MinutiaArrays(
        x=np.array([p.x for p in m], dtype=np.float64),
        y=np.array([p.y for p in m], dtype=np.float64),
        angle=np.array([p.angle for p in m], dtype=np.float64) * (2.0 * math.pi / ANGLE_STEPS),
        type=np.array([int(p.type) for p in m], dtype=np.uint8),
        quality=np.array([p.quality for p in m], dtype=np.uint8),
        x_resolution=float(view.x_resolution),
        y_resolution=float(view.y_resolution),
        width=view.width,
        height=view.height,
    )


def _check(ok: bool, where: str, detail: str) -> None:
    if not ok:
        raise TemplateError(where, detail)


def _fits(value: int, bits: int) -> bool:
    return 0 <= value < (1 << bits)


def validate(record: MinutiaeRecord) -> None:
    """Raise TemplateError for the first value the record's edition cannot hold or forbids."""
    v2005 = record.version is FormatVersion.V2005
    _check(len(record.views) >= 1, "header.view_count", "a record must hold at least one finger view")
    _check(
        len(record.views) <= (255 if v2005 else 0xFFFF),
        "header.view_count",
        f"{len(record.views)} views do not fit the count field",
    )
    if v2005:
        _check(
            _fits(record.capture_equipment_compliance, 4), "header.capture_equipment", "compliance is 4 bits"
        )
        _check(_fits(record.capture_equipment_id, 12), "header.capture_equipment", "device id is 12 bits")
        first = record.views[0]
        geometry = (first.width, first.height, first.x_resolution, first.y_resolution)
    for i, view in enumerate(record.views):
        where = f"view[{i}]"
        if v2005 and (view.width, view.height, view.x_resolution, view.y_resolution) != geometry:
            raise TemplateError(
                f"{where}.width", "a 2005 record has one image size and resolution for all its views"
            )
        _validate_view(view, where, record)


def _validate_view(view: FingerView, where: str, record: MinutiaeRecord) -> None:
    v2005 = record.version is FormatVersion.V2005
    _check(
        0 <= view.finger_position <= 10,
        f"{where}.finger_position",
        f"{view.finger_position} is not a finger position code (0 unknown, 1-10 thumb to little finger)",
    )
    _check(_fits(view.view_number, 4), f"{where}.view_number", f"{view.view_number} is not 0..15")
    _check(
        view.impression_type in IMPRESSION_TYPES[record.version],
        f"{where}.impression_type",
        f"{view.impression_type} is not an impression type code of the {record.version.value} edition",
    )
    for name in ("width", "height", "x_resolution", "y_resolution"):
        value = getattr(view, name)
        _check(1 <= value <= 0xFFFF, f"{where}.{name}", f"{value} is not 1..65535")
    if v2005:
        _check(view.representation is None, f"{where}.representation", "2011 fields in a 2005 record")
        q = view.finger_quality
        _check(q is not None and 0 <= q <= 100, f"{where}.finger_quality", f"{q} is not 0..100")
    else:
        _check(view.finger_quality is None, f"{where}.finger_quality", "2011 uses quality blocks instead")
        if view.representation is None:
            raise TemplateError(f"{where}.representation", "missing 2011 header fields")
        _validate_representation(view.representation, where, record.certification_flag)
    _check(len(view.minutiae) <= 255, f"{where}.minutia_count", f"{len(view.minutiae)} minutiae exceed 255")
    reported = view.representation is None or view.representation.minutia_quality_reported
    for j, m in enumerate(view.minutiae):
        _validate_minutia(m, f"{where}.minutia[{j}]", view, v2005=v2005, quality_reported=reported)
    total = 0
    for k, area in enumerate(view.extended_data):
        _check(
            0 < area.type_id <= 0xFFFF,
            f"{where}.extended_data[{k}].type_id",
            f"{area.type_id} is not 1..65535 (0 is reserved)",
        )
        limit = 0xFFFF if v2005 else 0xFFFF - 4  # 2011 counts the 4-byte area header in the length
        _check(len(area.data) <= limit, f"{where}.extended_data[{k}].length", "area too long")
        total += 4 + len(area.data)
    _check(total <= 0xFFFF, f"{where}.extended_data_length", f"{total} bytes exceed 65535")


def _validate_minutia(
    m: Minutia, where: str, view: FingerView, *, v2005: bool, quality_reported: bool
) -> None:
    _check(isinstance(m.type, MinutiaType), f"{where}.type", f"{m.type!r} is not a minutia type")
    for name, value, size in (("x", m.x, view.width), ("y", m.y, view.height)):
        _check(
            0 <= value <= MAX_COORDINATE and value < size,
            f"{where}.{name}",
            f"{value} is outside the {size}-pixel image (and the 14-bit field)",
        )
    _check(0 <= m.angle < ANGLE_STEPS, f"{where}.angle", f"{m.angle} is not 0..255 (1.40625 degree units)")
    if v2005:
        _check(0 <= m.quality <= 100, f"{where}.quality", f"{m.quality} is not 0..100")
    elif quality_reported:
        ok = 0 <= m.quality <= 100 or m.quality in (QUALITY_NOT_REPORTED, QUALITY_FAILED)
        _check(ok, f"{where}.quality", f"{m.quality} is not 0..100, 254 or 255")
    else:
        _check(
            m.quality == QUALITY_NOT_REPORTED,
            f"{where}.quality",
            "5-byte minutia fields carry no quality: it must be 254 (not reported)",
        )


def _validate_representation(rep: Representation2011, where: str, certified: bool) -> None:
    t = rep.capture_time
    for name, value, bits in (
        ("year", t.year, 16),
        ("month", t.month, 8),
        ("day", t.day, 8),
        ("hour", t.hour, 8),
        ("minute", t.minute, 8),
        ("second", t.second, 8),
        ("millisecond", t.millisecond, 16),
    ):
        _check(_fits(value, bits), f"{where}.capture_time.{name}", f"{value} does not fit {bits} bits")
    _check(_fits(rep.device_technology, 8), f"{where}.device_technology", "is one byte")
    _check(_fits(rep.device_vendor, 16), f"{where}.device_vendor", "is two bytes")
    _check(_fits(rep.device_type, 16), f"{where}.device_type", "is two bytes")
    _check(len(rep.quality_blocks) <= 255, f"{where}.quality_blocks", "more than 255 blocks")
    for k, q in enumerate(rep.quality_blocks):
        _check(
            0 <= q.score <= 100 or q.score == QUALITY_FAILED,
            f"{where}.quality_blocks[{k}].score",
            f"{q.score} is not 0..100 or 255",
        )
        _check(
            _fits(q.vendor_id, 16) and _fits(q.algorithm_id, 16),
            f"{where}.quality_blocks[{k}]",
            "ids are 16 bits",
        )
    if not certified:
        _check(
            not rep.certification_blocks,
            f"{where}.certification_blocks",
            "the header's certification flag is 0",
        )
    _check(len(rep.certification_blocks) <= 255, f"{where}.certification_blocks", "more than 255 blocks")
    for k, c in enumerate(rep.certification_blocks):
        _check(
            _fits(c.authority_id, 16) and _fits(c.scheme_id, 8),
            f"{where}.certification_blocks[{k}]",
            "authority is 16 bits, scheme 8 bits",
        )
    _check(
        rep.ridge_ending_type in (0, 1),
        f"{where}.ridge_ending_type",
        f"{rep.ridge_ending_type} is not 0 or 1",
    )
