"""Configuration of the simulator connector: the size of the factory and its clock."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["SimulatorConfig"]


class SimulatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    period_s: float = Field(default=1.0, gt=0, le=3600)
    seed: int = Field(default=0, ge=0)
    lines: int = Field(default=3, ge=1, le=100)
    machines: int = Field(default=20, ge=1, le=10_000)
    # Simulated time of the first step; None: now, on the period grid. A fixed start with the
    # same seed replays exactly the same data.
    start_ns: int | None = None
    # False: step as fast as the sink takes readings (backfill, tests, benchmarks).
    realtime: bool = True

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.machines < self.lines:
            raise ValueError(
                f"need at least one machine per line: {self.machines} machines, {self.lines} lines"
            )
        return self
