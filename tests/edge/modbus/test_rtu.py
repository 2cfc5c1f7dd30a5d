"""Modbus RTU on a serial line: two pseudo-terminals joined back to back stand in for the
RS-485 cable (no hardware, no socat); the server is pymodbus' RTU server on the other end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from shopfloor.core.quality import BAD, GOOD
from shopfloor.edge.connectors.modbus import ModbusConnector
from shopfloor.edge.connectors.modbus.simserver import PtyLine, SimServer, period_drift_pct
from shopfloor.edge.model import WriteRequest

from .helpers import Collector, config, device, registers_of, running, value

pytestmark = pytest.mark.anyio

POINTS = [
    {"name": "voltage", "table": "input", "address": 0, "type": "float32", "word_order": "little"},
    {"name": "setpoint", "table": "holding", "address": 10, "type": "int16", "scale": 0.5},
    {"name": "relay", "table": "coil", "address": 2},
]


def rtu(port: str, devices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "rs485",
        "transport": "rtu",
        "serial_port": port,
        "baudrate": 115200,
        "parity": "N",
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.4,
        "devices": devices,
    }


@pytest.fixture
async def line() -> AsyncIterator[tuple[PtyLine, SimServer]]:
    async with PtyLine() as pty, SimServer([1, 2, 3], serial_port=pty.b, silent_units=[3]) as srv:
        for u in (1, 2):
            await srv.set_registers(
                u, 0, registers_of(230.0 + u, "float32", "big", "little"), "input"
            )
        yield pty, srv


async def test_rtu_line_with_a_dead_slave(line: tuple[PtyLine, SimServer]) -> None:
    pty, _ = line
    period = 0.2
    devices = [
        device(f"meter{u}", POINTS, unit=u, period_s=period, timeout_s=0.1) for u in (1, 2, 3)
    ]
    sink = Collector()
    conn = ModbusConnector("mb", config(rtu(pty.a, devices)), sink)
    async with running(conn):
        await asyncio.sleep(3.0)
        st = conn.status()
    for u in (1, 2):
        readings = sink.of(f"meter{u}")
        assert len(readings) >= 3.0 / period - 1
        assert all((r.quality == GOOD).all() for r in readings)
        assert value(readings[-1], "voltage") == 230.0 + u
        assert period_drift_pct([r.ts_ns[0] for r in readings], period) <= 10.0
        assert st["devices"][f"meter{u}"]["failed_total"] == 0
    dead = sink.of("meter3")
    assert dead
    assert all((r.quality == BAD).all() for r in dead)
    assert len(dead) < len(sink.of("meter1")) / 2  # backed off
    assert "no answer within 0.1 s" in st["devices"]["meter3"]["last_error"]
    assert st["connections"]["rs485"]["connects"] == 1


async def test_rtu_write_with_read_back(line: tuple[PtyLine, SimServer]) -> None:
    pty, srv = line
    conn = ModbusConnector(
        "mb", config(rtu(pty.a, [device("meter2", POINTS, unit=2)])), Collector()
    )
    res = await conn.write(WriteRequest("w", "meter2", "setpoint", -21.5))
    assert (res.ok, res.read_back) == (True, -21.5), res.message
    assert await srv.registers(2, 10, 1) == registers_of(-43, "int16")
    res = await conn.write(WriteRequest("w", "meter2", "relay", True))
    assert res.ok
    assert await srv.bits(2, 2, 1) == [True]
    res = await conn.write(WriteRequest("w", "meter2", "voltage", 1.0))
    assert not res.ok
    assert "read-only" in res.message
    conn.links["rs485"].close()


async def test_a_missing_serial_port_is_a_bad_reading_not_a_crash() -> None:
    sink = Collector()
    devices = [device("m", POINTS)]
    conn = ModbusConnector("mb", config(rtu("/dev/does-not-exist", devices)), sink)
    async with running(conn):
        await sink.wait_until(lambda: len(sink.of("m")) >= 2)
    assert all(np.isnan(r.values).all() for r in sink.of("m"))
    assert "cannot connect" in conn.status()["devices"]["m"]["last_error"]
