"""The watchlist's pure rules: when an entry holds, the one-incident-a-day key, the order of
alerts, and who may do what (by role and office)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idguard.core.errors import Forbidden, RuleViolation
from idguard.core.grants import Actor, Role
from idguard.verification.index import ALERT_ORDER, Alert, alerts
from idguard.watchlist import rules
from idguard.watchlist.rules import EntryStatus, IncidentKind

DAYS = st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2100, 1, 1))


def actor(role: Role, office: str | None = None) -> Actor:
    return Actor(staff_id=uuid.uuid4(), username=role.value, role=role, office=office)


@given(DAYS, st.one_of(st.none(), DAYS), st.sampled_from(list(EntryStatus)))
def test_an_entry_holds_through_its_last_day_and_ends_by_itself_after(
    today: dt.date, until: dt.date | None, stored: EntryStatus
) -> None:
    status = rules.entry_status(stored, until, today)
    if stored is not EntryStatus.ACTIVE:
        assert status is stored  # lifted or expired stays so
    elif until is None or today <= until:
        assert status is EntryStatus.ACTIVE
    else:
        assert status is EntryStatus.EXPIRED


@given(DAYS, st.one_of(st.none(), DAYS), st.booleans())
def test_listing_rules(today: dt.date, until: dt.date | None, active: bool) -> None:
    refused = active or (until is not None and until < today)
    if refused:
        with pytest.raises(RuleViolation):
            rules.check_can_list(until=until, today=today, active=active)
    else:
        rules.check_can_list(until=until, today=today, active=active)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(IncidentKind)),
            st.sampled_from(["card-1", "card-2", "person-1"]),
            st.sampled_from([None, "BANK-1", "BANK-2"]),
            DAYS,
        ),
        max_size=30,
    )
)
def test_one_incident_per_card_kind_unit_and_day(
    signals: list[tuple[IncidentKind, str, str | None, dt.date]],
) -> None:
    keys = {rules.dedup_key(kind=k, subject=s, unit_code=u, day=d) for k, s, u, d in signals}
    assert len(keys) == len(set(signals))
    assert all(len(key) <= 200 for key in keys)


@given(st.booleans(), st.booleans(), st.booleans())
def test_alerts_come_in_one_order(blacklisted: bool, required: bool, impersonator: bool) -> None:
    found = alerts(blacklisted=blacklisted, check_required=required, impersonator=impersonator)
    assert list(found) == [a for a in ALERT_ORDER if a in found]
    assert (
        Alert.BLACKLISTED in found,
        Alert.PERSON_CHECK_REQUIRED in found,
        Alert.KNOWN_IMPERSONATOR in found,
    ) == (
        blacklisted,
        required,
        impersonator,
    )


A, B = "110105001", "310101002"


@pytest.mark.parametrize(
    (
        "who",
        "manage",
        "read_all",
        "read_own",
        "close_own",
        "close_other",
        "close_unit",
        "protect_own",
        "protect_other",
    ),
    [
        (actor(Role.CLERK, A), False, False, True, True, False, False, True, False),
        (actor(Role.SUPERVISOR), True, True, True, True, True, True, True, True),
        (actor(Role.AUDITOR), False, True, True, False, False, False, False, False),
        (actor(Role.ADMIN), False, False, False, False, False, False, False, False),
    ],
)
def test_who_may_do_what(
    who: Actor,
    manage: bool,
    read_all: bool,
    read_own: bool,
    close_own: bool,
    close_other: bool,
    close_unit: bool,
    protect_own: bool,
    protect_other: bool,
) -> None:
    def allowed(call: object) -> bool:
        try:
            call()  # type: ignore[operator]
        except Forbidden:
            return False
        return True

    assert rules.may_manage_blacklist(who) is manage
    assert rules.reads_every_office(who) is read_all
    assert allowed(lambda: rules.require_read_incidents(who)) is read_own
    assert (
        allowed(lambda: rules.require_close(who, kind=IncidentKind.LOST_CARD_PRESENTED, office=A))
        is close_own
    )
    assert (
        allowed(lambda: rules.require_close(who, kind=IncidentKind.LOST_CARD_PRESENTED, office=B))
        is close_other
    )
    assert (
        allowed(lambda: rules.require_close(who, kind=IncidentKind.HARVESTING_SUSPECTED, office=None))
        is close_unit
    )
    assert allowed(lambda: rules.require_protect(who, hukou_office=A)) is protect_own
    assert allowed(lambda: rules.require_protect(who, hukou_office=B)) is protect_other
    # a full number: supervisors and auditors always, a clerk for their own office's holders
    assert rules.sees_number(who, A) is (read_all or who.office == A)
    assert rules.sees_number(who, B) is read_all


def test_every_kind_a_check_signals_is_an_incident_kind() -> None:
    """verification names the kinds it signals (it cannot import the watchlist): the same words."""
    from idguard.verification.verifier import SignalKind

    assert {k.value for k in SignalKind} <= {k.value for k in IncidentKind}
