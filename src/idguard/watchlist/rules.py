"""The watchlist's rules (pure): blacklist entries and their end, incident kinds and their
one-per-day rule, and who may see and do what (docs/rules.md, "Impersonation").

Who may act is decided from core/grants.py's permissions, as everywhere; the watchlist has no
permission of its own there yet, so each question below is one existing permission (or two),
named in one place:

- manage the blacklist, close any incident: ONBOARD_UNITS — the supervisor (DOMAIN: "onboards
  ID-using units, manages the impersonator blacklist");
- read the blacklist and every office's incidents: READ_CHECK_LOG — supervisors and auditors
  (incidents come from the check log);
- a clerk (REGISTRY_WRITE without ALL_OFFICES) reads and closes their own office's incidents and
  sets protection for their own office's holders.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from idguard.core.errors import Forbidden, RuleViolation
from idguard.core.grants import Actor, Permission


class BlacklistReason(StrEnum):
    IMPERSONATION = "impersonation"  # 冒用他人居民身份证 (居民身份证法 art. 16)
    FRAUDULENT_APPLICATION = "fraudulent_application"  # 骗领
    CARD_TRAFFICKING = "card_trafficking"  # 买卖、出租、出借


class EntryStatus(StrEnum):
    ACTIVE = "active"
    LIFTED = "lifted"
    EXPIRED = "expired"  # ended by itself after `until`


class BlacklistAction(StrEnum):
    LISTED = "listed"
    LIFTED = "lifted"
    EXPIRED = "expired"


class IncidentKind(StrEnum):
    LOST_CARD_PRESENTED = "lost_card_presented"
    PERSON_CHECK_FAILED = "person_check_failed"
    BLACKLISTED_HOLDER_CHECKED = "blacklisted_holder_checked"
    KNOWN_IMPERSONATOR = "known_impersonator"
    DISPUTED_BY_HOLDER = "disputed_by_holder"
    HARVESTING_SUSPECTED = "harvesting_suspected"


class IncidentStatus(StrEnum):
    OPEN = "open"
    CONFIRMED = "confirmed"
    DISMISSED = "dismissed"


class Outcome(StrEnum):
    CONFIRMED = "confirmed"
    DISMISSED = "dismissed"


# Kinds about a unit, not a holder: no office owns them; supervisors (and auditors) see them.
UNIT_KINDS = frozenset({IncidentKind.HARVESTING_SUSPECTED})


def entry_status(stored: EntryStatus, until: dt.date | None, today: dt.date) -> EntryStatus:
    """An active entry whose last day has passed has ended by itself (whether or not the sweeper
    has written it yet): like a card's expiry, derived from the date."""
    if stored is EntryStatus.ACTIVE and until is not None and today > until:
        return EntryStatus.EXPIRED
    return stored


def check_can_list(*, until: dt.date | None, today: dt.date, active: bool) -> None:
    if active:
        raise RuleViolation("the person already has an active blacklist entry: lift it first")
    if until is not None and until < today:
        raise RuleViolation("`until` is in the past: the entry would never hold")


def check_can_lift(status: EntryStatus) -> None:
    if status is not EntryStatus.ACTIVE:
        raise RuleViolation(f"the entry is {status.value}, not active: there is nothing to lift")


def dedup_key(*, kind: IncidentKind, subject: str, unit_code: str | None, day: dt.date) -> str:
    """One incident per (card, kind, unit, day) — `subject` is the card (or, with no card known,
    the person; for a unit's harvesting, the unit): a bank retrying twenty times makes one
    incident with a count."""
    return f"{kind.value}|{subject}|{unit_code or '-'}|{day.isoformat()}"


# --- who may do what ------------------------------------------------------------------------------


def may_manage_blacklist(actor: Actor) -> bool:
    return actor.may(Permission.ONBOARD_UNITS)


def require_manage_blacklist(actor: Actor) -> None:
    if not may_manage_blacklist(actor):
        raise Forbidden(f"the {actor.role.value} role may not manage the blacklist (supervisors do)")


def require_read_blacklist(actor: Actor) -> None:
    if not actor.may(Permission.READ_CHECK_LOG):
        raise Forbidden(f"the {actor.role.value} role may not read the blacklist")


def reads_every_office(actor: Actor) -> bool:
    """Supervisors and auditors read every office's incidents, and the units' ones."""
    return actor.may(Permission.READ_CHECK_LOG)


def is_office_clerk(actor: Actor) -> bool:
    return actor.may(Permission.REGISTRY_WRITE) and not actor.may(Permission.ALL_OFFICES)


def require_read_incidents(actor: Actor) -> None:
    if not (reads_every_office(actor) or is_office_clerk(actor)):
        raise Forbidden(f"the {actor.role.value} role may not read incidents")


def sees_number(actor: Actor, office: str | None) -> bool:
    """Whether `actor` sees the full id number of a holder whose hukou office is `office`:
    supervisors and auditors always, a clerk for their own office's holders only."""
    return reads_every_office(actor) or (office is not None and office == actor.office)


def require_close(actor: Actor, *, kind: IncidentKind, office: str | None) -> None:
    """A clerk of the owning office, or a supervisor (a unit's harvesting: supervisors only)."""
    if may_manage_blacklist(actor):
        return
    if is_office_clerk(actor) and kind not in UNIT_KINDS and office == actor.office:
        return
    raise Forbidden("only a clerk of the owning office or a supervisor may close this incident")


def require_protect(actor: Actor, *, hukou_office: str) -> None:
    """Victim protection: a clerk of the holder's hukou office, or a supervisor."""
    if may_manage_blacklist(actor):
        return
    if is_office_clerk(actor) and actor.office == hukou_office:
        return
    raise Forbidden(
        "only a clerk of the holder's household-registration office or a supervisor may set protection"
    )
