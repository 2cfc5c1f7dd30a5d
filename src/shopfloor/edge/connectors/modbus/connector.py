"""The Modbus connector: one DevicePoller per device, one shared link per connection.

A poll of a device sends its read plan's requests one after another over the device's link
(other devices on the same link interleave between them), decodes all answers in one go and
hands one :class:`Reading` to the sink. A request that times out or finds no connection fails
the whole poll: the poller makes a bad-quality reading and backs off. A Modbus exception to one
request (say an address the device does not have) takes only that request's points bad.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from pydantic import BaseModel
from pymodbus.client.base import ModbusBaseClient
from pymodbus.pdu import ModbusPDU

from shopfloor.edge.connector import Connector, ReadingSink
from shopfloor.edge.connectors.modbus.codec import DeviceCodec, EncodeError
from shopfloor.edge.connectors.modbus.config import (
    ConnectionConfig,
    DeviceConfig,
    ModbusConfig,
    PointConfig,
)
from shopfloor.edge.connectors.modbus.link import (
    DEVICE_EXCEPTIONS,
    ModbusExceptionResponse,
    ModbusLink,
    NotConnected,
    check,
)
from shopfloor.edge.connectors.modbus.plan import Block, ReadPlan, plan_device
from shopfloor.edge.model import Reading, WriteRequest, WriteResult
from shopfloor.edge.poller import DevicePoller

__all__ = ["ModbusConnector", "ModbusDeviceError"]

log = logging.getLogger(__name__)


class ModbusDeviceError(Exception):
    """Every request of a poll was refused with a Modbus exception."""


# The client method that reads each register table.
_READERS = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}


@dataclass
class _Device:
    config: DeviceConfig
    link: ModbusLink
    plan: ReadPlan
    codec: DeviceCodec
    signals: tuple[str, ...]
    index: dict[str, int]
    point_errors: int = 0
    last_point_error: str | None = None
    single_point: dict[int, DeviceCodec] = field(default_factory=dict)

    def point_codec(self, i: int) -> DeviceCodec:
        """A codec for point ``i`` alone: what a write reads back."""
        if i not in self.single_point:
            p = self.config.points[i]
            plan = ReadPlan((Block(p.table, p.address, p.width),), (0,))
            self.single_point[i] = DeviceCodec([p], plan)
        return self.single_point[i]


class ModbusConnector(Connector):
    """Modbus TCP and RTU; the configuration is a :class:`ModbusConfig`."""

    domain = "modbus"
    config_model = ModbusConfig

    def __init__(self, name: str, config: BaseModel, sink: ReadingSink) -> None:
        if not isinstance(config, ModbusConfig):
            config = ModbusConfig.model_validate(config.model_dump())
        super().__init__(name, config, sink)
        self.modbus_config = config
        self.links: dict[str, ModbusLink] = {}
        self.devices: dict[str, _Device] = {}
        self.pollers: dict[str, DevicePoller] = {}
        for conn in config.connections:
            link = self.links[conn.name] = ModbusLink(conn)
            for dev in conn.devices:
                plan = plan_device(dev)
                signals = tuple(p.name for p in dev.points)
                d = _Device(
                    dev,
                    link,
                    plan,
                    DeviceCodec(dev.points, plan),
                    signals,
                    {s: i for i, s in enumerate(signals)},
                )
                self.pollers[dev.name] = DevicePoller(
                    dev.name,
                    signals,
                    partial(self._read, d),
                    sink,
                    period_s=dev.period_s,
                    timeout_s=_poll_timeout(conn, dev, len(plan.blocks)),
                    backoff_max_s=dev.backoff_max_s,
                )
                self.devices[dev.name] = d
            _warn_long_timeouts(conn)

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for conn in self.modbus_config.connections:
                    # Devices sharing a connection start their grids spread over the shortest
                    # period, so their polls queue one or two at a time instead of all at once.
                    step = min(d.period_s for d in conn.devices) / len(conn.devices)
                    for k, dev in enumerate(conn.devices):
                        poller = self.pollers[dev.name]
                        tg.create_task(_start_after(k * step, poller), name=f"modbus {dev.name}")
        finally:
            for link in self.links.values():
                link.close()

    # -- reads -------------------------------------------------------------------------------

    async def _read(self, d: _Device) -> Reading:
        dev = d.config
        stamp: list[int] = []  # when the first request went out: the reading's timestamp
        answers: list[Any] = []
        errors: list[str] = []
        for block in d.plan.blocks:
            what = f"{dev.name}: read {block.table} {block.start}+{block.count}"
            try:
                pdu = await d.link.call(
                    partial(_fetch, block=block, unit=dev.unit_id, stamp=stamp, what=what),
                    dev.timeout_s,
                    what,
                )
            except ModbusExceptionResponse as exc:
                if exc.code in DEVICE_EXCEPTIONS:
                    raise
                answers.append(None)
                errors.append(str(exc))
                continue
            answers.append(pdu.bits if block.is_bits else pdu.registers)
        if len(errors) == len(answers):
            raise ModbusDeviceError(errors[0])
        if errors:
            d.point_errors += len(errors)
            d.last_point_error = errors[-1]
        values, quality, text = d.codec.decode(answers)
        ts = np.full(len(d.signals), stamp[0], dtype=np.int64)
        return Reading(dev.name, d.signals, ts, values, quality, text)

    # -- writes ------------------------------------------------------------------------------

    async def write(self, request: WriteRequest) -> WriteResult:
        """Write one holding register value or coil; read it back when ``confirm`` is set."""
        d = self.devices.get(request.device)
        if d is None:
            return WriteResult(request.id, False, f"unknown device {request.device!r}")
        i = d.index.get(request.signal)
        if i is None:
            return WriteResult(
                request.id, False, f"{request.device} has no point {request.signal!r}"
            )
        p = d.config.points[i]
        if not p.writable:
            return WriteResult(request.id, False, f"{p.name} is a {p.table} point: read-only")
        try:
            encoded = d.codec.encode(i, request.value)
        except EncodeError as exc:
            return WriteResult(request.id, False, str(exc))
        try:
            async with asyncio.timeout(request.timeout_s):
                await self._write_point(d, p, encoded)
                if not request.confirm:
                    return WriteResult(request.id, True, "written")
                read_back = await self._read_point(d, i)
        except (TimeoutError, NotConnected, ModbusExceptionResponse) as exc:
            return WriteResult(request.id, False, f"write to {p.name} failed: {exc}")
        expected = _expected(d.point_codec(i), p, encoded)
        if read_back == expected:
            return WriteResult(request.id, True, "written and read back", read_back)
        return WriteResult(
            request.id, False, f"read back {read_back!r} after writing {expected!r}", read_back
        )

    async def _write_point(self, d: _Device, p: PointConfig, encoded: list[int] | bool) -> None:
        unit, timeout, what = (
            d.config.unit_id,
            d.config.timeout_s,
            f"{d.config.name}: write {p.name}",
        )

        async def write(client: ModbusBaseClient) -> None:
            if p.table == "coil":
                check(await client.write_coil(p.address, bool(encoded), device_id=unit), what)
            elif isinstance(encoded, bool):  # a bit of a holding register: read-modify-write
                pdu = check(await client.read_holding_registers(p.address, device_id=unit), what)
                mask = 1 << (p.bit or 0)
                word = (pdu.registers[0] | mask) if encoded else (pdu.registers[0] & ~mask)
                check(await client.write_register(p.address, word, device_id=unit), what)
            elif len(encoded) == 1:
                check(await client.write_register(p.address, encoded[0], device_id=unit), what)
            else:
                check(await client.write_registers(p.address, encoded, device_id=unit), what)

        await d.link.call(write, 2 * timeout, what)

    async def _read_point(self, d: _Device, i: int) -> Any:
        codec = d.point_codec(i)
        block = codec.plan.blocks[0]
        what = f"{d.config.name}: read back {codec.points[0].name}"
        pdu = await d.link.call(
            partial(_fetch, block=block, unit=d.config.unit_id, stamp=[], what=what),
            d.config.timeout_s,
            what,
        )
        values, _, text = codec.decode([pdu.bits if block.is_bits else pdu.registers])
        return _python_value(codec.points[0], values[0], text)

    # -- status ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        devices: dict[str, Any] = {}
        for name, d in self.devices.items():
            stats = self.pollers[name].stats.as_dict()
            stats["connected"] = stats["connected"] and d.link.connected
            stats.update(
                connection=d.link.name,
                unit_id=d.config.unit_id,
                requests_per_poll=len(d.plan.blocks),
                point_errors=d.point_errors,
                last_point_error=d.last_point_error,
            )
            devices[name] = stats
        return {
            "devices": devices,
            "connections": {name: link.status() for name, link in self.links.items()},
        }


async def _start_after(delay_s: float, poller: DevicePoller) -> None:
    await asyncio.sleep(delay_s)
    await poller.run()


async def _fetch(
    client: ModbusBaseClient, *, block: Block, unit: int, stamp: list[int], what: str
) -> ModbusPDU:
    if not stamp:
        stamp.append(time.time_ns())
    reader = getattr(client, _READERS[block.table])
    pdu: ModbusPDU = await reader(block.start, count=block.count, device_id=unit)
    return check(pdu, what)


def _python_value(p: PointConfig, value: float, text: tuple[str | None, ...] | None) -> Any:
    if p.data_type == "string":
        return text[0] if text else None
    if p.data_type == "bool":
        return bool(value)
    return float(value)


def _expected(codec: DeviceCodec, p: PointConfig, encoded: list[int] | bool) -> Any:
    """The value the point reads as once ``encoded`` is in the device."""
    if isinstance(encoded, bool):
        return encoded
    values, _, text = codec.decode([encoded])
    return _python_value(p, values[0], text)


def _poll_timeout(conn: ConnectionConfig, dev: DeviceConfig, requests: int) -> float:
    """A cap on one whole poll: its own requests, plus one timeout of every other device on
    the connection (their requests may be ahead in the queue), plus a connect."""
    others = sum(d.timeout_s for d in conn.devices if d is not dev)
    return dev.timeout_s * requests + others + conn.connect_timeout_s


def _warn_long_timeouts(conn: ConnectionConfig) -> None:
    if len(conn.devices) < 2:
        return
    shortest = min(d.period_s for d in conn.devices)
    for d in conn.devices:
        if d.timeout_s >= shortest:
            log.warning(
                "modbus %s: device %s has timeout_s %g >= the shortest period_s %g on the "
                "connection; if it stops answering, the others' polls will overrun",
                conn.name,
                d.name,
                d.timeout_s,
                shortest,
            )
