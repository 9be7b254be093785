"""Personal data sealed at rest (issue 16): the registry's free-text personal fields — a person's
and a card's name and address, a finder's name and phone — and the free text staff, units and
citizens write that may name people — a blacklist listing's note and its events' reasons, the
reasons of victim protection, an incident's closing note, a case's finding and every case event's
text, a unit's suspension reason and the webhook messages (case notices carry their text) — are
stored only as AES-256-GCM ciphertext (`<field>_sealed`, binary) with the row's key id beside
them (`seal_key`), under the key ring of IDGUARD_DATA_KEYS (core.sealing.KeyRing, attached
to the engine by make_engine). SEALED_TABLES lists them all; docs/operations.md says why each
other free-text column stays clear.

Call sites stay as they were: `person.name` reads the clear text and `Person(name=…)` or
`card.name = …` writes it. A `Sealed` attribute keeps the clear text in the instance only; a
flush seals what was written, under the active key, with the row's table, column and id as
associated data, so no clear value ever reaches a statement. Reading opens lazily, once per
loaded value, with the ring of the session that loaded the row (so a row read in a request and
used after its session closed still opens).

A row's fields share one key id: writing one field of a row sealed under an older key re-seals
all of them, and `rekey` re-seals whole rows in batches. Queries cannot compare sealed columns:
every lookup that needs a name first narrows by id number (a handful of rows) and compares the
opened names in memory (found_cards.lookup_held, the verification index build), so the database
holds no clear column and no blind index from which equal names could be told apart.

Core-level code (the demo's bulk load, the migration, the index build) uses `seal_row` and
`open_value` with the same associated data.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar, overload

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session, attributes, object_session

from idguard import uow
from idguard.core.sealing import KeyRing, KeyRingError, ring_for, sealing_context

__all__ = [
    "SEALED_TABLES",
    "KeyRingError",
    "Sealed",
    "SealedTable",
    "card_name",
    "open_value",
    "rekey",
    "ring_of",
    "seal_row",
    "sealed_values",
    "track",
]

T = TypeVar("T", str, str | None)

_CLEAR = "_idguard_clear"  # field -> (the sealed bytes it came from, or _PENDING; clear text)
_RING = "_idguard_ring"  # the ring of the session that loaded the row
_PENDING = object()


@dataclass(frozen=True, slots=True)
class SealedTable:
    """One table's sealed fields: `<field>_sealed` columns, keyed by `row_id` and `seal_key`.

    `key` is the row id's Python type (it decides the associated data: a UUID's 16 bytes, any
    other id as text). `db_assigned`: the row id is the database's (an autoincrement integer),
    unknown before the INSERT, so a new row's fields are sealed right after it, by an UPDATE in
    the same flush (`_after_insert`): the INSERT carries NULL, never the clear text."""

    table: str
    row_id: str
    fields: tuple[str, ...]
    key: type = uuid.UUID
    db_assigned: bool = False

    def column(self, field: str) -> str:
        return f"{field}_sealed"

    def clause(self) -> sa.TableClause:
        """A lightweight table of the columns sealing needs (no model import: rekey, status)."""
        key_type: Any = {uuid.UUID: sa.Uuid(), int: sa.BigInteger()}.get(self.key, sa.String())
        return sa.table(
            self.table,
            sa.column(self.row_id, key_type),
            sa.column("seal_key", sa.String()),
            *(sa.column(self.column(f), sa.LargeBinary()) for f in self.fields),
        )


SEALED_TABLES: dict[str, SealedTable] = {
    spec.table: spec
    for spec in (
        # Personal data of the registry (migration 0012).
        SealedTable("persons", "id", ("name", "address")),
        SealedTable("cards", "id", ("name", "address")),
        SealedTable("found_cards", "found_no", ("finder_name", "finder_phone"), key=str),
        # Free text written by staff, units and citizens, which may name people (migration 0014;
        # docs/operations.md lists every column and the ones deliberately left clear).
        SealedTable("blacklist_entries", "entry_no", ("note",), key=str),
        SealedTable("blacklist_events", "id", ("reason",), key=int, db_assigned=True),
        SealedTable("protection_events", "id", ("reason",), key=int, db_assigned=True),
        SealedTable("incidents", "incident_no", ("note",), key=str),
        SealedTable("cases", "case_no", ("finding",), key=str),
        SealedTable("case_events", "id", ("text",), key=int, db_assigned=True),
        SealedTable("units", "code", ("status_reason",), key=str),
        SealedTable("webhook_messages", "id", ("body",)),
    )
}


def ring_of(where: Session | sa.Engine | sa.Connection) -> KeyRing:
    """The key ring of the database behind a session, connection or engine (make_engine's)."""
    bind: Any = where.get_bind() if isinstance(where, Session) else where
    engine = bind.engine if isinstance(bind, sa.Connection) else bind
    ring = ring_for(engine)
    if ring is None:
        raise KeyRingError(
            "this engine has no key ring for personal data: build it with "
            "idguard.db.engine.make_engine(settings)"
        )
    return ring


def open_value(
    ring: KeyRing, spec: SealedTable, field: str, row_id: object, key_id: str, sealed: bytes | None
) -> str | None:
    if sealed is None:
        return None
    return ring.open(key_id, bytes(sealed), context=sealing_context(spec.table, field, row_id))


def seal_row(
    ring: KeyRing, spec: SealedTable, row_id: object, clear: dict[str, str | None]
) -> dict[str, Any]:
    """`{seal_key, <field>_sealed…}` for one row's clear fields (None stays None)."""
    out: dict[str, Any] = {"seal_key": ring.active_key_id}
    for field in spec.fields:
        value = clear[field]
        out[spec.column(field)] = (
            None if value is None else ring.seal(value, context=sealing_context(spec.table, field, row_id))
        )
    return out


def card_name(ring: KeyRing, card_id: object, key_id: str, sealed: bytes) -> str:
    """A card's name opened from its columns, for Core readers (benches, tools): select
    `Card.id, Card.seal_key, Card.name_sealed` where the clear column used to be."""
    return ring.open(key_id, bytes(sealed), context=sealing_context("cards", "name", card_id))


def sealed_values(ring: KeyRing, table: str, row: dict[str, Any]) -> dict[str, Any]:
    """A Core insert's values with `table`'s clear personal fields sealed (for bulk writers:
    benches, imports). `row` must hold the row id."""
    spec = SEALED_TABLES[table]
    out = {k: v for k, v in row.items() if k not in spec.fields}
    out.update(seal_row(ring, spec, row[spec.row_id], {f: row.get(f) for f in spec.fields}))
    return out


class Sealed(Generic[T]):
    """A model attribute whose clear value lives only in memory; the column is `<name>_sealed`."""

    def __init__(self) -> None:
        self.field = ""
        self.column = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.field = name
        self.column = f"{name}_sealed"

    @overload
    def __get__(self, obj: None, owner: type) -> Self: ...
    @overload
    def __get__(self, obj: object, owner: type) -> T: ...
    def __get__(self, obj: object | None, owner: type) -> Self | T:
        if obj is None:
            return self
        state = obj.__dict__
        cache: dict[str, tuple[object, Any]] = state.setdefault(_CLEAR, {})
        sealed = state.get(self.column)
        hit = cache.get(self.field)
        if hit is not None and (hit[0] is _PENDING or (sealed is not None and hit[0] == sealed)):
            return hit[1]  # type: ignore[no-any-return]
        sealed = getattr(obj, self.column)  # loads the column when it was expired
        if sealed is None:
            return None  # type: ignore[return-value]
        ring = state.get(_RING)
        if ring is None:
            session = object_session(obj)
            if session is None:
                raise KeyRingError(
                    f"{type(obj).__name__}.{self.field}: a row with no session has no key ring"
                )
            ring = ring_of(session)
        spec = _spec(obj)
        clear = open_value(ring, spec, self.field, getattr(obj, spec.row_id), obj.seal_key, sealed)  # type: ignore[attr-defined]
        cache[self.field] = (sealed, clear)
        return clear  # type: ignore[return-value]

    def __set__(self, obj: object, value: T) -> None:
        state = obj.__dict__
        state.setdefault(_CLEAR, {})[self.field] = (_PENDING, value)
        if sa.inspect(obj).persistent:
            attributes.flag_dirty(obj)  # a flush must see it (before_flush seals it)


def _spec(obj: object) -> SealedTable:
    return SEALED_TABLES[obj.__table__.name]  # type: ignore[attr-defined]


def _seal_pending(obj: object, ring: KeyRing) -> None:
    """Seal what was written to `obj` since its last flush (the whole row when its key is old)."""
    state = obj.__dict__
    cache: dict[str, tuple[object, Any]] = state.get(_CLEAR) or {}
    spec = _spec(obj)
    pending = {f for f, (source, _) in cache.items() if source is _PENDING}
    if not pending:
        return
    if getattr(obj, spec.row_id) is None:  # a new row: its id is part of the associated data
        if spec.db_assigned:
            return  # the database gives the id: sealed right after the INSERT (_after_insert)
        setattr(obj, spec.row_id, uuid.uuid4())
    row_id = getattr(obj, spec.row_id)
    fields: Iterable[str] = pending
    if state.get("seal_key") != ring.active_key_id:
        # One key id per row: fields not written now are opened (old key) and sealed again.
        fields = spec.fields
    for field in fields:
        value = getattr(obj, field)
        sealed = (
            None if value is None else ring.seal(value, context=sealing_context(spec.table, field, row_id))
        )
        setattr(obj, spec.column(field), sealed)
        cache[field] = (sealed, value)
    obj.seal_key = ring.active_key_id  # type: ignore[attr-defined]


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    ring: KeyRing | None = None
    for obj in (*session.new, *session.dirty):
        cache = obj.__dict__.get(_CLEAR)
        if cache and any(source is _PENDING for source, _ in cache.values()):
            ring = ring or ring_of(session)
            _seal_pending(obj, ring)


def _on_load(obj: object, context: Any) -> None:
    """Remember the loading session's ring: the row may be read after its session closed."""
    ring = ring_for(_engine_of(context.session))
    if ring is not None:
        obj.__dict__[_RING] = ring


def _engine_of(session: Session) -> object:
    bind: Any = session.get_bind()
    return bind.engine if isinstance(bind, sa.Connection) else bind


def _after_insert(_mapper: Any, conn: sa.Connection, obj: object) -> None:
    """A new row whose id the database gave (SealedTable.db_assigned): its INSERT carried NULL
    in the sealed columns; seal its fields now that the id is known, in the same transaction
    (one UPDATE, so the row is never committed unsealed)."""
    state = obj.__dict__
    cache: dict[str, tuple[object, Any]] = state.get(_CLEAR) or {}
    if not any(source is _PENDING for source, _ in cache.values()):
        return
    spec = _spec(obj)
    ring = state.get(_RING) or ring_of(conn)
    row_id = getattr(obj, spec.row_id)
    clear = {f: cache[f][1] if f in cache else None for f in spec.fields}
    values = seal_row(ring, spec, row_id, clear)
    table = obj.__table__  # type: ignore[attr-defined]
    conn.execute(table.update().where(table.c[spec.row_id] == row_id).values(values))
    for name, value in values.items():
        attributes.set_committed_value(obj, name, value)
    for field in spec.fields:
        cache[field] = (values[spec.column(field)], clear[field])


def track(*models: type) -> None:
    """Register the hooks of each model with sealed fields (called once, in models.py): the load
    hook (remember the ring), and for a table whose ids the database assigns, the sealing after
    the INSERT."""
    for model in models:
        event.listen(model, "load", _on_load)
        if SEALED_TABLES[model.__table__.name].db_assigned:  # type: ignore[attr-defined]
            event.listen(model, "after_insert", _after_insert)


def rekey(engine: sa.Engine, table: sa.TableClause | str, *, batch: int = 500) -> int:
    """Re-seal every row of `table` not under the active key, `batch` rows per transaction;
    returns the rows re-sealed. Resumable: each batch commits, and a later run finds only what
    is left. Safe under load: on PostgreSQL rows are taken FOR UPDATE SKIP LOCKED (a row a
    writer holds is left for the next pass; SQLite's writer lock serialises), and each update is
    guarded by the old key id, so a row re-sealed meanwhile by another writer is left as it is.
    A row under a key the ring does not hold stops the run with KeyRingError naming that key
    (nothing is guessed, nothing half-written: the batch rolls back). A row whose `seal_key` is
    NULL has nothing sealed (an incident with no closing note yet) and is left alone."""
    spec = SEALED_TABLES[table if isinstance(table, str) else table.name]
    if isinstance(table, str):
        table = spec.clause()
    ring = ring_of(engine)
    row_id, seal_key = table.c[spec.row_id], table.c.seal_key
    columns = [table.c[spec.column(f)] for f in spec.fields]
    update = (
        table.update()
        .where(row_id == sa.bindparam("_id"), seal_key == sa.bindparam("_old"))
        .values({c: sa.bindparam(c) for c in ("seal_key", *(spec.column(f) for f in spec.fields))})
    )
    done = 0
    while True:  # passes over the primary key, until one finds nothing left
        found, after = 0, None
        while True:
            with uow.connection(engine) as conn:
                stmt = (
                    sa.select(row_id, seal_key, *columns)
                    .where(seal_key != ring.active_key_id)
                    .where(row_id > after if after is not None else sa.true())
                    .order_by(row_id)
                    .limit(batch)
                )
                if conn.dialect.name == "postgresql":
                    stmt = stmt.with_for_update(skip_locked=True)
                rows: Sequence[Any] = conn.execute(stmt).all()
                if not rows:
                    break
                updates = []
                for rid, key_id, *sealed in rows:
                    clear = {
                        f: open_value(ring, spec, f, rid, key_id, v)
                        for f, v in zip(spec.fields, sealed, strict=True)
                    }
                    updates.append({"_id": rid, "_old": key_id, **seal_row(ring, spec, rid, clear)})
                changed = conn.execute(update, updates).rowcount
                done += changed if changed >= 0 else len(updates)  # a driver may not count
                found += len(rows)
                after = rows[-1][0]
        if not found:
            return done
