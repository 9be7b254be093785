"""Networked verification (联网核查): the hot path from a unit's request to its answer.

Everything here runs in memory: the answer comes from the worker's CardIndex, the key from the
KeyRing, the rate from the RateLimiter, and the check is appended to the CheckLog buffer. No
database round trip happens while a unit waits: the answer waits only for the check log's
journal to sync the check (the response awaits `log.recorded`, a few milliseconds, the event
loop serving on). What is answered never carries personal data.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.biometrics import Template, fingerprints
from idguard.biometrics.fingerprints import Biometrics
from idguard.biometrics.vault import VaultError
from idguard.core.clock import Clock, isoformat, today_cst
from idguard.core.randomness import token_bytes
from idguard.core.ratelimit import RateLimiter
from idguard.db.engine import read_only
from idguard.registry.models import Card
from idguard.verification import units
from idguard.verification.harvesting import HarvestWatch
from idguard.verification.index import (
    BLACKLISTED,
    CHECK_REQUIRED,
    Alert,
    CardIndex,
    Reason,
    Result,
    alerts,
)
from idguard.verification.notifications import NotificationHorizon
from idguard.verification.runtime.checklog import CheckEntry, CheckLog, Signal
from idguard.verification.runtime.follower import IndexFollower
from idguard.verification.runtime.gallery import BlacklistGallery
from idguard.verification.runtime.keyring import KeyRing, UnitView
from idguard.verification.runtime.node import Node
from idguard.verification.runtime.webhooks import WebhookDispatcher

log = logging.getLogger("idguard.verify")


class FingerprintReason(StrEnum):
    """Why an answer's `fingerprint_match` is null."""

    CARD_NOT_VALID = "card_not_valid"  # invalid or mismatching card: no comparison is made
    NOT_REGISTERED = "no_registered_fingerprints"
    UNAVAILABLE = "comparison_unavailable"  # the registry database could not be read


@dataclass(frozen=True, slots=True)
class Query:
    """What a unit reads off the card in front of it (already validated for shape), with the
    live template of a fingerprint sent for the person-card check. The general path; checks
    without a fingerprint take the faster `Item` path."""

    id_number: str
    name: str
    issued_on: dt.date
    expires_on: dt.date | None
    purpose: str
    operator: str
    chip_serial: str | None = None
    watch: bool = False
    fingerprint: Template | None = None  # the live capture's template, for the person-card check


# A check without a fingerprint, validated and normalised (verification/schemas.py): a plain tuple,
# because the batch path handles a thousand per request and an object per check costs more than
# the check itself. The fields are Query's, in Query's order (so `Query(*item)` converts):
#   id_number, name, issued_on, expires_on, purpose, operator, chip_serial, watch
Item = tuple[str, str, dt.date, dt.date | None, str, str, str | None, bool]

_LOW_MASK = (1 << 48) - 1
# The variant nibble of a version-4 UUID (10xx) from a random hex digit's low two bits.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def check_ids(n: int) -> list[str]:
    """`n` distinct check ids for one request, formatted as version-4 UUIDs, from one draw of 16
    bytes from the OS's CSPRNG (the same source uuid4 uses, once per request instead of once
    per check, read ahead in blocks: core/randomness.py).

    The draw gives 122 random bits, as a uuid4 has: 74 in the first four groups (the prefix,
    shared by the request's ids) and 48 in the last group, the starting point of a counter.
    The ids of one request are the prefix with consecutive last groups (mod 2**48), so they are
    distinct. Across requests they are as unguessable as uuid4s: every request's block starts
    at an independent random 122-bit point, so knowing ids tells nothing about any other
    request's. Within a request, one id leads to its neighbours, but all of them were answered
    to the same unit in the same response. Two requests' ids collide only if they drew the same
    prefix and last groups within 1000 of each other: less likely than a collision among as
    many independent uuid4s (fewer independent draws). Consecutive ids also land together in
    the check log's primary-key index."""
    draw = token_bytes(16).hex()  # the high 80 bits, then the low 48
    prefix = f"{draw[:8]}-{draw[8:12]}-4{draw[13:16]}-{_VARIANT[draw[16]]}{draw[17:20]}-"
    if n == 1:  # a single check: the last group is the draw's own
        return [prefix + draw[20:]]
    low = int(draw[20:], 16)
    if low + n <= _LOW_MASK:  # no wrap (all but ~1 in 2**38 draws of a 1000-check batch)
        return [f"{prefix}{last:012x}" for last in range(low, low + n)]
    return [f"{prefix}{(low + k) & _LOW_MASK:012x}" for k in range(n)]


