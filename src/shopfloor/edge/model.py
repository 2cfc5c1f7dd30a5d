"""What flows through the edge gateway: readings out of connectors, write requests into them.

Only numpy and :mod:`shopfloor.core` are imported here, because the gateway is installed on its
own (``pip install shopfloor[edge]``) on a box beside the machines.

A :class:`Reading` is one poll (or one batch of subscription notifications) of one device:
parallel columns, one entry per point. Connectors build them with numpy; nothing downstream
loops over points in Python.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from shopfloor.core.quality import BAD, GOOD

__all__ = ["Reading", "WriteRequest", "WriteResult", "bad_reading", "now_ns"]


def now_ns() -> int:
    """Wall-clock time in ns UTC (core.timeutil has the same, but imports pyarrow)."""
    return time.time_ns()


@dataclass(frozen=True, eq=False)
class Reading:
    """Points of one device: ``signals[i]`` had ``values[i]`` at ``ts_ns[i]``.

    ``values`` is float64 (ints exact to 2**53, bools as 0/1); a point whose value is text has
    NaN there and its string in ``text``. A point of a failed read has NaN and a bad quality.
    ``source_ts`` says whether the timestamps came from the source (OPC UA SourceTimestamp)
    rather than the gateway clock.
    """

    device: str
    signals: tuple[str, ...]
    ts_ns: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    quality: npt.NDArray[np.uint32]
    text: tuple[str | None, ...] | None = None
    source_ts: bool = False

    def __post_init__(self) -> None:
        n = len(self.signals)
        for name in ("ts_ns", "values", "quality"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Reading.{name} has {len(getattr(self, name))} entries, not {n}")
        if self.text is not None and len(self.text) != n:
            raise ValueError(f"Reading.text has {len(self.text)} entries, not {n}")

    def __len__(self) -> int:
        return len(self.signals)

    @classmethod
    def at(
        cls,
        device: str,
        ts_ns: int,
        signals: tuple[str, ...],
        values: npt.ArrayLike,
        quality: npt.ArrayLike | int = GOOD,
        text: tuple[str | None, ...] | None = None,
    ) -> Reading:
        """All points at one instant (one poll cycle)."""
        n = len(signals)
        q = np.broadcast_to(np.asarray(quality, dtype=np.uint32), (n,)).copy()
        return cls(
            device,
            signals,
            np.full(n, ts_ns, dtype=np.int64),
            np.asarray(values, dtype=np.float64),
            q,
            text,
        )


def bad_reading(device: str, signals: tuple[str, ...], ts_ns: int, code: int = BAD) -> Reading:
    """The reading a failed poll produces: every point NaN with a bad quality, no exception."""
    n = len(signals)
    return Reading.at(device, ts_ns, signals, np.full(n, np.nan), code)


@dataclass(frozen=True)
class WriteRequest:
    """A setpoint or command for one signal of one device, from the platform or the CLI."""

    id: str
    device: str
    signal: str
    value: Any
    # Read the value back after writing and report whether it took.
    confirm: bool = True
    timeout_s: float = 5.0


@dataclass(frozen=True)
class WriteResult:
    """What happened to a :class:`WriteRequest`; ``read_back`` is the value read afterwards."""

    id: str
    ok: bool
    message: str = ""
    read_back: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
