"""Acceptance: 10 devices polled every 0.5 s for ~10 s, one of them dead; the other nine keep
their period (mean period within 10 %), every one of their readings good, no overruns.

(a) every device on its own TCP connection, the dead one a port nobody listens on or a server
that accepts and never answers; (b) all ten as unit ids behind one TCP connection (a gateway),
one unit id never answering.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from shopfloor.core.quality import BAD, GOOD
from shopfloor.edge.connectors.modbus import ModbusConnector
from shopfloor.edge.connectors.modbus.simserver import (
    SilentTcpServer,
    SimServer,
    free_port,
    period_drift_pct,
)

from .helpers import Collector, config, device, registers_of, running, tcp

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PERIOD_S = 0.5
RUN_S = 10.0
DEVICES = 10
DEAD = 10  # the last one
POINTS = [
    {"name": "temp", "table": "holding", "address": 0, "type": "float32"},
    {"name": "speed", "table": "holding", "address": 2, "type": "int16", "scale": 0.1},
    {"name": "count", "table": "input", "address": 0, "type": "uint32"},
    {"name": "run", "table": "coil", "address": 0},
]


def dev(unit: int) -> dict[str, Any]:
    return device(
        f"dev{unit:02d}", POINTS, unit=unit, period_s=PERIOD_S, timeout_s=0.2, backoff_max_s=2.0
    )


async def fill(server: SimServer, units: range) -> None:
    for u in units:
        await server.set_registers(u, 0, [*registers_of(float(u), "float32"), u * 10])


async def poll_fleet(cfg: Any) -> tuple[Collector, dict[str, Any]]:
    sink = Collector()
    conn = ModbusConnector("mb", cfg, sink)
    async with running(conn):
        await asyncio.sleep(RUN_S)
        status = conn.status()
    return sink, status


def check_fleet(sink: Collector, status: dict[str, Any]) -> float:
    drifts = []
    for u in range(1, DEVICES + 1):
        readings = sink.of(f"dev{u:02d}")
        if u == DEAD:
            assert readings, "the dead device still gets (bad) readings"
            assert all((r.quality == BAD).all() for r in readings)
            # it backs off: far fewer attempts than a live device's polls
            assert len(readings) <= RUN_S / PERIOD_S / 2
            continue
        assert len(readings) >= RUN_S / PERIOD_S - 1, (u, len(readings))
        assert all((r.quality == GOOD).all() for r in readings), u
        assert readings[-1].values[0] == float(u)  # its own values, not a neighbour's
        ts = np.array([r.ts_ns[0] for r in readings])
        drifts.append(period_drift_pct(ts, PERIOD_S))
        # no poll was noticeably late: each within 0.25 s of its slot on the grid
        late = (ts - ts[0]) / 1e9 - np.arange(len(ts)) * PERIOD_S
        assert np.abs(late).max() < 0.25, (u, late.max())
        st = status["devices"][f"dev{u:02d}"]
        assert (st["failed_total"], st["overruns"], st["connected"]) == (0, 0, True), st
    assert max(drifts) <= 10.0, drifts
    return max(drifts)


@contextlib.asynccontextmanager
async def dead_endpoint(kind: str) -> AsyncIterator[int]:
    if kind == "refused":
        yield free_port()
    else:
        async with SilentTcpServer() as silent:
            yield silent.port


@pytest.mark.parametrize("dead", ["refused", "silent"])
async def test_own_connections_one_dead(dead: str) -> None:
    async with SimServer(range(1, DEVICES)) as server, dead_endpoint(dead) as dead_port:
        await fill(server, range(1, DEVICES))
        conns = [tcp(f"c{u}", server.port, [dev(u)]) for u in range(1, DEVICES)]
        conns.append(tcp(f"c{DEAD}", dead_port, [dev(DEAD)]))
        sink, status = await poll_fleet(config(*conns))
    check_fleet(sink, status)
    link = status["connections"][f"c{DEAD}"]
    if dead == "refused":
        assert link["connect_failures"] >= 1
        assert link["connects"] == 0
    else:
        assert link["timeouts"] >= 1  # it connected, then nothing came back


async def test_shared_connection_one_unit_silent() -> None:
    async with SimServer(range(1, DEVICES + 1), silent_units=[DEAD]) as gateway:
        await fill(gateway, range(1, DEVICES + 1))
        cfg = config(tcp("gw", gateway.port, [dev(u) for u in range(1, DEVICES + 1)]))
        sink, status = await poll_fleet(cfg)
    check_fleet(sink, status)
    link = status["connections"]["gw"]
    # one connection throughout: the silent unit never made the link drop
    assert link["connects"] == 1
    assert link["drops"] == 0
    assert 1 <= link["timeouts"] <= 6  # a handful of attempts, thanks to the backoff
