"""The webhook signature header (runtime/webhooks.py) against docs/webhooks.md's recipe, over
many secrets, bodies and times: a delivery verifies under every secret it was signed with and
under no other, and not once it is stale."""

from __future__ import annotations

import datetime as dt
import uuid

from hypothesis import given
from hypothesis import strategies as st

from idguard.verification.runtime.webhooks import DELIVERY_ID_HEADER, delivery_headers, signature_header
from idguard.verification.units import SigningSecret, in_use
from tests.functional.units.test_webhooks import verify_webhook

secrets_ = st.text(alphabet="0123456789abcdef", min_size=8, max_size=64).map(lambda s: "whsec_" + s)
T0 = 1_781_488_800


@given(
    signing=st.lists(secrets_, min_size=1, max_size=3, unique=True),
    other=secrets_,
    body=st.binary(max_size=300),
    t=st.integers(min_value=T0, max_value=T0 + 10**6),
    late=st.integers(min_value=0, max_value=600),
)
def test_any_signing_secret_verifies_and_no_other(
    signing: list[str], other: str, body: bytes, t: int, late: int
) -> None:
    header = signature_header(signing, t, body)
    assert header.startswith(f"t={t},")
    assert header.count("v1=") == len(signing)
    fresh = late <= 300
    for secret in signing:
        assert verify_webhook(secret, header, body, now=float(t + late)) is fresh
    if other not in signing:
        assert not verify_webhook(other, header, body, now=float(t))
    assert not verify_webhook(signing[0], header, body + b"x", now=float(t))


def test_the_headers_carry_the_delivery_id_and_the_first_scheme_under_the_oldest_secret() -> None:
    message = uuid.uuid4()
    headers = delivery_headers(["whsec_new", "whsec_old"], message, T0, b"{}")
    assert headers[DELIVERY_ID_HEADER] == str(message)
    t, new, old = headers["Idguard-Signature"].split(",")
    assert t == f"t={T0}"
    assert headers["X-Idguard-Signature"] == "sha256=" + old.removeprefix("v1=")
    assert headers["X-Idguard-Timestamp"] == str(T0)
    assert new != old


BASE = dt.datetime(2026, 6, 15, 2, 0, tzinfo=dt.UTC)
offsets = st.integers(min_value=-7 * 86400, max_value=7 * 86400)


@given(
    ends=st.lists(st.one_of(st.none(), offsets), min_size=1, max_size=5),
    created=st.lists(offsets, min_size=5, max_size=5),
    at=offsets,
)
def test_the_secrets_in_use_are_the_live_ones_current_first_then_the_latest_ending(
    ends: list[int | None], created: list[int], at: int
) -> None:
    """The rule the dispatcher applies to its cached secrets at every delivery: a secret signs
    until its end (exclusive) and never after, whatever was cached; the current one (no end) first."""
    secrets = [
        SigningSecret(
            f"whsec_{i}",
            BASE + dt.timedelta(seconds=created[i]),
            None if end is None else BASE + dt.timedelta(seconds=end),
        )
        for i, end in enumerate(ends)
    ]
    now = BASE + dt.timedelta(seconds=at)
    used = in_use(secrets, now)
    live = [s for s in secrets if s.expires_at is None or s.expires_at > now]
    assert sorted(used) == sorted(s.secret for s in live)
    by_name = {s.secret: s for s in secrets}
    ranks = [
        (by_name[u].expires_at is None, by_name[u].expires_at or now, by_name[u].created_at) for u in used
    ]
    assert ranks == sorted(ranks, reverse=True)
    if any(s.expires_at is None for s in live):
        assert by_name[used[0]].expires_at is None
