"""How unusual a recent average of raw surprise is, against its own long-run distribution.

The idea is Numenta's "anomaly likelihood": a detector's raw surprise is noisy and its level
differs from signal to signal, so instead of thresholding it we average the last few values
and ask how far in the upper tail of the long-run (exponentially forgotten) Gaussian of those
averages the new average lies. The answer is a tail probability: small means unusual.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

SQRT2 = math.sqrt(2.0)


class TailEstimator:
    """Upper-tail probability of the mean of the last ``window`` raw values.

    ``memory`` is the effective number of past averages the long-run mean and variance
    remember; ``var_floor`` keeps a signal with near-constant surprise from calling every
    small wobble improbable.
    """

    def __init__(self, window: int, memory: float, var_floor: float) -> None:
        self.window = window
        self.memory = memory
        self.var_floor = var_floor
        self.recent: deque[float] = deque(maxlen=window)
        self.mean = 0.0
        self.var = 0.0
        self.count = 0

    def step(self, raw: float) -> float:
        self.recent.append(raw)
        avg = sum(self.recent) / len(self.recent)
        z = (avg - self.mean) / math.sqrt(self.var + self.var_floor)
        tail = 0.5 * math.erfc(z / SQRT2)
        # Learn after judging, so a point is not compared with a distribution it moved.
        self.count += 1
        rate = max(1.0 / self.count, 1.0 / self.memory)
        delta = avg - self.mean
        self.mean += rate * delta
        self.var = (1.0 - rate) * (self.var + rate * delta * delta)
        return tail

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "memory": self.memory,
            "var_floor": self.var_floor,
            "recent": list(self.recent),
            "mean": self.mean,
            "var": self.var,
            "count": self.count,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TailEstimator:
        t = cls(int(d["window"]), float(d["memory"]), float(d["var_floor"]))
        t.recent.extend(float(x) for x in d["recent"])
        t.mean, t.var, t.count = float(d["mean"]), float(d["var"]), int(d["count"])
        return t
