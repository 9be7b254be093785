"""The card (居民身份证) and its life: statuses, validity periods, and the lifecycle rules.

Every function here is pure. The services load rows, ask these functions what may happen,
then write the result and a ledger event. Rules are stated in docs/rules.md with the reading
chosen where DOMAIN.md is silent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from idguard.core.errors import RuleViolation


class CardStatus(StrEnum):
    """Stored and answered statuses. EXPIRED is never stored: it is derived from the date."""

    VALID = "valid"
    EXPIRED = "expired"
    REPORTED_LOST = "reported_lost"
    REPORTED_STOLEN = "reported_stolen"
    SUPERSEDED = "superseded"
    REVOKED = "revoked"
    DESTROYED = "destroyed"


class IssueKind(StrEnum):
    FIRST = "first"  # 首次申领
    RENEWAL = "renewal"  # 换领
    REPLACEMENT = "replacement"  # 补领
    CORRECTION = "correction"  # 换发
    TEMPORARY = "temporary"  # 临时居民身份证


class LossReason(StrEnum):
    LOST = "lost"
    STOLEN = "stolen"


class RevocationReason(StrEnum):
    DECEASED = "deceased"
    NATIONALITY_LOST = "nationality_lost"
    FRAUD = "fraud"  # 骗领
    HUKOU_CANCELLED = "hukou_cancelled"  # 注销


class FoundDisposition(StrEnum):
    HELD = "held"
    DESTROYED = "destroyed"
    RETURNED = "returned"


LOSS_STATUS = {
    LossReason.LOST: CardStatus.REPORTED_LOST,
    LossReason.STOLEN: CardStatus.REPORTED_STOLEN,
}

TEMPORARY_CARD_MONTHS = 3


def add_years(day: dt.date, years: int) -> dt.date:
    """Same month and day `years` later; 29 February falls back to 28 February."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def add_months(day: dt.date, months: int) -> dt.date:
    """Same day `months` later, clamped to the month's last day (31 Jan + 1 month = 28/29 Feb)."""
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    for candidate in (day.day, 30, 29, 28):
        try:
            return dt.date(year, month, candidate)
        except ValueError:
            continue
    raise AssertionError("unreachable: every month has a 28th")  # pragma: no cover


def age_on(birth_date: dt.date, day: dt.date) -> int:
    """Completed years of age on `day`."""
    before_birthday = (day.month, day.day) < (birth_date.month, birth_date.day)
    return day.year - birth_date.year - int(before_birthday)


def validity_years(birth_date: dt.date, issued_on: dt.date) -> int | None:
    """Validity period by age at issue (居民身份证法 art. 5); None is long-term (长期)."""
    age = age_on(birth_date, issued_on)
    if age < 16:
        return 5
    if age <= 25:
        return 10
    if age <= 45:
        return 20
    return None


def expiry_date(birth_date: dt.date, issued_on: dt.date) -> dt.date | None:
    years = validity_years(birth_date, issued_on)
    return None if years is None else add_years(issued_on, years)


def temporary_expiry(issued_on: dt.date) -> dt.date:
    return add_months(issued_on, TEMPORARY_CARD_MONTHS)


def effective_status(stored: CardStatus, expires_on: dt.date | None, today: dt.date) -> CardStatus:
    """The status a verifier sees today. A card is valid through its expiry date, expired after.

    Only a stored VALID card can become EXPIRED; a lost or superseded card keeps its reason.
    """
    if stored is CardStatus.VALID and expires_on is not None and today > expires_on:
        return CardStatus.EXPIRED
    return stored


@dataclass(frozen=True, slots=True)
class CardView:
    """What the rules need to know about one card."""

    card_id: str
    status: CardStatus
    issued_on: dt.date
    expires_on: dt.date | None
    temporary: bool
    fingerprints_registered: bool = False
    superseded_by: str | None = None


def current_card(cards: Sequence[CardView]) -> CardView | None:
    """The person's current card: the one no newer card has superseded (issue dates can tie)."""
    heads = [c for c in cards if c.superseded_by is None]
    return max(heads, key=lambda c: c.issued_on, default=None)


def check_can_issue(
    kind: IssueKind,
    *,
    revoked: bool,
    regular_cards: Sequence[CardView],
    previous_card_id: str | None,
) -> CardView | None:
    """Decide whether a regular card of `kind` may be issued; return the card it supersedes.

    - A revoked person (deceased, nationality lost, ...) gets no card.
    - `first` only for a person who never held a regular card; the others need one to replace.
    - `previous_card_id`, when the client sends it, must name the person's newest card: this is
      how two clerks racing on one person get one success and one conflict.
    """
    if revoked:
        raise RuleViolation("the person's registration is revoked; no card can be issued")
    newest = current_card(regular_cards)
    if kind is IssueKind.FIRST:
        if newest is not None:
            raise RuleViolation("the person already holds a card; use renewal, replacement or correction")
        return None
    if newest is None:
        raise RuleViolation(f"the person has no card to {kind.value}; issue a first card")
    if previous_card_id is not None and previous_card_id != newest.card_id:
        raise RuleViolation("previous_card_id is not the person's newest card: a newer card exists")
    return newest


