"""Networked verification (联网核查): the hot path from a unit's request to its answer.

Everything here runs in memory: the answer comes from the worker's CardIndex, the key from the
KeyRing, the rate from the RateLimiter, and the check is appended to the CheckLog buffer. No
database round trip happens while a unit waits. What is answered never carries personal data.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard.domain.clock import Clock, today_cst
from idguard.domain.verification import CardIndex, Result
from idguard.fingerprints import Template
from idguard.services import fingerprints
from idguard.services.checklog import CheckEntry, CheckLog
from idguard.services.fingerprints import Biometrics
from idguard.services.follower import IndexFollower
from idguard.services.keyring import KeyRing, UnitView
from idguard.services.notifications import NotificationHorizon, WebhookDispatcher
from idguard.services.ratelimit import RateLimiter
from idguard.services.vault import VaultError

log = logging.getLogger("idguard.verify")


class FingerprintReason(StrEnum):
    """Why an answer's `fingerprint_match` is null."""

    CARD_NOT_VALID = "card_not_valid"  # invalid or mismatching card: no comparison is made
    NOT_REGISTERED = "no_registered_fingerprints"
    UNAVAILABLE = "comparison_unavailable"  # the registry database could not be read


@dataclass(frozen=True, slots=True)
class Query:
    """What a unit reads off the card in front of it (already validated for shape)."""

    id_number: str
    name: str
    issued_on: dt.date
    expires_on: dt.date | None
    purpose: str
    operator: str
    chip_serial: str | None = None
    watch: bool = False
    fingerprint: Template | None = None  # the live capture's template, for the person-card check


@dataclass(frozen=True, slots=True)
class Answer:
    result: str
    reason: str | None
    check_id: uuid.UUID
    checked_at: dt.datetime
    fingerprint_match: bool | None = None
    fingerprint_reason: str | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "result": self.result,
            "check_id": str(self.check_id),
            "checked_at": self.checked_at.isoformat().replace("+00:00", "Z"),
        }
        if self.reason is not None:
            out["reason"] = self.reason
        if self.fingerprint_reason is not None or self.fingerprint_match is not None:
            out["fingerprint_match"] = self.fingerprint_match
            out["fingerprint_reason"] = self.fingerprint_reason
        return out


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
    ) -> None:
        self.sessions = sessions
        self.biometrics = biometrics
        self.index = CardIndex()
        self.keyring = KeyRing()
        self.follower = IndexFollower(sessions, self.index, self.keyring)
        self.limiter = RateLimiter(workers)
        self.log = CheckLog(engine, secret_key)
        self.clock = clock
        self.dispatcher = WebhookDispatcher(
            sessions,
            self.keyring,
            NotificationHorizon(self.follower),
            secret_key=secret_key,
            clock=clock,
        )

    def start(self) -> None:
        self.follower.load()
        self.follower.start()
        self.log.start()
        self.dispatcher.start()

    def stop(self) -> None:
        self.dispatcher.stop()
        self.follower.stop()
        self.log.stop()

    def check(self, unit: UnitView, queries: list[Query]) -> list[Answer]:
        """Answer checks already admitted (purpose allowed, rate taken); record every one.

        In memory, except the person-card comparison of a query with a fingerprint, which reads
        the card's sealed templates: call it off the event loop when any query carries one."""
        now = self.clock.now()
        today = today_cst(now)
        seq = self.follower.seq
        answers: list[Answer] = []
        entries: list[CheckEntry] = []
        index_check = self.index.check
        for q in queries:
            result, reason = index_check(q.id_number, q.name, q.issued_on, q.expires_on, today, q.chip_serial)
            match, why = (None, None) if q.fingerprint is None else self._person_card(q, result)
            answer = Answer(
                result=result.value,
                reason=reason.value if reason is not None else None,
                check_id=uuid.uuid4(),
                checked_at=now,
                fingerprint_match=match,
                fingerprint_reason=why,
            )
            answers.append(answer)
            entries.append(
                CheckEntry(
                    check_id=answer.check_id,
                    unit_code=unit.code,
                    operator=q.operator,
                    purpose=q.purpose,
                    at=now,
                    result=answer.result,
                    reason=answer.reason,
                    id_number=q.id_number,
                    watch=q.watch and result is not Result.MISMATCH,
                    issued_on=q.issued_on if q.watch and result is not Result.MISMATCH else None,
                    seq=seq,
                    fingerprint_match=match,
                )
            )
        self.log.append(entries)
        return answers

    def _person_card(self, q: Query, result: Result) -> tuple[bool | None, str | None]:
        """人证一致性核查: only a card the index found valid is compared (an invalid card's holder
        is not served whoever they are). The sample is dropped after the comparison."""
        assert q.fingerprint is not None  # noqa: S101 - only called with a sample
        if result is not Result.VALID:
            return None, FingerprintReason.CARD_NOT_VALID
        try:
            with self.sessions() as session:
                match = fingerprints.matches_card(
                    session,
                    self.biometrics,
                    q.fingerprint,
                    id_number=q.id_number,
                    issued_on=q.issued_on,
                    expires_on=q.expires_on,
                    chip_serial=q.chip_serial,
                )
        except (sa.exc.OperationalError, VaultError) as exc:
            # The validity answer stands (it comes from memory); only the comparison is missing.
            log.warning("person-card comparison unavailable: %s", type(exc).__name__)
            return None, FingerprintReason.UNAVAILABLE
        if match is None:
            return None, FingerprintReason.NOT_REGISTERED
        return match, None
