"""What the host remembers per edge node and device: births, aliases, seq, online, errors."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from shopfloor.core.types import DataType
from shopfloor.registry.service import TenantInfo

__all__ = ["DeviceState", "MetricDef", "NodeState"]


@dataclass(frozen=True, slots=True)
class MetricDef:
    """A metric as its birth declared it; ``signal`` None means known but not stored
    (bdSeq, Node Control/*, or a metric the birth could not register)."""

    name: str
    datatype: int
    signal: str | None = None
    kind: DataType = DataType.FLOAT


@dataclass(slots=True)
class DeviceState:
    """The node's own metrics (``sparkplug_id`` None) or one device's."""

    sparkplug_id: str | None
    registry_name: str
    online: bool = False
    born: bool = False
    by_alias: dict[int, MetricDef] = field(default_factory=dict)
    by_name: dict[str, MetricDef] = field(default_factory=dict)
    births: int = 0
    deaths: int = 0

    def signals(self) -> dict[str, DataType]:
        """The stored signals of the last birth: name -> data type."""
        return {m.signal: m.kind for m in self.by_name.values() if m.signal is not None}

    def forget_birth(self) -> None:
        self.born = False
        self.by_alias.clear()
        self.by_name.clear()


@dataclass(slots=True)
class NodeState:
    group: str
    edge_node: str
    tenant: TenantInfo | None = None
    online: bool = False
    born: bool = False
    bd_seq: int | None = None
    seq: int | None = None  # seq of the last message of the node; None: nothing to check against
    node: DeviceState | None = None
    devices: dict[str, DeviceState] = field(default_factory=dict)
    messages: int = 0
    points: int = 0
    births: int = 0
    deaths: int = 0
    rebirths_requested: int = 0
    last_rebirth: float | None = None  # time.monotonic() of the last NCMD sent
    # Newest live (not historical) timestamp received, ns: a death is stamped after it.
    newest_ns: int = 0
    # Whether its answers to DCMD carry the "Command" property (learned from the first one):
    # then an unmarked single-metric DDATA is a poll, never an answer.
    echoes_commands: bool = False
    errors: Counter[str] = field(default_factory=Counter)
    last_error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.group}/{self.edge_node}"

    def status(self) -> dict[str, Any]:
        return {
            "group_id": self.group,
            "edge_node_id": self.edge_node,
            "tenant": None if self.tenant is None else self.tenant.name,
            "online": self.online,
            "born": self.born,
            "bdSeq": self.bd_seq,
            "seq": self.seq,
            "messages": self.messages,
            "points": self.points,
            "births": self.births,
            "deaths": self.deaths,
            "rebirths_requested": self.rebirths_requested,
            "devices": {
                dev_id: {
                    "registry_device": d.registry_name,
                    "online": d.online,
                    "signals": len(d.signals()),
                    "births": d.births,
                    "deaths": d.deaths,
                }
                for dev_id, d in self.devices.items()
            },
            "errors": dict(self.errors),
            "last_error": self.last_error,
        }
