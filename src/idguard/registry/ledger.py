"""Appending to the ledger: the backbone every status change goes through.

`record` changes a card's status and appends the event in the same transaction. It writes with
Core statements on the session's connection (no unit-of-work flush): this is the hot path of
every loss report, and the ORM object is kept in step with `set_committed_value`.
`record_guarded` does the same for a card not yet read, only if the use-case's rules, stated in
SQL (a `Guard`), hold on the row: the common loss report checks and writes in one statement
on PostgreSQL, where a locking read, Python's checks and `record` took two round trips.

Each event carries its hash chain value (core.chain): SHA-256 over the previous event's chain,
kept in `ledger_head.chain`, and the event's canonical text. The head row's lock, which already
orders the appends, orders the chain too. On PostgreSQL the hash is computed by the appending
statement itself (`sha256()` over the text core.chain defines), so an append stays one
statement and one round trip; on SQLite by a Python function the head's UPDATE calls, under the
write lock.

The loss report's statements (`record_guarded`, and SQLite's appends) are compiled once and run
on the DBAPI cursor of the session's own transaction (`_Statements`): SQLAlchemy's work on each
execution cost more client CPU than the statement's round trip. Same SQL, same bound values,
errors raised as `Connection.execute` raises them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from idguard import uow
from idguard.core import chain as hash_chain
from idguard.core.grants import Actor
from idguard.db.types import StrEnumText, UTCDateTime
from idguard.registry.lifecycle import CardStatus, EventKind, transition
from idguard.registry.models import Card, LedgerEvent, LedgerHead, LossReport

_head = cast(sa.Table, LedgerHead.__table__)
_events = cast(sa.Table, LedgerEvent.__table__)
_cards = cast(sa.Table, Card.__table__)
_CARD = sa.inspect(Card)

# The values of an event in its canonical text, after its seq (core.chain.canonical).
EVENT_COLUMNS = (
    "card_id",
    "person_id",
    "event",
    "status_before",
    "status_after",
    "office",
    "actor",
    "at",
    "reason",
    "reference",
)
# SQLite: the head's UPDATE takes the next seq and computes the chain with a Python function
# registered on the connection (`_sqlite_link`, core.chain's link): the same statements as
# before the chain, and the hash computed under the write lock that orders the appends.
_SQLITE_LINK = "idguard_chain_link"
_NEXT_SEQ = (
    sa.update(_head)
    .where(_head.c.id == 1)
    .values(
        seq=_head.c.seq + 1,
        chain=sa.func.idguard_chain_link(
            _head.c.chain, _head.c.seq + 1, sa.bindparam("ev_tail", type_=sa.Text), type_=sa.Text
        ),
    )
    .returning(_head.c.seq, _head.c.chain)
)


def _sqlite_link(previous: str, seq: int, tail: str) -> str:
    return hash_chain.link(previous, f"[{seq}," + tail)


_SET_STATUS = (
    sa.update(_cards)
    .where(_cards.c.id == sa.bindparam("card_id"))
    .values(status=sa.bindparam("status"), updated_at=sa.bindparam("at"))
)


# PostgreSQL: set the status, take the next seq, append the event, in one statement. `head`
# refers to `changed`, so the card row (already locked by the caller) is updated before the head
# row is locked: the same order as the three-statement path, so no new lock cycle can arise.
_changed = (
    sa.update(_cards)
    .where(_cards.c.id == sa.bindparam("card_id"))
    .values(status=sa.bindparam("new_status", type_=_cards.c.status.type), updated_at=sa.bindparam("at"))
    .returning(_cards.c.id)
    .cte("changed")
)


# The chain value in SQL: exactly core.chain.link(head.chain, canonical(seq, values)), with the
# canonical text's tail (every value after the seq) computed in Python and bound as `ev_tail`
# (or, for `record_guarded`, bound around the holder's id that the statement reads). In an
# UPDATE's SET every column reference is the old row's: the previous chain and seq.
def _pg_next_chain(tail: sa.ColumnElement[str]) -> sa.ColumnElement[str]:
    return sa.func.encode(
        sa.func.sha256(
            sa.func.convert_to(
                _head.c.chain
                + sa.literal("\n[", sa.Text)
                + sa.cast(_head.c.seq + 1, sa.Text)
                + sa.literal(",", sa.Text)
                + tail,
                sa.literal("UTF8", sa.Text),
            )
        ),
        sa.literal("hex", sa.Text),
    )


_PG_NEXT_CHAIN = _pg_next_chain(sa.bindparam("ev_tail", type_=sa.Text))


# The statement also queues the NOTIFY that wakes every worker (uow.py: delivered at commit),
# so the commit needs no round trip of its own for it.
_PG_NOTIFY = sa.func.pg_notify(sa.literal(uow.NOTIFY_CHANNEL, sa.Text), sa.literal("", sa.Text))


def _pg_append(allocated: sa.CTE) -> sa.Insert:
    """INSERT the event whose seq and chain the `allocated` CTE (an UPDATE of the head) returns."""
    return (
        sa.insert(_events)
        .from_select(
            ["seq", *EVENT_COLUMNS, "chain"],
            sa.select(
                allocated.c.seq,
                *(sa.bindparam(f"ev_{name}", type_=_events.c[name].type) for name in EVENT_COLUMNS),
                allocated.c.chain,
            ),
        )
        .returning(_events.c.seq, _PG_NOTIFY)
    )


_allocated = (
    sa.update(_head)
    .where(_head.c.id == 1, sa.exists(sa.select(_changed.c.id)))
    .values(seq=_head.c.seq + 1, chain=_PG_NEXT_CHAIN)
    .returning(_head.c.seq, _head.c.chain)
    .cte("head")
)
_PG_CHANGE_AND_APPEND = _pg_append(_allocated)
# The same, inserting one more row (a loss report) in a data-modifying CTE of the statement:
# built once per table and set of columns.
_PG_WITH_ROW: dict[tuple[str, tuple[str, ...]], sa.Insert] = {}
_SQLITE_ROW: dict[tuple[str, tuple[str, ...]], sa.Insert] = {}
# Per mapped class: its table, its columns' names, and (attribute, parameter) of every column
# attribute, the parameter named `row_` + the column's name.
_ROW_COLUMNS: dict[type, tuple[sa.Table, tuple[str, ...], tuple[tuple[str, str], ...]]] = {}


def _pg_change_append_and_insert(table: sa.Table, columns: tuple[str, ...]) -> sa.Insert:
    key = (table.name, columns)
    stmt = _PG_WITH_ROW.get(key)
    if stmt is None:
        row = (
            sa.insert(table)
            .values({name: sa.bindparam(f"row_{name}", type_=table.c[name].type) for name in columns})
            .cte("row")
        )
        stmt = _PG_WITH_ROW[key] = _pg_append(_allocated).add_cte(row)
    return stmt


_T = TypeVar("_T")
# The classes `built` makes, and their instrumentation.
_MANAGERS: dict[type, Any] = {cls: sa.orm.class_mapper(cls).class_manager for cls in (Card, LossReport)}


def built(cls: type[_T], values: dict[str, Any]) -> _T:
    """A new (transient) object of a mapped class holding `values`, as `cls(**values)` would
    hold them, without the instrumented constructor: its change events on each value are what
    `make_transient_to_detached` discards at once, and cost more than the rest of the object's
    making on the loss report's hot path. For plain tables whose constructor does nothing else
    (no defaults, no validators): a loss report, a card read back."""
    obj = _MANAGERS[cls].new_instance()
    obj.__dict__.update(values)
    return cast(_T, obj)


def _row_values(obj: object) -> tuple[sa.Table, tuple[str, ...], dict[str, Any]]:
    """The table of a new object, its columns, and its row: every column's value, by parameter
    name (`row_` + the column's name, as the statements inserting it bind them)."""
    cls = type(obj)
    found = _ROW_COLUMNS.get(cls)
    if found is None:
        mapper = sa.inspect(cls)
        props = [(prop.key, prop.columns[0].name) for prop in mapper.column_attrs]
        found = _ROW_COLUMNS[cls] = (
            cast(sa.Table, mapper.local_table),
            tuple(column for _, column in props),
            tuple((key, f"row_{column}") for key, column in props),
        )
    table, columns, pairs = found
    held = obj.__dict__  # a new object holds every value it was given (`built` or a constructor)
    try:
        return table, columns, {param: held[key] for key, param in pairs}
    except KeyError:  # one not given: its default, as the attribute reads it
        return table, columns, {param: getattr(obj, key) for key, param in pairs}


# An issue event (the card was just inserted, no status to change): the head and the event.
_PG_APPEND = _pg_append(
    sa.update(_head)
    .where(_head.c.id == 1)
    .values(seq=_head.c.seq + 1, chain=_PG_NEXT_CHAIN)
    .returning(_head.c.seq, _head.c.chain)
    .cte("head")
)


# SQLite: the event, every column bound (prefixed: a parameter named like a column is reserved).
_INSERT_EVENT = sa.insert(_events).values(
    {
        name: sa.bindparam(f"ev_{name}", type_=_events.c[name].type)
        for name in ("seq", *EVENT_COLUMNS, "chain")
    }
)


_MEMBERS = 256  # the most values an enum's processor keeps: more than any enum of ours has


def _by_member(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`process`, an enum type's bind processor (a pure function of the value), remembering what
    it made of each value it met, by type and value (a member and its string, equal in Python,
    are kept apart). An error is raised each time; at most _MEMBERS values are kept."""
    made: dict[tuple[type, Any], Any] = {}

    def processed(value: Any) -> Any:
        key = (type(value), value)
        try:
            return made[key]
        except KeyError:
            done = process(value)
            if len(made) < _MEMBERS:
                made[key] = done
            return done
        except TypeError:  # unhashable: not an enum's value, processed (and refused) as it is
            return process(value)

    return processed


class _Direct:
    """A statement compiled once for one dialect, to run straight on the DBAPI cursor of a
    connection's transaction (`_Statements.run`): on the loss report's hot path SQLAlchemy's
    work on every execution (the cache key, the compiled lookup, the execution context, the
    result object) cost more client CPU than the driver and the round trip. The same SQL and
    the same values as `conn.execute`: its bind and result processors are the compiled
    statement's own. A UTC time is processed once per change (`args`' memo): a status change
    binds its time in three statements."""

    __slots__ = ("_results", "_shared", "_types", "names", "plan", "positional", "sql")

    def __init__(self, statement: sa.Executable, dialect: sa.Dialect) -> None:
        compiled = cast(Any, statement).compile(dialect=dialect)
        if compiled.escaped_bind_names or compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError("a direct statement binds plain parameters only")
        processors = compiled._bind_processors
        types = {name: bind.type for bind, name in compiled.bind_names.items()}
        self.sql: str = compiled.string
        static: dict[str, Any] = {}  # literals of the statement's construction: processed once
        required: dict[str, Any] = {}  # the caller's parameters: name -> its processor or None
        for bind, name in compiled.bind_names.items():
            process = processors.get(name)
            if bind.required or (bind.value is None and bind.callable is None):
                required[name] = process
            else:
                value = bind.effective_value
                static[name] = value if process is None else process(value)
        self.positional = bool(compiled.positional)
        # Per parameter (in the SQL's order for a positional driver): its name, its processor,
        # and whether it is a literal, with its processed value.
        self.names = tuple(compiled.positiontup if self.positional else [*required, *static])
        # A UTC time's processor depends on nothing but the instant (UTCDateTime): memoised per
        # change by value, so its plan entry leaves the value as given and `_shared` processes it.
        shared = {
            name
            for name, process in required.items()
            if process is not None and isinstance(types[name], UTCDateTime)
        }
        # An enum's processor (a status, an event kind, a reason) is kept with what it made of
        # each member: the same few values on every change (`_by_member`).
        for name, process in required.items():
            if process is not None and isinstance(types[name], sa.Enum | StrEnumText):
                required[name] = _by_member(process)
        self.plan = tuple(
            (name, None, True, static[name])
            if name in static
            else (name, None if name in shared else required[name], False, None)
            for name in self.names
        )
        self._shared = tuple((i, required[name]) for i, name in enumerate(self.names) if name in shared)
        self._types = tuple(entry.type for entry in compiled._result_columns)
        # (index, processor) of each result column that has one, once the first result told
        self._results: tuple[tuple[int, Any], ...] | None = None

    def args(self, params: dict[str, Any], memo: dict[Any, Any]) -> Any:
        """The values the driver receives for `params` (every parameter the statement binds;
        others are ignored), as a tuple or a dict as the driver takes them. `memo`: the UTC times
        processed so far in this change (by value), filled here."""
        values = [
            static if literal else params[name] if process is None else process(params[name])
            for name, process, literal, static in self.plan
        ]
        for i, process in self._shared:
            value = values[i]
            try:
                values[i] = memo[value]
            except KeyError:
                values[i] = memo[value] = process(value)
        return tuple(values) if self.positional else dict(zip(self.names, values, strict=True))


class _Statements:
    """The statements of one change on `conn`, each run on the DBAPI cursor (`_Direct`), one
    cursor for all of them (`close` when the change is written). An error is raised as
    `conn.execute` raises it (`_handle_dbapi_exception`: wrapped, and a lost connection
    invalidated). Listeners of cursor executions (a test counting statements, tracing) still
    see every statement: with any, `run` takes `conn.execute`."""

    __slots__ = ("_cursor", "_memo", "compiled", "conn", "listened")

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        dispatch = conn.dispatch
        self.listened = (conn._has_events or conn.engine._has_events) and bool(
            dispatch.before_cursor_execute or dispatch.after_cursor_execute
        )
        dialect = conn.dialect
        found = _DIRECT.get(id(dialect))
        if found is None:
            found = _DIRECT[id(dialect)] = (dialect, {})
        self.compiled = found[1]
        self._cursor: Any = None
        self._memo: dict[Any, Any] = {}  # `_Direct.args`' processed UTC times

    def run(self, statement: sa.Executable, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Execute `statement` with `params` (every parameter it binds; others are ignored);
        the rows it returns."""
        conn = self.conn
        if self.listened:
            result = conn.execute(statement, params)
            return [tuple(row) for row in result] if result.returns_rows else []
        found = self.compiled.get(id(statement))
        if found is None:
            found = self.compiled[id(statement)] = (statement, _Direct(statement, conn.dialect))
        direct = found[1]
        args = direct.args(params, self._memo)
        cursor = self._cursor
        if cursor is None:
            cursor = self._cursor = conn.connection.cursor()
        try:
            cursor.execute(direct.sql, args)
            rows = cursor.fetchall() if direct._types else []
        except BaseException as exc:
            self._cursor = None  # closed by the handler
            conn._handle_dbapi_exception(exc, direct.sql, args, cursor, None)
        results = direct._results
        if results is None and direct._types:  # psycopg builds its description anew on each read
            processors = [
                type_._cached_result_processor(conn.dialect, column[1])
                for type_, column in zip(direct._types, cursor.description, strict=True)
            ]
            results = direct._results = tuple((i, p) for i, p in enumerate(processors) if p is not None)
        if results:
            out = []
            for row in rows:
                processed = list(row)
                for i, process in results:
                    processed[i] = process(processed[i])
                out.append(tuple(processed))
            return out
        return cast(list[tuple[Any, ...]], rows)

    def close(self) -> None:
        """Close the change's cursor (it is not needed again)."""
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None


# Per dialect (each engine's own: its compiled SQL can depend on the server's version), per
# statement: its _Direct. The objects whose ids are keys are kept alive here, so no id is reused.
_DIRECT: dict[int, tuple[sa.Dialect, dict[int, tuple[sa.Executable, _Direct]]]] = {}


# (name, parameter) of each of an event's values: its INSERT binds them prefixed.
_EVENT_PARAMS = tuple((name, f"ev_{name}") for name in EVENT_COLUMNS)


def _append(statements: _Statements, values: dict[str, object], tail: str) -> int:
    """Allocate the next seq and append the event with its chain value (SQLite).

    The UPDATE takes the head row's lock until commit: concurrent writers queue here, so they
    commit in sequence order, a rollback gives the number back (no gaps), and each event links
    from the one committed before it.
    """
    pooled = statements.conn.connection  # the DBAPI connection's pool record outlives this checkout
    if _SQLITE_LINK not in pooled.info:
        pooled.driver_connection.create_function(_SQLITE_LINK, 3, _sqlite_link, deterministic=True)  # type: ignore[union-attr]
        pooled.info[_SQLITE_LINK] = True
    ((seq, chain),) = statements.run(_NEXT_SEQ, {"ev_tail": tail})
    params = {param: values[name] for name, param in _EVENT_PARAMS}
    params["ev_seq"] = seq
    params["ev_chain"] = chain
    statements.run(_INSERT_EVENT, params)
    return int(seq)


def _sqlite_insert_row(
    statements: _Statements, table: sa.Table, columns: tuple[str, ...], row: dict[str, Any]
) -> None:
    """INSERT `row` (every column of `table`, `_row_values`) into `table` (SQLite)."""
    key = (table.name, columns)
    insert = _SQLITE_ROW.get(key)
    if insert is None:
        insert = _SQLITE_ROW[key] = sa.insert(table).values(
            {name: sa.bindparam(f"row_{name}", type_=table.c[name].type) for name in columns}
        )
    statements.run(insert, row)


def record(
    session: Session,
    card: Card,
    *,
    event: EventKind,
    actor: Actor | None,
    office: str | None,
    at: dt.datetime,
    reason: str | None = None,
    reference: str | None = None,
    with_row: object | None = None,
) -> int:
    """Apply `event` to the card: set its status to what the lifecycle table says
    (`lifecycle.transition`, RuleViolation if the event cannot happen to it) and append the
    event that says so; return its seq.

    An issue event is the card's first, with no status before; the card row must already be
    flushed (the event references it).

    `with_row`, a new ORM object of a plain table (every column set, its key chosen by the
    caller, no sealed fields: a loss report), is inserted with the event and becomes persistent
    in the session as if flushed; on PostgreSQL in the same statement (one round trip less).
    """
    initial = event.is_issue
    if with_row is not None and initial:
        raise ValueError("with_row goes with a status change")
    new_status = transition(event, None if initial else card.status)
    if card in session.new:
        session.flush()
    conn = session.connection()
    values = {
        "card_id": card.id,
        "person_id": card.person_id,
        "event": event,
        "status_before": None if initial else card.status,
        "status_after": new_status,
        "office": office,
        "actor": actor.staff_id if actor else None,
        "at": at,
        "reason": reason,
        "reference": reference,
    }
    tail = hash_chain.canonical_tail([values[name] for name in EVENT_COLUMNS])  # type: ignore[misc]
    if conn.dialect.name == "postgresql":
        # One round trip instead of three: the status change, the sequence allocation, the chain
        # and the event in one statement (the loss report's hot path; a round trip costs more
        # than the work). The card row is updated before the head, as below: `head` reads
        # `changed`. Prefixed names: an UPDATE would take a parameter named like a cards column
        # as a SET value.
        params = {f"ev_{k}": v for k, v in values.items()}
        params["ev_tail"] = tail
        if initial:
            seq = int(conn.execute(_PG_APPEND, params).scalar_one())
        else:
            stmt = _PG_CHANGE_AND_APPEND
            params.update(card_id=card.id, new_status=new_status, at=at)
            if with_row is not None:
                table, columns, row = _row_values(with_row)
                stmt = _pg_change_append_and_insert(table, columns)
                params.update(row)
            seq = int(conn.execute(stmt, params).scalar_one())
    else:
        statements = _Statements(conn)
        try:
            if not initial:
                statements.run(_SET_STATUS, {"card_id": card.id, "status": new_status, "at": at})
            seq = _append(statements, values, tail)
            if with_row is not None:
                _sqlite_insert_row(statements, *_row_values(with_row))
        finally:
            statements.close()
    if not initial:
        set_committed_value(card, "status", new_status)
        set_committed_value(card, "updated_at", at)
    if with_row is not None:  # persistent, as a flush would have left it
        make_transient_to_detached(with_row)
        session.add(with_row)
    # Every worker applies it before the answer (uow.py); PostgreSQL's NOTIFY is already queued.
    uow.changed(session, ledger_seq=seq, notified=True)
    return seq


class Guard:
    """The rules of one use-case as SQL over the card row, for `record_guarded`: `condition` (its
    parameters bound by the caller) must hold, beside the card's id and its status before the
    event, when the change takes the card's lock. `returning`: the card columns read back, kept
    on the card object that comes back. Made once per use-case, at import (its statements are
    built on first use and kept here)."""

    __slots__ = ("_statements", "condition", "returning")

    def __init__(self, condition: sa.ColumnElement[bool], *, returning: tuple[str, ...]) -> None:
        self.condition = condition
        self.returning = returning
        self._statements: dict[tuple[str, str, tuple[str, ...]], sa.Executable] = {}

    def _changed(self) -> sa.Update:
        return (
            sa.update(_cards)
            .where(
                _cards.c.id == sa.bindparam("card_id"),
                _cards.c.status == sa.bindparam("status_before", type_=_cards.c.status.type),
                self.condition,
            )
            .values(
                status=sa.bindparam("new_status", type_=_cards.c.status.type), updated_at=sa.bindparam("at")
            )
            .returning(_cards.c.person_id, *(_cards.c[name] for name in self.returning))
        )

    def statement(self, dialect: str, table: sa.Table, columns: tuple[str, ...]) -> sa.Executable:
        key = (dialect, table.name, columns)
        stmt = self._statements.get(key)
        if stmt is None:
            stmt = self._statements[key] = (
                self._pg(table, columns) if dialect == "postgresql" else self._changed()
            )
        return stmt

    def _pg(self, table: sa.Table, columns: tuple[str, ...]) -> sa.Select[Any]:
        """PostgreSQL: the change, the seq, the chain, the event, the row and the NOTIFY in one
        statement, each step reading the one before, so nothing happens unless the card row
        passed the guard (a data-modifying CTE runs even when nothing reads it: `row` reads
        `head`). The chain's tail is bound around the holder's id, which only `changed` knows:
        `uuid::text` writes a UUID as core.chain does (lower-case, hyphenated)."""
        changed = self._changed().cte("changed")
        tail = (
            sa.bindparam("ev_tail_a", type_=sa.Text)
            + sa.select(sa.cast(changed.c.person_id, sa.Text)).scalar_subquery()
            + sa.bindparam("ev_tail_b", type_=sa.Text)
        )
        head = (
            sa.update(_head)
            .where(_head.c.id == 1, sa.exists(sa.select(changed.c.person_id)))
            .values(seq=_head.c.seq + 1, chain=_pg_next_chain(tail))
            .returning(_head.c.seq, _head.c.chain)
            .cte("head")
        )
        values = (
            changed.c.person_id
            if name == "person_id"
            else sa.bindparam(f"ev_{name}", type_=_events.c[name].type)
            for name in EVENT_COLUMNS
        )
        event = (
            sa.insert(_events)
            .from_select(
                ["seq", *EVENT_COLUMNS, "chain"],
                sa.select(head.c.seq, *values, head.c.chain).select_from(head.join(changed, sa.true())),
            )
            .returning(_events.c.seq)
            .cte("event")
        )
        row = (
            sa.insert(table)
            .from_select(
                list(columns),
                sa.select(
                    *(sa.bindparam(f"row_{name}", type_=table.c[name].type) for name in columns)
                ).select_from(head),
            )
            .cte("row")
        )
        return (
            sa.select(
                event.c.seq, _PG_NOTIFY, changed.c.person_id, *(changed.c[name] for name in self.returning)
            )
            .select_from(event.join(changed, sa.true()))
            .add_cte(row)
        )


def record_guarded(
    session: Session,
    guard: Guard,
    params: dict[str, Any],
    *,
    card_id: uuid.UUID,
    before: CardStatus,
    event: EventKind,
    actor: Actor,
    office: str,
    at: dt.datetime,
    reason: str | None,
    reference: str | None,
    with_row: object,
) -> Card | None:
    """`record` for a card that is not loaded, if it is stored as `before` and `guard` holds on
    its row (`params` bind the guard's condition); None, with nothing written and no lock taken,
    if not: the caller then takes the plain path, which finds out why. The same rows as `record`
    (the status, the event with its chain, `with_row`), one statement on PostgreSQL and four on
    SQLite instead of a locking read and then `record`.

    Returns the session's card: the one it already held, or a new persistent one with the
    guard's `returning` columns loaded (any other attribute loads on first use)."""
    new_status = transition(event, before)
    conn = session.connection()
    values: dict[str, Any] = {
        "card_id": card_id,
        "person_id": None,  # the holder's: known once the card row is read
        "event": event,
        "status_before": before,
        "status_after": new_status,
        "office": office,
        "actor": actor.staff_id,
        "at": at,
        "reason": reason,
        "reference": reference,
    }
    table, columns, row = _row_values(with_row)
    change = {"card_id": card_id, "status_before": before, "new_status": new_status, "at": at, **params}
    stmt = guard.statement(conn.dialect.name, table, columns)
    statements = _Statements(conn)
    try:
        if conn.dialect.name == "postgresql":
            # The canonical tail around the holder's id (EVENT_COLUMNS: card, then person).
            change["ev_tail_a"] = f'"{card_id}","'  # canonical_tail([card_id]), then the id's opening quote
            change["ev_tail_b"] = '",' + hash_chain.canonical_tail([values[n] for n in EVENT_COLUMNS[2:]])
            change.update({param: values[name] for name, param in _EVENT_PARAMS if name != "person_id"})
            change.update(row)
            found = statements.run(stmt, change)
            if not found:
                return None
            ((seq, _, values["person_id"], *read),) = found
        else:
            found = statements.run(stmt, change)
            if not found:
                return None
            ((values["person_id"], *read),) = found
            tail = hash_chain.canonical_tail([values[name] for name in EVENT_COLUMNS])
            seq = _append(statements, values, tail)
            _sqlite_insert_row(statements, table, columns, row)
    finally:
        statements.close()
    make_transient_to_detached(with_row)  # persistent, as a flush would have left it
    session.add(with_row)
    uow.changed(session, ledger_seq=int(seq), notified=True)
    loaded = dict(zip(guard.returning, read, strict=True))
    loaded.update(person_id=values["person_id"], status=new_status, updated_at=at)
    card = session.identity_map.get(_CARD.identity_key_from_primary_key((card_id,)))
    if isinstance(card, Card):  # already in the session (as after a lock): kept in step
        for name, value in loaded.items():
            set_committed_value(card, name, value)
        return card
    loaded["id"] = card_id
    card = built(Card, loaded)
    make_transient_to_detached(card)
    session.add(card)
    return card


def record_on_cards(
    session: Session,
    cards: Sequence[Card],
    *,
    event: EventKind,
    actor: Actor | None,
    office: str | None,
    at: dt.datetime,
    reason: str | None = None,
    reference: str | None = None,
) -> list[int]:
    """A watchlist event (listing, lifting, protection: `lifecycle.WATCHLIST_EVENTS`) on every
    card of one person, so each worker's index re-reads those cards with the person's new alert
    flags. No status changes. The caller holds the person's lock (the cards are locked here,
    after it: the registry's lock order)."""
    if not event.is_watchlist:
        raise ValueError(f"{event.value} is not a watchlist event")
    return [
        record(
            session, card, event=event, actor=actor, office=office, at=at, reason=reason, reference=reference
        )
        for card in cards
    ]
