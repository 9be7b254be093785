"""The citizens' rules, pure: activation codes, the password policy, masking for public notices,
which unit sector may check which travel certificate, and the retention horizon.

No database, no web framework: tested on their own (tests/unit/citizens/).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from functools import lru_cache
from importlib import resources

from idguard.core.errors import InvalidField

# --- activation codes --------------------------------------------------------------------------

# Crockford-style base 32 without I, L, O, U: nothing a citizen can misread on a receipt. Sixteen
# symbols of 5 bits = 80 bits: guessing one within its 72 hours at the throttled rate (a few
# tries a minute per account and per address) is hopeless.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_SYMBOLS = 16
CODE_GROUP = 4
ACTIVATION_TTL = dt.timedelta(hours=72)
_READ_AS = {"I": "1", "L": "1", "O": "0", "U": "V"}


def new_activation_code() -> str:
    """A fresh code as printed: `7K3M-Q9XD-2HRT-B4WZ` (80 random bits)."""
    symbols = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_SYMBOLS))
    return "-".join(symbols[i : i + CODE_GROUP] for i in range(0, CODE_SYMBOLS, CODE_GROUP))


def normalise_code(code: str) -> str | None:
    """The code as typed, in its one stored form (upper case, no separators or spaces, misread
    letters folded), or None when it cannot be a code."""
    folded = "".join(_READ_AS.get(c, c) for c in code.upper() if c not in "- \t")
    if len(folded) != CODE_SYMBOLS or any(c not in CODE_ALPHABET for c in folded):
        return None
    return folded


def code_hash(key: bytes, normalised: str) -> str:
    """How a code is stored: HMAC-SHA256 under a key of its own (80 random bits need no slow
    hash; the key keeps a stolen table from being searched)."""
    return hmac.new(key, normalised.encode(), hashlib.sha256).hexdigest()


# --- passwords ---------------------------------------------------------------------------------

PASSWORD_MIN = 10
PASSWORD_MAX = 200


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The bundled list of refused passwords (common_passwords.txt, lower case)."""
    text = resources.files("idguard.citizens").joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def check_password(password: str, *, id_number: str, birth_date: dt.date) -> None:
    """A citizen's new password: at least PASSWORD_MIN characters, not a common one, not built
    on the id number or birth date, not one character repeated. InvalidField naming `password`."""
    if len(password) < PASSWORD_MIN:
        raise InvalidField("password", f"a password has at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise InvalidField("password", f"a password has at most {PASSWORD_MAX} characters")
    lowered = password.lower()
    if lowered in common_passwords():
        raise InvalidField("password", "this password is among the most common ones: choose another")
    if len(set(lowered)) < 4:
        raise InvalidField("password", "use at least four different characters")
    personal = (id_number.lower(), id_number[-6:].lower(), birth_date.strftime("%Y%m%d"))
    if any(part in lowered for part in personal):
        raise InvalidField("password", "do not build the password on your id number or birth date")


# --- public notices ----------------------------------------------------------------------------


def mask_name(name: str) -> str:
    """张三 -> 张*, 欧阳娜娜 -> 欧***: the first character only (a surname)."""
    return name[:1] + "*" * (len(name) - 1) if len(name) > 1 else "*"


# --- travel certificates -----------------------------------------------------------------------

# Which unit sector may check a certificate issued for which purpose (临时身份证明 for one journey or
# stay): the sector names units are onboarded with (`--sector railway`, `airline`, `hotel`).
SECTOR_FOR_PURPOSE = {"rail": "railway", "air": "airline", "lodging": "hotel"}
# How far ahead a certificate may be issued (the journey may be tomorrow's first train).
CERTIFICATE_AHEAD_DAYS = 7
# A card issued this recently may not be collected yet (handed over within 60 days, DOMAIN):
# its holder can still need a certificate.
NOT_YET_COLLECTED = dt.timedelta(days=60)


def sector_allows(purpose: str, sector: str) -> bool:
    return SECTOR_FOR_PURPOSE.get(purpose) == sector.strip().lower()


def check_valid_on(valid_on: dt.date, today: dt.date) -> None:
    if valid_on < today:
        raise InvalidField("valid_on", "a certificate cannot be issued for a past day")
    if valid_on > today + dt.timedelta(days=CERTIFICATE_AHEAD_DAYS):
        raise InvalidField("valid_on", f"a certificate is issued at most {CERTIFICATE_AHEAD_DAYS} days ahead")


# --- retention ---------------------------------------------------------------------------------


def retention_horizon(now: dt.datetime, months: int) -> dt.datetime:
    """The oldest instant the check log still keeps: `months` calendar months before `now` (the
    day clamped to the month's length: 31 March minus one month is 28 or 29 February)."""
    total = now.year * 12 + (now.month - 1) - months
    year, month = divmod(total, 12)
    month += 1
    next_month = dt.date(year + (month == 12), month % 12 + 1, 1)
    last_day = (next_month - dt.timedelta(days=1)).day
    return now.replace(year=year, month=month, day=min(now.day, last_day))
