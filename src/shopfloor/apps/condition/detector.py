"""Univariate streaming anomaly detector: one point in, one score in [0, 1] out.

Two surprises are measured for every point, each in constant time:

- **level**: ``|x - m| / s`` against an exponentially weighted mean ``m`` and standard
  deviation ``s`` that forget slowly (``level_rate``), catching spikes, dips and level shifts;
- **seasonal** (only when the baseline repeats with a clear period ``P``, found from its
  autocorrelation): ``|(x - x[t-P]) - m_P| / s_P``, the change against one period ago, catching
  a cycle that goes missing, flattens or changes shape while staying within the usual range.

Each surprise goes through a :class:`~shopfloor.apps.condition.likelihood.TailEstimator`
(mean of the last ``smoothing`` values, upper-tail probability against its long-run
distribution). The smaller tail, times the number of tests (Bonferroni), becomes the score
``min(1, -log10(tail) / tail_decades)``: about 0.04 for a typical point (tail 0.5), 0.275 (the
alarm level) at a tail of 10**-2.2, 1 at a tail of 1e-8 or less.

After a score reaches ``alarm_score`` the detector is quiet (score 0) for ``rest_fraction``
of the baseline length: one anomaly is one alarm, not a burst of them. The unsuppressed
score stays available as :attr:`StreamingDetector.last`.

Training: :meth:`StreamingDetector.fit` on a baseline (or, with ``baseline_points`` set, the
first points seen) sets the initial statistics and the period; the baseline is then streamed
through to warm the estimators up, without alarms. After that the statistics keep adapting
slowly, so a lasting new normal stops being an anomaly.

All hyper-parameters are fixed defaults, the same for every signal (they were tuned once on
the whole NAB corpus; see docs/apps/condition-monitoring.md). Points are scored in arrival
order and treated as equally spaced; time stamps are not used by the maths (NAB itself has
repeated and out-of-order ones), only the latest is kept as :attr:`StreamingDetector.last_ts`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from shopfloor.apps.condition.likelihood import TailEstimator
from shopfloor.apps.condition.seasonality import find_period
from shopfloor.core.errors import BadInput

STATE_VERSION: Final = 1
MIN_BASELINE: Final = 3
LOG10: Final = math.log(10.0)


@dataclass(frozen=True)
class DetectorConfig:
    """Hyper-parameters; the defaults are the ones measured on NAB."""

    baseline_points: int = 0  # > 0: fit on the first N points seen (they score 0)
    level_rate: float = 0.001  # forgetting rate of the level mean and variance
    smoothing: int = 10  # raw surprises averaged before the tail test
    memory_factor: float = 10.0  # long-run memory of the tail test, in baseline lengths
    var_floor: float = 0.04  # floor of the long-run variance of averaged surprise
    min_autocorr: float = 0.6  # autocorrelation a period needs to be used
    tail_decades: float = 8.0  # score 1 at a tail probability of 10**-tail_decades
    alarm_score: float = 0.275  # a score this high starts the rest period
    rest_fraction: float = 0.2  # rest period, as a fraction of the baseline length

    def __post_init__(self) -> None:
        if self.baseline_points < 0 or 0 < self.baseline_points < MIN_BASELINE:
            raise BadInput(f"baseline_points must be 0 or >= {MIN_BASELINE}", "baseline_points")
        if not 0.0 < self.level_rate < 1.0:
            raise BadInput("level_rate must be in (0, 1)", "level_rate")
        if self.smoothing < 1:
            raise BadInput("smoothing must be >= 1", "smoothing")
        for name in ("memory_factor", "var_floor", "tail_decades", "alarm_score"):
            if not getattr(self, name) > 0.0:
                raise BadInput(f"{name} must be > 0", name)
        if self.rest_fraction < 0.0:
            raise BadInput("rest_fraction must be >= 0", "rest_fraction")


@dataclass(frozen=True)
class ScoreDetail:
    """What the last :meth:`StreamingDetector.update` saw."""

    score: float  # returned score (0 while resting after an alarm)
    unsuppressed: float  # the score before the rest period was applied
    level_tail: float  # tail probability of the level surprise
    seasonal_tail: float | None  # tail probability of the seasonal surprise, if in use
    alarm: bool  # this point started a rest period


class _Moments:
    """Exponentially weighted mean and variance."""

    __slots__ = ("mean", "rate", "var")

    def __init__(self, mean: float, var: float, rate: float) -> None:
        self.mean, self.var, self.rate = mean, var, rate

    def z(self, x: float) -> float:
        return abs(x - self.mean) / math.sqrt(self.var)

    def learn(self, x: float) -> None:
        d = x - self.mean
        self.mean += self.rate * d
        self.var = (1.0 - self.rate) * (self.var + self.rate * d * d)


class StreamingDetector:
    """One signal's detector. ``update`` is O(1) per point; the state serialises to a dict."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        self.last: ScoreDetail | None = None
        self.period = 0
        self._pending: list[float] = []  # baseline points collected before an automatic fit
        self._last_ts: int | None = None
        self._level: _Moments | None = None
        self._seasonal: _Moments | None = None
        self._history: deque[float] = deque()
        self._level_tail: TailEstimator | None = None
        self._seasonal_tail: TailEstimator | None = None
        self._rest = 0
        self._quiet_left = 0

    @property
    def fitted(self) -> bool:
        return self._level is not None

    @property
    def last_ts(self) -> int | None:
        """The latest time stamp seen (baseline included), or None."""
        return self._last_ts

    # -- training ---------------------------------------------------------------------------

    def fit(
        self, baseline_ts: Sequence[int] | npt.NDArray[np.int64], baseline_values: Any
    ) -> StreamingDetector:
        """Train on a baseline period (replacing any earlier training) and return self."""
        ts = np.asarray(baseline_ts, dtype=np.int64)
        values = _finite_array(baseline_values, "baseline_values")
        if ts.shape != values.shape:
            raise BadInput(f"{ts.size} timestamps for {values.size} values", "baseline_ts")
        if values.size < MIN_BASELINE:
            raise BadInput(f"a baseline needs at least {MIN_BASELINE} points", "baseline_values")
        self._train(values)
        self._last_ts = int(ts.max())
        return self

    def _train(self, values: npt.NDArray[np.float64]) -> None:
        cfg = self.config
        n = values.size
        mean = float(values.mean())
        # A tiny relative floor keeps a flat baseline from dividing by zero.
        eps = 1e-12 * max(1.0, mean * mean)
        self._level = _Moments(mean, float(values.var()) + eps, cfg.level_rate)
        memory = cfg.memory_factor * n
        self._level_tail = TailEstimator(cfg.smoothing, memory, cfg.var_floor)
        self.period = find_period(values, cfg.min_autocorr)
        self._history = deque(maxlen=self.period or 1)
        if self.period:
            diffs = values[self.period :] - values[: -self.period]
            self._seasonal = _Moments(float(diffs.mean()), float(diffs.var()) + eps, cfg.level_rate)
            self._seasonal_tail = TailEstimator(cfg.smoothing, memory, cfg.var_floor)
        else:
            self._seasonal = self._seasonal_tail = None
        self._rest = max(1, int(cfg.rest_fraction * n)) if cfg.rest_fraction > 0 else 0
        self._quiet_left = 0
        self._pending = []
        # Warm the estimators up on the baseline itself; no alarms there.
        for x in values.tolist():
            self._step(x, alarms=False)
        self.last = None

    # -- scoring ----------------------------------------------------------------------------

    def update(self, ts_ns: int, value: float) -> float:
        """Score one point (0 while the baseline is still being collected)."""
        x = float(value)
        if not math.isfinite(x):
            raise BadInput(f"value {value!r} is not a finite number", "value")
        # Kept for the caller (gaps, late data); the scoring itself works in arrival order.
        self._last_ts = int(ts_ns) if self._last_ts is None else max(self._last_ts, int(ts_ns))
        if self._level is None:
            if self.config.baseline_points == 0:
                raise BadInput("the detector is not trained: call fit() first", "baseline")
            self._pending.append(x)
            if len(self._pending) >= self.config.baseline_points:
                self._train(np.asarray(self._pending, dtype=np.float64))
            return 0.0
        return self._step(x, alarms=True)

    def update_many(
        self, ts: Sequence[int] | npt.NDArray[np.int64], values: Any
    ) -> npt.NDArray[np.float64]:
        """``update`` over arrays; returns one score per point."""
        ts_arr = np.asarray(ts, dtype=np.int64)
        vals = np.asarray(values, dtype=np.float64)
        if ts_arr.shape != vals.shape or ts_arr.ndim != 1:
            raise BadInput(f"{ts_arr.size} timestamps for {vals.size} values", "ts")
        out = np.empty(vals.size)
        for i, (t, v) in enumerate(zip(ts_arr.tolist(), vals.tolist(), strict=True)):
            out[i] = self.update(t, v)
        return out

    def _step(self, x: float, alarms: bool) -> float:
        level, level_tail = self._level, self._level_tail
        assert level is not None
        assert level_tail is not None
        tail_l = level_tail.step(level.z(x))
        level.learn(x)
        tail = tail_l
        tail_s: float | None = None
        seasonal, seasonal_tail, history = self._seasonal, self._seasonal_tail, self._history
        if seasonal is not None and seasonal_tail is not None:
            if len(history) == self.period:
                change = x - history[0]
                tail_s = seasonal_tail.step(seasonal.z(change))
                seasonal.learn(change)
                tail = min(1.0, 2.0 * min(tail_l, tail_s))  # Bonferroni over two tests
            history.append(x)
        raw = min(1.0, -math.log(max(tail, 1e-300)) / LOG10 / self.config.tail_decades)
        score, alarm = raw, False
        if not alarms:
            score = 0.0
        elif self._quiet_left > 0:
            self._quiet_left -= 1
            score = 0.0
        elif raw >= self.config.alarm_score and self._rest > 0:
            self._quiet_left = self._rest
            alarm = True
        self.last = ScoreDetail(score, raw, tail_l, tail_s, alarm)
        return score

    # -- state ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this detector is (JSON-friendly)."""
        out: dict[str, Any] = {
            "version": STATE_VERSION,
            "config": asdict(self.config),
            "last_ts": self._last_ts,
            "pending": list(self._pending),
        }
        if self._level is not None and self._level_tail is not None:
            out["trained"] = {
                "level": [self._level.mean, self._level.var],
                "level_tail": self._level_tail.to_dict(),
                "period": self.period,
                "history": list(self._history),
                "seasonal": None
                if self._seasonal is None
                else [self._seasonal.mean, self._seasonal.var],
                "seasonal_tail": None
                if self._seasonal_tail is None
                else self._seasonal_tail.to_dict(),
                "rest": self._rest,
                "quiet_left": self._quiet_left,
            }
        return out

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> StreamingDetector:
        """Rebuild a detector from :meth:`to_dict` output."""
        if state.get("version") != STATE_VERSION:
            raise BadInput(f"unknown detector state version {state.get('version')!r}", "version")
        try:
            names = {f.name for f in fields(DetectorConfig)}
            config = DetectorConfig(**{k: v for k, v in state["config"].items() if k in names})
            det = cls(config)
            det._last_ts = None if state["last_ts"] is None else int(state["last_ts"])
            det._pending = [float(x) for x in state["pending"]]
            trained = state.get("trained")
            if trained is not None:
                rate = config.level_rate
                mean, var = (float(v) for v in trained["level"])
                det._level = _Moments(mean, var, rate)
                det._level_tail = TailEstimator.from_dict(trained["level_tail"])
                det.period = int(trained["period"])
                det._history = deque((float(x) for x in trained["history"]), maxlen=det.period or 1)
                if trained["seasonal"] is not None:
                    mean, var = (float(v) for v in trained["seasonal"])
                    det._seasonal = _Moments(mean, var, rate)
                    det._seasonal_tail = TailEstimator.from_dict(trained["seasonal_tail"])
                det._rest = int(trained["rest"])
                det._quiet_left = int(trained["quiet_left"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"detector state is incomplete or malformed: {exc!r}", "state") from None
        return det


def _finite_array(values: Any, field: str) -> npt.NDArray[np.float64]:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadInput("values must be numbers", field) from None
    if arr.ndim != 1:
        raise BadInput("values must be one-dimensional", field)
    if not np.isfinite(arr).all():
        raise BadInput("values must be finite numbers", field)
    return arr
