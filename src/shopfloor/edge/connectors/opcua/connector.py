"""The OPC UA client connector: one session per server, data by subscription, writes on request.

Lifecycle (``run``): connect, read the server's OperationLimits, subscribe every configured node
in batches, then wait for the session to be lost. A loss is seen at once when the socket
closes, within ``watchdog_s`` when the server hangs (asyncua's keep-alive probe), and when no
publish response (not even a keep-alive) arrived for too long. Then every device gets one
bad-quality reading, the session is torn down, and after a backoff (``reconnect_min_s``
doubling up to ``reconnect_max_s``) a fresh session subscribes again: the new monitored items
report their current values at once, so data resumes with the first values after the outage.

Publish responses are converted to readings inside asyncua's publish loop (plain numpy, no
awaits) and queued; a separate task hands them to the sink, so a slow sink never delays the
next publish request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from asyncua import ua

from shopfloor.edge.connector import Connector, ReadingSink
from shopfloor.edge.connectors.opcua._ua import AttributeIds, Client
from shopfloor.edge.connectors.opcua.config import OpcUaConfig
from shopfloor.edge.connectors.opcua.readings import ItemTable, to_readings
from shopfloor.edge.connectors.opcua.session import (
    Limits,
    Subscribed,
    describe_error,
    make_client,
    read_limits,
    subscribe,
)
from shopfloor.edge.connectors.opcua.values import coerce, same_value
from shopfloor.edge.model import Reading, WriteRequest, WriteResult, bad_reading, now_ns

log = logging.getLogger(__name__)

__all__ = ["BAD_COMMUNICATION", "OpcUaConnector"]

BAD_COMMUNICATION = 0x80050000  # Bad_CommunicationError: what a lost session marks its points
_STALE_AFTER_KEEPALIVES = 2.5  # no publish response for this many keep-alive periods: lost


class SessionLost(ConnectionError):
    """The server closed, stopped answering, or dropped our subscriptions."""


@dataclass
class _Counters:
    notifications: int = 0
    duplicates: int = 0
    readings: int = 0
    publish_responses: int = 0
    sessions: int = 0
    reconnects: int = 0
    failures: int = 0  # consecutive session attempts that ended in an error
    failed_total: int = 0
    last_data_ns: int | None = None
    connected_since_ns: int | None = None


class OpcUaConnector(Connector):
    domain: ClassVar[str] = "opcua"
    config_model: ClassVar[type[OpcUaConfig]] = OpcUaConfig

    def __init__(self, name: str, config: OpcUaConfig, sink: ReadingSink) -> None:
        super().__init__(name, config, sink)
        self.cfg = config
        self.table = ItemTable.from_config(config)
        self._queue: asyncio.Queue[list[Reading]] = asyncio.Queue()
        self._client: Client | None = None
        self._lost = asyncio.Event()
        self._lost_reason: str | None = None
        self._last_publish = 0.0
        self._state = "disconnected"
        self._subscribed = Subscribed()
        self._limits = Limits()
        self._last_error: str | None = None
        self._counters = _Counters()
        self._datatypes: dict[str, ua.VariantType] = {}

    # --- run --------------------------------------------------------------------------------
    async def run(self) -> None:
        forward = asyncio.create_task(self._forward(), name=f"opcua-{self.name}-forward")
        delay = self.cfg.reconnect_min_s
        try:
            while True:
                try:
                    await self._session()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # any library error: retry later, never leave run()
                    self._last_error = describe_error(exc, self._state == "connecting")
                    self._counters.failures += 1
                    self._counters.failed_total += 1
                    log.warning("opcua %s: %s", self.name, self._last_error)
                finally:
                    await self._teardown()
                if self._counters.connected_since_ns is not None:
                    # it was connected: mark the data bad and retry promptly, since a restarted
                    # server is back soon; only repeated failed attempts back off further
                    self._mark_devices_bad()
                    self._counters.connected_since_ns = None
                    delay = self.cfg.reconnect_min_s
                self._state = "backoff"
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.cfg.reconnect_max_s)
                self._counters.reconnects += 1
        finally:
            forward.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await forward
            await self._teardown()

    async def _session(self) -> None:
        self._state = "connecting"
        self._lost.clear()
        self._lost_reason = None
        client = await make_client(self.cfg)
        client.connection_lost_callback = self._on_connection_lost
        self._client = client
        await asyncio.wait_for(client.connect(), self.cfg.request_timeout_s * 2)
        self._counters.sessions += 1
        self._state = "subscribing"
        self._limits = await read_limits(client)
        self._last_publish = time.monotonic()
        self._subscribed = await subscribe(client, self.cfg, self._limits, self._on_publish)
        if not self._subscribed.items_ok:
            raise RuntimeError(
                f"no node could be subscribed; first failures: {_first(self._subscribed.failed)}"
            )
        if self._subscribed.failed:
            self._last_error = (
                f"{len(self._subscribed.failed)} nodes not subscribed: "
                f"{_first(self._subscribed.failed)}"
            )
        else:
            self._last_error = None
        self._state = "connected"
        self._counters.connected_since_ns = now_ns()
        self._counters.failures = 0
        await self._watch()

    async def _watch(self) -> None:
        """Return (raise SessionLost) once the session is gone; checks at least every second."""
        interval_s = max(self._subscribed.revised_publishing_ms, 1.0) / 1000.0
        keepalive_s = self._subscribed.keepalive_s or 10.0
        stale_s = max(self.cfg.watchdog_s, _STALE_AFTER_KEEPALIVES * keepalive_s, 3 * interval_s)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), 1.0)
            if self._lost.is_set():
                raise SessionLost(self._lost_reason or "connection lost")
            client = self._client
            if client is not None and client.uaclient.state.value not in ("connected",):
                raise SessionLost(f"client state {client.uaclient.state.value}")
            if time.monotonic() - self._last_publish > stale_s:
                raise SessionLost(f"no publish response for {stale_s:.0f} s")

    async def _on_connection_lost(self, exc: Exception) -> None:
        self._lost_reason = describe_error(exc)
        self._lost.set()

    def _on_publish(self, result: ua.PublishResult) -> None:
        """asyncua's publish loop calls this; it must not await (see module docstring)."""
        self._last_publish = time.monotonic()
        self._counters.publish_responses += 1
        data = result.NotificationMessage.NotificationData
        if not data:
            return  # a keep-alive
        for notif in data:
            if isinstance(notif, ua.DataChangeNotification) and notif.MonitoredItems:
                conv = to_readings(self.table, notif.MonitoredItems, now_ns())
                self._counters.notifications += conv.notifications
                self._counters.duplicates += conv.duplicates
                if conv.readings:
                    self._counters.readings += len(conv.readings)
                    self._counters.last_data_ns = now_ns()
                    self._queue.put_nowait(conv.readings)
            elif isinstance(notif, ua.StatusChangeNotification):
                status = notif.Status
                if status is not None and not status.is_good():
                    self._lost_reason = f"subscription status {status.name}"
                    self._lost.set()

    async def _forward(self) -> None:
        while True:
            readings = await self._queue.get()
            for r in readings:
                try:
                    await self.sink(r)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a failing sink must not stop the data of later publishes
                    log.exception("opcua %s: sink failed for device %s", self.name, r.device)

    def _mark_devices_bad(self) -> None:
        ts = now_ns()
        self._queue.put_nowait(
            [
                bad_reading(d, s, ts, BAD_COMMUNICATION)
                for d, s in zip(self.table.devices, self.table.signals, strict=True)
            ]
        )

    async def _teardown(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        self._state = "disconnecting"
        try:
            await asyncio.wait_for(client.disconnect(), 3.0)
        except (Exception, asyncio.CancelledError):  # the server may already be gone
            log.debug("opcua %s: disconnect failed", self.name, exc_info=True)
            with contextlib.suppress(Exception):
                client.disconnect_socket()
        self._state = "disconnected"

    # --- write ------------------------------------------------------------------------------
    async def write(self, request: WriteRequest) -> WriteResult:
        row = self.table.lookup(request.device, request.signal)
        if row is None:
            return WriteResult(
                request.id, False, f"no signal {request.signal!r} on device {request.device!r}"
            )
        client = self._client
        if client is None or self._state != "connected":
            return WriteResult(request.id, False, f"not connected ({self._state})")
        node_id = self.table.node_ids[row]
        try:
            return await asyncio.wait_for(self._write(client, node_id, request), request.timeout_s)
        except TimeoutError:
            return WriteResult(request.id, False, f"write to {node_id} timed out")
        except Exception as exc:
            return WriteResult(
                request.id, False, f"write to {node_id} failed: {describe_error(exc)}"
            )

    async def _write(self, client: Client, node_id: str, request: WriteRequest) -> WriteResult:
        node = client.get_node(node_id)
        vtype = self._datatypes.get(node_id)
        if vtype is None:
            vtype = await node.read_data_type_as_variant_type()
            self._datatypes[node_id] = vtype
        try:
            value = coerce(request.value, vtype)
        except (TypeError, ValueError) as exc:
            return WriteResult(request.id, False, f"{node_id}: {exc}")
        # No timestamps in the written DataValue: many servers refuse writes that carry them.
        await node.write_attribute(AttributeIds.Value, ua.DataValue(ua.Variant(value, vtype)))
        extra = {"node_id": node_id, "data_type": vtype.name}
        if not request.confirm:
            return WriteResult(request.id, True, "written", extra=extra)
        back = await node.read_value()
        if same_value(back, value, vtype):
            return WriteResult(request.id, True, "written and read back", back, extra)
        return WriteResult(request.id, False, f"read back {back!r}, not {value!r}", back, extra)

    # --- status -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        c = self._counters
        reported = int(self.table.reported.sum())
        return {
            "endpoint": self.cfg.endpoint,
            "connected": self._state == "connected",
            "session_state": self._state,
            "subscriptions": len(self._subscribed.subscription_ids),
            "subscribed_items": self._subscribed.items_ok,
            "configured_items": len(self.table),
            "failed_items": dict(list(self._subscribed.failed.items())[:20]),
            "items_reported": reported,
            "monitored_items_per_call": self._subscribed.batch,
            "create_calls": self._subscribed.calls,
            "server_limits": asdict(self._limits),
            "notifications_received": c.notifications,
            "duplicates_dropped": c.duplicates,
            "readings": c.readings,
            "publish_responses": c.publish_responses,
            "queued_batches": self._queue.qsize(),
            "sessions": c.sessions,
            "reconnect_attempts": c.reconnects,
            "consecutive_failures": c.failures,
            "failed_attempts_total": c.failed_total,
            "last_data_ns": c.last_data_ns,
            "connected_since_ns": c.connected_since_ns,
            "last_error": self._last_error,
            "devices": {
                d: {"signals": len(s)}
                for d, s in zip(self.table.devices, self.table.signals, strict=True)
            },
        }


def _first(failed: dict[str, str], n: int = 3) -> str:
    return ", ".join(f"{k} {v}" for k, v in list(failed.items())[:n])
