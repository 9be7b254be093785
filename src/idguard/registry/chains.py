"""The ledger's and the audit log's hash chains in the database: sealing the audit log, chaining a
bulk-loaded ledger range, signed checkpoints, and verification (`idguard ledger verify`).

Two chains, two ways of keeping them (docs/operations.md, "Tamper-evident ledger and audit log"):

- The ledger is chained as it is written (registry.ledger: in the appending statement, under the
  head row's lock that already orders the events). A ledger event is the registry's own truth, and
  its writers already queue on that lock: chaining adds a hash, not a wait.
- The audit log is chained by a sealer (`seal_audit`) shortly after its entries commit: an entry
  is one plain INSERT, as before, so staff reads (each writes an entry) do not queue behind one
  another on a head row. The sealer takes the entries that are committed and not yet chained, in
  id order, and gives each the next chain position (`seq`) under the audit head's row lock.
  Entries committed late (a long transaction with a small id) simply take a later position: the
  chain's order is the sealing order, total and gap-free, and no entry can be skipped. The cost:
  until the next seal (seconds: ops.chains runs it in each worker, and `idguard ledger
  checkpoint` runs it first) the newest entries are not yet protected; verification counts them.

A checkpoint is the chains' (seq, hash) at a time, signed with Ed25519 (IDGUARD_LEDGER_KEYS):
kept outside the database (exported as JSON lines), it catches a rewrite of a whole chain with
every hash recomputed, which the chain alone cannot.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from idguard import uow
from idguard.config import Settings
from idguard.core import chain as hash_chain
from idguard.core.chain import ChainName, Checkpoint
from idguard.core.signing import KeyRing, verifies
from idguard.db.common import AuditEntry, AuditHead, ChainCheckpoint
from idguard.registry.ledger import EVENT_COLUMNS
from idguard.registry.models import LedgerEvent, LedgerHead

SETTING = "IDGUARD_LEDGER_KEYS"
BATCH = 5000
AUDIT_COLUMNS = ("id", "at", "staff_id", "action", "person_id", "detail")  # after the chain seq

# Names a row in a problem: (the row, or None when it is missing; its chain position).
Describe = Callable[[Sequence[Any] | None, int], str]

_events = cast(sa.Table, LedgerEvent.__table__)
_head = cast(sa.Table, LedgerHead.__table__)
_audit = cast(sa.Table, AuditEntry.__table__)
_audit_head = cast(sa.Table, AuditHead.__table__)
_checkpoints = cast(sa.Table, ChainCheckpoint.__table__)


def keyring(settings: Settings) -> KeyRing:
    """IDGUARD_LEDGER_KEYS, or (development, test: the settings refuse production without it) one
    key derived from the service secret."""
    configured = settings.ledger_keys.get_secret_value() if settings.ledger_keys is not None else None
    return KeyRing.from_config(
        configured, setting=SETTING, development_seed=settings.derived_key("ledger-checkpoints")
    )


# ---------------------------------------------------------------------------------------------
# Writing the chains


def seal_audit(engine: sa.Engine, *, batch: int = BATCH) -> int:
    """Chain every committed audit entry not yet chained, `batch` per transaction; return how
    many. Safe to run from several processes at once (they queue on the audit head's lock)."""
    total = 0
    while True:
        with uow.connection(engine) as conn:
            done = _seal_audit_batch(conn, batch)
        total += done
        if done < batch:
            return total


def _seal_audit_batch(conn: sa.Connection, batch: int) -> int:
    seq, previous = _lock_audit_head(conn)
    rows = conn.execute(
        sa.select(*(_audit.c[name] for name in AUDIT_COLUMNS))
        .where(_audit.c.seq.is_(None))
        .order_by(_audit.c.id)
        .limit(batch)
    ).all()
    if not rows:
        return 0
    updates = []
    for row in rows:
        seq += 1
        previous = hash_chain.link(previous, hash_chain.canonical(seq, row))
        updates.append({"k": row[0], "s": seq, "c": previous})
    if conn.dialect.name == "postgresql":
        # One statement per batch (row by row is a round trip each: 3x slower).
        conn.execute(
            sa.text(
                "UPDATE audit_log SET seq = v.seq, chain = v.chain FROM (SELECT"
                " unnest(CAST(:ids AS bigint[])) AS id, unnest(CAST(:seqs AS bigint[])) AS seq,"
                " unnest(CAST(:chains AS text[])) AS chain) v WHERE audit_log.id = v.id"
            ),
            {
                "ids": [u["k"] for u in updates],
                "seqs": [u["s"] for u in updates],
                "chains": [u["c"] for u in updates],
            },
        )
    else:
        conn.execute(
            _audit.update()
            .where(_audit.c.id == sa.bindparam("k"))
            .values(seq=sa.bindparam("s"), chain=sa.bindparam("c")),
            updates,
        )
    conn.execute(_audit_head.update().where(_audit_head.c.id == 1).values(seq=seq, chain=previous))
    return len(rows)


def _lock_audit_head(conn: sa.Connection) -> tuple[int, str]:
    """The audit head (created at the chain's start if missing), locked until commit."""
    lock = sa.select(_audit_head.c.seq, _audit_head.c.chain).where(_audit_head.c.id == 1).with_for_update()
    row = conn.execute(lock).first()
    if row is None:
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(_audit_head)
        conn.execute(
            insert.values(id=1, seq=0, chain=hash_chain.GENESIS).on_conflict_do_nothing(index_elements=["id"])
        )
        row = conn.execute(lock).one()
    return int(row[0]), str(row[1])


def chain_ledger_from(conn: sa.Connection, first_seq: int) -> int:
    """Chain the ledger events from `first_seq` on, in seq order, and the head after them: for
    a bulk load that wrote its events without their chain (the demo loader). The caller holds the
    ledger head (a writer appending meanwhile would link from a stale head). Returns how many."""
    if first_seq <= 1:
        previous = hash_chain.GENESIS
    else:
        found = conn.execute(sa.select(_events.c.chain).where(_events.c.seq == first_seq - 1)).first()
        if found is None or found[0] is None:
            raise ValueError(f"ledger event seq {first_seq - 1} has no chain to continue from")
        previous = found[0]
    done = 0
    columns = [_events.c.seq, *(_events.c[name] for name in EVENT_COLUMNS)]
    for rows in _keyset(_on(conn), sa.select(*columns).where(_events.c.seq >= first_seq), _events.c.seq):
        seqs, chains = [], []
        for row in rows:
            previous = hash_chain.link(previous, hash_chain.canonical(row[0], row[1:]))
            seqs.append(row[0])
            chains.append(previous)
        if conn.dialect.name == "postgresql":
            # One statement per batch (a row-by-row UPDATE is a round trip each).
            conn.execute(
                sa.text(
                    "UPDATE ledger_events SET chain = v.chain FROM "
                    "(SELECT unnest(CAST(:seqs AS bigint[])) AS seq, unnest(CAST(:chains AS text[])) AS chain) v "
                    "WHERE ledger_events.seq = v.seq"
                ),
                {"seqs": seqs, "chains": chains},
            )
        else:
            conn.execute(
                _events.update().where(_events.c.seq == sa.bindparam("k")).values(chain=sa.bindparam("c")),
                [{"k": s, "c": c} for s, c in zip(seqs, chains, strict=True)],
            )
        done += len(rows)
    if done:
        conn.execute(_head.update().where(_head.c.id == 1).values(chain=previous))
    return done


Fetch = Callable[[sa.Select[Any]], Sequence[Sequence[Any]]]


def _keyset(
    fetch: Fetch, stmt: sa.Select[Any], key: sa.ColumnElement[int]
) -> Iterator[Sequence[Sequence[Any]]]:
    """`stmt`'s rows in `key` order, BATCH at a time (a chain of millions is never held whole)."""
    after: int | None = None
    while True:
        page = stmt if after is None else stmt.where(key > after)
        rows = fetch(page.order_by(key).limit(BATCH))
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def _on(conn: sa.Connection) -> Fetch:
    return lambda stmt: conn.execute(stmt).all()


def write_checkpoints(engine: sa.Engine, ring: KeyRing, *, now: dt.datetime) -> list[Checkpoint]:
    """Seal the audit log, then sign and store one checkpoint of each chain at its head."""
    seal_audit(engine)
    made = []
    with uow.connection(engine) as conn:
        ledger = conn.execute(sa.select(_head.c.seq, _head.c.chain).where(_head.c.id == 1)).one()
        audit = conn.execute(
            sa.select(_audit_head.c.seq, _audit_head.c.chain).where(_audit_head.c.id == 1)
        ).first()
        heads = [(ChainName.LEDGER, ledger[0], ledger[1])]
        heads.append((ChainName.AUDIT, *(audit if audit is not None else (0, hash_chain.GENESIS))))
        for name, seq, chain in heads:
            message = hash_chain.checkpoint_message(name, int(seq), str(chain), now)
            signature = base64.b64encode(ring.sign(message)).decode()
            checkpoint = Checkpoint(name, int(seq), str(chain), now, ring.signing_key_id, signature)
            conn.execute(
                sa.insert(_checkpoints).values(
                    chain_name=name.value,
                    seq=checkpoint.seq,
                    chain=checkpoint.chain,
                    at=now,
                    key_id=checkpoint.key_id,
                    signature=signature,
                )
            )
            made.append(checkpoint)
    return made


def last_checkpoint_at(conn: sa.Connection) -> dt.datetime | None:
    at = conn.execute(sa.select(sa.func.max(_checkpoints.c.at))).scalar()
    return None if at is None else cast(dt.datetime, at)


def stored_checkpoints(fetch: Fetch) -> list[Checkpoint]:
    """The checkpoints kept in the database, oldest first."""
    columns = ("chain_name", "seq", "chain", "at", "key_id", "signature")
    rows = fetch(sa.select(*(_checkpoints.c[c] for c in columns)).order_by(_checkpoints.c.id))
    return [Checkpoint(ChainName(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]


# ---------------------------------------------------------------------------------------------
# Verifying them


@dataclass
class ChainResult:
    """One chain recomputed: how far it holds, and the first thing wrong with it (or None)."""

    name: ChainName
    rows: int = 0
    last_seq: int = 0
    last_chain: str = hash_chain.GENESIS
    unsealed: int = 0  # audit entries not yet chained (the sealer's next work)
    problem: str | None = None
    at_seq: dict[int, str] = field(default_factory=dict)  # chain values wanted by checkpoints


@dataclass
class Verification:
    ledger: ChainResult
    audit: ChainResult
    checkpoint_problems: list[str]
    checkpoints_checked: int

    @property
    def ok(self) -> bool:
        return self.ledger.problem is None and self.audit.problem is None and not self.checkpoint_problems

    def problems(self) -> list[str]:
        found = [r.problem for r in (self.ledger, self.audit) if r.problem is not None]
        return found + self.checkpoint_problems


def verify(engine: sa.Engine, ring: KeyRing, kept: Iterable[Checkpoint] = ()) -> Verification:
    """Recompute both chains and check every stored checkpoint and every `kept` one (from an
    auditor's file): signature valid, and the chain at its seq equal to what it signed.

    The heads are read first and the chains walked up to them: rows appended meanwhile are
    left for the next run. PostgreSQL reads everything in one REPEATABLE READ snapshot; SQLite
    (whose every transaction holds the write lock here) in short transactions of one batch each,
    so the service keeps writing while a long ledger is verified."""
    if engine.dialect.name == "postgresql":
        with uow.connection(engine.execution_options(isolation_level="REPEATABLE READ")) as conn:
            return _verify(_on(conn), ring, kept)

    def fetch(stmt: sa.Select[Any]) -> Sequence[Sequence[Any]]:
        with uow.connection(engine) as conn:
            return conn.execute(stmt).all()

    return _verify(fetch, ring, kept)


def _verify(fetch: Fetch, ring: KeyRing, kept: Iterable[Checkpoint]) -> Verification:
    # Each head with the last position its table holds, in one statement (one snapshot, even on
    # SQLite): a row past its head was not appended meanwhile, the head was moved back.
    heads = fetch(
        sa.select(
            sa.select(_head.c.seq).where(_head.c.id == 1).scalar_subquery(),
            sa.select(_head.c.chain).where(_head.c.id == 1).scalar_subquery(),
            sa.select(sa.func.max(_events.c.seq)).scalar_subquery(),
            sa.select(_audit_head.c.seq).where(_audit_head.c.id == 1).scalar_subquery(),
            sa.select(_audit_head.c.chain).where(_audit_head.c.id == 1).scalar_subquery(),
            sa.select(sa.func.max(_audit.c.seq)).scalar_subquery(),
        )
    )[0]
    ledger_head, audit_head = _head_of(heads[0], heads[1]), _head_of(heads[3], heads[4])
    checkpoints = [*stored_checkpoints(fetch), *kept]
    wanted = {name: {c.seq for c in checkpoints if c.name is name} for name in ChainName}
    ledger = verify_ledger(fetch, ledger_head, wanted[ChainName.LEDGER])
    audit = verify_audit(fetch, audit_head, wanted[ChainName.AUDIT])
    for result, head, last_row, what in (
        (ledger, ledger_head, heads[2], "ledger events"),
        (audit, audit_head, heads[5], "sealed audit entries"),
    ):
        if result.problem is None and last_row is not None and last_row > head[0]:
            result.problem = (
                f"{what} run to position {last_row}, past the head at {head[0]} (the head was moved back)"
            )
    results = {ChainName.LEDGER: ledger, ChainName.AUDIT: audit}
    problems = []
    for checkpoint in checkpoints:
        problem = _check_checkpoint(checkpoint, ring, results[checkpoint.name])
        if problem is not None:
            problems.append(problem)
    return Verification(ledger, audit, problems, len(checkpoints))


def _head_of(seq: int | None, chain: str | None) -> tuple[int, str]:
    """A head row's (seq, chain); a missing head is a chain not yet started."""
    return (0, hash_chain.GENESIS) if seq is None or chain is None else (int(seq), str(chain))


def _check_checkpoint(checkpoint: Checkpoint, ring: KeyRing, result: ChainResult) -> str | None:
    what = f"checkpoint of the {checkpoint.name.value} at seq {checkpoint.seq} ({hash_chain.utc_text(checkpoint.at)})"
    key = ring.public_key(checkpoint.key_id)
    if key is None:
        return f"{what}: signed with key {checkpoint.key_id!r}, which {SETTING} does not list"
    try:
        signature = base64.b64decode(checkpoint.signature, validate=True)
    except ValueError:
        return f"{what}: the signature is not base64"
    if not verifies(key, signature, checkpoint.message()):
        return f"{what}: the signature does not verify (the checkpoint was altered or forged)"
    if checkpoint.seq == 0:
        actual: str | None = hash_chain.GENESIS
    else:
        actual = result.at_seq.get(checkpoint.seq)
    if actual is None:
        if result.problem is not None and checkpoint.seq > result.last_seq:
            return None  # past the first break, already reported: nothing more to say
        return (
            f"{what}: the {checkpoint.name.value} now ends at seq {result.last_seq}, before the "
            "checkpoint (rows at the end were removed)"
        )
    if actual != checkpoint.chain:
        return (
            f"{what}: the chain there is no longer what was signed (the {checkpoint.name.value} "
            "was rewritten up to that point, with its hashes recomputed)"
        )
    return None


def _walk(
    result: ChainResult,
    batches: Iterator[Sequence[Sequence[Any]]],
    wanted: Collection[int],
    describe: Describe,
) -> str:
    """Recompute a chain over rows (position, stored chain, *values), in position order. Sets
    `result.problem` at the first row that is missing, altered or out of place; returns the
    chain value of the last good row."""
    previous = hash_chain.GENESIS
    expected = 1
    for rows in batches:
        for i, row in enumerate(rows):
            position, stored, values = row[0], row[1], row[2:]
            if position != expected:
                result.problem = f"{describe(None, expected)} is missing (removed)"
                return previous
            computed = hash_chain.link(previous, hash_chain.canonical(position, values))
            if stored != computed:
                result.problem = _mismatch(rows[i + 1 :], previous, position, row, describe)
                return previous
            previous = stored
            if position in wanted:
                result.at_seq[position] = stored
            result.rows += 1
            result.last_seq = position
            result.last_chain = stored
            expected += 1
    return previous


def _mismatch(
    following: Sequence[Sequence[Any]], previous: str, position: int, row: Sequence[Any], describe: Describe
) -> str:
    """Name the first bad row: altered, or (when a later row is the one that fits here) moved."""
    if row[1] is None:
        return f"{describe(row, position)} has no chain value (altered)"
    for other in following[:1000]:
        if hash_chain.link(previous, hash_chain.canonical(position, other[2:])) == other[1]:
            return (
                f"{describe(row, position)} is out of place: the row now at {other[0]} belongs there "
                "(rows reordered)"
            )
    return f"{describe(row, position)} does not match its chain hash (altered, or rows reordered)"


def verify_ledger(fetch: Fetch, head: tuple[int, str], wanted: Collection[int] = ()) -> ChainResult:
    """The ledger's chain, event by event up to the head's seq, then the head against it."""
    result = ChainResult(ChainName.LEDGER)
    columns = [_events.c.seq, _events.c.chain, *(_events.c[name] for name in EVENT_COLUMNS)]

    def describe(row: Sequence[Any] | None, seq: int) -> str:
        return f"ledger event seq {seq}"

    stmt = sa.select(*columns).where(_events.c.seq <= head[0])
    _walk(result, _keyset(fetch, stmt, _events.c.seq), wanted, describe)
    if result.problem is None:
        _check_head(result, head, describe, "the ledger head", "event")
    return result


def verify_audit(fetch: Fetch, head: tuple[int, str], wanted: Collection[int] = ()) -> ChainResult:
    """The audit chain, entry by entry in chain position up to the head, then the head."""
    result = ChainResult(ChainName.AUDIT)
    columns = [_audit.c.seq, _audit.c.chain, *(_audit.c[name] for name in AUDIT_COLUMNS)]

    def describe(row: Sequence[Any] | None, seq: int) -> str:
        if row is None:
            return f"audit chain position {seq}"
        return f"audit entry id {row[2]} (chain position {seq})"

    stmt = sa.select(*columns).where(_audit.c.seq <= head[0])
    _walk(result, _keyset(fetch, stmt, _audit.c.seq), wanted, describe)
    result.unsealed = int(fetch(sa.select(sa.func.count()).where(_audit.c.seq.is_(None)))[0][0])
    if result.problem is None:
        _check_head(result, head, describe, "the audit head", "entry")
    return result


def _check_head(result: ChainResult, head: tuple[int, str], describe: Describe, what: str, row: str) -> None:
    seq, chain = head
    if seq > result.last_seq:
        result.problem = f"{describe(None, result.last_seq + 1)} is missing (removed; the head is at {seq})"
    elif chain != result.last_chain:
        result.problem = f"{what} (at {seq}) does not match the last {row}'s chain (the head was altered)"
