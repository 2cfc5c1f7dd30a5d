"""Who is calling, and what a request may touch: the one place tenant scope is decided.

Every API route asks ``api/deps.need(permission)`` for a :class:`Scope`. The scope's tenant
comes from the caller's credential (a user's session or token, a tenant key), never from the
request, so a route cannot reach another tenant's objects even by mistake: registry and
historian calls all take ``scope.tenant_id``. A role bound to a hierarchy subtree narrows the
scope further to the assets below it (``Scope.assets``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from shopfloor.core.errors import Forbidden
from shopfloor.registry.service import TenantInfo
from shopfloor.security.roles import ROLE_PERMISSIONS, Permission, Role


class PrincipalKind(StrEnum):
    USER = "user"  # a logged-in session
    TOKEN = "token"  # a user's API token
    TENANT_KEY = "tenant_key"  # the tenant's bootstrap key from `tenant create`
    ADMIN_KEY = "admin_key"  # the platform admin key in the data folder


@dataclass(frozen=True, slots=True)
class Binding:
    """A role held in one tenant (None: platform-wide), optionally below one asset."""

    role: Role
    tenant_id: int | None
    asset_id: int | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    kind: PrincipalKind
    name: str  # for the audit log: username, "token:<name>@<user>", "tenant-key", "admin-key"
    tenant: TenantInfo | None  # the tenant the credential belongs to; None for platform ones
    bindings: tuple[Binding, ...]
    user_id: int | None = None
    token_id: int | None = None
    session_id: int | None = None
    # A token's scopes narrow its user's permissions; None means no narrowing.
    scopes: frozenset[Permission] | None = None
    # Set while a platform admin reads a tenant's data under that tenant's grant.
    grant_id: int | None = None

    @property
    def roles(self) -> tuple[Role, ...]:
        return tuple(dict.fromkeys(b.role for b in self.bindings))

    @property
    def role_names(self) -> str:
        return ",".join(r.value for r in self.roles) or "-"

    def holds(self, perm: Permission, tenant_id: int | None) -> list[Binding]:
        """The bindings that give ``perm`` in ``tenant_id`` (empty: not allowed)."""
        if self.scopes is not None and perm not in self.scopes:
            return []
        return [
            b
            for b in self.bindings
            if b.tenant_id == tenant_id and perm in ROLE_PERMISSIONS[b.role]
        ]

    def permissions(self, tenant_id: int | None) -> frozenset[Permission]:
        out = {
            p for b in self.bindings if b.tenant_id == tenant_id for p in ROLE_PERMISSIONS[b.role]
        }
        if self.scopes is not None:
            out &= self.scopes
        return frozenset(out)


@dataclass(frozen=True, slots=True)
class Scope:
    """What one request may touch: the tenant, and, when roles bind below it, the assets."""

    principal: Principal
    permission: Permission
    tenant: TenantInfo
    # Asset ids (subtree roots) the permission is held under; None: the whole tenant.
    roots: frozenset[int] | None = None
    # The roots with every asset below them, filled by the registry (api/deps.py).
    assets: frozenset[int] | None = field(default=None)

    @property
    def tenant_id(self) -> int:
        return self.tenant.id

    @property
    def whole_tenant(self) -> bool:
        return self.assets is None

    def allows_asset(self, asset_id: int | None) -> bool:
        """Whether an object placed at ``asset_id`` (None: unplaced) is in scope."""
        if self.assets is None:
            return True
        return asset_id is not None and asset_id in self.assets


def scope_roots(principal: Principal, perm: Permission, tenant_id: int) -> frozenset[int] | None:
    """None when ``perm`` is held tenant-wide, else the subtree roots; Forbidden if not held."""
    held = principal.holds(perm, tenant_id)
    if not held:
        raise Forbidden(f"this call needs the {perm.value} permission")
    if any(b.asset_id is None for b in held):
        return None
    return frozenset(b.asset_id for b in held if b.asset_id is not None)
