"""Roles, the permissions they carry, and the separation-of-duties rules.

One table decides what every role may do; routes ask for a permission, never for a role, so
adding a role or moving a permission is a change here alone (docs/security.md lists it).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Final

from shopfloor.core.errors import BadInput
from shopfloor.core.kinds import Role

__all__ = ["Permission", "Role"]  # Role lives in core: the registry's schema names it


class Permission(StrEnum):
    DATA_READ = "data.read"
    DATA_WRITE = "data.write"  # ingest, import
    DATA_EXPORT = "data.export"  # an egress: checked against labels (security/egress.py)
    DATA_DELETE = "data.delete"
    REGISTRY_READ = "registry.read"
    REGISTRY_WRITE = "registry.write"
    DEVICE_CREDENTIALS = "devices.credentials"
    COMMANDS_SEND = "commands.send"
    ALARMS_ACK = "alarms.ack"
    RULES_WRITE = "rules.write"
    APPS_MANAGE = "apps.manage"  # enable, disable and configure the tenant's apps
    USERS_MANAGE = "users.manage"
    TENANT_SETTINGS = "tenant.settings"
    ACCESS_GRANT = "access.grant"  # let a platform admin into the tenant's data, audited
    LABELS_WRITE = "labels.write"
    EGRESS_APPROVE = "egress.approve"
    AUDIT_READ = "audit.read"
    AUDIT_EXPORT = "audit.export"
    AUDIT_SETTINGS = "audit.settings"
    AUDIT_PURGE = "audit.purge"  # remove records past retention
    TENANTS_MANAGE = "tenants.manage"


P = Permission
_VIEWER: Final = frozenset({P.DATA_READ, P.REGISTRY_READ})
_OPERATOR: Final = _VIEWER | {P.COMMANDS_SEND, P.ALARMS_ACK}
_ENGINEER: Final = _OPERATOR | {
    P.DATA_WRITE,
    P.DATA_EXPORT,
    P.REGISTRY_WRITE,
    P.DEVICE_CREDENTIALS,
    P.RULES_WRITE,
    P.APPS_MANAGE,
}

ROLE_PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    Role.VIEWER: _VIEWER,
    Role.OPERATOR: _OPERATOR,
    Role.ENGINEER: _ENGINEER,
    Role.TENANT_ADMIN: _ENGINEER
    | {P.USERS_MANAGE, P.TENANT_SETTINGS, P.DATA_DELETE, P.ACCESS_GRANT},
    # The auditor reads the audit trail and changes nothing.
    Role.AUDITOR: frozenset({P.AUDIT_READ, P.AUDIT_EXPORT}),
    # The security admin sets labels, approves egress and sets audit retention, but cannot
    # remove audit records (AUDIT_PURGE belongs to the platform admin, who cannot change
    # audit settings): no single role can both loosen the audit and erase its traces.
    Role.SECURITY_ADMIN: frozenset(
        {P.REGISTRY_READ, P.LABELS_WRITE, P.EGRESS_APPROVE, P.AUDIT_SETTINGS}
    ),
    # Runs the platform; reads no tenant's data unless that tenant grants it (audited).
    Role.PLATFORM_ADMIN: frozenset({P.TENANTS_MANAGE, P.AUDIT_PURGE}),
}

# Roles that may bind platform-wide (tenant None): the platform admin always does; a
# platform-wide auditor reads, and a platform-wide security admin sets, the platform's own
# audit trail. Every other role binds to exactly one tenant.
PLATFORM_ROLES: Final = frozenset({Role.PLATFORM_ADMIN, Role.AUDITOR, Role.SECURITY_ADMIN})
TENANT_ROLES: Final = frozenset(set(Role) - {Role.PLATFORM_ADMIN})

# MLPS 2.0 level 3: system, security and audit administrators are separate people, and
# administrators log in with a second factor.
EXCLUSIVE_ROLES: Final = frozenset({Role.PLATFORM_ADMIN, Role.SECURITY_ADMIN, Role.AUDITOR})
MFA_ROLES: Final = frozenset(
    {Role.PLATFORM_ADMIN, Role.TENANT_ADMIN, Role.SECURITY_ADMIN, Role.AUDITOR}
)

# The roles a tenant admin may grant (users.manage, the API). The security admin and the
# auditor oversee the tenant admin's work (labels, egress approvals, the audit trail), so only
# the platform operator makes and manages their accounts (`shopfloor user`): nobody appoints,
# disables or resets their own overseer.
DELEGATED_ROLES: Final = frozenset({Role.TENANT_ADMIN, Role.ENGINEER, Role.OPERATOR, Role.VIEWER})

# What a platform admin gets inside a tenant that granted access: reading, nothing more.
GRANTED_ROLE: Final = Role.VIEWER


def role(value: object) -> Role:
    try:
        return Role(str(value))
    except ValueError:
        names = ", ".join(r.value for r in Role)
        raise BadInput(f"unknown role {value!r}; roles are {names}", "role") from None


def permission(value: object) -> Permission:
    try:
        return Permission(str(value))
    except ValueError:
        names = ", ".join(p.value for p in Permission)
        raise BadInput(f"unknown permission {value!r}; permissions are {names}", "scopes") from None


def permissions_of(roles: Iterable[Role]) -> frozenset[Permission]:
    out: frozenset[Permission] = frozenset()
    for r in roles:
        out |= ROLE_PERMISSIONS[r]
    return out


def check_role_set(roles: Iterable[Role]) -> None:
    """Refuse a combination of roles that breaks separation of duties (BadInput says why)."""
    held = set(roles)
    for r in EXCLUSIVE_ROLES & held:
        others = held - {r}
        if others:
            names = ", ".join(sorted(o.value for o in others))
            raise BadInput(
                f"role {r.value} cannot be combined with {names}: system, security and audit "
                "administration are separate duties",
                "role",
            )
    perms = permissions_of(held)
    if P.AUDIT_SETTINGS in perms and P.AUDIT_PURGE in perms:  # kept even if the table changes
        raise BadInput("no user may both change audit settings and remove audit records", "role")