_REASONS = {reason: reason.value for reason in Reason}
_LOST = (Reason.REPORTED_LOST, Reason.REPORTED_STOLEN)


class SignalKind(StrEnum):
    """Incident kinds a check can signal (the watchlist opens the incidents, API.md part 2)."""

    LOST_CARD_PRESENTED = "lost_card_presented"
    PERSON_CHECK_FAILED = "person_check_failed"
    BLACKLISTED_HOLDER_CHECKED = "blacklisted_holder_checked"
    KNOWN_IMPERSONATOR = "known_impersonator"


_LOST_KINDS = (SignalKind.LOST_CARD_PRESENTED.value,)
# Harvesting suspected: (unit code, reason, when), for the watchlist's incident.
HarvestingHook = Callable[[str, str, dt.datetime], None]
SignalHook = Callable[[list[Signal]], None]


def render_alerts(found: tuple[Alert, ...]) -> tuple[str, str] | tuple[None, None]:
    """The alerts as the answer's JSON list and as checks.alerts (comma-joined); (None, None)
    when there are none."""
    if not found:
        return None, None
    return "[" + ",".join(f'"{a.value}"' for a in found) + "]", ",".join(a.value for a in found)


def rfc3339(at: dt.datetime) -> str:
    """An answer's `checked_at`: RFC 3339 in UTC with a `Z`."""
    return isoformat(at).replace("+00:00", "Z")


def enrolled_cards(session: Session, q: Query) -> list[uuid.UUID]:
    """The cards with registered fingerprints that what is printed on the card designates."""
    stmt = sa.select(Card.id).where(
        Card.id_number == q.id_number,
        Card.issued_on == q.issued_on,
        Card.expires_on.is_(None) if q.expires_on is None else Card.expires_on == q.expires_on,
        Card.fingerprints_registered.is_(True),
    )
    if q.chip_serial is not None:
        stmt = stmt.where(Card.chip_serial == q.chip_serial)
    return list(session.scalars(stmt))


