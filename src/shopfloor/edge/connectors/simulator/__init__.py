"""Simulated factory connector: the machines behind ``shopfloor demo``.

Only numpy, the standard library and :mod:`shopfloor.core` are imported here, because the edge
gateway is installed on its own.
"""

from shopfloor.edge.connectors.simulator.model import (
    BEARING_FAILURE,
    KINDS,
    STATE_NAMES,
    VIBRATION_LIMIT,
    FactorySimulator,
    Frame,
    MachineDef,
    SignalDef,
)

__all__ = [
    "BEARING_FAILURE",
    "KINDS",
    "STATE_NAMES",
    "VIBRATION_LIMIT",
    "FactorySimulator",
    "Frame",
    "MachineDef",
    "SignalDef",
]
