"""Helpers shared by the Modbus tests: configurations, a collecting sink, a running connector,
and an encoder written with :mod:`struct` (independent of the connector's numpy codec)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from shopfloor.edge.connectors.modbus import ModbusConfig, ModbusConnector
from shopfloor.edge.model import Reading

STRUCT = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
}
ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]


def registers_of(
    value: Any, dtype: str, byte_order: str = "big", word_order: str = "big"
) -> list[int]:
    """The registers a device holding ``value`` as ``dtype`` in the given orders returns."""
    raw = struct.pack(">" + STRUCT[dtype], value)
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def string_registers(text: str, length: int, byte_order: str = "big") -> list[int]:
    raw = text.encode().ljust(length + length % 2, b"\0")
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if byte_order == "little":
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def device(name: str, points: list[dict[str, Any]], unit: int = 1, **kw: Any) -> dict[str, Any]:
    """A device section with test-friendly (short) period, timeout and backoff."""
    return {
        "name": name,
        "unit_id": unit,
        "period_s": 0.1,
        "timeout_s": 0.2,
        "backoff_max_s": 0.4,
        "points": points,
        **kw,
    }


def tcp(name: str, port: int, devices: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "transport": "tcp",
        "host": "127.0.0.1",
        "port": port,
        "connect_timeout_s": 1.0,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.4,
        "devices": devices,
        **kw,
    }


def config(*connections: dict[str, Any]) -> ModbusConfig:
    return ModbusConfig.model_validate({"connections": list(connections)})


class Collector:
    """A reading sink that keeps everything it was given."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []

    async def __call__(self, reading: Reading) -> None:
        self.readings.append(reading)

    def of(self, device: str) -> list[Reading]:
        return [r for r in self.readings if r.device == device]

    def last(self, device: str) -> Reading:
        return self.of(device)[-1]

    async def wait_until(self, cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout_s} s")
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(connector: ModbusConnector) -> AsyncIterator[ModbusConnector]:
    task = asyncio.create_task(connector.run())
    try:
        yield connector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def value(reading: Reading, signal: str) -> float:
    return float(reading.values[reading.signals.index(signal)])
