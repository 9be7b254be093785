"""ID-using units (用证单位): statuses, purposes, and the API key format."""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum

from idguard.core.grants import UNIT_KEY_PREFIX


class UnitStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


# Business types a unit may be allowed to check for (业务类型). Onboarding picks a subset.
PURPOSES = frozenset(
    {
        "account_opening",
        "hotel_checkin",
        "ticketing",
        "telecom_registration",
        "securities_account",
        "insurance",
        "court_filing",
        "property_registration",
        "employment",
        "postal_delivery",
    }
)

KEY_PREFIX = UNIT_KEY_PREFIX
_PREFIX_CHARS = 12


def new_api_key() -> tuple[str, str, str]:
    """A fresh key: (key shown once, lookup prefix, hash stored)."""
    secret = secrets.token_urlsafe(32)
    key = f"{KEY_PREFIX}{secret}"
    prefix = key[: len(KEY_PREFIX) + _PREFIX_CHARS]
    return key, prefix, hash_key(key)


def key_prefix(key: str) -> str:
    return key[: len(KEY_PREFIX) + _PREFIX_CHARS]


def hash_key(key: str) -> str:
    # 256 bits of randomness: a plain SHA-256 is as strong as a slow hash here, and cheap enough
    # to run on every check.
    return hashlib.sha256(key.encode()).hexdigest()
