"""The condition-monitoring app: an anomaly score per machine, with the signals to blame.

Per machine (every device of ``device_type`` that has the monitored signals):

1. **Resampling.** The raw points of ``signals`` are averaged per ``resample_s`` interval
   (epoch-aligned), counting only the points taken while ``only_when`` holds (by default
   ``state == 2``, running: vibration depends on what the machine does). An interval is used
   when at least half of each signal's points in it qualify. Signals named in ``subtract``
   are monitored as a difference (``bearing_temp - ambient_temp``: the bearing's temperature
   *rise*, so the day's weather is not an anomaly). An interval closes when a later point of
   the machine arrives.
2. **Baseline.** Every machine first collects ``baseline_minutes`` of running intervals.
   ``baseline: "own"`` trains each machine on its own. ``"fleet"`` trains one model per
   device type on the baselines of its machines (the same number of rows from each), once at
   least half of them have one, and fits it again each time another machine completes its
   baseline. Machines whose baseline is far off the fleet's are left out (a minority at
   most) and the model is fitted again without them, so a machine that already had a
   developing fault when monitoring started stands out instead of being learnt as normal.
   ``"both"`` (the default) scores every interval against both and keeps the higher score:
   the fleet catches a fault that was there from the start, the machine's own baseline a
   small new one that is still inside the fleet's spread. A machine's baseline intervals
   are scored too once it is trained, so its curve starts at the beginning. An own
   baseline is learnt again when a whole baseline's length lies clearly below it (a new
   bearing: a baseline taken on a worn one would hide the next fault).
3. **Scoring.** A :class:`~shopfloor.apps.condition.MultivariateDetector` (MEWMA over robustly
   standardised signals) scores each interval: ``anomaly_score`` = the chi-square CDF of the
   statistic, in [0, 1], with each signal's share of it (contributions). With ``high_only``
   values below normal count as normal (a cold bearing after a stop is no fault). The
   covariance is widened by ``tolerance`` (``fleet_tolerance`` for the fleet's model): a
   lasting deviation of that fraction of a signal's normal level counts as one standard
   deviation (speed changes move vibration by some 8 %, machines of one type differ by
   some 15 %; neither is a fault). After a pause
   of 30 minutes or more (no running interval) the MEWMA starts afresh.
4. **Outputs.** ``anomaly_score`` (unit "1") is written per interval; a threshold rule per
   machine on it (``anomaly_score > alarm_score``, priority 2, message naming the top
   contributors) raises the alarm; ``abnormal`` / ``normal`` events mark the transitions.
   With ``univariate`` each signal also gets its own
   :class:`~shopfloor.apps.condition.StreamingDetector` (trained on the machine's own first
   ``baseline_minutes``), whose scores the ``machines`` route shows.

See docs/apps/condition-monitoring.md ("The app").
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from shopfloor.apps.common import BEARING_SIGNALS, OnlyWhen
from shopfloor.apps.condition.detector import DetectorConfig, StreamingDetector
from shopfloor.apps.condition.multivariate import MultivariateDetector, MultivariateScore
from shopfloor.apps.sdk import App, AppConfig, AppManifest, AppRoute, Panel, PointBatch, Series
from shopfloor.core.errors import BadInput, NotFound
from shopfloor.core.timeutil import parse_instant, to_iso

__all__ = ["ConditionApp", "ConditionConfig", "OnlyWhen"]

F64 = npt.NDArray[np.float64]

STATE_VERSION: Final = 1
HISTORY_STEPS: Final = 360  # recent scores kept per machine (6 h at one per minute)
TOP_MAX: Final = 3  # contributors named in messages
TOP_SHARE: Final = 0.15  # ... when they hold at least this share (the first always)
GAP_RESET_S: Final = 1800  # after a pause this long the MEWMA starts afresh
MIN_FRACTION: Final = 0.5  # share of an interval's points that must meet only_when
TRIM_SCORE: Final = 0.999  # a machine whose median baseline score is above this is left out
DEFAULT_SIGNALS: Final = BEARING_SIGNALS


class ConditionConfig(AppConfig):
    device_type: str | None = Field(
        None, description="Device type to monitor; None: every device that has the signals."
    )
    signals: tuple[str, ...] = Field(DEFAULT_SIGNALS, description="Signals of each machine.")
    subtract: dict[str, str] = Field(
        default_factory=lambda: {"bearing_temp": "ambient_temp"},
        description="Signal -> reference signal: the difference is monitored (a temperature "
        "rise over ambient).",
    )
    resample_s: int = Field(60, ge=5, le=3600, description="Interval of the averaged steps.")
    only_when: OnlyWhen | None = Field(
        default_factory=OnlyWhen, description="Monitor only in this machine state; None: always."
    )
    baseline_minutes: float = Field(60.0, gt=0, le=7 * 24 * 60)
    baseline: Literal["own", "fleet", "both"] = "both"
    alarm_score: float = Field(0.999, gt=0.0, lt=1.0)
    deadband: float = Field(0.05, ge=0.0, lt=1.0, description="The alarm clears below "
                            "alarm_score - deadband.")  # fmt: skip
    tolerance: float = Field(
        0.1,
        ge=0.0,
        le=10.0,
        description="Own baseline: a lasting deviation of this fraction of a signal's normal "
        "level counts as one standard deviation.",
    )
    fleet_tolerance: float = Field(
        0.2,
        ge=0.0,
        le=10.0,
        description="The same for the fleet baseline, where it also covers how much healthy "
        "machines of one type differ.",
    )
    high_only: bool = Field(
        True,
        description="Only values above normal count: a bearing fault raises vibration and "
        "temperature, while a cold bearing after a stop or a slower machine is no fault.",
    )
    smoothing: float = Field(0.3, gt=0.0, le=1.0, description="MEWMA weight of each step.")
    univariate: bool = Field(False, description="Also a detector per signal (own baseline).")

    @model_validator(mode="after")
    def _check(self) -> ConditionConfig:
        if not self.signals:
            raise ValueError("signals: name one or more signals")
        if len(set(self.signals)) != len(self.signals):
            raise ValueError("signals: each signal once")
        for sig, ref in self.subtract.items():
            if sig not in self.signals:
                raise ValueError(f"subtract: {sig!r} is not one of the signals")
            if ref == sig:
                raise ValueError(f"subtract: {sig!r} minus itself")
        if self.baseline_steps < len(self.signals) + 2:
            raise ValueError(
                f"baseline_minutes: {self.baseline_minutes} min at resample_s "
                f"{self.resample_s} gives {self.baseline_steps} steps; "
                f"{len(self.signals)} signals need at least {len(self.signals) + 2}"
            )
        return self

    @property
    def baseline_steps(self) -> int:
        return int(self.baseline_minutes * 60 // self.resample_s)

    @property
    def inputs(self) -> tuple[str, ...]:
        """Every signal read: the monitored ones, then the references."""
        extra = sorted({r for r in self.subtract.values() if r not in self.signals})
        return (*self.signals, *extra)


class _Machine:
    """One monitored machine: its open intervals, baseline, detector and recent scores."""

    def __init__(self, name: str, model: str) -> None:
        self.name = name
        self.model = model  # the fleet key "fleet:<device type>"
        self.ready = False  # every detector it needs is trained
        # interval index -> per input [sum, qualifying points, all points]
        self.open: dict[int, list[list[float]]] = {}
        self.closed_until = -(2**62)  # intervals below this index are done
        self.gate: tuple[int, float] | None = None  # last (ts, value) of the only_when signal
        self.pending: list[list[float]] = []  # [ts, row...] closed, not yet scored
        self.baseline: list[list[float]] = []  # [ts, row...] collected for training
        # "own" and/or "fleet" (a copy of the fleet's model: the MEWMA is per machine)
        self.detectors: dict[str, MultivariateDetector] = {}
        self.univariate: dict[str, StreamingDetector] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_STEPS)
        self.abnormal_since: int | None = None
        self.excluded = False  # left out of the fleet baseline
        self.message = "abnormal condition"  # its rule's; names the culprits once known
        self.steps = 0  # intervals scored
        self.recent: deque[list[float]] = deque()  # the last baseline's worth of rows
        self.relearnt = 0  # times the own baseline was learnt again

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "ready": self.ready,
            "open": {str(k): v for k, v in self.open.items()},
            "closed_until": self.closed_until,
            "gate": None if self.gate is None else list(self.gate),
            "pending": self.pending,
            "baseline": self.baseline,
            "detectors": {k: d.to_dict() for k, d in sorted(self.detectors.items())},
            "univariate": {k: d.to_dict() for k, d in self.univariate.items()},
            "history": list(self.history),
            "abnormal_since": self.abnormal_since,
            "excluded": self.excluded,
            "message": self.message,
            "steps": self.steps,
            "recent": list(self.recent),
            "relearnt": self.relearnt,
        }

    @classmethod
    def from_json(cls, name: str, raw: Mapping[str, Any]) -> _Machine:
        m = cls(name, str(raw["model"]))
        m.ready = bool(raw["ready"])
        m.open = {int(k): [list(map(float, x)) for x in v] for k, v in raw["open"].items()}
        m.closed_until = int(raw["closed_until"])
        m.gate = None if raw["gate"] is None else (int(raw["gate"][0]), float(raw["gate"][1]))
        m.pending = [list(map(float, r)) for r in raw["pending"]]
        m.baseline = [list(map(float, r)) for r in raw["baseline"]]
        m.detectors = {
            str(k): MultivariateDetector.from_dict(dict(d)) for k, d in raw["detectors"].items()
        }
        m.univariate = {
            k: StreamingDetector.from_dict(dict(v)) for k, v in raw["univariate"].items()
        }
        m.history = deque((dict(h) for h in raw["history"]), maxlen=HISTORY_STEPS)
        since = raw["abnormal_since"]
        m.abnormal_since = None if since is None else int(since)
        m.excluded = bool(raw["excluded"])
        m.message = str(raw["message"])
        m.steps = int(raw["steps"])
        m.recent = deque(list(map(float, r)) for r in raw["recent"])
        m.relearnt = int(raw["relearnt"])
        return m


class ConditionApp(App[ConditionConfig]):
    manifest = AppManifest(
        name="condition",
        title="Condition monitoring",
        version="1.0.0",
        summary="Anomaly score per machine from its vibration and bearing signals, "
        "with the signals to blame.",
        description=__doc__ or "",
        author="Shopfloor",
        tick_s=10.0,
    )
    config_model = ConditionConfig
    example_config: ClassVar[Mapping[str, Any]] = {"baseline": "both", "baseline_minutes": 60}

    def __init__(self, ctx: Any, config: ConditionConfig) -> None:
        super().__init__(ctx, config)
        self.machines: dict[str, _Machine] = {}
        self.fleet: dict[str, dict[str, Any]] = {}  # fleet key -> trained model info
        self._where: dict[int, tuple[str, int]] = {}  # signal id -> (machine, input index|-1)
        self._types: dict[str, str | None] = {}  # machine -> device type
        self._lines: dict[str, str | None] = {}
        self._ruled: set[str] = set()  # machines whose rule was kept since the start

    # -- devices -----------------------------------------------------------------------------

    def _refresh(self) -> dict[int, tuple[str, int]]:
        cfg = self.config
        gate = None if cfg.only_when is None else cfg.only_when.signal
        where: dict[int, tuple[str, int]] = {}
        for d in self.ctx.devices(cfg.device_type):
            need = [*cfg.inputs, *([gate] if gate else [])]
            if not all(s in d.signals for s in need):
                continue
            for i, s in enumerate(cfg.inputs):
                where[d.signals[s]] = (d.name, i)
            if gate is not None:
                where[d.signals[gate]] = (d.name, -1)
            self._types[d.name] = d.device_type
            self._lines[d.name] = d.line
            if d.name not in self.machines:
                self.machines[d.name] = _Machine(d.name, f"fleet:{d.device_type or ''}")
        self._where = where
        return where

    def subscriptions(self) -> Sequence[int]:
        return sorted(self._refresh())

    # -- points: resampling ------------------------------------------------------------------

    def on_points(self, batch: PointBatch) -> None:
        where = self._where or self._refresh()
        if any(int(s) not in where for s in np.unique(batch.signal_id).tolist()):
            where = self._refresh()
        per: dict[str, dict[int, Series]] = {}
        for sid, one in batch.by_signal().items():
            if sid in where:
                name, idx = where[sid]
                per.setdefault(name, {})[idx] = one
        for name, found in per.items():
            self._accumulate(self.machines[name], found)

    def _accumulate(self, m: _Machine, series: Mapping[int, Series]) -> None:
        cfg = self.config
        step = cfg.resample_s * 10**9
        n_in = len(cfg.inputs)
        gate = series.get(-1)
        latest = max(int(s.ts[-1]) for s in series.values() if len(s))
        for idx, s in series.items():
            if idx < 0 or len(s) == 0:
                continue
            ok = np.isfinite(s.values)
            bucket = s.ts // step
            keep = ok & (bucket >= m.closed_until)
            if not keep.any():
                continue
            ts, values, bucket = s.ts[keep], s.values[keep], bucket[keep]
            qualifies = self._qualifies(m, gate, ts)
            for b in np.unique(bucket).tolist():
                sel = bucket == b
                q = sel & qualifies
                acc = m.open.setdefault(int(b), [[0.0, 0.0, 0.0] for _ in range(n_in)])
                acc[idx][0] += float(values[q].sum())
                acc[idx][1] += float(q.sum())
                acc[idx][2] += float(sel.sum())
        if gate is not None and len(gate):
            m.gate = (int(gate.ts[-1]), float(gate.values[-1]))
        self._close(m, latest // step)

    def _qualifies(self, m: _Machine, gate: Series | None, ts: npt.NDArray[np.int64]) -> Any:
        cond = self.config.only_when
        if cond is None:
            return np.ones(len(ts), dtype=bool)
        # The gate's value at each point: its last value at or before the point.
        g_ts = np.empty(0, np.int64) if gate is None else gate.ts
        g_val = np.empty(0) if gate is None else gate.values
        if m.gate is not None:
            g_ts = np.concatenate((np.array([m.gate[0]], np.int64), g_ts))
            g_val = np.concatenate(([m.gate[1]], g_val))
        pos = np.searchsorted(g_ts, ts, side="right") - 1
        value = np.where(pos >= 0, g_val[np.maximum(pos, 0)], np.nan)
        return value == cond.equals

    def _close(self, m: _Machine, current: int) -> None:
        """Intervals before ``current`` are complete: turn them into rows."""
        cfg = self.config
        index = {s: i for i, s in enumerate(cfg.inputs)}
        for b in sorted(k for k in m.open if k < current):
            acc = m.open.pop(b)
            if any(a[2] == 0 or a[1] < MIN_FRACTION * a[2] for a in acc):
                continue
            means = [a[0] / a[1] for a in acc]
            row = [
                means[i] - (means[index[cfg.subtract[s]]] if s in cfg.subtract else 0.0)
                for i, s in enumerate(cfg.signals)
            ]
            m.pending.append([float(b * cfg.resample_s * 10**9), *row])
        m.closed_until = max(m.closed_until, current)

    # -- ticks: training and scoring ---------------------------------------------------------

    def on_tick(self, now_ns: int) -> None:
        if not self.machines:
            self._refresh()
        need = self.config.baseline_steps
        mode = self.config.baseline
        for m in self.machines.values():
            if self.config.univariate:
                self._univariate(m)
            if not m.ready and m.pending:
                room = need - len(m.baseline)
                if room > 0:
                    m.baseline.extend(m.pending[:room])
                    m.pending = m.pending[room:]
                # Waiting for the fleet's model: keep what the history would keep, no more.
                del m.pending[:-HISTORY_STEPS]
            if mode != "fleet" and "own" not in m.detectors and len(m.baseline) >= need:
                m.detectors["own"] = self._fit([m], self.config.tolerance)
        if mode != "own":
            for key in sorted({m.model for m in self.machines.values()}):
                self._fleet(key)
        wanted = {"own": {"own"}, "fleet": {"fleet"}, "both": {"own", "fleet"}}[mode]
        for m in self.machines.values():
            if not m.ready and wanted <= set(m.detectors):
                # The baseline rows are scored too, so the curve starts at the beginning; they
                # are kept for refitting the fleet model as more machines complete theirs.
                m.ready = True
                m.pending = m.baseline + m.pending
            if m.ready and m.pending:
                self._score(m)

    def _univariate(self, m: _Machine) -> None:
        """Every new row goes to the per-signal detectors (they train on the first rows)."""
        cfg = DetectorConfig(baseline_points=self.config.baseline_steps, rest_fraction=0.0)
        for i, s in enumerate(self.config.signals):
            det = m.univariate.setdefault(s, StreamingDetector(cfg))
            last = det.last_ts
            for r in m.pending:
                if last is None or int(r[0]) > last:
                    det.update(int(r[0]), r[1 + i])

    def _fit(self, members: Sequence[_Machine], tolerance: float) -> MultivariateDetector:
        cfg = self.config
        rows = np.array([r[1:] for m in members for r in m.baseline])
        det = MultivariateDetector(list(cfg.signals), cfg.smoothing).fit(rows)
        _widen(det, tolerance)
        return det

    def _fleet(self, key: str) -> None:
        """Fit (again) the fleet model of ``key`` when another machine completed its baseline."""
        need = self.config.baseline_steps
        members = [m for m in self.machines.values() if m.model == key]
        full = sorted((m for m in members if len(m.baseline) >= need), key=lambda m: m.name)
        info = self.fleet.get(key)
        if not full or len(full) < math.ceil(len(members) / 2):
            return
        if info is not None and info["baselines"] == len(full):
            return
        tolerance = self.config.fleet_tolerance
        det = self._fit(full, tolerance)
        # Leave out the machines whose baseline the fleet finds abnormal (a minority at most)
        # and fit again: a fault that was there from the start must not become normal.
        high_only = self.config.high_only
        medians = []
        for m in full:
            lasting = [_lasting(det, r[1:], high_only) for r in m.baseline]
            medians.append((float(np.median(lasting)), m.name))
        medians.sort(reverse=True)
        out = sorted(n for v, n in medians[: (len(full) - 1) // 2] if v > TRIM_SCORE)
        if out:
            det = self._fit([m for m in full if m.name not in out], tolerance)
        before = [] if info is None else info["excluded"]
        self.fleet[key] = {
            "model": det.to_dict(),
            "baselines": len(full),
            "machines": sorted(m.name for m in full if m.name not in out),
            "excluded": out,
        }
        if out != before and out:
            self.ctx.event(
                "baseline",
                f"{key}: {', '.join(out)} left out of the fleet baseline "
                "(abnormal against the others)",
                details={"model": key, "excluded": out},
            )
        for m in full:
            m.excluded = m.name in out
            fresh = MultivariateDetector.from_dict(det.to_dict())
            if "fleet" in m.detectors:
                fresh.ewma = m.detectors["fleet"].ewma  # refitted: the machine's MEWMA goes on
            m.detectors["fleet"] = fresh

    def _score(self, m: _Machine) -> None:
        cfg = self.config
        ts: list[int] = []
        scores: list[float] = []
        went_abnormal: dict[str, Any] | None = None
        gap = max(GAP_RESET_S, 10 * cfg.resample_s) * 10**9
        for r in m.pending:
            t = int(r[0])
            pause = bool(m.history) and t - int(m.history[-1]["ts"]) > gap
            best: tuple[float, str, MultivariateScore] | None = None
            for kind, det in sorted(m.detectors.items()):
                if pause:
                    det.ewma = np.zeros(len(cfg.signals))  # a long pause: start afresh
                one = det.update(_clip(det, np.asarray(r[1:]), cfg.high_only))
                if best is None or one.d2 > best[0]:  # same signals: the larger d2 scores more
                    best = (one.d2, kind, one)
            assert best is not None
            _, by, res = best
            shares = {k: round(v, 4) for k, v in res.contributions.items()}
            m.history.append(
                {"ts": t, "score": res.score, "d2": res.d2, "by": by, "contributions": shares}
            )
            m.steps += 1
            ts.append(t)
            scores.append(res.score)
            self._relearn(m, r)
            if m.abnormal_since is None and res.score > cfg.alarm_score:
                m.abnormal_since = t
                went_abnormal = went_abnormal or {
                    "ts": t,
                    "score": res.score,
                    "shares": shares,
                    "by": by,
                }
            elif m.abnormal_since is not None and res.score < cfg.alarm_score - cfg.deadband:
                since, m.abnormal_since = m.abnormal_since, None
                self.ctx.event(
                    "normal",
                    f"{m.name}: condition normal again",
                    device=m.name,
                    details={"abnormal_since": since, "ts": t, "score": res.score},
                )
        m.pending = []
        message = None
        if went_abnormal is not None:
            top = _top(went_abnormal["shares"])
            message = m.message = f"abnormal condition: {', '.join(top)}"
            self.ctx.event(
                "abnormal",
                f"{m.name}: {message}",
                device=m.name,
                details={
                    "ts": went_abnormal["ts"],
                    "score": went_abnormal["score"],
                    "baseline": went_abnormal["by"],
                    "top": top,
                    "contributions": went_abnormal["shares"],
                },
            )
        if m.name not in self._ruled:
            # The rule needs its signal: write first, then keep the rule.
            self._write(m, ts, scores)
            self._rule(m)
            self._ruled.add(m.name)
        else:
            if message is not None:  # the alarm that the next write raises names the culprits
                self._rule(m)
            self._write(m, ts, scores)

    def _relearn(self, m: _Machine, row: list[float]) -> None:
        """Learn the own baseline again when the machine has been clearly *below* it for a
        whole baseline's length: its normal got better (a new bearing), and a baseline
        taken on a worn one would hide the next fault."""
        need = self.config.baseline_steps
        m.recent.append(row)
        while len(m.recent) > need:
            m.recent.popleft()
        det = m.detectors.get("own")
        if det is None or len(m.recent) < need or det.center is None or det.scale is None:
            return
        rows = np.array([r[1:] for r in m.recent])
        margin = np.maximum(3.0 * det.scale, self.config.tolerance * np.abs(det.center))
        # Every row (not just most) is below, or the new baseline would mix the two levels.
        below = rows.max(axis=0) < det.center - margin
        if not (self.config.high_only and below.sum() * 2 >= len(below)):
            return
        fresh = MultivariateDetector(list(self.config.signals), self.config.smoothing).fit(rows)
        _widen(fresh, self.config.tolerance)
        m.detectors["own"] = fresh
        m.relearnt += 1
        self.ctx.event(
            "baseline",
            f"{m.name}: own baseline learnt again (below the old one for "
            f"{self.config.baseline_minutes:g} running minutes: a repair?)",
            device=m.name,
            details={
                "ts": int(row[0]),
                "signals_below": [
                    s for s, b in zip(self.config.signals, below.tolist(), strict=True) if b
                ],
            },
        )
        m.recent.clear()

    def _write(self, m: _Machine, ts: list[int], scores: list[float]) -> None:
        self.ctx.write(
            m.name,
            "anomaly_score",
            Series(np.asarray(ts, np.int64), np.asarray(scores, np.float64)),
            unit="1",
        )

    def _rule(self, m: _Machine) -> None:
        cfg = self.config
        self.ctx.ensure_rule(
            f"anomaly-{m.name}",
            device=m.name,
            definition={
                "kind": "threshold",
                "signal": "anomaly_score",
                "limit": cfg.alarm_score,
                "deadband": cfg.deadband,
            },
            priority=2,
            message=m.message,
        )

    # -- state -------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "machines": {n: m.to_json() for n, m in sorted(self.machines.items())},
            "fleet": {k: dict(v) for k, v in sorted(self.fleet.items())},
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        if state.get("version") != STATE_VERSION:
            raise BadInput(f"unknown state version {state.get('version')!r}", "state")
        self.machines = {n: _Machine.from_json(n, raw) for n, raw in state["machines"].items()}
        self.fleet = {k: dict(v) for k, v in state["fleet"].items()}

    def status(self) -> dict[str, Any]:
        return {
            "machines": len(self.machines),
            "trained": sum(m.ready for m in self.machines.values()),
            "abnormal": sorted(n for n, m in self.machines.items() if m.abnormal_since is not None),
        }

    # -- routes ------------------------------------------------------------------------------

    def _baseline_json(self, m: _Machine) -> dict[str, Any]:
        mode = self.config.baseline
        out: dict[str, Any] = {
            "status": "trained" if m.ready else "collecting",
            "mode": mode,
            "steps": len(m.baseline),
            "needed": self.config.baseline_steps,
        }
        if mode != "fleet":
            out["own"] = "trained" if "own" in m.detectors else "collecting"
        if mode != "own":
            info = self.fleet.get(m.model)
            out["fleet"] = {
                "model": m.model,
                "status": "collecting" if info is None else "trained",
                "machines": [] if info is None else info["machines"],
                "excluded": m.excluded,
            }
        return out

    def route_machines(self, params: Mapping[str, str]) -> dict[str, Any]:
        rows = []
        for name in sorted(self.machines):
            m = self.machines[name]
            last = m.history[-1] if m.history else None
            row: dict[str, Any] = {
                "machine": name,
                "device_type": self._types.get(name),
                "line": self._lines.get(name),
                "score": None if last is None else last["score"],
                "ts": None if last is None else last["ts"],
                "time": None if last is None else to_iso(last["ts"]),
                "abnormal": m.abnormal_since is not None,
                "abnormal_since": None if m.abnormal_since is None else to_iso(m.abnormal_since),
                "top": [] if last is None else _top_json(last["contributions"]),
                "baseline": self._baseline_json(m),
            }
            if m.univariate:
                row["signal_scores"] = {
                    s: (None if d.last is None else d.last.unsuppressed)
                    for s, d in m.univariate.items()
                }
            rows.append(row)
        return {
            "baseline": self.config.baseline,
            "alarm_score": self.config.alarm_score,
            "signals": list(self.config.signals),
            "machines": rows,
        }

    def route_machine(self, params: Mapping[str, str]) -> dict[str, Any]:
        since = None if "since" not in params else parse_instant(params["since"], "since")
        name = params.get("name")
        if name is None:  # the machine that looks worst now
            scored = [(m.history[-1]["score"], n) for n, m in self.machines.items() if m.history]
            name = max(scored)[1] if scored else None
            if name is None:
                return {"machine": None, "abnormal_since": None, "signals": [], "points": []}
        elif name not in self.machines:
            raise NotFound(f"machine {name!r} is not monitored; machines: {sorted(self.machines)}")
        m = self.machines[name]
        points = [
            {**h, "time": to_iso(h["ts"])} for h in m.history if since is None or h["ts"] >= since
        ]
        return {
            "machine": name,
            "abnormal_since": None if m.abnormal_since is None else to_iso(m.abnormal_since),
            "alarm_score": self.config.alarm_score,
            "signals": list(self.config.signals),
            "points": points,
        }

    @classmethod
    def routes(cls) -> Sequence[AppRoute]:
        return (
            AppRoute(
                "machines",
                "Every monitored machine: score, abnormal since, top contributors, baseline",
                ConditionApp.route_machines,
            ),
            AppRoute(
                "machine",
                "One machine's recent scores and contributions",
                ConditionApp.route_machine,
                {
                    "name": "the machine (default: the one with the highest score now)",
                    "since": "only points from then on (RFC 3339, epoch ms, 'now', '-2h')",
                },
            ),
        )

    @classmethod
    def panels(cls) -> Sequence[Panel]:
        return (
            Panel(
                "machines",
                "Machine condition",
                "table",
                "machines",
                "Anomaly score and the signals to blame, per machine",
            ),
            Panel(
                "machine",
                "Anomaly score",
                "line-chart",
                "machine",
                "A machine's score and contributions over time",
            ),
        )


def _widen(det: MultivariateDetector, tolerance: float) -> None:
    """Add ``(tolerance * |normal level|)**2`` to each signal's variance of the MEWMA
    statistic, so a lasting deviation of that size counts as one standard deviation."""
    if tolerance <= 0 or det.precision is None or det.center is None or det.scale is None:
        return
    steady = np.linalg.pinv(det.precision)  # S, the steady-state covariance of w (z units)
    level = np.maximum(np.abs(det.center), det.scale)
    extra = (tolerance * level / det.scale) ** 2
    det.precision = np.linalg.pinv(steady + np.diag(extra))


def _clip(det: MultivariateDetector, row: F64, high_only: bool) -> F64:
    """With ``high_only``, values more than one scale below normal count as just that."""
    if not high_only:
        return row
    assert det.center is not None
    assert det.scale is not None
    out: F64 = np.maximum(row, det.center - det.scale)
    return out


def _lasting(det: MultivariateDetector, row: Sequence[float], high_only: bool) -> float:
    """The score that ``row`` would reach if it lasted (the MEWMA settles on it)."""
    assert det.center is not None
    assert det.scale is not None
    x = _clip(det, np.asarray(row, np.float64), high_only)
    return det._score((x - det.center) / det.scale).score


def _top(shares: Mapping[str, float]) -> list[str]:
    ranked = sorted(shares.items(), key=lambda kv: -kv[1])
    return [k for i, (k, v) in enumerate(ranked[:TOP_MAX]) if i == 0 or v >= TOP_SHARE]


def _top_json(shares: Mapping[str, float]) -> list[dict[str, Any]]:
    return [{"signal": s, "share": shares[s]} for s in _top(shares)]
