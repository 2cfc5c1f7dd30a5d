"""Users, login, sessions, TOTP and API tokens (interface; being built in issue 4/8).

``resolve`` turns a session or API token secret into a :class:`Principal`; ``enter_tenant``
lets a platform admin into a tenant that granted access.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from shopfloor.core.config import Settings
from shopfloor.core.errors import Forbidden
from shopfloor.registry.service import Registry
from shopfloor.security.audit import AuditLog
from shopfloor.security.principal import Binding, Principal
from shopfloor.security.roles import Permission, Role


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: int
    tenant_id: int | None
    username: str
    display_name: str
    bindings: tuple[Binding, ...]
    totp_enrolled: bool
    disabled: bool
    locked_until: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: int
    user_id: int
    name: str
    scopes: frozenset[Permission] | None
    expires_at: datetime | None
    created_at: datetime
    revoked_at: datetime | None


class AuthService:
    def __init__(self, registry: Registry, settings: Settings, audit: AuditLog) -> None:
        self.registry = registry
        self.settings = settings
        self.audit = audit

    def create_user(
        self,
        tenant_id: int | None,
        username: str,
        password: str,
        roles: Sequence[Role | tuple[Role, int | None]] = (),
        *,
        display_name: str = "",
        actor: Principal | None = None,
    ) -> UserInfo:
        """A user of ``tenant_id`` (None: platform level) holding ``roles`` there.

        A role may come with an asset id: it then binds to that subtree only.
        """
        raise NotImplementedError

    def issue_token(
        self,
        user_id: int,
        name: str,
        scopes: Collection[Permission] | None = None,
        expires_in_s: float | None = None,
        *,
        actor: Principal | None = None,
    ) -> tuple[TokenInfo, str]:
        """A new API token of the user; the secret is returned once and stored hashed."""
        raise NotImplementedError

    def resolve(self, secret: str, source: str) -> Principal | None:
        """The principal of a session or API token secret; None if it is neither."""
        return None

    def enter_tenant(self, principal: Principal, tenant: str, source: str) -> Principal:
        """``principal`` (platform level) inside ``tenant`` under a live access grant."""
        raise Forbidden("no live access grant from that tenant")
