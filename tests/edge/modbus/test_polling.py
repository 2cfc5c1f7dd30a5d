"""Polling a real server: good readings, bad quality while it is down, recovery after."""

from __future__ import annotations

import numpy as np
import pytest

from shopfloor.core.quality import BAD, GOOD
from shopfloor.edge.connectors.modbus import ModbusConnector
from shopfloor.edge.connectors.modbus.simserver import SimServer, free_port

from .helpers import Collector, config, device, registers_of, running, tcp, value

pytestmark = pytest.mark.anyio

POINTS = [
    {"name": "temp", "table": "holding", "address": 0, "type": "float32"},
    {"name": "count", "table": "input", "address": 0, "type": "uint32"},
    {"name": "run", "table": "coil", "address": 0},
]


async def test_readings_follow_the_device(server: SimServer) -> None:
    await server.set_registers(1, 0, registers_of(20.25, "float32"))
    sink = Collector()
    conn = ModbusConnector("mb", config(tcp("gw", server.port, [device("press", POINTS)])), sink)
    async with running(conn):
        await sink.wait_until(lambda: len(sink.of("press")) >= 3)
        assert value(sink.last("press"), "temp") == 20.25
        await server.set_registers(1, 0, registers_of(-3.5, "float32"))
        await server.set_registers(1, 0, registers_of(123_456_789, "uint32"), "input")
        await server.set_bits(1, 0, [True])
        n = len(sink.of("press"))
        await sink.wait_until(lambda: len(sink.of("press")) >= n + 2)
        st = conn.status()
    assert not conn.status()["connections"]["gw"]["connected"]  # run() closes its links
    r = sink.last("press")
    assert (r.quality == GOOD).all()
    assert [value(r, s) for s in ("temp", "count", "run")] == [-3.5, 123_456_789, 1.0]
    ts = np.array([x.ts_ns[0] for x in sink.of("press")])
    assert (np.diff(ts) > 0).all()
    dev = st["devices"]["press"]
    assert dev["polls"] >= 5
    assert dev["failed_total"] == 0
    assert dev["connected"]
    assert (dev["connection"], dev["unit_id"], dev["requests_per_poll"]) == ("gw", 1, 3)
    link = st["connections"]["gw"]
    assert link["connects"] == 1
    assert link["timeouts"] == 0
    assert link["requests"] >= 15


async def test_bad_quality_while_the_server_is_down_and_recovery(server: SimServer) -> None:
    await server.set_registers(1, 0, registers_of(7.5, "float32"))
    sink = Collector()
    conn = ModbusConnector("mb", config(tcp("gw", server.port, [device("press", POINTS)])), sink)
    async with running(conn):
        await sink.wait_until(lambda: len(sink.of("press")) >= 2)
        assert (sink.last("press").quality == GOOD).all()

        await server.stop()
        await sink.wait_until(lambda: (sink.last("press").quality == BAD).all())
        down = conn.status()
        assert not down["devices"]["press"]["connected"]
        assert not down["connections"]["gw"]["connected"]
        assert down["devices"]["press"]["last_error"]
        r = sink.last("press")
        assert np.isnan(r.values).all()
        assert len(r) == 3

        await server.start()  # the same port, the same values
        await sink.wait_until(lambda: (sink.last("press").quality == GOOD).all(), timeout_s=5)
        assert value(sink.last("press"), "temp") == 7.5
        st = conn.status()
    assert st["devices"]["press"]["connected"]
    assert st["devices"]["press"]["failed_total"] >= 1
    assert st["connections"]["gw"]["connects"] == 2


async def test_a_device_that_never_existed_gives_bad_readings_and_backs_off() -> None:
    sink = Collector()
    port = free_port()  # nobody listens
    conn = ModbusConnector("mb", config(tcp("gw", port, [device("ghost", POINTS)])), sink)
    async with running(conn):
        await sink.wait_until(lambda: len(sink.of("ghost")) >= 3, timeout_s=5)
    assert all((r.quality == BAD).all() for r in sink.of("ghost"))
    st = conn.status()
    assert "cannot connect" in st["devices"]["ghost"]["last_error"]
    assert st["connections"]["gw"]["connect_failures"] >= 1
    ts = np.array([r.ts_ns[0] for r in sink.of("ghost")]) / 1e9
    assert (np.diff(ts) > 0.1 * 1.5).all()  # backing off: slower than the 0.1 s period


async def test_several_connections_and_devices_poll_independently(server: SimServer) -> None:
    other = SimServer([5])
    async with other:
        await server.set_registers(2, 0, registers_of(1.5, "float32"))
        await other.set_registers(5, 0, registers_of(2.5, "float32"))
        sink = Collector()
        cfg = config(
            tcp("a", server.port, [device("d1", POINTS, unit=1), device("d2", POINTS, unit=2)]),
            tcp("b", other.port, [device("d5", POINTS, unit=5, period_s=0.05)]),
        )
        conn = ModbusConnector("mb", cfg, sink)
        async with running(conn):
            await sink.wait_until(lambda: all(len(sink.of(d)) >= 3 for d in ("d1", "d2", "d5")))
        assert [value(sink.last(d), "temp") for d in ("d1", "d2", "d5")] == [0.0, 1.5, 2.5]
        assert set(conn.status()["connections"]) == {"a", "b"}
