"""The demo persons' fingers: synthetic, and a pure function of the id number.

A card has registered fingerprints only with its two fingers stored (biometrics/fingerprints), and
then a loss report or a found card's return needs a live capture that matches one of them. For
the demo to be usable at the counter, a clerk (or a curl session) must be able to produce such a
capture for a demo person. So every demo person's master fingers are drawn by the synthetic
generator (biometrics/synthetic.py) from a seed hashed from their id number:

- the loader enrols impression `ENROLLED_IMPRESSION` of `DEMO_FINGERS` (right and left thumb);
- `idguard demo fingerprint ID_NUMBER` prints impression 1, 2, ... of the same finger: another
  capture of it, as a counter scanner would take, with no database and nothing stored.

This is for demo data only, and safe only there: anyone who knows a demo id number can make that
person's fingerprint (that is the point). Real enrolments come from scanners and never match
these captures, so pointing the command at a real registry yields nothing that matches.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

from idguard.biometrics import FingerPosition, encode
from idguard.biometrics.synthetic import Difficulty, impression, master_finger

__all__ = [
    "DEMO_FINGERS",
    "ENROLLED_IMPRESSION",
    "FINGERPRINTS_FROM",
    "enrolment_samples",
    "finger_seed",
    "live_sample",
]

# The two fingers a demo card registers (the usual choice at the counter: both thumbs).
DEMO_FINGERS = (int(FingerPosition.RIGHT_THUMB), int(FingerPosition.LEFT_THUMB))
ENROLLED_IMPRESSION = 0  # live captures use 1, 2, ...: never the enrolled one itself
FINGERPRINTS_FROM = dt.date(2013, 1, 1)  # cards register fingerprints from 2013 (居民身份证法, 2011)
_DIFFICULTY = Difficulty.EASY  # a clean capture at a counter scanner, for enrolment and live


def finger_seed(id_number: str) -> int:
    """The synthetic generator's seed for this person's fingers: 64 bits of a SHA-256 of the
    normalised id number, so nothing but the id number is needed to make them again."""
    digest = hashlib.sha256(f"idguard-demo-finger:{id_number.strip().upper()}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _capture(id_number: str, finger: int, index: int) -> bytes:
    """Impression `index` of the person's finger at ISO position `finger`, as an ISO record."""
    if not 1 <= finger <= 10:
        raise ValueError(f"finger position {finger} is not 1-10")
    seed = finger_seed(id_number)
    # The generator writes finger position 1 + (its finger number mod 10).
    master = master_finger(seed, finger - 1)
    return encode(impression(master, index, _DIFFICULTY, seed=seed))


def enrolment_samples(id_number: str) -> list[tuple[int, str]]:
    """The captures the loader enrols: (finger position, base64 ISO record), as a counter sends
    them to `biometrics.fingerprints.prepare_enrolment`."""
    return [
        (finger, base64.b64encode(_capture(id_number, finger, ENROLLED_IMPRESSION)).decode())
        for finger in DEMO_FINGERS
    ]


def live_sample(id_number: str, finger: int = DEMO_FINGERS[0], impression: int = 1) -> str:
    """A new live capture (base64 ISO record) of a demo person's finger: impression number
    `impression` (1 or more; 0 is the enrolled capture). Matches the person's registered fingers
    when `finger` is one of DEMO_FINGERS and the loader enrolled their card."""
    if impression < 1:
        raise ValueError("a live impression is numbered from 1 (0 is the enrolled capture)")
    return base64.b64encode(_capture(id_number, finger, impression)).decode()