def check_can_report_loss(card: CardView, today: dt.date) -> None:
    """Only a card that is valid today can be reported lost or stolen."""
    status = effective_status(card.status, card.expires_on, today)
    if status is not CardStatus.VALID:
        raise RuleViolation(f"the card is {status.value}, only a valid card can be reported lost")


def check_can_cancel_report(
    *,
    report_office: str,
    office: str,
    report_cancelled: bool,
    card: CardView,
    newer_card_exists: bool,
) -> None:
    """解除挂失: at the accepting office only, while no newer card exists and the report stands."""
    if report_cancelled:
        raise RuleViolation("the loss report is already cancelled")
    if office != report_office:
        raise RuleViolation("a loss report can be cancelled only at the office that accepted it")
    if newer_card_exists:
        raise RuleViolation("a newer card has been issued: the old card stays invalid and must be handed in")
    if card.status not in (CardStatus.REPORTED_LOST, CardStatus.REPORTED_STOLEN):
        raise RuleViolation(f"the card is {card.status.value}, not reported lost: there is nothing to cancel")


def found_disposition(
    card: CardView, *, newer_card_exists: bool, owner_revoked: bool = False
) -> FoundDisposition:
    """A found card whose owner already has a newer card (or whose registration is revoked: the
    owner died, lost nationality...) is destroyed; otherwise it is held for the owner."""
    if newer_card_exists or owner_revoked or card.status in (CardStatus.SUPERSEDED, CardStatus.REVOKED):
        return FoundDisposition.DESTROYED
    return FoundDisposition.HELD


class EventKind(StrEnum):
    """What happened to a card: the ledger's `event`, and the `event` of a unit's notification."""

    ISSUED_FIRST = "issued:first"
    ISSUED_RENEWAL = "issued:renewal"
    ISSUED_REPLACEMENT = "issued:replacement"
    ISSUED_CORRECTION = "issued:correction"
    ISSUED_TEMPORARY = "issued:temporary"
    REPORTED_LOST = "reported_lost"  # 挂失
    REPORTED_STOLEN = "reported_stolen"
    LOSS_REPORT_CANCELLED = "loss_report_cancelled"  # 解除挂失
    SUPERSEDED = "superseded"  # a newer card was issued
    REVOKED = "revoked"  # the person's registration was revoked
    FOUND = "found"  # handed in by a finder and held for the owner
    RETURNED = "returned"  # a held card given back to its owner
    DESTROYED = "destroyed"  # 销毁: a found card that can no longer be returned
    # Watchlist events (冒用身份证人员黑名单, victim protection) on every card of the person: they
    # change no status, but they move the ledger, so every worker's index picks the person's new
    # alert flags up with the card (verification/runtime/follower.py), within the same bound as a
    # loss report. Units are never notified of them (notifications.RELEVANT: no status change).
    BLACKLISTED = "blacklisted"  # the holder was listed on the impersonator blacklist
    BLACKLIST_ENDED = "blacklist_ended"  # the listing was lifted, or ended after its `until` date
    PROTECTION_SET = "protection_set"  # every check needs the holder's finger (person_check_required)
    PROTECTION_CLEARED = "protection_cleared"

    @classmethod
    def issued(cls, kind: IssueKind) -> EventKind:
        return cls(f"issued:{kind.value}")

    @classmethod
    def reported(cls, reason: LossReason) -> EventKind:
        return cls(f"reported_{reason.value}")

    @property
    def is_issue(self) -> bool:
        return self.value.startswith("issued:")

    @property
    def is_watchlist(self) -> bool:
        """A watchlist event: the holder's alert flags changed, never the card's status."""
        return self in WATCHLIST_EVENTS


WATCHLIST_EVENTS = frozenset(
    {
        EventKind.BLACKLISTED,
        EventKind.BLACKLIST_ENDED,
        EventKind.PROTECTION_SET,
        EventKind.PROTECTION_CLEARED,
    }
)
_STORED = tuple(s for s in CardStatus if s is not CardStatus.EXPIRED)  # EXPIRED is derived, never stored
_HOLDABLE = (CardStatus.VALID, CardStatus.REPORTED_LOST, CardStatus.REPORTED_STOLEN)

