"""Against a real pymodbus server: every data type and order, scaling, strings, bits, writes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from shopfloor.core.quality import BAD, GOOD
from shopfloor.edge.connectors.modbus import ModbusConnector
from shopfloor.edge.connectors.modbus.simserver import SimServer
from shopfloor.edge.model import WriteRequest

from .helpers import (
    ORDERS,
    Collector,
    config,
    device,
    registers_of,
    running,
    string_registers,
    tcp,
    value,
)
from .test_codec import VALUES

pytestmark = pytest.mark.anyio


def every_type_and_order() -> tuple[list[dict[str, Any]], list[tuple[str, int, list[int], float]]]:
    """Points of every data type in every order, spread over both register tables, and what
    the server must hold for each: (table, address, registers, expected value)."""
    points, layout = [], []
    addr = {"holding": 0, "input": 0}
    for dtype, vals in sorted(VALUES.items()):
        for bo, wo in ORDERS:
            for k, v in enumerate(vals[:2]):
                table = "holding" if k == 0 else "input"
                regs = registers_of(v, dtype, bo, wo)
                name = f"{dtype}_{bo[0]}{wo[0]}_{k}"
                points.append(
                    {"name": name, "table": table, "address": addr[table], "type": dtype}
                    | {"byte_order": bo, "word_order": wo}
                )
                expected = float(np.float32(v)) if dtype == "float32" else float(v)
                layout.append((table, addr[table], regs, expected))
                addr[table] += len(regs) + 1  # one unused register between points
    return points, layout


async def test_every_data_type_and_order_read_from_the_server(server: SimServer) -> None:
    points, layout = every_type_and_order()
    for table, address, regs, _ in layout:
        await server.set_registers(1, address, regs, table)
    sink = Collector()
    conn = ModbusConnector("mb", config(tcp("gw", server.port, [device("d", points)])), sink)
    d = conn.devices["d"]
    # 64 points of up to 4 registers with gaps: a handful of requests, not 64
    assert len(d.plan.blocks) <= 4, d.plan.blocks
    async with running(conn):
        await sink.wait_until(lambda: len(sink.of("d")) >= 2)
    r = sink.last("d")
    assert r.signals == tuple(p["name"] for p in points)
    assert (r.quality == GOOD).all()
    np.testing.assert_array_equal(r.values, [e for *_, e in layout])
    assert r.text is None
    assert len(set(r.ts_ns.tolist())) == 1  # one poll, one timestamp


async def test_scaling_strings_and_bits_from_the_server(server: SimServer) -> None:
    points = [
        {
            "name": "temp",
            "table": "input",
            "address": 0,
            "type": "int16",
            "scale": 0.1,
            "unit": "degC",
        },
        {
            "name": "energy",
            "table": "input",
            "address": 1,
            "type": "uint32",
            "scale": 0.01,
            "offset": 100,
        },
        {"name": "serial", "table": "holding", "address": 10, "type": "string", "length": 9},
        {
            "name": "swapped",
            "table": "holding",
            "address": 20,
            "type": "string",
            "length": 4,
            "byte_order": "little",
        },
        {"name": "run", "table": "holding", "address": 30, "type": "bool", "bit": 0},
        {"name": "alarm", "table": "holding", "address": 30, "type": "bool", "bit": 14},
        {"name": "door", "table": "coil", "address": 3},
        {"name": "estop", "table": "discrete", "address": 17},
    ]
    await server.set_registers(
        2, 0, registers_of(-123, "int16") + registers_of(250_000, "uint32"), "input"
    )
    await server.set_registers(2, 10, string_registers("AB-12345", 9))
    await server.set_registers(2, 20, string_registers("XYZ", 4, "little"))
    await server.set_registers(2, 30, [0b0100_0000_0000_0000])
    await server.set_bits(2, 0, [False, False, False, True])
    await server.set_bits(2, 16, [False, True], "discrete")
    sink = Collector()
    conn = ModbusConnector(
        "mb", config(tcp("gw", server.port, [device("m", points, unit=2)])), sink
    )
    async with running(conn):
        await sink.wait_until(lambda: len(sink.of("m")) >= 1)
    r = sink.last("m")
    assert (r.quality == GOOD).all()
    assert value(r, "temp") == pytest.approx(-12.3)
    assert value(r, "energy") == pytest.approx(2600.0)
    assert r.text is not None
    assert r.text[r.signals.index("serial")] == "AB-12345"
    assert r.text[r.signals.index("swapped")] == "XYZ"
    assert [value(r, s) for s in ("run", "alarm", "door", "estop")] == [0.0, 1.0, 1.0, 1.0]


async def test_an_address_the_device_lacks_takes_only_its_points(server: SimServer) -> None:
    points = [
        {"name": "ok", "table": "holding", "address": 5},
        {"name": "missing", "table": "holding", "address": 5000},  # the server has 1000
        {"name": "coil", "table": "coil", "address": 1},
    ]
    await server.set_registers(1, 5, [42])
    sink = Collector()
    conn = ModbusConnector("mb", config(tcp("gw", server.port, [device("d", points)])), sink)
    async with running(conn):
        await sink.wait_until(lambda: len(sink.of("d")) >= 2)
    r = sink.last("d")
    np.testing.assert_array_equal(r.quality, [GOOD, BAD, GOOD])
    assert value(r, "ok") == 42
    assert np.isnan(value(r, "missing"))
    st = conn.status()["devices"]["d"]
    assert st["consecutive_failures"] == 0
    assert st["point_errors"] >= 2
    assert "illegal data address" in st["last_point_error"]


async def test_a_device_refusing_every_request_is_a_failed_poll(server: SimServer) -> None:
    sink = Collector()
    points = [{"name": "missing", "table": "holding", "address": 5000}]
    conn = ModbusConnector("mb", config(tcp("gw", server.port, [device("d", points)])), sink)
    async with running(conn):
        await sink.wait_until(lambda: len(sink.of("d")) >= 2)
    assert all((r.quality == BAD).all() for r in sink.of("d"))
    assert "illegal data address" in conn.status()["devices"]["d"]["last_error"]


WRITES: list[tuple[dict[str, Any], Any, Any]] = [
    # point, value written, what the server then holds (registers, or a bit)
    ({"type": "int16", "scale": 0.1}, -12.3, registers_of(-123, "int16")),
    ({"type": "uint16"}, 65535, [65535]),
    (
        {"type": "int32", "word_order": "little"},
        -100_000,
        registers_of(-100_000, "int32", "big", "little"),
    ),
    (
        {"type": "uint32", "byte_order": "little"},
        4_000_000_000,
        registers_of(4_000_000_000, "uint32", "little"),
    ),
    ({"type": "int64"}, -(2**40) - 3, registers_of(-(2**40) - 3, "int64")),
    (
        {"type": "uint64", "byte_order": "little", "word_order": "little"},
        2**52 + 1,
        registers_of(2**52 + 1, "uint64", "little", "little"),
    ),
    ({"type": "float32", "offset": 10.0}, 31.5, registers_of(21.5, "float32")),
    ({"type": "float64"}, 1 / 3, registers_of(1 / 3, "float64")),
    ({"type": "string", "length": 6}, "ABC", string_registers("ABC", 6)),
]


@pytest.mark.parametrize(("point", "written", "held"), WRITES)
async def test_write_with_read_back(
    server: SimServer, point: dict[str, Any], written: Any, held: Any
) -> None:
    conn = ModbusConnector(
        "mb",
        config(
            tcp(
                "gw",
                server.port,
                [device("d", [{"name": "sp", "table": "holding", "address": 100, **point}])],
            )
        ),
        Collector(),
    )
    result = await conn.write(WriteRequest("w1", "d", "sp", written))
    assert result.ok, result.message
    assert result.id == "w1"
    assert await server.registers(1, 100, len(held)) == held
    if isinstance(written, str):
        assert result.read_back == written
    else:
        assert result.read_back == pytest.approx(written, rel=1e-7)
    conn.links["gw"].close()


async def test_write_bits_coils_and_errors(server: SimServer) -> None:
    points = [
        {"name": "mode", "table": "holding", "address": 7, "type": "bool", "bit": 3},
        {"name": "pump", "table": "coil", "address": 9},
        {"name": "level", "table": "input", "address": 0},
        {"name": "speed", "table": "holding", "address": 8, "type": "int16"},
    ]
    await server.set_registers(1, 7, [0b1000_0000_0000_0001])
    conn = ModbusConnector("mb", config(tcp("gw", server.port, [device("d", points)])), Collector())
    res = await conn.write(WriteRequest("a", "d", "mode", True))
    assert (res.ok, res.read_back) == (True, True)
    assert await server.registers(1, 7, 1) == [0b1000_0000_0000_1001]  # the other bits kept
    res = await conn.write(WriteRequest("b", "d", "mode", False))
    assert await server.registers(1, 7, 1) == [0b1000_0000_0000_0001]
    res = await conn.write(WriteRequest("c", "d", "pump", True))
    assert (res.ok, res.read_back) == (True, True)
    assert (await server.bits(1, 9, 1)) == [True]
    res = await conn.write(WriteRequest("d", "d", "pump", 0, confirm=False))
    assert (res.ok, res.message, res.read_back) == (True, "written", None)
    assert (await server.bits(1, 9, 1)) == [False]

    for req, says in [
        (WriteRequest("e", "d", "level", 1), "input point: read-only"),
        (WriteRequest("f", "d", "speed", 40000), "outside int16"),
        (WriteRequest("g", "d", "speed", "fast"), "got str"),
        (WriteRequest("h", "d", "nope", 1), "has no point 'nope'"),
        (WriteRequest("i", "other", "speed", 1), "unknown device 'other'"),
    ]:
        res = await conn.write(req)
        assert not res.ok
        assert says in res.message, res.message
    assert await server.registers(1, 8, 1) == [0]  # nothing was written
    conn.links["gw"].close()


async def test_write_to_a_stopped_device_fails_cleanly(server: SimServer) -> None:
    points = [{"name": "speed", "table": "holding", "address": 8}]
    conn = ModbusConnector("mb", config(tcp("gw", server.port, [device("d", points)])), Collector())
    await server.stop()
    res = await conn.write(WriteRequest("a", "d", "speed", 5, timeout_s=1.0))
    assert not res.ok
    assert "failed" in res.message
    conn.links["gw"].close()
