"""Users, login, sessions, TOTP and API tokens (interface; built in issue 4/8).

``resolve`` turns a session or API token secret into a :class:`Principal`; ``enter_tenant``
lets a platform admin into a tenant that granted access.
"""

from __future__ import annotations

from shopfloor.core.config import Settings
from shopfloor.core.errors import Forbidden
from shopfloor.registry.service import Registry
from shopfloor.security.audit import AuditLog
from shopfloor.security.principal import Principal


class AuthService:
    def __init__(self, registry: Registry, settings: Settings, audit: AuditLog) -> None:
        self.registry = registry
        self.settings = settings
        self.audit = audit

    def resolve(self, secret: str, source: str) -> Principal | None:
        """The principal of a session or API token secret; None if it is neither."""
        return None

    def enter_tenant(self, principal: Principal, tenant: str, source: str) -> Principal:
        """``principal`` (platform level) inside ``tenant`` under a live access grant."""
        raise Forbidden("no live access grant from that tenant")
