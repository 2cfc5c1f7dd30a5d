"""The simulated factory as a connector: one reading per machine per step, on a fixed grid.

:class:`~shopfloor.edge.connectors.simulator.model.FactorySimulator` advances all machines at
once; each of its frames becomes one :class:`~shopfloor.edge.model.Reading` with the frame's
values and quality, so a simulated communication loss arrives as a bad-quality reading exactly
like a failed poll of a real device.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

from shopfloor.core.quality import BAD
from shopfloor.edge.connector import Connector, ReadingSink
from shopfloor.edge.connectors.simulator.config import SimulatorConfig
from shopfloor.edge.connectors.simulator.model import FactorySimulator, Frame
from shopfloor.edge.model import Reading

__all__ = ["SimulatorConnector", "frame_reading"]


def frame_reading(frame: Frame) -> Reading:
    return Reading.at(frame.device, frame.ts_ns, frame.names, frame.values, frame.quality)


class SimulatorConnector(Connector):
    """Runs a seeded :class:`FactorySimulator` and emits its frames as readings."""

    domain: ClassVar[str] = "simulator"
    config_model: ClassVar[type[BaseModel]] = SimulatorConfig

    def __init__(self, name: str, config: BaseModel, sink: ReadingSink) -> None:
        if not isinstance(config, SimulatorConfig):
            raise TypeError(
                f"SimulatorConnector needs a SimulatorConfig, got {type(config).__name__}"
            )
        super().__init__(name, config, sink)
        self.cfg = config
        self.sim: FactorySimulator | None = None
        self.steps = 0
        self.bad_readings = 0
        self.behind_s = 0.0  # how far the last step was emitted after its own timestamp

    async def run(self) -> None:
        c = self.cfg
        sim = FactorySimulator(c.seed, c.lines, c.machines, c.start_ns, c.period_s)
        self.sim = sim
        while True:
            frames = sim.step()
            if c.realtime:
                # The simulator's clock is the grid: sleep until the step's own timestamp. When
                # the sink was slow, the next steps follow without sleeping until caught up, so
                # the data stays contiguous.
                delay = (sim.now_ns - time.time_ns()) / 1e9
                self.behind_s = max(0.0, -delay)
                await asyncio.sleep(max(0.0, delay))
            else:
                await asyncio.sleep(0)  # let other tasks run between steps
            for frame in frames:
                if frame.quality.size and frame.quality[0] == BAD:
                    self.bad_readings += 1
                await self.sink(frame_reading(frame))
            self.steps += 1

    def status(self) -> dict[str, Any]:
        sim = self.sim
        if sim is None:
            return {"running": False}
        return {
            "running": True,
            "machines": len(sim.machines()),
            "signals": sim.signal_count(),
            "steps": self.steps,
            "sim_time_ns": sim.now_ns,
            "behind_s": round(self.behind_s, 3),
            "bad_readings": self.bad_readings,
            "fault_severity_max": float(np.max(sim.fault_severity)),
        }
