"""Who may do what. Staff roles are checked here, in one table, not scattered over routes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

from idguard.core.errors import Forbidden


class Role(StrEnum):
    CLERK = "clerk"  # counter clerk (民警/窗口), bound to one office
    SUPERVISOR = "supervisor"  # 公安部/省厅: units, blacklist, statistics
    AUDITOR = "auditor"  # reads everything, never writes
    ADMIN = "admin"  # offices and staff; imports existing cards


class Permission(StrEnum):
    REGISTRY_WRITE = "registry_write"  # persons, cards, loss reports, found cards, revocations
    REGISTRY_READ = "registry_read"
    IMPORT = "import"  # set issued_on when importing existing cards
    ONBOARD_UNITS = "onboard_units"


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.CLERK: frozenset({Permission.REGISTRY_WRITE, Permission.REGISTRY_READ}),
    Role.SUPERVISOR: frozenset({Permission.REGISTRY_READ, Permission.ONBOARD_UNITS}),
    Role.AUDITOR: frozenset({Permission.REGISTRY_READ}),
    Role.ADMIN: frozenset({Permission.REGISTRY_WRITE, Permission.REGISTRY_READ, Permission.IMPORT}),
}


@dataclass(frozen=True, slots=True)
class Actor:
    """The member of staff on whose behalf a service acts."""

    staff_id: UUID
    username: str
    role: Role
    office: str | None

    def require(self, permission: Permission) -> None:
        if permission not in GRANTS[self.role]:
            raise Forbidden(f"the {self.role.value} role may not {permission.value.replace('_', ' ')}")

    def require_office(self, office: str) -> None:
        """A registry write at `office`: a clerk acts only for their own office."""
        self.require(Permission.REGISTRY_WRITE)
        if self.role is Role.CLERK and office != self.office:
            raise Forbidden(f"a clerk of office {self.office} may not act for office {office}")