# The card lifecycle as a table: event -> {stored status before: status after}. A status missing
# from an event's row means the event cannot happen to such a card. `ledger.record` applies it to
# every status change, so nothing writes a status this table does not allow. (None: not issued.)
TRANSITIONS: dict[EventKind, dict[CardStatus | None, CardStatus]] = {
    **{event: {None: CardStatus.VALID} for event in EventKind if event.is_issue},
    EventKind.REPORTED_LOST: {CardStatus.VALID: CardStatus.REPORTED_LOST},
    EventKind.REPORTED_STOLEN: {CardStatus.VALID: CardStatus.REPORTED_STOLEN},
    EventKind.LOSS_REPORT_CANCELLED: {
        CardStatus.REPORTED_LOST: CardStatus.VALID,
        CardStatus.REPORTED_STOLEN: CardStatus.VALID,
    },
    # A valid card is superseded; an invalid one keeps its reason (what a verifier should hear),
    # yet the event is recorded: its loss report can no longer be cancelled.
    EventKind.SUPERSEDED: {s: CardStatus.SUPERSEDED if s is CardStatus.VALID else s for s in _STORED},
    EventKind.REVOKED: {CardStatus.VALID: CardStatus.REVOKED},
    # Holding and returning a found card change nothing a verifier answers.
    EventKind.FOUND: {s: s for s in _HOLDABLE},
    EventKind.RETURNED: {s: s for s in _HOLDABLE},
    EventKind.DESTROYED: {s: CardStatus.DESTROYED for s in _STORED if s is not CardStatus.DESTROYED},
    # Listing, lifting and protection happen to a person, whatever their cards' statuses: each of
    # the person's cards records the event (an invalid card's holder is still the one warned
    # about), and no status changes.
    **{event: {s: s for s in _STORED} for event in WATCHLIST_EVENTS},
}


def transition(event: EventKind, before: CardStatus | None) -> CardStatus:
    """The stored status after `event` on a card stored as `before` (None: not yet issued)."""
    after = TRANSITIONS[event].get(before)
    if after is None:
        state = "not yet issued" if before is None else before.value
        raise RuleViolation(f"a card that is {state} cannot be {event.value.replace('_', ' ')}")
    return after


# Ages in completed years (居民身份证法 and DOMAIN.md): a holder under 16 may have a guardian
# report the loss; the guardian must be an adult.
GUARDIAN_MIN_AGE = 18
HOLDER_NEEDS_GUARDIAN_BELOW = 16


def check_guardian_may_report(*, holder_birth_date: dt.date, today: dt.date) -> None:
    """Only the holder in person reports a loss, except for a holder under 16: their guardian may."""
    if age_on(holder_birth_date, today) >= HOLDER_NEEDS_GUARDIAN_BELOW:
        raise RuleViolation(
            "only the holder in person may report a loss (a guardian only for a holder under 16)"
        )


def check_guardian(*, birth_date: dt.date, revoked: bool, today: dt.date) -> None:
    """A guardian who reports is a registered adult (18 or over, registration not revoked)."""
    if age_on(birth_date, today) < GUARDIAN_MIN_AGE or revoked:
        raise RuleViolation("a guardian must be a registered adult")


def check_can_return(
    card: CardView,
    *,
    disposition: FoundDisposition,
    owner_revoked: bool,
    held_at: str,
    office: str,
) -> None:
    """A held card goes back to its owner at the office that holds it, unless it can no longer be
    returned: the owner got a newer card, or the card or the owner's registration was revoked."""
    if disposition is not FoundDisposition.HELD:
        raise RuleViolation(f"the found card is {disposition.value}, not held")
    if owner_revoked:
        raise RuleViolation("the owner's registration is revoked: the card is not returned")
    if card.superseded_by is not None or card.status in (CardStatus.REVOKED, CardStatus.DESTROYED):
        raise RuleViolation(
            "a newer card was issued (or the card revoked) since it was found: it is destroyed, not returned"
        )
    if office != held_at:
        raise RuleViolation("the card is held at another office; it is returned there")


def check_can_revoke(*, already_revoked: RevocationReason | None, office: str, hukou_office: str) -> None:
    """A registration is revoked once, by the person's household-registration office."""
    if office != hukou_office:
        raise RuleViolation("a revocation is recorded by the person's household-registration office")
    if already_revoked is not None:
        raise RuleViolation(f"the person's registration is already revoked ({already_revoked.value})")


def revoked_by_revocation(cards: Sequence[CardView]) -> list[CardView]:
    """The cards a revocation makes REVOKED: every valid one, regular and temporary (an invalid card
    keeps its reason)."""
    return [c for c in cards if c.status is CardStatus.VALID]
