"""Test cards: one demo card for every answer a unit can get, and a key for the demo unit, so a
newcomer makes a `valid` and an `invalid` check in two copy-pasted commands (docs/integration.md).

Demo data only: the cards are looked up in the loaded demo population (which depends on the day
it was loaded), so the commands print them rather than the docs listing fixed numbers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from idguard.registry.lifecycle import CardStatus
from idguard.registry.models import Card
from idguard.verification import units
from idguard.verification.models import Unit

DEMO_UNIT = "DEMO-BANK"
DEMO_PURPOSE = "account_opening"


def _stored(status: CardStatus) -> Callable[[dt.date], tuple[sa.ColumnElement[bool], ...]]:
    return lambda today: (Card.status == status,)


# What a unit would be answered -> which demo cards give that answer. Valid cards are long-term
# (长期) or far from expiry, so an example printed today still answers the same next month.
CATEGORIES: dict[str, Callable[[dt.date], tuple[sa.ColumnElement[bool], ...]]] = {
    "valid": lambda today: (
        Card.status == CardStatus.VALID,
        Card.temporary.is_(False),
        Card.fingerprints_registered.is_(False),
        sa.or_(Card.expires_on.is_(None), Card.expires_on > today + dt.timedelta(days=365)),
    ),
    "reported_lost": _stored(CardStatus.REPORTED_LOST),
    "reported_stolen": _stored(CardStatus.REPORTED_STOLEN),
    "superseded": _stored(CardStatus.SUPERSEDED),
    "expired": lambda today: (Card.status == CardStatus.VALID, Card.expires_on < today),
    "revoked": _stored(CardStatus.REVOKED),
    "with_fingerprints": lambda today: (
        Card.status == CardStatus.VALID,
        Card.fingerprints_registered.is_(True),
        sa.or_(Card.expires_on.is_(None), Card.expires_on >= today),
    ),
}
# The answer each category gets: (result, reason).
EXPECTED: dict[str, tuple[str, str | None]] = {
    "valid": ("valid", None),
    "reported_lost": ("invalid", "reported_lost"),
    "reported_stolen": ("invalid", "reported_stolen"),
    "superseded": ("invalid", "superseded"),
    "expired": ("invalid", "expired"),
    "revoked": ("invalid", "revoked"),
    "with_fingerprints": ("valid", None),
}


def demo_card(session: Session, category: str, *, today: dt.date) -> dict[str, Any] | None:
    """The body a bank sends to POST /api/v1/verify for the first demo card of `category`
    (None when the demo data has none): exactly what is printed on the card."""
    other = aliased(Card)
    # The only card of its number printed with that issue date: the answer cannot depend on the chip.
    alone = (
        sa.select(sa.func.count())
        .select_from(other)
        .where(other.id_number == Card.id_number, other.issued_on == Card.issued_on)
        .scalar_subquery()
        == 1
    )
    card = session.scalars(
        sa.select(Card)
        .where(*CATEGORIES[category](today), alone)
        .order_by(Card.id_number, Card.issued_on)
        .limit(1)
    ).first()
    if card is None:
        return None
    return {
        "id_number": card.id_number,
        "name": card.name,
        "issued_on": card.issued_on.isoformat(),
        "expires_on": card.expires_on.isoformat() if card.expires_on else None,
        "purpose": DEMO_PURPOSE,
        "operator": "demo-teller",
    }


def demo_unit_key(session: Session, *, now: dt.datetime, secret_key: str) -> str:
    """A working API key for the demo unit: onboarded on first use, otherwise a fresh key by
    rotation (its earlier keys stop at once: a demo key is printed, so it is short-lived)."""
    if session.get(Unit, DEMO_UNIT) is None:
        issued = units.onboard(
            session,
            actor=None,
            now=now,
            secret_key=secret_key,
            code=DEMO_UNIT,
            name="演示银行 (demo bank)",
            sector="bank",
            purposes=[DEMO_PURPOSE, "hotel_checkin"],
            rate_limit=100,
        )
    else:
        issued = units.rotate_key(
            session, actor=None, now=now, secret_key=secret_key, code=DEMO_UNIT, grace=dt.timedelta(0)
        )
    return issued.api_key
