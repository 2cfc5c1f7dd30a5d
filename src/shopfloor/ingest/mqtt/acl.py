"""The topics a device identity may use, as broker ACL patterns (the rules of ADR 4).

The embedded broker asks ``registry.credentials.topic_allowed`` per message; an external broker
gets these patterns instead (dynsec.py), so both must say the same: tests check each pattern
against ``topic_allowed``.
"""

from __future__ import annotations

from typing import Any


def device_acls(identity: Any) -> tuple[list[str], list[str]]:
    """(publish patterns, subscribe patterns) for one device or gateway identity."""
    publish: list[str] = []
    subscribe: list[str] = []
    devices = (
        [identity.device, *sorted(identity.owns)] if identity.is_gateway else [identity.device]
    )
    for device in dict.fromkeys(devices):
        base = f"sf/v1/{identity.tenant}/{device}"
        publish += [f"{base}/telemetry", f"{base}/attributes", f"{base}/commands/+/response"]
        subscribe += [f"{base}/commands/+", f"{base}/commands/#", f"{base}/attributes/desired"]
    if identity.sparkplug is not None:
        group, node = identity.sparkplug
        sp = f"spBv1.0/{group}"
        publish += [f"{sp}/{kind}/{node}" for kind in ("NBIRTH", "NDEATH", "NDATA")]
        publish += [f"{sp}/{kind}/{node}/+" for kind in ("DBIRTH", "DDEATH", "DDATA")]
        subscribe += [f"{sp}/NCMD/{node}", f"{sp}/NCMD/{node}/#", f"{sp}/DCMD/{node}/+"]
        subscribe += ["spBv1.0/STATE/#"]
    if not any(c in identity.tenant for c in "+#/"):  # never a wildcard over other tenants
        subscribe.append(f"alarms/{identity.tenant}/#")  # the tenant's alarm feed, read only
    return publish, subscribe
