"""Fingerprints in the registry (指纹登记与比对): enrolment when a card is issued, the on-site 1:1
comparison at a counter (loss report, found card's return) and the person-card comparison of a
unit's check (人证一致性核查).

Parsing a record and building its MCC template is CPU work done before any lock is taken. Stored
templates are decrypted only here and never leave this module: its functions answer verdicts and
scores, never template bytes. A live sample is compared and dropped; it is never stored.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import logging
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.biometrics import (
    DEFAULT_POLICY,
    FingerPosition,
    FingerView,
    MinutiaeRecord,
    Template,
    TemplateError,
    assess_capture,
    build_template,
    encode,
    match_any,
    parse,
)
from idguard.biometrics.identification import index_data, index_is_current
from idguard.biometrics.models import Fingerprint, FingerprintComparison
from idguard.biometrics.vault import TemplateVault, VaultError
from idguard.config import Settings
from idguard.core.errors import InvalidField, RecordedRefusal, Unavailable
from idguard.core.grants import Actor

log = logging.getLogger("idguard.biometrics")

FINGERS_PER_CARD = 2
MAX_RECORD_BYTES = 16_384  # 2 views x 255 minutiae x 6 bytes is under 4 KB; anything larger is not a capture
MAX_RECORD_BASE64 = 4 * -(-MAX_RECORD_BYTES // 3)
FAILURE_WINDOW = dt.timedelta(hours=24)
_REINDEX_PAGE = 2_000  # rows whose index data `reindex` opens per query when looking for stale ones


class Purpose(StrEnum):
    LOSS_REPORT = "loss_report"
    LOSS_REPORT_CANCEL = "loss_report_cancel"
    FOUND_CARD_RETURN = "found_card_return"


@dataclass(frozen=True, slots=True)
class Biometrics:
    """What the registry needs to enrol and compare: the template vault and the decision threshold."""

    vault: TemplateVault
    threshold: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Biometrics:
        return cls(vault=TemplateVault.from_settings(settings), threshold=settings.fingerprint_threshold)


class ComparisonUnavailable(VaultError):
    """The person-card comparison could not be made (a blob that does not open, fingers flagged but
    missing). Logged as an error with the card id; the unit is told `comparison_unavailable`."""


class FingerprintMismatch(RecordedRefusal):
    title = "Fingerprint does not match"
    code = "fingerprint_mismatch"


def finger_name(finger: int) -> str:
    return FingerPosition(finger).name.lower().replace("_", " ")


def decode(sample: str, *, field: str) -> MinutiaeRecord:
    """A base64 ISO/IEC 19794-2 record from a request; errors name `field` and the record's part."""
    try:
        data = base64.b64decode(sample, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidField(field, "not valid base64") from None
    if len(data) > MAX_RECORD_BYTES:
        raise InvalidField(field, f"{len(data)} bytes is too large for a finger minutiae record")
    try:
        return parse(data)
    except TemplateError as exc:
        raise InvalidField(f"{field}.{exc.field}", exc.detail) from None


def live_template(sample: str, *, field: str = "fingerprint") -> Template:
    """The template of a live capture (its first view). A capture with too few minutiae is refused
    with a message to capture again, before any comparison: it is not a failed attempt."""
    view = decode(sample, field=field).views[0]
    found = len(view.minutiae)
    if found < DEFAULT_POLICY.min_minutiae:
        raise InvalidField(
            field,
            f"only {found} minutiae in the live capture (need {DEFAULT_POLICY.min_minutiae}): "
            "clean the finger and the scanner, press flatter, capture again",
        )
    return build_template(view)


@dataclass(frozen=True, slots=True)
class Enrolment:
    """One finger ready to store: its single-view record and template, in plaintext until sealed."""

    finger: int
    record: bytes
    template: bytes
    minutiae: int
    quality: int


def _view_of(record: MinutiaeRecord, finger: int, field: str) -> FingerView:
    views = [v for v in record.views if v.finger_position == finger]
    if not views and len(record.views) == 1 and record.views[0].finger_position == FingerPosition.UNKNOWN:
        views = [dataclasses.replace(record.views[0], finger_position=finger)]
    if not views:
        held = ", ".join(sorted({str(v.finger_position) for v in record.views}))
        raise InvalidField(field, f"the record holds no view of finger {finger} (it holds finger {held})")
    return views[0]


def prepare_enrolment(items: Sequence[tuple[int, str]], *, field: str = "fingerprints") -> list[Enrolment]:
    """Validate two captures for a new card and build their templates (before any lock is taken).

    Two different fingers; each record must hold a view of the finger it is sent for (or one view
    of unknown position) that passes the quality gate. Every refusal names the item and says what
    the clerk should do.
    """
    if len(items) != FINGERS_PER_CARD:
        raise InvalidField(field, f"a card registers {FINGERS_PER_CARD} fingers; {len(items)} were sent")
    if items[0][0] == items[1][0]:
        raise InvalidField(f"{field}[1].finger", "the two registered fingers must be different fingers")
    out = []
    for i, (finger, sample) in enumerate(items):
        where = f"{field}[{i}].template"
        record = decode(sample, field=where)
        view = _view_of(record, finger, where)
        verdict = assess_capture(view)
        if not verdict.accepted:
            raise InvalidField(where, f"{finger_name(finger)}: {verdict.message}")
        template = build_template(view)
        if template.count == 0:
            raise InvalidField(
                where, f"{finger_name(finger)}: the minutiae are too sparse to compare; capture again"
            )
        single = dataclasses.replace(record, views=(dataclasses.replace(view, view_number=0),))
        out.append(
            Enrolment(
                finger=finger,
                record=encode(single),
                template=template.to_bytes(),
                minutiae=len(view.minutiae),
                quality=view.quality_score or 0,
            )
        )
    return out


def _context(card_id: uuid.UUID, finger: int, part: str) -> bytes:
    return f"idguard/fingerprint/{card_id}/{finger}/{part}".encode()


def enrol(
    session: Session,
    biometrics: Biometrics,
    card_id: uuid.UUID,
    enrolments: Sequence[Enrolment],
    *,
    actor: Actor,
    now: dt.datetime,
) -> None:
    """Store a new card's fingers, sealed. The card row must already be flushed, and flagged
    `fingerprints_registered` by the caller (the registry owns the card)."""
    vault = biometrics.vault
    for e in enrolments:
        key_id, record = vault.seal(e.record, context=_context(card_id, e.finger, "record"))
        _, template = vault.seal(
            zlib.compress(e.template, 1), context=_context(card_id, e.finger, "template")
        )
        _, index = vault.seal(index_data(e.template), context=_context(card_id, e.finger, "index"))
        session.add(
            Fingerprint(
                card_id=card_id,
                finger=e.finger,
                key_id=key_id,
                record=record,
                template=template,
                index_data=index,
                minutiae=e.minutiae,
                quality=e.quality,
                enrolled_at=now,
                enrolled_by=actor.staff_id,
            )
        )


def _registered(session: Session, vault: TemplateVault, card_ids: Sequence[uuid.UUID]) -> list[Template]:
    rows = session.execute(
        sa.select(Fingerprint.card_id, Fingerprint.finger, Fingerprint.key_id, Fingerprint.template).where(
            Fingerprint.card_id.in_(card_ids)
        )
    ).all()
    return [
        Template.from_bytes(
            zlib.decompress(vault.open(key_id, blob, context=_context(card_id, finger, "template")))
        )
        for card_id, finger, key_id, blob in rows
    ]


def compare_at_counter(
    session: Session,
    biometrics: Biometrics | None,
    card_id: uuid.UUID,
    live: Template | None,
    *,
    registered: bool,
    purpose: Purpose,
    actor: Actor,
    office: str,
    now: dt.datetime,
    field: str = "fingerprint",
) -> None:
    """The on-site comparison a card with registered fingerprints needs (DOMAIN: the clerk must
    compare and refuse on mismatch). Every comparison is recorded; a mismatch refuses the request
    with FingerprintMismatch, whose record the unit of work commits after rolling the rest back.
    A card without registered fingerprints (`registered` False) needs none."""
    if not registered:
        return
    if biometrics is None:
        raise ValueError("a card with registered fingerprints needs the biometrics configuration")
    if live is None:
        raise InvalidField(
            field,
            "this card has registered fingerprints: capture one of the holder's registered fingers "
            "on the spot and send it",
        )
    try:
        stored = _registered(session, biometrics.vault, [card_id])
    except VaultError as exc:
        # A missing key (configuration) or a ciphertext that fails authentication (tampering, or
        # a blob moved from another card): fail closed, loudly, without any template bytes.
        log.error("fingerprints of card %s cannot be opened: %s", card_id, exc)
        raise Unavailable(
            "the card's registered fingerprints cannot be read; nothing was done. The incident is "
            "logged: contact the registry's operators",
            code="fingerprints_unreadable",
        ) from None
    if not stored:  # flagged, yet nothing stored: an integrity fault, and fail closed
        log.error("card %s is flagged with fingerprints but none are stored", card_id)
        raise Unavailable(
            "the card's registered fingerprints cannot be read; nothing was done. The incident is "
            "logged: contact the registry's operators",
            code="fingerprints_unreadable",
        )
    matched, score = match_any(live, stored, biometrics.threshold)
    comparison = FingerprintComparison(
        id=uuid.uuid4(),
        card_id=card_id,
        purpose=purpose.value,
        office=office,
        staff_id=actor.staff_id,
        at=now,
        matched=matched,
        score=round(score, 4),
    )
    if matched:
        session.add(comparison)
        return
    earlier = session.scalar(
        sa.select(sa.func.count())
        .select_from(FingerprintComparison)
        .where(
            FingerprintComparison.card_id == card_id,
            FingerprintComparison.matched.is_(False),
            FingerprintComparison.at > now - FAILURE_WINDOW,
        )
    )
    raise FingerprintMismatch(
        "the live fingerprint does not match the card's registered fingers: refused "
        f"(failed comparisons on this card in the last 24 hours: {(earlier or 0) + 1})",
        records=(comparison,),
    )


def matches(session: Session, biometrics: Biometrics, live: Template, card_ids: Sequence[uuid.UUID]) -> bool:
    """The person-card check: does the live finger match one registered on any of these cards
    (the cards flagged `fingerprints_registered` that what is printed on the card designates)?"""
    try:
        registered = _registered(session, biometrics.vault, card_ids)
    except VaultError as exc:
        log.error("fingerprints of card %s cannot be opened: %s", ", ".join(map(str, card_ids)), exc)
        raise ComparisonUnavailable(str(exc)) from None
    if not registered:  # flagged, yet nothing stored: an integrity fault, not "no fingerprints"
        log.error("card %s is flagged with fingerprints but none are stored", ", ".join(map(str, card_ids)))
        raise ComparisonUnavailable("registered fingerprints missing")
    return match_any(live, registered, biometrics.threshold)[0]


def rekey(session: Session, vault: TemplateVault, *, batch: int = 500) -> int:
    """Re-seal up to `batch` fingerprints not under the active key; returns how many. The caller
    commits and calls again until it returns 0 (each batch is its own transaction)."""
    rows = session.scalars(
        sa.select(Fingerprint)
        .where(Fingerprint.key_id != vault.active_key_id)
        .limit(batch)
        .with_for_update(skip_locked=True)
    ).all()
    for fp in rows:
        for part, column in (("record", "record"), ("template", "template"), ("index", "index_data")):
            sealed = getattr(fp, column)
            if sealed is None:  # no index data (enrolled before migration 0015)
                continue
            context = _context(fp.card_id, fp.finger, part)
            plain = vault.open(fp.key_id, sealed, context=context)
            setattr(fp, column, vault.seal(plain, context=context)[1])
        fp.key_id = vault.active_key_id
    session.flush()
    return len(rows)


@dataclass
class ReindexPlace:
    """How far a run of `reindex` calls has scanned the rows for stale index data: kept by the
    caller between calls, so that each row is opened once per run."""

    after: tuple[uuid.UUID, int] | None = None


def reindex(
    session: Session, vault: TemplateVault, *, batch: int = 500, place: ReindexPlace | None = None
) -> int:
    """(Re)derive the index data of up to `batch` fingerprints whose index data is missing
    (enrolled before migration 0015, or bulk-loaded without it) or was made by another index model
    or format (`identification.index_is_current`: the header names both), from the stored
    template and sealed like it; returns how many. The caller commits and calls again until it
    returns 0 (each batch is its own transaction; on PostgreSQL concurrent runs share the rows,
    SKIP LOCKED). A row keeps one key id: a row under an older key is re-sealed whole under the
    active key, as `rekey` does. Afterwards the gallery files these fingers from their index data.

    Missing index data is found by the database; stale index data only by opening it (the model
    id is inside the sealed bytes), so after the missing ones each call reads the other rows'
    index data in key order, `_REINDEX_PAGE` at a time, until it has `batch` stale ones or none
    are left. A caller that passes the same `place` to each call of a run reads each row once;
    without one, each call starts that scan from the first row (after a model change the whole run
    would read about N^2 / (2 batch) rows' index data)."""
    rows = list(
        session.scalars(
            sa.select(Fingerprint)
            .where(Fingerprint.index_data.is_(None))
            .order_by(Fingerprint.card_id, Fingerprint.finger)
            .limit(batch)
            .with_for_update(skip_locked=True)
        ).all()
    )
    after = place.after if place is not None else None
    while len(rows) < batch:
        query = sa.select(Fingerprint.card_id, Fingerprint.finger, Fingerprint.key_id, Fingerprint.index_data)
        query = query.where(Fingerprint.index_data.is_not(None))
        if after is not None:
            query = query.where(sa.tuple_(Fingerprint.card_id, Fingerprint.finger) > sa.tuple_(*after))
        page = session.execute(
            query.order_by(Fingerprint.card_id, Fingerprint.finger).limit(_REINDEX_PAGE)
        ).all()
        if not page:
            break
        stale = [
            (r.card_id, r.finger)
            for r in page
            if r.index_data is not None
            and not index_is_current(
                vault.open(r.key_id, r.index_data, context=_context(r.card_id, r.finger, "index"))
            )
        ]
        if len(stale) > batch - len(rows):  # the rest of this page is the next call's
            stale = stale[: batch - len(rows)]
            after = stale[-1]
        else:
            after = (page[-1].card_id, page[-1].finger)
        if place is not None:
            place.after = after
        if stale:
            rows += session.scalars(
                sa.select(Fingerprint)
                .where(sa.tuple_(Fingerprint.card_id, Fingerprint.finger).in_(stale))
                .order_by(Fingerprint.card_id, Fingerprint.finger)
                .with_for_update(skip_locked=True)
            ).all()
    for fp in rows:
        template = vault.open(fp.key_id, fp.template, context=_context(fp.card_id, fp.finger, "template"))
        if fp.key_id != vault.active_key_id:
            for part, column in (("record", "record"), ("template", "template")):
                context = _context(fp.card_id, fp.finger, part)
                plain = vault.open(fp.key_id, getattr(fp, column), context=context)
                setattr(fp, column, vault.seal(plain, context=context)[1])
            fp.key_id = vault.active_key_id
        fp.index_data = vault.seal(index_data(template), context=_context(fp.card_id, fp.finger, "index"))[1]
    session.flush()
    return len(rows)