class Verifier:
    """One per worker process: the index, its follower, keys, rate limits, the check log and the
    webhook dispatcher."""

    def __init__(
        self,
        engine: sa.Engine,
        sessions: sessionmaker[Session],
        *,
        secret_key: str,
        clock: Clock,
        biometrics: Biometrics,
        workers: int = 1,
        checklog_dir: Path | None = None,
        check_hash_key: str | None = None,
        node_dir: Path | None = None,
        propagation_wait: float = 0.25,
        poll_interval: float = 0.02,
    ) -> None:
        self.sessions = sessions
        self.biometrics = biometrics
        self.index = CardIndex()
        self.keyring = KeyRing()
        # The workers serving this database on this machine (runtime/node.py): a write waits for
        # them all to apply it; a check first catches up with what was published (current()).
        self.node = Node(node_dir) if node_dir is not None else None
        self.propagation_wait = propagation_wait
        listen = engine.url.set(drivername="postgresql") if engine.dialect.name == "postgresql" else None
        self.follower = IndexFollower(
            sessionmaker(read_only(engine), expire_on_commit=False),  # reads only: no write lock
            self.index,
            self.keyring,
            node=self.node,
            listen_url=listen.render_as_string(hide_password=False) if listen is not None else None,
            poll_interval=poll_interval,
        )
        self.limiter = RateLimiter(workers)
        # With a directory, every check is synced to a journal there before its answer leaves,
        # and start() first replays the journals of processes that are gone (runtime/checklog.py).
        # The id numbers in the log are keyed-hashed with a key of their own (config.check_hash_key),
        # so rotating the staff-token key does not orphan a citizen's check history.
        self.log = CheckLog(engine, check_hash_key or secret_key, journal_dir=checklog_dir)
        self.clock = clock
        # Harvesting: judged on what the log writer has written, off the request path.
        self.harvest = HarvestWatch()
        self.log.on_written = self._watch_harvesting
        self.dispatcher = WebhookDispatcher(
            sessions,
            self.keyring,
            NotificationHorizon(self.follower),
            secret_key=secret_key,
            clock=clock,
        )
        # The registered fingers of listed persons, searched when a person-card check fails.
        self.gallery = BlacklistGallery(sessions, biometrics)
        self.follower.on_listing.append(self.gallery.on_listing)
        # Hooks for the features above (the watchlist's install(app) registers them): checks
        # worth an incident, once durable (called on the journal's thread: hand them on, never
        # block); units suspected of harvesting; and this worker's start and stop.
        self.on_signals: list[SignalHook] = []
        self.on_harvesting: list[HarvestingHook] = []
        # Person-card fingerprint comparisons this worker made, by outcome (matched or not).
        self.comparisons: collections.Counter[bool] = collections.Counter()
        self.on_start: list[Callable[[], None]] = []
        self.on_stop: list[Callable[[], None]] = []
        self.log.on_durable = self._signals

    def start(self) -> None:
        self.follower.load()
        self.follower.start()
        self.gallery.start()
        self.log.start()
        self.dispatcher.start()
        for hook in self.on_start:
            hook()

    def stop(self) -> None:
        self.dispatcher.stop()
        self.gallery.stop()
        self.follower.stop()
        self.log.stop()
        for hook in self.on_stop:  # after the log: its last checks' signals are handed on first
            hook()

    def propagate(self, seq: int, units: int) -> dict[str, int | float] | None:
        """After a commit that changed answers (uow.changed): wake every worker of the node and
        wait until each has applied it, up to the bound; how far it got, for the answer."""
        if self.node is None:
            return None
        self.node.publish(seq, units)
        return self.node.confirm(seq, units, timeout=self.propagation_wait).as_dict()

    def _signals(self, signals: list[Signal]) -> None:
        for hook in self.on_signals:
            hook(signals)

    def _watch_harvesting(self, written: list[tuple[str, str, str, str]]) -> None:
        """Runs on the log writer's thread after a batch is written: a unit whose checks look like
        harvesting is marked (audited, logged) and so throttled on every worker."""
        for code in {unit_code for unit_code, _, _, _ in written}:
            view = self.keyring.unit(code)
            if view is not None and not view.harvesting_suspected:
                self.harvest.forget_flag(code)  # cleared by a supervisor since: judge afresh
        found = self.harvest.observe(time.monotonic(), written)
        for suspicion in found:
            with uow.transaction(self.sessions) as session:
                marked = units.suspect_harvesting(
                    session, now=self.clock.now(), code=suspicion.unit_code, reason=suspicion.reason
                )
            if marked:
                log.warning("unit %s suspected of harvesting: %s", suspicion.unit_code, suspicion.reason)
                for hook in self.on_harvesting:
                    hook(suspicion.unit_code, suspicion.reason, self.clock.now())
        if found:
            self.follower.poll()  # this worker throttles at once; the others within a poll

    def check_items(self, unit: UnitView, items: Sequence[Item]) -> list[str]:
        """The hot path: answer checks without a fingerprint, already admitted (purpose allowed,
        rate taken), and record every one, all in memory.

        The answers come back as JSON text, byte for byte what JSONResponse makes of the answer
        object (`{"result":…,"check_id":…,"checked_at":…}`, then `"reason":…` with `invalid`):
        an answer holds only fixed words, a UUID and a time, nothing to escape, and formatting
        it here costs a fraction of building a dict and encoding it."""
        self.follower.current()  # nothing published on this node is missing from the index
        now = self.clock.now()
        today = today_cst(now)
        seq = self.follower.seq
        at_end = f'","checked_at":"{rfc3339(now)}"'
        plain_end = at_end + "}"
        code = unit.code
        index_check = self.index.check
        valid = Result.VALID
        answers: list[str] = []
        entries: list[CheckEntry] = []
        signals: list[Signal] = []
        answer, record = answers.append, entries.append
        for (id_number, name, issued_on, expires_on, purpose, operator, chip_serial, watch), check_id in zip(
            items, check_ids(len(items)), strict=True
        ):
            result, reason, flags = index_check(id_number, name, issued_on, expires_on, today, chip_serial)
            if result is valid:
                answer(f'{{"result":"valid","check_id":"{check_id}{plain_end}')
                outcome, why, watch_on = "valid", None, issued_on if watch else None
            elif reason is None:
                answer(f'{{"result":"mismatch","check_id":"{check_id}{plain_end}')
                outcome, why, watch_on = "mismatch", None, None
            else:
                why = _REASONS[reason]
                answer(f'{{"result":"invalid","check_id":"{check_id}{at_end},"reason":"{why}"}}')
                outcome, watch_on = "invalid", issued_on if watch else None
                if reason in _LOST:
                    signals.append((check_id, code, now, id_number, issued_on, _LOST_KINDS, None))
            if flags:  # rare: the holder is listed or protected (no finger comes this way)
                listed = bool(flags & BLACKLISTED) and self.index.blacklisted(id_number, today)
                shown, kept = render_alerts(
                    alerts(
                        blacklisted=listed,
                        check_required=bool(flags & CHECK_REQUIRED) and result is valid,
                        impersonator=False,
                    )
                )
                if shown is not None:
                    answers[-1] = f'{answers[-1][:-1]},"alerts":{shown}}}'
                if listed:
                    kinds: tuple[str, ...] = (SignalKind.BLACKLISTED_HOLDER_CHECKED.value,)
                    if signals and signals[-1][0] == check_id:  # also a lost card
                        kinds = signals.pop()[5] + kinds
                    signals.append((check_id, code, now, id_number, issued_on, kinds, None))
            else:
                kept = None
            record(
                (check_id, code, operator, purpose, now, outcome, why, id_number, watch_on, seq, None, kept)
            )
        self.log.append(entries, signals)
        return answers

    def check(self, unit: UnitView, queries: list[Query]) -> list[dict[str, object]]:
        """Answer checks already admitted (purpose allowed, rate taken); record every one.

        The general path: a query may carry a fingerprint, whose person-card comparison reads
        the card's sealed templates, so call it off the event loop when any query carries one."""
        self.follower.current()
        now = self.clock.now()
        today = today_cst(now)
        seq = self.follower.seq
        checked_at = rfc3339(now)
        answers: list[dict[str, object]] = []
        entries: list[CheckEntry] = []
        signals: list[Signal] = []
        for q, check_id in zip(queries, check_ids(len(queries)), strict=True):
            result, reason, flags = self.index.check(
                q.id_number, q.name, q.issued_on, q.expires_on, today, q.chip_serial
            )
            why_not = None if reason is None else reason.value
            answer: dict[str, object] = {
                "result": result.value,
                "check_id": check_id,
                "checked_at": checked_at,
            }
            if why_not is not None:
                answer["reason"] = why_not
            match: bool | None = None
            impersonator: uuid.UUID | None = None
            if q.fingerprint is not None:
                match, why = self._person_card(q, result)
                answer["fingerprint_match"] = match
                answer["fingerprint_reason"] = why
                if match is False:  # 1:N: is the live finger a listed person's?
                    impersonator = self.gallery.search(q.fingerprint, today=today, checked=q.id_number)
            listed = bool(flags & BLACKLISTED) and self.index.blacklisted(q.id_number, today)
            found = alerts(
                blacklisted=listed,
                check_required=bool(flags & CHECK_REQUIRED) and result is Result.VALID and match is not True,
                impersonator=impersonator is not None,
            )
            _, kept = render_alerts(found)
            if found:
                answer["alerts"] = [a.value for a in found]
            answers.append(answer)
            kinds = tuple(
                kind.value
                for kind, signalled in (
                    (SignalKind.LOST_CARD_PRESENTED, reason in _LOST),
                    (SignalKind.PERSON_CHECK_FAILED, match is False),
                    (SignalKind.BLACKLISTED_HOLDER_CHECKED, listed),
                    (SignalKind.KNOWN_IMPERSONATOR, impersonator is not None),
                )
                if signalled
            )
            if kinds:
                detail = None if impersonator is None else str(impersonator)
                signals.append((check_id, unit.code, now, q.id_number, q.issued_on, kinds, detail))
            watch = q.watch and result is not Result.MISMATCH
            entries.append(
                (
                    check_id,
                    unit.code,
                    q.operator,
                    q.purpose,
                    now,
                    result.value,
                    why_not,
                    q.id_number,
                    q.issued_on if watch else None,
                    seq,
                    match,
                    kept,
                )
            )
        self.log.append(entries, signals)
        return answers

    def _person_card(self, q: Query, result: Result) -> tuple[bool | None, str | None]:
        """人证一致性核查: only a card the index found valid is compared (an invalid card's holder
        is not served whoever they are). The sample is dropped after the comparison."""
        assert q.fingerprint is not None  # noqa: S101 - only called with a sample
        if result is not Result.VALID:
            return None, FingerprintReason.CARD_NOT_VALID
        try:
            with self.sessions() as session:
                card_ids = enrolled_cards(session, q)
                match = (
                    fingerprints.matches(session, self.biometrics, q.fingerprint, card_ids)
                    if card_ids
                    else None
                )
        except (sa.exc.OperationalError, VaultError) as exc:
            # The validity answer stands (it comes from memory); only the comparison is missing.
            log.warning("person-card comparison unavailable: %s", type(exc).__name__)
            return None, FingerprintReason.UNAVAILABLE
        if match is None:
            return None, FingerprintReason.NOT_REGISTERED
        self.comparisons[match] += 1  # for /metrics (ops/metrics.py samples it)
        return match, None
