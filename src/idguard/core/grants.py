"""Who may do what (GRANTS): staff roles are checked here, in one table, not scattered over routes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from idguard.core.errors import Forbidden

# Every unit's API key starts with this (verification/rules.py makes them): a staff route can tell
# a unit's key from a token and say so.
UNIT_KEY_PREFIX = "idg_"


class Role(StrEnum):
    CLERK = "clerk"  # counter clerk (民警/窗口), bound to one office
    SUPERVISOR = "supervisor"  # 公安部/省厅: units, blacklist, statistics
    AUDITOR = "auditor"  # reads everything, never writes
    ADMIN = "admin"  # offices and staff; imports existing cards


class Permission(StrEnum):
    REGISTRY_WRITE = "registry_write"  # persons, cards, loss reports, found cards, revocations
    REGISTRY_READ = "registry_read"
    ALL_OFFICES = "all_offices"  # acts and reads for every office; without it, bound to one's own
    READ_COMPARISON_SCORES = "read_comparison_scores"  # a score is a hill-climbing signal
    IMPORT = "import"  # set issued_on when importing existing cards
    ONBOARD_UNITS = "onboard_units"  # onboard units, rotate and revoke their keys
    READ_UNITS = "read_units"
    READ_CHECK_LOG = "read_check_log"  # every unit's checks (a unit reads its own with its key)


# Who may do what: the one table. Routes and services ask `actor.require(...)` or
# `actor.may(...)`; no role is named anywhere else. Units act with their API key on their own
# checks and notifications only (verification/routes/deps.py); citizens will be actors here too.
GRANTS: dict[Role, frozenset[Permission]] = {
    Role.CLERK: frozenset({Permission.REGISTRY_WRITE, Permission.REGISTRY_READ}),
    Role.SUPERVISOR: frozenset(
        {
            Permission.REGISTRY_READ,
            Permission.ALL_OFFICES,
            Permission.READ_COMPARISON_SCORES,
            Permission.ONBOARD_UNITS,
            Permission.READ_UNITS,
            Permission.READ_CHECK_LOG,
        }
    ),
    Role.AUDITOR: frozenset(
        {
            Permission.REGISTRY_READ,
            Permission.ALL_OFFICES,
            Permission.READ_COMPARISON_SCORES,
            Permission.READ_UNITS,
            Permission.READ_CHECK_LOG,
        }
    ),
    Role.ADMIN: frozenset(
        {
            Permission.REGISTRY_WRITE,
            Permission.REGISTRY_READ,
            Permission.ALL_OFFICES,
            Permission.IMPORT,
            Permission.READ_UNITS,
        }
    ),
}


def bound_to_office(role: Role) -> bool:
    """Whether an account of `role` belongs to one office (a clerk): it needs one."""
    return Permission.ALL_OFFICES not in GRANTS[role]


@dataclass(frozen=True, slots=True)
class Actor:
    """The member of staff on whose behalf a service acts."""

    staff_id: UUID
    username: str
    role: Role
    office: str | None

    def may(self, permission: Permission) -> bool:
        return permission in GRANTS[self.role]

    def require(self, permission: Permission) -> None:
        if not self.may(permission):
            raise Forbidden(f"the {self.role.value} role may not {permission.value.replace('_', ' ')}")

    def require_office(self, office: str) -> None:
        """A registry write at `office`: a clerk acts only for their own office."""
        self.require(Permission.REGISTRY_WRITE)
        if not self.may(Permission.ALL_OFFICES) and office != self.office:
            raise Forbidden(f"a clerk of office {self.office} may not act for office {office}")
