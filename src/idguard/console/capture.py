"""Fingerprint captures as the counter's scanner software saves them: a file holding either the
raw ISO/IEC 19794-2 record (it starts with the format identifier `FMR\\0`) or that record in
base64 (what `idguard demo fingerprint` prints). The services take base64 text."""

from __future__ import annotations

import base64
import binascii

from idguard.core.errors import InvalidField

_FORMAT_ID = b"FMR\x00"
MAX_FILE_BYTES = 64 * 1024  # a minutiae record is a few kilobytes


def record_text(raw: bytes, *, field: str) -> str:
    """The base64 record of an uploaded capture; InvalidField naming `field` when the file is
    neither form (the biometrics package then judges the record itself)."""
    if len(raw) > MAX_FILE_BYTES:
        raise InvalidField(field, "the file is too large for a fingerprint record")
    if raw.startswith(_FORMAT_ID):
        return base64.b64encode(raw).decode()
    try:
        text = raw.decode("ascii").strip()
        decoded = base64.b64decode(text, validate=True)
    except (UnicodeDecodeError, binascii.Error, ValueError):
        raise InvalidField(field, "not an ISO/IEC 19794-2 record (raw or base64)") from None
    if not decoded.startswith(_FORMAT_ID):
        raise InvalidField(field, "not an ISO/IEC 19794-2 record (raw or base64)")
    return text
