"""The gateway: connectors -> durable buffer -> forwarder -> uplink, and commands back.

Data path. Every connector runs in its own task; its sink appends each reading to the
store-and-forward buffer and returns only when the reading is on disk, so a reading a connector
handed over survives a power cut. One forwarder task takes the oldest readings from the buffer,
hands them to the uplink and acknowledges them in the buffer only after ``send`` returned, i.e.
after the platform committed them. When the uplink fails the readings stay where they are and
the forwarder retries with exponential backoff; what is sent after a failure, until the backlog
is drained, is flagged historical, as is anything older than ``forwarder.historical_after``.

Remote connectors. With ``remote:`` in edge.yaml, connectors also come from the platform
(edge/remote.py); :meth:`Gateway.apply_remote` starts the new ones, stops the removed ones and
restarts the changed ones while unchanged connectors, the buffer and the forwarder run on. The
buffer is shared by all slots, so what a stopped connector handed over is still forwarded.

Faults. A connector whose task crashes (or returns) is logged and rebuilt after a backoff;
the others and the forwarder keep running. SIGINT/SIGTERM stop the connectors first, let a send
in flight finish, write a last status file and close the buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from shopfloor.edge.config import ConnectorSection, EdgeConfig
from shopfloor.edge.connector import Connector
from shopfloor.edge.model import Reading, WriteRequest, WriteResult
from shopfloor.edge.uplink import Uplink, UplinkError

__all__ = ["ApplyResult", "BufferLike", "ConnectorSlot", "Gateway", "run_gateway"]

log = logging.getLogger(__name__)


class BufferLike(Protocol):
    """What the runtime needs of :class:`shopfloor.edge.buffer.StoreForwardBuffer`."""

    async def append_async(self, readings: Sequence[Reading]) -> None: ...
    def peek(self, max_points: int) -> tuple[int, list[Reading]]: ...
    def ack(self, cursor: int) -> None: ...
    def stats(self) -> Any: ...
    def wait_for_data(self) -> asyncio.Event: ...
    def close(self) -> None: ...


def open_buffer(config: EdgeConfig) -> BufferLike:
    from shopfloor.edge.buffer import StoreForwardBuffer

    b = config.buffer
    buffer: BufferLike = StoreForwardBuffer(
        config.data_dir / "buffer",
        max_bytes=b.max_bytes,
        max_age_s=b.max_age,
        when_full=b.when_full,
        fsync=b.fsync,
        fsync_interval_ms=b.fsync_interval * 1000.0,
        segment_bytes=b.segment_bytes,
    )
    return buffer


@dataclass
class ConnectorSlot:
    """One configured connector and what the supervisor knows about it."""

    name: str
    domain: str
    cls: type[Connector]
    config: Any
    connector: Connector | None = None
    task: asyncio.Task[None] | None = None
    running: bool = False
    restarts: int = 0
    last_error: str | None = None
    points_in: int = 0
    points_rejected: int = 0
    devices: set[str] = field(default_factory=set)
    remote: bool = False  # configured from the platform, not from edge.yaml


@dataclass(frozen=True)
class ApplyResult:
    """What :meth:`Gateway.apply_remote` did, by connector name."""

    started: list[str]
    restarted: list[str]
    stopped: list[str]
    unchanged: list[str]


class Gateway:
    """Builds and runs everything one ``edge.yaml`` describes.

    ``buffer`` and ``uplink`` may be passed in (tests, embedding); by default they are built from
    the configuration.
    """

    def __init__(
        self,
        config: EdgeConfig,
        *,
        buffer: BufferLike | None = None,
        uplink: Uplink | None = None,
        restart_initial_s: float = 1.0,
        restart_max_s: float = 60.0,
    ) -> None:
        self.config = config
        self._buffer = buffer
        self._uplink = uplink
        self.restart_initial_s = restart_initial_s
        self.restart_max_s = restart_max_s
        self.slots = [
            ConnectorSlot(c.name, c.type, c.connector_cls, c.config) for c in config.connectors
        ]
        self._by_name = {s.name: s for s in self.slots}
        self._owner: dict[str, str] = {}  # device -> connector name, learnt from readings
        self.started_ns = time.time_ns()
        self.points_in = 0
        self.points_out = 0
        self.batches_out = 0
        self.send_failures = 0
        self.last_send_error: str | None = None
        self.backlog = False
        self._stop = asyncio.Event()
        self._forwarder: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._running = False  # connector tasks are started as slots come
        self._apply_lock = asyncio.Lock()
        self.remote: Any = None  # edge.remote.RemoteSync while remote: is enabled

    # --- parts ---------------------------------------------------------------------------------
    @property
    def buffer(self) -> BufferLike:
        if self._buffer is None:
            raise RuntimeError("the gateway is not started")
        return self._buffer

    @property
    def uplink(self) -> Uplink:
        if self._uplink is None:
            raise RuntimeError("the gateway is not started")
        return self._uplink

    @property
    def ready(self) -> asyncio.Event:
        """Set once the buffer, uplink and tasks are up."""
        return self._ready

    def _sink_for(self, slot: ConnectorSlot) -> Callable[[Reading], Any]:
        owner = self._owner

        async def sink(reading: Reading) -> None:
            owner[reading.device] = slot.name
            slot.devices.add(reading.device)
            try:
                await self.buffer.append_async([reading])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # buffer full (reject) or disk error: count, never crash
                if slot.points_rejected == 0 or slot.last_error != str(exc):
                    log.error("connector %s: buffer refused a reading: %s", slot.name, exc)
                slot.points_rejected += len(reading)
                slot.last_error = f"buffer: {exc}"
                return
            slot.points_in += len(reading)
            self.points_in += len(reading)

        return sink

    # --- connectors ----------------------------------------------------------------------------
    async def _supervise(self, slot: ConnectorSlot) -> None:
        loop = asyncio.get_running_loop()
        delay = self.restart_initial_s
        while True:
            started = loop.time()
            slot.connector = slot.cls(slot.name, slot.config, self._sink_for(slot))
            slot.running = True
            try:
                await slot.connector.run()
                slot.last_error = "run() returned"
                log.error("connector %s: run() returned; restarting in %.1f s", slot.name, delay)
            except asyncio.CancelledError:
                slot.running = False
                raise
            except Exception as exc:
                slot.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("connector %s crashed; restarting in %.1f s", slot.name, delay)
            slot.running = False
            slot.restarts += 1
            if loop.time() - started > 10 * self.restart_max_s:
                delay = self.restart_initial_s  # it ran a long while: a fresh fault, start low
            await asyncio.sleep(delay)
            delay = min(delay * 2.0, self.restart_max_s)

    # --- forwarding ----------------------------------------------------------------------------
    async def _wait_for_data(self, most_s: float) -> None:
        event = self.buffer.wait_for_data()
        if event.is_set():
            # Set although peek found nothing: do not spin on it.
            await asyncio.sleep(min(most_s, 0.05))
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), most_s)

    def _is_old(self, batch: Sequence[Reading]) -> bool:
        limit = time.time_ns() - int(self.config.forwarder.historical_after * 1e9)
        return any(len(r) and int(np.min(r.ts_ns)) < limit for r in batch)

    async def _forward(self) -> None:
        fw = self.config.forwarder
        delay = fw.retry_initial
        while not self._stop.is_set():
            cursor, batch = self.buffer.peek(fw.batch_points)
            if not batch:
                self.backlog = False
                await self._wait_for_data(0.5)
                continue
            n = sum(len(r) for r in batch)
            historical = self.backlog or self._is_old(batch)
            try:
                await self.uplink.send(batch, historical=historical)
            except UplinkError as exc:
                failed = str(exc) or type(exc).__name__
            except Exception as exc:  # a bug in an uplink must not stop forwarding
                log.exception("uplink send crashed")
                failed = f"{type(exc).__name__}: {exc}"
            else:
                # The ack syncs a small file (~2 ms): off the loop, so polls keep their grid.
                await asyncio.to_thread(self.buffer.ack, cursor)
                self.points_out += n
                self.batches_out += 1
                self.last_send_error = None
                delay = fw.retry_initial
                if n < fw.batch_points:
                    self.backlog = False  # caught up: what follows is live
                continue
            self.send_failures += 1
            self.last_send_error = failed
            self.backlog = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2.0, fw.retry_max)

    # --- commands ------------------------------------------------------------------------------
    def owner_of(self, device: str) -> ConnectorSlot | None:
        """The connector a device belongs to: seen in its readings, or listed in its status."""
        name = self._owner.get(device)
        if name is not None and name in self._by_name:
            return self._by_name[name]
        self._owner.pop(device, None)  # its connector was removed remotely
        for slot in self.slots:
            if slot.connector is not None and device in _status_devices(slot.connector):
                self._owner[device] = slot.name
                return slot
        return None

    async def handle_command(self, request: WriteRequest) -> WriteResult:
        slot = self.owner_of(request.device)
        if slot is None:
            known = ", ".join(sorted(self._owner)) or "none seen yet"
            return WriteResult(
                request.id, False, f"unknown device {request.device!r}; known: {known}"
            )
        if slot.connector is None or not slot.running:
            return WriteResult(request.id, False, f"connector {slot.name!r} is not running")
        try:
            return await asyncio.wait_for(slot.connector.write(request), request.timeout_s)
        except TimeoutError:
            return WriteResult(request.id, False, f"write timed out after {request.timeout_s} s")
        except Exception as exc:
            log.exception("connector %s: write %s failed", slot.name, request.id)
            return WriteResult(request.id, False, f"{type(exc).__name__}: {exc}")

    # --- remote connectors -----------------------------------------------------------------------
    def _start_slot(self, slot: ConnectorSlot) -> None:
        slot.task = asyncio.create_task(self._supervise(slot), name=f"connector:{slot.name}")

    async def _stop_slot(self, slot: ConnectorSlot) -> None:
        if slot.task is not None:
            slot.task.cancel()
            await asyncio.gather(slot.task, return_exceptions=True)
            slot.task = None
        slot.running = False

    def check_remote(self, sections: Sequence[ConnectorSection]) -> None:
        """ValueError when a remote connector's name is one of edge.yaml's own."""
        local = {s.name for s in self.slots if not s.remote}
        clash = sorted(local & {s.name for s in sections})
        if clash:
            raise ValueError(
                f"remote connector name(s) {', '.join(map(repr, clash))} are used by edge.yaml's "
                "own connectors; rename them on the platform"
            )

    async def apply_remote(self, sections: Sequence[ConnectorSection]) -> ApplyResult:
        """Make the remote connectors exactly ``sections`` (validated ones, from
        ``parse_edge_config``): new ones start, removed ones stop, changed ones (type, class or
        config) restart; unchanged ones keep running untouched. Local connectors never change.
        Raises ValueError (and changes nothing) on a name clash with a local connector."""
        async with self._apply_lock:
            self.check_remote(sections)
            wanted = {s.name: s for s in sections}
            started: list[str] = []
            restarted: list[str] = []
            stopped: list[str] = []
            unchanged: list[str] = []
            for slot in [s for s in self.slots if s.remote and s.name not in wanted]:
                await self._stop_slot(slot)
                self.slots.remove(slot)
                del self._by_name[slot.name]
                stopped.append(slot.name)
            for name, sec in wanted.items():
                old = self._by_name.get(name)
                if old is not None:
                    same = (
                        old.domain == sec.type
                        and old.cls is sec.connector_cls
                        and old.config == sec.config
                    )
                    if same:
                        unchanged.append(name)
                        continue
                    await self._stop_slot(old)
                    self.slots.remove(old)
                    restarted.append(name)
                else:
                    started.append(name)
                slot = ConnectorSlot(name, sec.type, sec.connector_cls, sec.config, remote=True)
                self.slots.append(slot)
                self._by_name[name] = slot
                if self._running:
                    self._start_slot(slot)
            if started or restarted or stopped:
                log.info(
                    "remote connectors: started %s, restarted %s, stopped %s",
                    started or "-",
                    restarted or "-",
                    stopped or "-",
                )
            return ApplyResult(started, restarted, stopped, unchanged)

    # --- life cycle ----------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Run until :meth:`request_stop` (or cancellation); always shuts down cleanly."""
        from shopfloor.edge.status import StatusReporter

        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        if self._buffer is None:
            self._buffer = open_buffer(self.config)
        if self._uplink is None:
            from shopfloor.edge.uplinks import build_uplink

            self._uplink = build_uplink(self.config.uplink, self.config.data_dir)
        self.uplink.on_command = self.handle_command
        # What an earlier run left in the buffer waited through a stop or a crash: historical,
        # however young, until the forwarder has caught up.
        self.backlog = self.buffer.stats().depth_points > 0
        reporter = StatusReporter(self)
        remote_cfg = self.config.remote
        if remote_cfg is not None and remote_cfg.enabled and self.remote is None:
            from shopfloor.edge.remote import RemoteSync

            self.remote = RemoteSync(self, remote_cfg)
        try:
            if self.remote is not None:
                # The last config the platform gave comes up at once, platform or not.
                await self.remote.load_saved()
            await self.uplink.start()
            await reporter.start()
            self._forwarder = asyncio.create_task(self._forward(), name="forwarder")
            self._running = True
            for slot in self.slots:
                self._start_slot(slot)
            if self.remote is not None:
                self.remote.start()
            log.info(
                "gateway %s: %d connector(s), buffer in %s",
                self.config.name,
                len(self.slots),
                self.config.data_dir,
            )
            self._ready.set()
            await self._stop.wait()
        finally:
            await self._shutdown(reporter)

    async def _shutdown(self, reporter: Any) -> None:
        if self.remote is not None:  # no reconfiguration while stopping
            await self.remote.stop()
        self._running = False
        tasks = [s.task for s in self.slots if s.task is not None]
        for task in tasks:  # no new readings first
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._stop.set()
        if self._forwarder is not None:
            # A send in flight may finish (and be acknowledged) rather than be resent later.
            grace = float(getattr(self.config.uplink, "timeout", 5.0)) + 1.0
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._forwarder), grace)
            self._forwarder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._forwarder
        with contextlib.suppress(Exception):
            await self.uplink.stop()
        await reporter.stop()
        if self._buffer is not None:
            self._buffer.close()
        log.info("gateway %s stopped", self.config.name)


def _status_devices(connector: Connector) -> set[str]:
    try:
        st = connector.status()
    except Exception:
        return set()
    devices = st.get("devices", st)
    return (
        {str(k) for k, v in devices.items() if isinstance(v, dict)}
        if isinstance(devices, dict)
        else set()
    )


async def run_gateway(config: EdgeConfig) -> None:
    """Run a gateway until SIGINT or SIGTERM."""
    gateway = Gateway(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on every platform
            loop.add_signal_handler(sig, gateway.request_stop)
    try:
        await gateway.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)
