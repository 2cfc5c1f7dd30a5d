"""Which MQTT topics a device may use (ADR 4): the rules both brokers enforce.

Pure functions over a :class:`DeviceIdentity`, no database: the embedded broker calls
:func:`topic_allowed` on every PUBLISH and SUBSCRIBE, and the Mosquitto dynamic-security sync
turns the same rules into ACL patterns. Denied by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["ALARM_ROOT", "DeviceIdentity", "topic_allowed"]


@dataclass(frozen=True)
class DeviceIdentity:
    tenant_id: int
    tenant: str
    device_id: int
    device: str  # registry device name
    is_gateway: bool
    owns: frozenset[str]  # device names it may act for: itself and, for a gateway, its devices
    sparkplug: tuple[str, str] | None  # (group_id, edge_node_id) of a Sparkplug edge node
    credential_id: int


_SF_PUBLISH: Final = (("telemetry",), ("attributes",))
_SF_SUBSCRIBE: Final = (
    ("attributes", "desired"),
    ("commands", "+"),
    ("commands", "#"),
)
ALARM_ROOT: Final = "alarms"  # alarms/<tenant>/...: the tenant's alarm feed
_NODE_PUBLISH: Final = frozenset({"NBIRTH", "NDEATH", "NDATA"})
_DEVICE_PUBLISH: Final = frozenset({"DBIRTH", "DDEATH", "DDATA"})


def _literal(level: str) -> bool:
    return level not in ("", "+", "#") and "+" not in level and "#" not in level


def _well_formed(levels: list[str], action: str) -> bool:
    """MQTT's rules: '#' only as the whole last level, '+' only as a whole level."""
    for i, level in enumerate(levels):
        if ("#" in level and (level != "#" or i != len(levels) - 1)) or (
            "+" in level and level != "+"
        ):
            return False
    return action == "subscribe" or all(lv not in ("+", "#") for lv in levels)


def topic_allowed(
    identity: DeviceIdentity, topic: str, action: Literal["publish", "subscribe"]
) -> bool:
    """Whether the device may publish to / subscribe to ``topic`` (ADR 4); denied by default.

    A subscription filter is allowed only when every topic it can match is allowed, so
    wildcards in place of the tenant, the device or the edge node are always denied.
    """
    if action not in ("publish", "subscribe") or not topic or "\x00" in topic:
        return False
    levels = topic.split("/")
    if not _well_formed(levels, action):
        return False
    if levels[:2] == ["sf", "v1"]:
        return _sf_allowed(identity, levels[2:], action)
    if levels[0] == "spBv1.0":
        return _sparkplug_allowed(identity, levels[1:], action)
    if levels[0] == ALARM_ROOT:
        # The tenant's alarm feed (the MQTT alarm action publishes there): its devices (an
        # andon board, a stack light) may read it; only the platform publishes.
        return (
            action == "subscribe"
            and len(levels) >= 3
            and _literal(levels[1])  # a tenant named "+" must not match every tenant's feed
            and levels[1] == identity.tenant
        )
    return False


def _sf_allowed(identity: DeviceIdentity, rest: list[str], action: str) -> bool:
    if len(rest) < 3 or not (_literal(rest[0]) and _literal(rest[1])):
        return False
    if rest[0] != identity.tenant or rest[1] not in identity.owns:
        return False
    tail = tuple(rest[2:])
    if action == "publish":
        if tail in _SF_PUBLISH:
            return True
        return len(tail) == 3 and tail[0] == "commands" and tail[2] == "response"
    if tail in _SF_SUBSCRIBE:
        return True
    return len(tail) == 2 and tail[0] == "commands" and _literal(tail[1])


def _sparkplug_allowed(identity: DeviceIdentity, rest: list[str], action: str) -> bool:
    if action == "subscribe" and rest[:1] == ["STATE"]:
        # Host application state: every edge node watches it to know when the host is online.
        return len(rest) == 2 and (rest[1] in ("+", "#") or _literal(rest[1]))
    if identity.sparkplug is None or len(rest) < 3:
        return False
    group, node = identity.sparkplug
    if rest[0] != group or rest[2] != node:
        return False
    kind, tail = rest[1], rest[3:]
    if action == "publish":
        if kind in _NODE_PUBLISH:
            return not tail
        return kind in _DEVICE_PUBLISH and len(tail) == 1
    if kind == "NCMD":
        return not tail or tail == ["#"]
    if kind == "DCMD":
        return len(tail) == 1
    return False
