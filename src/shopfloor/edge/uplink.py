"""The uplink extension point: how buffered readings reach the platform.

The gateway runtime reads the oldest records from the store-and-forward buffer, hands them to
:meth:`Uplink.send`, and deletes them from the buffer only when ``send`` returned (the platform
acknowledged them: HTTP 2xx after its commit, or MQTT PUBACK). ``send`` raises
:class:`UplinkError` when nothing or not everything was acknowledged; the runtime then keeps
the records and retries with backoff, so a point is delivered at least once and, because
records are only resent after a failure the platform reported, exactly once in practice.

Two uplinks exist: ``http`` (batches to ``POST /api/v1/ingest``) and ``sparkplug`` (a
Sparkplug B edge node on any MQTT broker).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence

from shopfloor.edge.model import Reading, WriteRequest, WriteResult

__all__ = ["CommandHandler", "Uplink", "UplinkError"]

# The runtime routes a command from the platform to the connector owning the device.
CommandHandler = Callable[[WriteRequest], Awaitable[WriteResult]]


class UplinkError(Exception):
    """The platform did not acknowledge what was sent (unreachable, refused, timed out)."""


class Uplink(ABC):
    def __init__(self) -> None:
        self.on_command: CommandHandler | None = None

    @abstractmethod
    async def start(self) -> None:
        """Connect (or prepare to); must not raise when the platform is unreachable."""

    @abstractmethod
    async def stop(self) -> None: ...

    @property
    @abstractmethod
    def connected(self) -> bool: ...

    @abstractmethod
    async def send(self, readings: Sequence[Reading], *, historical: bool) -> None:
        """Deliver readings in order; return only once the platform acknowledged all of them.

        ``historical`` is true for data that waited in the buffer through an outage (Sparkplug
        ``is_historical``); live data is sent with it false.
        """
