"""The hash-chained audit log (interface; built in issue 4/8)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shopfloor.core.config import Settings
from shopfloor.registry.service import Registry
from shopfloor.security.principal import Principal


class AuditLog:
    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    def record(
        self,
        action: str,
        obj: str,
        outcome: str,
        *,
        principal: Principal | None = None,
        actor: str | None = None,
        role: str | None = None,
        tenant_id: int | None = None,
        source: str = "-",
        details: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one record; returns its sequence number."""
        return 0
