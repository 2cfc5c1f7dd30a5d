"""Rule definitions, devices and the events the engine emits (plain, validated dataclasses)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from shopfloor.core.errors import BadInput
from shopfloor.core.kinds import DataType

__all__ = [
    "MACHINE_STATES",
    "Device",
    "Event",
    "ExpressionRule",
    "RateRule",
    "Rule",
    "StaleRule",
    "StateRule",
    "ThresholdRule",
    "WindowRule",
]

NS: Final = 1_000_000_000
MACHINE_STATES: Final = ("running", "idle", "down", "setup")
Direction = Literal["high", "low"]
WindowAgg = Literal["avg", "min", "max", "count", "stddev"]
EventKind = Literal["activated", "cleared", "state"]


@dataclass(frozen=True)
class Device:
    """A device of a device type, with its signals by name (name -> signal_id)."""

    id: str
    type: str
    signals: Mapping[str, int]
    # Data type per signal name; a missing name counts as float.
    data_types: Mapping[str, DataType] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """A rule output: activated/cleared (value: the value that decided it) or a state change."""

    rule_id: str
    device: str
    kind: EventKind
    ts: int
    value: float
    state: str | None = None


def _seconds(value: float, name: str, *, positive: bool = False) -> int:
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise BadInput(
            f"must be a {'positive' if positive else 'non-negative'} number of seconds", name
        )
    return round(value * NS)


def _finite(value: float, name: str) -> None:
    if not math.isfinite(value):
        raise BadInput("must be a finite number", name)


@dataclass(frozen=True, kw_only=True)
class _Base:
    """Attachment shared by every rule: a device type (all its devices) or one device."""

    id: str
    device_type: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if not self.id:
            raise BadInput("a rule needs an id", "id")
        if (self.device_type is None) == (self.device is None):
            raise BadInput(
                f"rule {self.id!r}: give exactly one of device_type or device", "device_type"
            )


@dataclass(frozen=True, kw_only=True)
class _Delays(_Base):
    """On/off delay in seconds: how long the condition must hold before activating / clearing."""

    on_delay: float = 0.0
    off_delay: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _seconds(self.on_delay, "on_delay")
        _seconds(self.off_delay, "off_delay")


@dataclass(frozen=True, kw_only=True)
class ThresholdRule(_Delays):
    """Active above ``limit`` (high) and cleared at or below ``limit - deadband``; mirrored for low."""

    signal: str
    limit: float
    direction: Direction = "high"
    deadband: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _finite(self.limit, "limit")
        if not math.isfinite(self.deadband) or self.deadband < 0:
            raise BadInput("deadband must be a non-negative number", "deadband")
        if self.direction not in ("high", "low"):
            raise BadInput("direction must be 'high' or 'low'", "direction")


@dataclass(frozen=True, kw_only=True)
class RateRule(_Delays):
    """Active while |dv/dt| (per second, between consecutive points of the signal) > ``limit``."""

    signal: str
    limit: float
    deadband: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not math.isfinite(self.limit) or self.limit < 0:
            raise BadInput("limit must be a non-negative rate per second", "limit")
        if not math.isfinite(self.deadband) or self.deadband < 0:
            raise BadInput("deadband must be a non-negative number", "deadband")


@dataclass(frozen=True, kw_only=True)
class ExpressionRule(_Delays):
    """Active while a true/false expression over several signals of one device holds."""

    expression: str


@dataclass(frozen=True, kw_only=True)
class WindowRule(_Base):
    """An aggregate over a tumbling or sliding window of ``window`` seconds, against ``limit``."""

    signal: str
    window: float
    agg: WindowAgg
    limit: float
    mode: Literal["tumbling", "sliding"] = "tumbling"
    direction: Direction = "high"
    deadband: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _seconds(self.window, "window", positive=True)
        _finite(self.limit, "limit")
        if self.agg not in ("avg", "min", "max", "count", "stddev"):
            raise BadInput("agg must be one of avg, min, max, count, stddev", "agg")
        if self.mode not in ("tumbling", "sliding"):
            raise BadInput("mode must be 'tumbling' or 'sliding'", "mode")
        if self.direction not in ("high", "low"):
            raise BadInput("direction must be 'high' or 'low'", "direction")
        if not math.isfinite(self.deadband) or self.deadband < 0:
            raise BadInput("deadband must be a non-negative number", "deadband")


@dataclass(frozen=True, kw_only=True)
class StaleRule(_Base):
    """Active when the signal has had no point for longer than ``timeout`` seconds."""

    signal: str
    timeout: float

    def __post_init__(self) -> None:
        super().__post_init__()
        _seconds(self.timeout, "timeout", positive=True)


@dataclass(frozen=True, kw_only=True)
class StateRule(_Base):
    """Machine state: the first ``(expression, state)`` whose expression holds wins."""

    conditions: Sequence[tuple[str, str]]
    default: str = "unknown"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.conditions:
            raise BadInput("a state rule needs at least one condition", "conditions")
        for i, (_, state) in enumerate(self.conditions):
            if state not in MACHINE_STATES:
                raise BadInput(
                    f"state {state!r} is not one of {', '.join(MACHINE_STATES)}", f"conditions[{i}]"
                )
        if self.default not in (*MACHINE_STATES, "unknown"):
            raise BadInput(
                f"default {self.default!r} is not a machine state or 'unknown'", "default"
            )


Rule = ThresholdRule | RateRule | ExpressionRule | WindowRule | StaleRule | StateRule
