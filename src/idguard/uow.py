"""The one unit of work: every transaction in idguard begins and ends here (a lint rule,
tools/check_architecture.py, fails on a commit anywhere else).

Use-cases take a Session and only flush. Whoever runs them — an API request, a CLI command, a
background worker, a test — opens the transaction here, and it commits here, once:

    with uow.transaction(sessions) as session:     # commits at the end, rolls back on an error
        staff.add_office(session, ...)

    with uow.connection(engine) as conn:           # Core bulk writes (the check log, the demo)
        conn.execute(...)

A request's write (`UnitOfWork.write`) adds two things on top: the stored answer of an
Idempotency-Key, replayed for a retry instead of acting twice, and recorded refusals (a failed
fingerprint comparison), committed on their own after the rest is rolled back.

Invalid at once: a transaction that changed what checks answer says so (`changed`: the ledger
appended an event, a unit or its keys changed). On PostgreSQL it sends a NOTIFY before it
commits, which wakes the workers of every machine; once committed, the process's propagation
hook (set on the sessionmaker by the app: verification/runtime/node.py) wakes every worker of
this node and waits until each has applied the change, up to a bound, and a request's answer
says how far it got (`"propagation": {"workers": 2, "confirmed": 2, "ms": 0.8}`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from idguard.core.errors import InvalidField, RecordedRefusal, RuleViolation, Unavailable
from idguard.core.sealing import Sealer, SealError
from idguard.db.common import IdempotencyRecord

T = TypeVar("T")
IDEMPOTENCY_HEADER = "Idempotency-Key"

# session.info keys: what the transaction changed, the hook told of it after the commit, and
# what the hook answered. A sessionmaker configured with info={PROPAGATE: hook} gives every
# session the hook.
LEDGER_SEQ = "idguard.ledger_seq"
UNITS_VERSION = "idguard.units_version"
NOTIFIED = "idguard.notified"  # the transaction's NOTIFY was sent with one of its statements
PROPAGATE = "idguard.propagate"
PROPAGATION = "idguard.propagation"
NOTIFY_CHANNEL = "idguard_ledger"  # runtime/follower.py LISTENs on it
_NOTIFY = sa.text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')")

Propagate = Callable[[int, int], "Mapping[str, object] | None"]


def changed(session: Session, *, ledger_seq: int = 0, units_version: int = 0, notified: bool = False) -> None:
    """Say that this transaction changes what checks answer: it appended ledger event
    `ledger_seq`, or raised the units version to `units_version`. `notified`: a statement of
    this transaction already ran `pg_notify` on NOTIFY_CHANNEL (the ledger's append does, to
    spare the commit a round trip); the notification is delivered at commit all the same."""
    info = session.info
    if notified:
        info[NOTIFIED] = True
    if ledger_seq > info.get(LEDGER_SEQ, 0):
        info[LEDGER_SEQ] = ledger_seq
    if units_version > info.get(UNITS_VERSION, 0):
        info[UNITS_VERSION] = units_version


@event.listens_for(Session, "before_commit")
def _notify(session: Session) -> None:
    info = session.info
    if (
        (LEDGER_SEQ in info or UNITS_VERSION in info)
        and not info.get(NOTIFIED)
        and session.get_bind().dialect.name == "postgresql"
    ):
        session.execute(_NOTIFY)  # delivered at commit, to every LISTENing worker


@event.listens_for(Session, "after_commit")
def _propagate(session: Session) -> None:
    info = session.info
    info.pop(NOTIFIED, None)
    seq, units = info.pop(LEDGER_SEQ, 0), info.pop(UNITS_VERSION, 0)
    hook: Propagate | None = info.get(PROPAGATE)
    if (seq or units) and hook is not None:
        propagation = hook(seq, units)
        if propagation is not None:
            info[PROPAGATION] = propagation


@event.listens_for(Session, "after_soft_rollback")
def _forget(session: Session, previous_transaction: object) -> None:
    # Any rollback of the transaction that recorded the change (idguard uses no savepoints, whose
    # rollback would otherwise forget a change of the outer transaction too).
    session.info.pop(LEDGER_SEQ, None)
    session.info.pop(UNITS_VERSION, None)
    session.info.pop(NOTIFIED, None)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits when the block ends, or rolls back if it raises."""
    with sessions() as session, session.begin():
        yield session


