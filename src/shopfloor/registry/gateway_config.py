"""Remote configuration of edge gateways: the desired connectors per gateway and its reports.

One row per gateway device (migration 0007): the connector sections the platform wants the
gateway to run (``connectors``, the JSON list exactly as in ``edge.yaml``), a version that grows
by one with every change, and what the gateway last reported (``applied_version``, ``error``,
``last_seen``). The sync state is derived, never stored:

- ``never_seen``: the gateway has not reported yet;
- ``error``: its last report carried an error (it keeps running its last good config);
- ``in_sync``: it reported the current version applied;
- ``pending``: anything else (a newer version waits to be picked up).

A new version clears the stored error, so a fix shows as ``pending`` rather than as the old
failure until the gateway has tried it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import ForeignKey, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from shopfloor.core.errors import Conflict, NotFound
from shopfloor.registry.models import (
    NAME_LEN,
    Base,
    Device,
    DeviceAuthProfile,
    GatewayDevice,
    UtcDateTime,
    utcnow,
)

if TYPE_CHECKING:  # models.py may import this module: no service import at load time
    from shopfloor.registry.service import Registry

__all__ = ["GatewayConfig", "GatewayConfigInfo", "GatewayConfigs", "Sync", "sync_state"]

Sync = Literal["in_sync", "pending", "error", "never_seen"]


class GatewayConfig(Base):
    """The desired connectors of one gateway device and the gateway's last report."""

    __tablename__ = "gateway_configs"

    device_id: Mapped[int] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    connectors: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    updated_by: Mapped[str | None] = mapped_column(String(NAME_LEN))
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    applied_version: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    last_seen: Mapped[datetime | None] = mapped_column(UtcDateTime)


@dataclass(frozen=True, slots=True)
class GatewayConfigInfo:
    name: str
    device_id: int
    asset_id: int | None
    version: int
    connectors: list[dict[str, Any]]
    updated_by: str | None
    updated_at: datetime | None
    applied_version: int | None
    error: str | None
    last_seen: datetime | None
    devices: int  # devices the gateway acts for (gateway_devices)

    @property
    def sync(self) -> Sync:
        return sync_state(self.version, self.applied_version, self.error, self.last_seen)


def sync_state(
    version: int, applied: int | None, error: str | None, last_seen: datetime | None
) -> Sync:
    if last_seen is None:
        return "never_seen"
    if error is not None:
        return "error"
    return "in_sync" if applied == version else "pending"


MAX_ERROR_LEN = 4000  # a gateway's error text is shown in the console; bound what is kept


class GatewayConfigs:
    """Reads and changes gateway configurations in a :class:`Registry`'s database."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    # -- reading ---------------------------------------------------------------------------

    def get(self, tenant_id: int, name: str) -> GatewayConfigInfo:
        """The gateway's configuration; version 0 and no connectors when none was set yet.
        Any device of the tenant may be a gateway; an unknown one is NotFound."""
        with self.registry._read() as s:
            dev = _device(s, tenant_id, name)
            return _info(s, dev, s.get(GatewayConfig, dev.id))

    def all(self, tenant_id: int) -> list[GatewayConfigInfo]:
        """Every device with a remote configuration or flagged a gateway, by name."""
        with self.registry._read() as s:
            configured = select(GatewayConfig.device_id).where(GatewayConfig.tenant_id == tenant_id)
            flagged = (
                select(DeviceAuthProfile.device_id)
                .join(Device, Device.id == DeviceAuthProfile.device_id)
                .where(Device.tenant_id == tenant_id, DeviceAuthProfile.is_gateway.is_(True))
            )
            ids = set(s.scalars(configured)) | set(s.scalars(flagged))
            if not ids:
                return []
            rows = s.scalars(select(Device).where(Device.id.in_(ids)).order_by(Device.name))
            return [_info(s, d, s.get(GatewayConfig, d.id)) for d in rows]

    # -- changing ----------------------------------------------------------------------------

    def put(
        self,
        tenant_id: int,
        name: str,
        connectors: list[dict[str, Any]],
        expected_version: int,
        who: str,
    ) -> GatewayConfigInfo:
        """Store ``connectors`` as version ``expected_version + 1``; Conflict when the stored
        version is not ``expected_version`` (someone else changed it meanwhile)."""
        with self.registry._write() as s:
            dev = _device(s, tenant_id, name)
            row = s.get(GatewayConfig, dev.id)
            current = 0 if row is None else row.version
            if expected_version != current:
                raise Conflict(
                    f"gateway {name!r} is at configuration version {current}, not "
                    f"{expected_version}: it was changed meanwhile; reload and apply again"
                )
            if row is None:
                row = GatewayConfig(device_id=dev.id, tenant_id=tenant_id, version=0)
                s.add(row)
            row.version = current + 1
            row.connectors = json.dumps(connectors)
            row.updated_by = who
            row.updated_at = utcnow()
            row.error = None  # the old error was about an older version
            s.flush()
            return _info(s, dev, row)

    def report(
        self, tenant_id: int, name: str, applied_version: int, error: str | None
    ) -> GatewayConfigInfo:
        """The gateway's report: what it runs and the error of its last attempt, if any."""
        with self.registry._write() as s:
            dev = _device(s, tenant_id, name)
            row = s.get(GatewayConfig, dev.id)
            if row is None:
                row = GatewayConfig(device_id=dev.id, tenant_id=tenant_id, version=0)
                s.add(row)
            row.applied_version = applied_version
            row.error = None if error is None else error[:MAX_ERROR_LEN]
            row.last_seen = utcnow()
            s.flush()
            return _info(s, dev, row)


def _device(s: Session, tenant_id: int, name: str) -> Device:
    dev = s.scalar(select(Device).where(Device.tenant_id == tenant_id, Device.name == name))
    if dev is None:
        raise NotFound(f"device {name!r} not found")  # the registry's own wording
    return dev


def _info(s: Session, dev: Device, row: GatewayConfig | None) -> GatewayConfigInfo:
    owned = len(
        list(s.scalars(select(GatewayDevice.device_id).where(GatewayDevice.gateway_id == dev.id)))
    )
    return GatewayConfigInfo(
        name=dev.name,
        device_id=dev.id,
        asset_id=dev.asset_id,
        version=0 if row is None else row.version,
        connectors=[] if row is None else json.loads(row.connectors),
        updated_by=None if row is None else row.updated_by,
        updated_at=None if row is None else row.updated_at,
        applied_version=None if row is None else row.applied_version,
        error=None if row is None else row.error,
        last_seen=None if row is None else row.last_seen,
        devices=owned,
    )
