"""Keyset pagination, newest first: the one way every list in idguard pages (the check log, the
comparison log, webhook deliveries). A page continues strictly after the last row of the previous
one by its sort keys, so it stays correct while rows are appended, unlike an offset; the keys end
in a unique column so no two rows tie. How the last row's keys travel to the client (an opaque
cursor, a plain id) is the route's business: api/paging.py has the opaque cursor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import QueryableAttribute, Session

R = TypeVar("R")
Key = QueryableAttribute[Any]


@dataclass(frozen=True, slots=True)
class Page(Generic[R]):
    rows: list[R]
    more: bool  # rows exist after the last one


def _before(keys: Sequence[Key], values: Sequence[Any]) -> sa.ColumnElement[bool]:
    """Rows that sort after `values` in descending key order: k0 < v0, or k0 = v0 and the rest
    sort after — spelled out rather than as a row-value comparison so each bound takes its
    column's type (UTC datetimes and UUIDs on SQLite)."""
    head, value = keys[0], values[0]
    if len(keys) == 1:
        return sa.and_(head < value)
    return sa.or_(head < value, sa.and_(head == value, _before(keys[1:], values[1:])))


def newest_first(
    session: Session,
    stmt: sa.Select[*tuple[Any, ...]],
    *,
    keys: Sequence[Key],
    after: Sequence[Any] | None,
    limit: int,
    scalars: bool = True,
) -> Page[Any]:
    """Up to `limit` rows of `stmt` in descending `keys` order, after the row whose keys are
    `after` (None: from the newest). `scalars`: the rows are the first column's objects."""
    if after is not None:
        stmt = stmt.where(_before(keys, after))
    stmt = stmt.order_by(*(k.desc() for k in keys)).limit(limit + 1)
    rows = list(session.scalars(stmt)) if scalars else list(session.execute(stmt).all())
    return Page(rows=rows[:limit], more=len(rows) > limit)
