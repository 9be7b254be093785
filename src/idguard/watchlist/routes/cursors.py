"""Opaque cursors of the watchlist's lists: (time, key) of the last row, base64."""

from __future__ import annotations

import base64
import datetime as dt

from idguard.core.clock import as_utc
from idguard.core.errors import InvalidField


def encode(at: dt.datetime, key: str | int) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{key}".encode()).decode()


def decode(cursor: str, *, field: str = "after") -> tuple[dt.datetime, str]:
    try:
        at, key = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        when = dt.datetime.fromisoformat(at)
    except (ValueError, UnicodeDecodeError):
        raise InvalidField(field, "not a cursor returned by this endpoint") from None
    if when.tzinfo is None or not key:
        raise InvalidField(field, "not a cursor returned by this endpoint")
    return as_utc(when, field), key


def decode_int(cursor: str, *, field: str = "after") -> tuple[dt.datetime, int]:
    at, key = decode(cursor, field=field)
    if not key.isdigit() or len(key) > 18:
        raise InvalidField(field, "not a cursor returned by this endpoint")
    return at, int(key)
