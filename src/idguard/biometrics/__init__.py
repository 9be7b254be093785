"""Fingerprint core (指纹比对): ISO/IEC 19794-2 minutiae records, the enrolment quality gate and a
Minutia Cylinder-Code 1:1 matcher. Pure: no database, no HTTP.

    record = parse(data)                         # TemplateError(field, detail) if malformed
    require_enrolment_quality(record.views[0])   # PoorCapture with clerk-facing messages
    stored = build_template(record).to_bytes()   # kept by the registry, never sent out
    ok, score = match_any(build_template(live), [Template.from_bytes(b) for b in stored_fingers])
"""

from idguard.biometrics.calibration import (
    calibrate_threshold,
    equal_error_rate,
    error_rates,
    fnmr_at_fmr,
)
from idguard.biometrics.iso19794 import encode, parse
from idguard.biometrics.matching import (
    DEFAULT_CONSOLIDATION,
    DEFAULT_THRESHOLD,
    ConsolidationParams,
    local_similarities,
    match_any,
    similarity,
)
from idguard.biometrics.mcc import (
    DEFAULT_CYLINDERS,
    CylinderParams,
    Template,
    build_cylinders,
    build_template,
)
from idguard.biometrics.quality import (
    DEFAULT_POLICY,
    PoorCapture,
    QualityPolicy,
    QualityVerdict,
    assess_capture,
    require_enrolment_quality,
)
from idguard.biometrics.record import (
    CaptureDateTime,
    CertificationBlock,
    ExtendedDataArea,
    FingerPosition,
    FingerView,
    FormatVersion,
    Minutia,
    MinutiaArrays,
    MinutiaeRecord,
    MinutiaType,
    QualityBlock,
    Representation2011,
    TemplateError,
    minutiae_arrays,
)

__all__ = [
    "DEFAULT_CONSOLIDATION",
    "DEFAULT_CYLINDERS",
    "DEFAULT_POLICY",
    "DEFAULT_THRESHOLD",
    "CaptureDateTime",
    "CertificationBlock",
    "ConsolidationParams",
    "CylinderParams",
    "ExtendedDataArea",
    "FingerPosition",
    "FingerView",
    "FormatVersion",
    "Minutia",
    "MinutiaArrays",
    "MinutiaType",
    "MinutiaeRecord",
    "PoorCapture",
    "QualityBlock",
    "QualityPolicy",
    "QualityVerdict",
    "Representation2011",
    "Template",
    "TemplateError",
    "assess_capture",
    "build_cylinders",
    "build_template",
    "calibrate_threshold",
    "encode",
    "equal_error_rate",
    "error_rates",
    "fnmr_at_fmr",
    "local_similarities",
    "match_any",
    "minutiae_arrays",
    "parse",
    "require_enrolment_quality",
    "similarity",
]
