"""Who may do what (core/grants.py), written out by hand: the GRANTS table as DOMAIN.md's roles
read, `require` and `require_office` refusing with the role and office named. Kills the mutants
`make mutation` found (docs/testing.md); the HTTP view of the same rules is the authorization
table (tests/functional/test_authorization.py), which is too slow to run per mutant."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from idguard.core.errors import Forbidden
from idguard.core.grants import Actor, Permission, Role, bound_to_office

P = Permission
# Permission -> the roles that hold it. Written from DOMAIN.md's roles, not read from GRANTS.
EXPECTED: dict[Permission, set[Role]] = {
    P.REGISTRY_WRITE: {Role.CLERK, Role.ADMIN},
    P.REGISTRY_READ: {Role.CLERK, Role.SUPERVISOR, Role.AUDITOR, Role.ADMIN},
    P.ALL_OFFICES: {Role.SUPERVISOR, Role.AUDITOR, Role.ADMIN},
    P.READ_COMPARISON_SCORES: {Role.SUPERVISOR, Role.AUDITOR},
    P.IMPORT: {Role.ADMIN},
    P.ONBOARD_UNITS: {Role.SUPERVISOR},
    P.READ_UNITS: {Role.SUPERVISOR, Role.AUDITOR, Role.ADMIN},
    P.READ_CHECK_LOG: {Role.SUPERVISOR, Role.AUDITOR},
}


def actor(role: Role, office: str | None = None) -> Actor:
    return Actor(staff_id=uuid.uuid4(), username=f"{role.value}1", role=role, office=office)


@pytest.mark.parametrize("permission", list(EXPECTED))
@pytest.mark.parametrize("role", list(Role))
def test_each_role_holds_exactly_its_permissions(role: Role, permission: Permission) -> None:
    member = actor(role, "110105" if role is Role.CLERK else None)
    granted = role in EXPECTED[permission]
    assert member.may(permission) is granted
    if granted:
        member.require(permission)
    else:
        with pytest.raises(Forbidden):
            member.require(permission)


def test_an_auditor_never_writes() -> None:
    auditor = actor(Role.AUDITOR)
    for write in (P.REGISTRY_WRITE, P.IMPORT, P.ONBOARD_UNITS):
        assert not auditor.may(write)


def test_a_refusal_names_the_role_and_what_it_may_not_do() -> None:
    with pytest.raises(Forbidden) as refused:
        actor(Role.AUDITOR).require(P.ONBOARD_UNITS)
    assert refused.value.detail == "the auditor role may not onboard units"
    assert refused.value.status == 403


def test_only_a_clerk_is_bound_to_one_office() -> None:
    assert bound_to_office(Role.CLERK)
    for role in (Role.SUPERVISOR, Role.AUDITOR, Role.ADMIN):
        assert not bound_to_office(role)


def test_a_clerk_acts_for_their_own_office_only() -> None:
    # An equal office string that is not the same object (as parsed from a request body).
    clerk = actor(Role.CLERK, "".join(["1101", "05"]))
    clerk.require_office("110105")
    for other in ("110104", "110106", "310101", "11010"):  # lower, higher, elsewhere, a prefix
        with pytest.raises(Forbidden) as refused:
            clerk.require_office(other)
        assert refused.value.detail == f"a clerk of office 110105 may not act for office {other}"


@pytest.mark.parametrize("office", ["110105", "310101"])
def test_an_admin_acts_for_every_office(office: str) -> None:
    actor(Role.ADMIN).require_office(office)


@pytest.mark.parametrize("role", [Role.SUPERVISOR, Role.AUDITOR])
def test_roles_without_registry_write_act_for_no_office(role: Role) -> None:
    with pytest.raises(Forbidden) as refused:
        actor(role).require_office("110105")
    assert refused.value.detail == f"the {role.value} role may not registry write"


def test_an_actor_cannot_be_given_another_role_or_office() -> None:
    """The actor a route authenticated is the one every check sees: nothing can promote it."""
    clerk = actor(Role.CLERK, "110105")
    with pytest.raises(dataclasses.FrozenInstanceError):
        clerk.role = Role.ADMIN  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        clerk.office = "310101"  # type: ignore[misc]
    assert (clerk.role, clerk.office) == (Role.CLERK, "110105")
