"""The shared connection: one request in flight, timeouts counted from sending, reconnects."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest
from pymodbus.client.base import ModbusBaseClient

from shopfloor.edge.connectors.modbus import ModbusConnector, ModbusLink
from shopfloor.edge.connectors.modbus.link import NotConnected, RequestTimeout
from shopfloor.edge.connectors.modbus.simserver import SilentTcpServer, SimServer, free_port

from .helpers import Collector, config, device, tcp

pytestmark = pytest.mark.anyio

POINT = [{"name": "x", "table": "holding", "address": 0}]


def link_to(port: int, devices: int = 1) -> ModbusLink:
    devs = [device(f"d{u}", POINT, unit=u) for u in range(1, devices + 1)]
    return ModbusLink(config(tcp("l", port, devs)).connections[0])


async def test_one_request_in_flight_and_the_timeout_starts_when_it_is_sent(
    server: SimServer,
) -> None:
    link = link_to(server.port)
    in_flight, most = 0, 0

    async def slow(client: ModbusBaseClient) -> float:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.15)
        in_flight -= 1
        return time.monotonic()

    t0 = time.monotonic()
    done = await asyncio.gather(*(link.call(slow, 0.2, "slow") for _ in range(4)))
    # each took 0.15 s of its 0.2 s; the last one waited 0.45 s for its turn and still made it
    assert most == 1
    assert done == sorted(done)  # first come, first served
    assert done[-1] - t0 >= 0.6
    with pytest.raises(RequestTimeout, match=r"no answer within 0\.1 s"):
        await link.call(slow, 0.1, "too slow")
    assert link.status()["timeouts"] == 1
    link.close()


async def test_refused_connections_back_off_and_fail_fast() -> None:
    link = link_to(free_port())

    async def never(client: ModbusBaseClient) -> None:
        raise AssertionError("not connected, so never called")

    with pytest.raises(NotConnected, match="cannot connect"):
        await link.call(never, 0.2, "x")
    t = time.monotonic()
    with pytest.raises(NotConnected, match="next attempt in"):
        await link.call(never, 0.2, "x")
    assert time.monotonic() - t < 0.05  # no waiting on a dead socket
    st = link.status()
    assert (st["connected"], st["connect_failures"], st["requests"]) == (False, 1, 0)
    link.close()


async def test_a_connection_nothing_answers_on_is_reopened() -> None:
    async with SilentTcpServer() as silent:
        link = link_to(silent.port)

        async def read(client: ModbusBaseClient) -> object:
            return await client.read_holding_registers(0, count=1, device_id=1)

        for _ in range(3):
            with pytest.raises(RequestTimeout):
                await link.call(read, 0.05, "read")
        assert link.status()["drops"] == 1  # 3 unanswered in a row: closed
        with pytest.raises(RequestTimeout):
            await link.call(read, 0.05, "read")
        assert link.status()["connects"] == 2  # and opened again on the next request
        link.close()


async def test_a_silent_unit_among_answering_ones_keeps_the_connection() -> None:
    async with SimServer([1, 2], silent_units=[2]) as gw:
        link = link_to(gw.port, devices=2)

        def read(unit: int) -> Callable[[ModbusBaseClient], Awaitable[object]]:
            async def go(client: ModbusBaseClient) -> object:
                return await client.read_holding_registers(0, count=1, device_id=unit)

            return go

        for _ in range(5):
            with pytest.raises(RequestTimeout):
                await link.call(read(2), 0.05, "silent")
            await link.call(read(1), 0.2, "alive")
        st = link.status()
        assert (st["timeouts"], st["drops"], st["connects"]) == (5, 0, 1)
        link.close()


def test_long_timeouts_on_a_shared_connection_are_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    devs = [
        device("fast", POINT, unit=1, period_s=0.2, timeout_s=0.1),
        device("slow", POINT, unit=2, period_s=5.0, timeout_s=1.0),
    ]
    with caplog.at_level(logging.WARNING):
        ModbusConnector("mb", config(tcp("gw", 502, devs)), Collector())
    assert "device slow has timeout_s 1 >= the shortest period_s 0.2" in caplog.text
    assert "device fast" not in caplog.text
