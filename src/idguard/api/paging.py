"""Keyset pagination over (time, id), newest first: an opaque cursor that stays valid while rows
are appended, unlike an offset."""

from __future__ import annotations

import base64
import datetime as dt
import uuid

from idguard.core.clock import as_utc
from idguard.core.errors import InvalidField


def encode_cursor(at: dt.datetime, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str, field: str = "after") -> tuple[dt.datetime, uuid.UUID]:
    """The position a cursor names; a 422 naming `field` (the query parameter that carried it)
    for anything this API did not hand out."""
    try:
        at, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        parsed = dt.datetime.fromisoformat(at), uuid.UUID(row_id)
    except (ValueError, UnicodeDecodeError):
        raise InvalidField(field, "not a cursor returned by this endpoint") from None
    if parsed[0].tzinfo is None:  # a forged cursor: every cursor this API gives has a zone
        raise InvalidField(field, "not a cursor returned by this endpoint")
    return as_utc(parsed[0], field), parsed[1]
