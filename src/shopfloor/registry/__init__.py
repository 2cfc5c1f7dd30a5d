"""The registry: tenants, the ISA-95 hierarchy, device types, devices and signals.

See docs/registry.md. Everything callers need is re-exported here.
"""

from shopfloor.registry.models import AssetLevel
from shopfloor.registry.service import (
    AssetInfo,
    DeviceInfo,
    DeviceTypeInfo,
    Registry,
    SignalInfo,
    SignalSpec,
    TenantInfo,
    check_name,
    split_key,
)

__all__ = [
    "AssetInfo",
    "AssetLevel",
    "DeviceInfo",
    "DeviceTypeInfo",
    "Registry",
    "SignalInfo",
    "SignalSpec",
    "TenantInfo",
    "check_name",
    "split_key",
]
