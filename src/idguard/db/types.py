"""Reusable column types, so SQLite and PostgreSQL behave the same."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """Stores aware datetimes as UTC; always returns aware UTC (SQLite forgets the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def str_enum(enum_cls: type[enum.StrEnum], name: str) -> sa.Enum:
    """A portable enum column: VARCHAR + CHECK constraint holding the API strings."""
    return sa.Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=24,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class StrEnumText(sa.TypeDecorator[Any]):
    """A StrEnum stored as its plain string in a VARCHAR, read back as the enum. No CHECK
    constraint (unlike `str_enum`): for an open vocabulary such as ledger events, where a new
    member needs no migration."""

    impl = sa.String
    cache_ok = True

    def __init__(self, enum_cls: type[enum.StrEnum], length: int) -> None:
        super().__init__(length)
        self.enum_cls = enum_cls

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self.enum_cls(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> enum.StrEnum | None:
        return None if value is None else self.enum_cls(value)
