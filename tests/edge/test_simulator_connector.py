"""The simulator as a Connector: one reading per machine per step, failed polls bad, on a grid."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from shopfloor.core.quality import BAD, GOOD
from shopfloor.edge.connector import connector_class
from shopfloor.edge.connectors.simulator import FactorySimulator
from shopfloor.edge.connectors.simulator.config import SimulatorConfig
from shopfloor.edge.connectors.simulator.connector import SimulatorConnector
from shopfloor.edge.model import Reading

START = 1_700_000_000_000_000_000


class StopAfter(Exception):
    pass


def collect(cfg: SimulatorConfig, count: int, stop: Any = None) -> list[Reading]:
    """Run the connector until ``count`` readings (or ``stop(reading)``) and return them."""
    readings: list[Reading] = []

    async def sink(reading: Reading) -> None:
        readings.append(reading)
        if len(readings) >= count or (stop is not None and stop(reading)):
            raise StopAfter

    async def main() -> None:
        conn = SimulatorConnector("sim", cfg, sink)
        with pytest.raises(StopAfter):
            await asyncio.wait_for(conn.run(), 60)
        assert conn.status()["running"] is True

    asyncio.run(main())
    return readings


class NotSimulator(BaseModel):
    period_s: float = 1.0


async def collect_nothing(reading: Reading) -> None:
    return None


def test_entry_point_resolves_to_the_connector() -> None:
    assert connector_class("simulator") is SimulatorConnector


def test_one_reading_per_machine_per_step_with_the_models_values() -> None:
    cfg = SimulatorConfig(seed=4, lines=2, machines=10, start_ns=START, realtime=False)
    steps, n = 3, 10
    readings = collect(cfg, n * steps)
    reference = FactorySimulator(seed=4, lines=2, machines=n, start_ns=START)
    machines = reference.machines()
    for k in range(steps):
        frames = reference.step()
        got = readings[k * n : (k + 1) * n]
        assert [r.device for r in got] == [m.name for m in machines]
        for r, f, m in zip(got, frames, machines, strict=True):
            assert r.signals == tuple(s.name for s in m.signals)
            assert (r.ts_ns == START + (k + 1) * 1_000_000_000).all()
            np.testing.assert_array_equal(r.values, f.values)
            np.testing.assert_array_equal(r.quality, f.quality)
    kinds = {r.device.split("-")[0] for r in readings}
    assert kinds == {"press", "cnc", "robot", "oven", "packer"}
    press = next(r for r in readings if r.device.startswith("press"))
    assert {"state", "good_count", "hydraulic_pressure"} <= set(press.signals)


def test_failed_polls_arrive_as_bad_quality_readings() -> None:
    # Many machines and a long period make a simulated communication loss come within steps.
    cfg = SimulatorConfig(seed=1, lines=10, machines=200, period_s=60.0, start_ns=START,
                          realtime=False)  # fmt: skip
    readings = collect(cfg, 200 * 300, stop=lambda r: bool((r.quality == BAD).any()))
    bad = readings[-1]
    assert (bad.quality == BAD).all()
    assert np.isnan(bad.values).all()
    same_step = [r for r in readings if r.ts_ns[0] == bad.ts_ns[0]]
    assert all((r.quality == GOOD).all() for r in same_step[:-1])  # only that machine failed
    assert all((r.quality == GOOD).all() for r in readings[:-1])


def test_realtime_steps_stay_on_the_grid() -> None:
    cfg = SimulatorConfig(seed=0, lines=1, machines=2, period_s=0.05)
    started = time.time_ns()
    readings = collect(cfg, 2 * 10)
    elapsed = (time.time_ns() - started) / 1e9
    ts = np.array([r.ts_ns[0] for r in readings[::2]])
    assert (np.diff(ts) == 50_000_000).all()
    assert (ts % 50_000_000 == 0).all()
    # Ten steps of 50 ms take about half a second; generous bounds against a busy machine.
    assert 0.3 <= elapsed <= 5.0
    assert abs(ts[-1] - time.time_ns()) / 1e9 < 1.0


def test_config_is_checked() -> None:
    with pytest.raises(ValidationError, match="at least one machine per line"):
        SimulatorConfig(lines=4, machines=3)
    with pytest.raises(ValidationError, match="Extra inputs"):
        SimulatorConfig.model_validate({"machines": 3, "speed": 2})
    with pytest.raises(TypeError, match="needs a SimulatorConfig"):
        SimulatorConnector("sim", NotSimulator(), collect_nothing)
