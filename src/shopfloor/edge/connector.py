"""The connector extension point: one class per protocol, discovered through entry points.

A connector package lives in ``shopfloor/edge/connectors/<domain>/`` with ``manifest.json``,
``quality_scale.yaml``, a pydantic config model and one :class:`Connector` subclass, and is
registered in the ``shopfloor.connectors`` entry-point group (built-ins the same way as third
parties). The gateway runtime builds one instance per configured connector section, calls
:meth:`Connector.run` in its own task and hands every :class:`Reading` to the sink.

Rules every connector keeps (checked by its tests and its ``quality_scale.yaml``):
- one poller (or subscription) per device, reading in batches, never per point;
- a failed read yields a bad-quality reading for that device, it never raises per point and
  never delays the other devices;
- library calls that block run in a thread at one clearly named boundary.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from typing import Any, ClassVar

from pydantic import BaseModel

from shopfloor.edge.model import Reading, WriteRequest, WriteResult

__all__ = ["ENTRY_POINT_GROUP", "Connector", "ReadingSink", "connector_class", "connector_names"]

ENTRY_POINT_GROUP = "shopfloor.connectors"

ReadingSink = Callable[[Reading], Awaitable[None]]


class Connector(ABC):
    """Base of every connector; subclasses set ``domain`` and ``config_model``."""

    domain: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]

    def __init__(self, name: str, config: BaseModel, sink: ReadingSink) -> None:
        self.name = name
        self.config = config
        self.sink = sink

    @abstractmethod
    async def run(self) -> None:
        """Poll or subscribe until cancelled; never returns on a device error."""

    async def write(self, request: WriteRequest) -> WriteResult:
        """Write a setpoint; connectors that cannot write keep this default."""
        return WriteResult(request.id, False, f"connector {self.domain!r} does not support writes")

    def status(self) -> dict[str, Any]:
        """Per-device health for ``shopfloor edge status``: connected, last poll, errors."""
        return {}


def connector_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def connector_class(domain: str) -> type[Connector]:
    """The installed connector for ``domain``; a clear error lists the known ones."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == domain:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Connector)):
                raise TypeError(f"entry point {ep.value!r} is not a Connector subclass")
            return cls
    known = ", ".join(connector_names()) or "none"
    raise KeyError(f"unknown connector {domain!r}; installed: {known}")
