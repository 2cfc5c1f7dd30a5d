"""Config pieces the built-in apps share (condition monitoring and predictive maintenance)."""

from __future__ import annotations

from typing import Final

from pydantic import Field

from shopfloor.apps.sdk import AppConfig

__all__ = ["BEARING_SIGNALS", "OnlyWhen"]

# The drive-end bearing of the demo factory's machines: vibration velocity RMS and
# acceleration peaks on three axes, and the bearing's temperature (docs/simulator.md).
BEARING_SIGNALS: Final = (
    "vib_x_rms",
    "vib_y_rms",
    "vib_z_rms",
    "vib_x_peak",
    "vib_y_peak",
    "vib_z_peak",
    "bearing_temp",
)


class OnlyWhen(AppConfig):
    """Use only the points taken while ``signal`` equals ``equals`` (its last value at each
    point): by default while the machine runs, since vibration depends on the state."""

    signal: str = Field("state", min_length=1)
    equals: float = 2.0
