"""The S7 connector: one PLC connection, one :class:`DevicePoller` per configured device."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import numpy as np
import snap7
from pydantic import BaseModel

from shopfloor.edge.connector import Connector, ReadingSink
from shopfloor.edge.connectors.s7.codec import ReadPlan, decode_one, encode
from shopfloor.edge.connectors.s7.config import S7Config, S7Device, S7Point
from shopfloor.edge.connectors.s7.link import AREAS, S7Link
from shopfloor.edge.model import Reading, WriteRequest, WriteResult
from shopfloor.edge.poller import DevicePoller

__all__ = ["S7Connector"]


class S7Connector(Connector):
    """Polls the configured points of one S7 PLC and writes setpoints to writable points."""

    domain: ClassVar[str] = "s7"
    config_model: ClassVar[type[BaseModel]] = S7Config

    def __init__(self, name: str, config: BaseModel, sink: ReadingSink) -> None:
        if not isinstance(config, S7Config):
            raise TypeError(f"S7Connector needs an S7Config, got {type(config).__name__}")
        super().__init__(name, config, sink)
        self.cfg = config
        self.plans = {d.name: ReadPlan(d.points, config.max_gap) for d in config.devices}
        self._devices = {d.name: d for d in config.devices}
        self.link = S7Link(
            config.host,
            config.port,
            config.rack,
            config.slot,
            timeout_s=max(d.timeout_s for d in config.devices),
            backoff_max_s=config.backoff_max_s,
        )
        self.pollers = {
            d.name: DevicePoller(
                d.name,
                self.plans[d.name].signals,
                self._reader(d),
                sink,
                period_s=d.period_s,
                timeout_s=d.timeout_s,
                backoff_max_s=config.backoff_max_s,
            )
            for d in config.devices
        }

    def _reader(self, device: S7Device) -> Callable[[], Awaitable[Reading]]:
        plan = self.plans[device.name]

        async def read() -> Reading:
            ts = time.time_ns()
            chunks = await self.link.read_blocks(plan.blocks)
            values, text = plan.decode(chunks)
            return Reading.at(device.name, ts, plan.signals, values, text=text)

        return read

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for poller in self.pollers.values():
                    tg.create_task(poller.run(), name=f"s7:{self.name}:{poller.device}")
        finally:
            await self.link.aclose()

    async def write(self, request: WriteRequest) -> WriteResult:
        try:
            point = self._point(request.device, request.signal)
        except KeyError as exc:
            return WriteResult(request.id, False, str(exc.args[0]))
        if not point.writable:
            return WriteResult(request.id, False, f"point {point.name!r} is not writable")
        area, db, size = AREAS[point.area], point.db or 0, point.size

        def write_and_read_back(client: snap7.Client) -> bytearray:
            current = client.read_area(area, db, point.byte, 1) if point.type == "bool" else b""
            client.write_area(
                area, db, point.byte, bytearray(encode(point, request.value, current))
            )
            return (
                bytearray(client.read_area(area, db, point.byte, size))
                if request.confirm
                else bytearray()
            )

        try:
            encode(point, request.value, b"\0")  # a bad value fails here, before any traffic
            data = await asyncio.wait_for(self.link.call(write_and_read_back), request.timeout_s)
        except ValueError as exc:
            return WriteResult(request.id, False, str(exc))
        except TimeoutError:
            return WriteResult(request.id, False, f"no answer within {request.timeout_s} s")
        except Exception as exc:
            return WriteResult(request.id, False, f"write to {point.address} failed: {exc}")
        if not request.confirm:
            return WriteResult(request.id, True, "written, not read back")
        read_back = decode_one(point, data)
        # What the PLC must hold now: the request after encoding (REAL rounding, scaling).
        expected = decode_one(point, encode(point, request.value, data[:1]).ljust(size, b"\0"))
        if _same(read_back, expected):
            return WriteResult(request.id, True, "written and read back", read_back)
        return WriteResult(
            request.id, False, f"read back {read_back!r}, expected {expected!r}", read_back
        )

    def status(self) -> dict[str, Any]:
        return {
            "host": f"{self.cfg.host}:{self.cfg.port}",
            "connected": self.link.connected,
            "connects": self.link.connects,
            "pdu_length": self.link.pdu_length,
            "last_error": self.link.last_error,
            "devices": {
                name: {
                    **p.stats.as_dict(),
                    "points": len(p.signals),
                    "ranges_per_poll": len(self.plans[name].blocks),
                    "bytes_per_poll": self.plans[name].total_bytes,
                }
                for name, p in self.pollers.items()
            },
        }

    def _point(self, device: str, signal: str) -> S7Point:
        dev = self._devices.get(device)
        if dev is None:
            raise KeyError(f"unknown device {device!r}; known: {', '.join(self._devices)}")
        for p in dev.points:
            if p.name == signal:
                return p
        raise KeyError(f"device {device!r} has no point {signal!r}")


def _same(a: float | str, b: float | str) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return (math.isnan(a) and math.isnan(b)) or bool(np.isclose(a, b, rtol=1e-12, atol=0.0))