@contextmanager
def connection(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection in one transaction, for Core statements (bulk writers)."""
    with engine.begin() as conn:
        yield conn


def commit(session: Session) -> None:
    """Commit what `session` holds: for a session opened outside `transaction`, such as a test's
    fixture session or a long-lived worker session that commits batch after batch."""
    session.commit()


@dataclass(frozen=True, slots=True)
class Idempotency:
    """Who sent a retryable write, the key they chose, and a digest of the request it names."""

    principal: str
    key: str
    request_hash: str

    @classmethod
    def of(cls, principal: str, key: str, request: bytes) -> Idempotency:
        if not 1 <= len(key) <= 128:
            raise InvalidField(IDEMPOTENCY_HEADER, "an Idempotency-Key has 1 to 128 characters")
        return cls(principal, key, hashlib.sha256(request).hexdigest())


@dataclass(frozen=True, slots=True)
class Answer:
    body: str
    status: int
    replayed: bool = False


RefusalBody = Callable[[RecordedRefusal], str]


# A stored answer is replayed for this long; older ones are purged (a retry after it acts anew).
IDEMPOTENCY_TTL = dt.timedelta(hours=24)
PURGE_EVERY_SECONDS = 300.0  # per process, right after a write, in a transaction of its own
_next_purge = 0.0


def purge_expired(session: Session, now: dt.datetime) -> int:
    """Delete the stored answers older than IDEMPOTENCY_TTL; return how many (the caller commits)."""
    result = session.execute(
        sa.delete(IdempotencyRecord).where(IdempotencyRecord.created_at < now - IDEMPOTENCY_TTL)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


class UnitOfWork:
    """The unit of work of one request or command: run a use-case on `session`, commit once.
    Stored answers are sealed with `sealer` (they hold personal data: names, addresses)."""

    def __init__(self, session: Session, now: dt.datetime, sealer: Sealer) -> None:
        self.session = session
        self.now = now
        self.sealer = sealer

    def read(self, fn: Callable[[], T]) -> T:
        """Run a read and commit its audit entries with it."""
        result = fn()
        self.session.commit()
        return result

    def write(
        self,
        fn: Callable[[], str],
        *,
        status: int,
        idempotency: Idempotency | None,
        refusal_body: RefusalBody,
        stored: Callable[[str], str] | None = None,
    ) -> Answer:
        """Run a write whose answer is `fn`'s JSON text and commit it. Under an Idempotency-Key,
        a repeat of the same request gets the stored answer (`replayed`), a different request
        under the same key an error naming the header. `stored` turns the answer into what is
        kept for a replay: a secret shown once (an API key) is never kept."""
        if idempotency is None:
            body = self._call(fn, None, refusal_body)
            self._commit()
            return Answer(self._with_propagation(body), status)
        replay = self._replay(idempotency)
        if replay is not None:
            return replay
        # Claim the key first: a concurrent retry blocks on this row (PostgreSQL) or on the write
        # lock (SQLite) until we commit, then finds our answer instead of acting twice.
        record = IdempotencyRecord(
            principal=idempotency.principal,
            key=idempotency.key,
            request_hash=idempotency.request_hash,
            status_code=0,
            body="",
            created_at=self.now,
        )
        self.session.add(record)
        try:
            self.session.flush()
        except IntegrityError:
            self.session.rollback()
            replay = self._replay(idempotency)
            if replay is not None:
                return replay
            raise
        body = self._call(fn, idempotency, refusal_body)
        record.body = self._seal(idempotency, stored(body) if stored is not None else body)
        record.status_code = status
        self._commit()
        body = self._with_propagation(body)  # not stored: a replay changed nothing
        self._purge_now_and_then()
        return Answer(body, status)

    def _with_propagation(self, body: str) -> str:
        """The answer with how far its change had reached every worker, when it made one."""
        propagation = self.session.info.pop(PROPAGATION, None)
        if propagation is None or not body.startswith("{"):
            return body
        answer = json.loads(body)
        answer["propagation"] = propagation
        return json.dumps(answer, ensure_ascii=False, separators=(",", ":"))

    def _seal(self, idempotency: Idempotency, body: str) -> str:
        return self.sealer.seal(body, context=f"idempotency/{idempotency.principal}/{idempotency.key}")

    def _purge_now_and_then(self) -> None:
        global _next_purge
        if time.monotonic() < _next_purge:
            return
        _next_purge = time.monotonic() + PURGE_EVERY_SECONDS
        purge_expired(self.session, self.now)
        self.session.commit()

    def _call(self, fn: Callable[[], str], idempotency: Idempotency | None, refusal_body: RefusalBody) -> str:
        try:
            return fn()
        except RecordedRefusal as refusal:
            # Roll the request back, keep only the record of the refusal (a failed comparison),
            # and, under an Idempotency-Key, the refusal as the key's answer: a retry of the same
            # request replays it instead of being compared (and recorded) a second time.
            self.session.rollback()
            self.session.add_all(refusal.records)
            if idempotency is not None:
                self.session.add(
                    IdempotencyRecord(
                        principal=idempotency.principal,
                        key=idempotency.key,
                        request_hash=idempotency.request_hash,
                        status_code=refusal.status,
                        body=self._seal(idempotency, refusal_body(refusal)),
                        created_at=self.now,
                    )
                )
            self.session.commit()
            raise

    def _commit(self) -> None:
        try:
            self.session.commit()
        except IntegrityError:
            # The database's own invariants (one valid card, unique numbers) caught a race the
            # locks should have prevented; nothing was written.
            self.session.rollback()
            raise RuleViolation("a concurrent change conflicted with this one; nothing was written") from None

    def _replay(self, idempotency: Idempotency) -> Answer | None:
        stored = self.session.get(
            IdempotencyRecord, (idempotency.principal, idempotency.key), populate_existing=True
        )
        if stored is None:
            return None
        if stored.created_at < self.now - IDEMPOTENCY_TTL:  # expired, not yet purged: act anew
            self.session.delete(stored)
            self.session.flush()
            return None
        # End the read's transaction before answering: on SQLite it holds the write lock, and
        # whatever the caller does next (a worker refreshing its keys) must not wait for it.
        same_request = stored.request_hash == idempotency.request_hash
        body = self._open(idempotency, stored.body) if same_request else ""
        answer = Answer(body, stored.status_code, replayed=True)
        self.session.rollback()
        if not same_request:
            raise InvalidField(IDEMPOTENCY_HEADER, "this Idempotency-Key was used for a different request")
        # A stored error is a recorded refusal, replayed as it was answered.
        return answer

    def _open(self, idempotency: Idempotency, sealed: str) -> str:
        try:
            return self.sealer.open(sealed, context=f"idempotency/{idempotency.principal}/{idempotency.key}")
        except SealError:
            # Sealed under another secret (it was changed) or altered: nothing trustworthy to
            # replay, and acting again could do the work twice. Refuse, loudly.
            raise Unavailable(
                "the stored answer of this Idempotency-Key cannot be read; use a new key after "
                "checking whether the first request took effect",
                code="idempotent_answer_unreadable",
            ) from None
