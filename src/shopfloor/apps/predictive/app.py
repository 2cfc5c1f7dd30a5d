"""The predictive-maintenance app: remaining useful life (RUL) per machine, in hours.

Per machine (every device of ``device_type`` that has the signals, the gate and the failure
signal):

1. **Grid.** The raw points of ``signals`` are averaged per ``resample_s`` step (epoch
   aligned), counting only the points taken while ``only_when`` holds (by default
   ``state == 2``, running: vibration depends on what the machine does). A step is a row
   when at least half of each signal's points in it qualify; its time is the last qualifying
   point. Steps where the machine did not run are **skipped**, not carried: a carried value
   would make the window statistics (std, slope) flat for a reason that is no wear, and a
   bearing wears mostly under load. The time index stays wall-clock hours, so the RUL is in
   hours of calendar time. Data are read from the historian incrementally (complete steps
   up to the latest point the host delivered), at most ``history_days`` back, and kept in
   memory; after a restart they are read again.
2. **Runs.** A run starts at the beginning of the data or when the machine came back from a
   failure (``failure.signal`` leaves ``failure.equals``) and ends at a failure (it becomes
   ``failure.equals``): a *failed* run, training data, whose last row is stamped with the
   failure time. The run since the last failure is the machine's *current* run.
3. **Training.** With ``relative`` each signal is divided by the machine's median over its
   rows in the history (machines of one kind differ by some 15 %, the kinds far more); then
   :func:`~shopfloor.apps.predictive.train` (per-signal z-scores, window features, LightGBM
   with cross-validation by run) on the failed runs, RUL capped at ``cap_hours``. With
   enough failures the last ``holdout_runs`` failed runs are held out and the model is
   evaluated on them, cut at 1, 2, 4, 8 and 16 h before their failure. The model goes into
   the tenant's :class:`~shopfloor.apps.predictive.ModelRegistry` (``ctx.data_dir/models``)
   as the active version. Training runs when there is no active model, or when
   ``retrain_hours`` of data time passed since the last training and new failures came.
4. **Live.** For each new row of a machine's current run the model's estimate of its last
   row is written as ``rul_hours``, ``rul_lower_hours`` and ``rul_upper_hours`` (unit
   "h", stamped with the row's time); a threshold rule per machine raises a priority-2 alarm
   below ``warning_hours``; ``maintenance_warning`` / ``warning_cleared`` events mark it.

See docs/apps/predictive-maintenance.md ("The app").
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt
from pydantic import Field, ValidationInfo, field_validator

from shopfloor.apps.common import BEARING_SIGNALS, OnlyWhen
from shopfloor.apps.predictive.features import FeatureSpec, Run
from shopfloor.apps.predictive.model import (
    HyperParams,
    RulModel,
    TrainConfig,
    evaluate,
    train,
)
from shopfloor.apps.predictive.model_registry import ModelRegistry, ModelVersion, check_name
from shopfloor.apps.sdk import App, AppConfig, AppManifest, AppRoute, Panel, PointBatch, Series
from shopfloor.core.errors import BadInput, NotFound
from shopfloor.core.timeutil import parse_instant, to_iso

__all__ = ["Candidate", "FailureSpec", "OnlyWhen", "PredictiveApp", "PredictiveConfig"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

STATE_VERSION: Final = 1
HOUR_NS: Final = 3_600 * 10**9
DAY_NS: Final = 24 * HOUR_NS
MIN_FRACTION: Final = 0.5  # share of a step's points that must meet only_when
MIN_RUN_ROWS: Final = 3  # shorter failed runs are not trained on
REFERENCE_HOURS: Final = 6.0  # rows a machine needs (in hours) before ``relative`` predicts
EVAL_HOURS: Final = (1.0, 2.0, 4.0, 8.0, 16.0)  # held-out runs are cut this long before failing
CATCHUP_S: Final = 10.0  # historian reading per tick stops after this (resumes next tick)
CHUNK_POINTS: Final = 100_000  # aim of points per signal and read
FIRST_CHUNK_NS: Final = DAY_NS
MAX_CHUNK_NS: Final = 14 * DAY_NS
SIGNALS_OUT: Final = ("rul_hours", "rul_lower_hours", "rul_upper_hours")
DEFAULT_SIGNALS: Final = BEARING_SIGNALS


class FailureSpec(AppConfig):
    """A failure is the moment ``signal`` becomes ``equals``; it ends when it leaves it."""

    signal: str = Field("fault_code", min_length=1)
    equals: float = 201.0


class Candidate(AppConfig):
    """One set of LightGBM hyper-parameters tried by cross-validation."""

    num_leaves: int = Field(15, ge=2, le=255)
    learning_rate: float = Field(0.05, gt=0.0, le=1.0)
    n_estimators: int = Field(300, ge=1, le=5000, description="The most trees CV may pick.")
    min_child_samples: int = Field(20, ge=1)
    feature_fraction: float = Field(0.7, gt=0.0, le=1.0)

    def params(self) -> HyperParams:
        return HyperParams(
            num_leaves=self.num_leaves,
            learning_rate=self.learning_rate,
            n_estimators=self.n_estimators,
            min_child_samples=self.min_child_samples,
            feature_fraction=self.feature_fraction,
        )


class PredictiveConfig(AppConfig):
    device_type: str | None = Field(
        None, description="Device type to watch; None: every device that has the signals."
    )
    signals: tuple[str, ...] = Field(DEFAULT_SIGNALS, description="Signals the model sees.")
    failure: FailureSpec = Field(default_factory=FailureSpec)
    resample_s: int = Field(600, ge=60, le=6 * 3600, description="Step of the regular grid.")
    only_when: OnlyWhen | None = Field(
        default_factory=OnlyWhen, description="Use only points in this state; None: all."
    )
    relative: bool = Field(
        True, description="Each signal as a ratio to the machine's median over the history."
    )
    history_days: float = Field(14.0, gt=0.0, le=366.0, description="How far back runs are.")
    cap_hours: float = Field(24.0, gt=0.0, le=24.0 * 365, description="RUL cap (healthy).")
    warning_hours: float = Field(6.0, gt=0.0, description="Maintenance warning below this.")
    deadband_hours: float = Field(1.0, ge=0.0, description="The warning clears above "
                                  "warning_hours + deadband_hours.")  # fmt: skip
    retrain_hours: float = Field(24.0, gt=0.0, description="Retrain after this much data "
                                 "time, when new failures came.")  # fmt: skip
    n_folds: int = Field(3, ge=2, le=10, description="Cross-validation folds (by run).")
    min_failures: int = Field(5, ge=2, description="Train only with this many failed runs.")
    holdout_runs: int = Field(3, ge=0, description="The last failed runs held out for the "
                              "evaluation, when enough remain to train on.")  # fmt: skip
    windows: tuple[int, ...] = Field((6, 24), description="Feature windows, in grid steps.")
    time_since_start: bool = Field(
        False,
        description="Time since the run started as a feature (off: a run that started "
        "before the history did would look young).",
    )
    candidates: tuple[Candidate, ...] = Field((Candidate(),), min_length=1, max_length=8)
    n_seeds: int = Field(1, ge=1, le=10)
    n_jobs: int = Field(1, ge=1, le=64, description="LightGBM threads.")
    model_name: str = Field("rul", description="Name in the tenant's model registry.")

    @field_validator("signals")
    @classmethod
    def _signals(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("name one or more signals")
        if len(set(v)) != len(v):
            raise ValueError("each signal once")
        return v

    @field_validator("warning_hours")
    @classmethod
    def _warning(cls, v: float, info: ValidationInfo) -> float:
        cap = info.data.get("cap_hours")
        if cap is not None and v >= cap:
            raise ValueError(f"warning_hours ({v}) must be below cap_hours ({cap})")
        return v

    @field_validator("min_failures")
    @classmethod
    def _min_failures(cls, v: int, info: ValidationInfo) -> int:
        folds = info.data.get("n_folds")
        if folds is not None and v < folds:
            raise ValueError(f"min_failures ({v}) must be at least n_folds ({folds})")
        return v

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(w < 2 or w > 10_000 for w in v):
            raise ValueError("windows must be 2 to 10000 grid steps each, one or more")
        return v

    @field_validator("model_name")
    @classmethod
    def _model_name(cls, v: str) -> str:
        try:
            check_name(v, "model_name")
        except BadInput as exc:
            raise ValueError(exc.message) from None
        return v

    @property
    def step_ns(self) -> int:
        return self.resample_s * 10**9

    @property
    def history_ns(self) -> int:
        return int(self.history_days * DAY_NS)

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            cap=self.cap_hours,
            features=FeatureSpec(windows=self.windows, time_since_start=self.time_since_start),
            candidates=tuple(c.params() for c in self.candidates),
            n_folds=self.n_folds,
            n_seeds=self.n_seeds,
            n_jobs=self.n_jobs,
            n_regimes=1,
        )

    def fingerprint(self) -> dict[str, Any]:
        """What a stored model must have been trained with to be used by this config."""
        return {
            "signals": list(self.signals),
            "resample_s": self.resample_s,
            "only_when": None if self.only_when is None else self.only_when.model_dump(),
            "relative": self.relative,
            "cap_hours": self.cap_hours,
            "device_type": self.device_type,
        }


# -- the grid: pure functions over one chunk of a machine's points ------------------------------


def value_at(gate: Series, prev: float | None, ts: I64) -> F64:
    """The gate's last value at or before each of ``ts`` (``prev`` before its first point)."""
    pos = np.searchsorted(gate.ts, ts, side="right") - 1
    before = np.nan if prev is None else prev
    if len(gate) == 0:
        return np.full(len(ts), before)
    out: F64 = np.where(pos >= 0, gate.values[np.maximum(pos, 0)], before)
    return out


def failure_events(
    fail: Series, equals: float, prev: float | None
) -> tuple[list[tuple[str, int]], float | None]:
    """("failure", ts) where the signal becomes ``equals``, ("recovered", ts) where it leaves
    it; ``prev`` is its last finite value before the series. Returns the events and the last
    finite value."""
    ok = np.isfinite(fail.values)
    ts, v = fail.ts[ok], fail.values[ok]
    if len(v) == 0:
        return [], prev
    now_f = v == equals
    before = np.concatenate(([prev == equals if prev is not None else now_f[0]], now_f[:-1]))
    events = [("failure", int(t)) for t in ts[now_f & ~before]]
    events += [("recovered", int(t)) for t in ts[~now_f & before]]
    events.sort(key=lambda e: e[1])
    return events, float(v[-1])


def grid_rows(
    start: int,
    end: int,
    step: int,
    signals: Sequence[Series],
    gate: Series | None,
    gate_equals: float,
    gate_prev: float | None,
    min_fraction: float = MIN_FRACTION,
) -> tuple[I64, F64]:
    """Rows of the steps of ``[start, end)`` (multiples of ``step``): per signal the mean of
    the points that meet the gate, for steps where at least ``min_fraction`` of each signal's
    finite points do; the row time is the last such point. Returns (times, values)."""
    n = (end - start) // step
    k = len(signals)
    sums = np.zeros((n, k))
    good = np.zeros((n, k))
    total = np.zeros((n, k))
    last = np.full(n, -1, dtype=np.int64)
    for j, s in enumerate(signals):
        ok = np.isfinite(s.values) & (s.ts >= start) & (s.ts < end)
        ts, v = s.ts[ok], s.values[ok]
        b = ((ts - start) // step).astype(np.int64)
        q = (
            np.ones(len(ts), dtype=bool)
            if gate is None
            else value_at(gate, gate_prev, ts) == gate_equals
        )
        total[:, j] = np.bincount(b, minlength=n)[:n]
        good[:, j] = np.bincount(b[q], minlength=n)[:n]
        sums[:, j] = np.bincount(b[q], weights=v[q], minlength=n)[:n]
        np.maximum.at(last, b[q], ts[q])
    valid = np.all((good > 0) & (good >= min_fraction * total), axis=1)
    rows = np.flatnonzero(valid)
    return last[rows], sums[rows] / good[rows]


def split_runs(
    row_ts: I64, events: Sequence[tuple[str, int]], data_start: int
) -> tuple[list[tuple[int, int, int, int]], tuple[int, int] | None]:
    """Failed runs as (start ns, failure ns, first row, end row) and the current run as
    (start ns, first row), or None while the machine is in a failure."""
    failed: list[tuple[int, int, int, int]] = []
    boundary, in_failure = data_start, False
    for kind, ts in events:
        if kind == "failure" and not in_failure:
            lo = int(np.searchsorted(row_ts, boundary, side="left"))
            hi = int(np.searchsorted(row_ts, ts, side="left"))
            failed.append((boundary, ts, lo, hi))
            in_failure = True
        elif kind == "recovered":
            boundary, in_failure = ts, False
    if in_failure:
        return failed, None
    return failed, (boundary, int(np.searchsorted(row_ts, boundary, side="left")))


def reference(rows: F64) -> F64:
    """Per signal the median over ``rows`` (1 where it is about zero): the ``relative`` scale."""
    med = np.median(rows, axis=0)
    out: F64 = np.where(np.abs(med) > 1e-9, med, 1.0)
    return out


def make_run(
    unit: str,
    row_ts: I64,
    rows: F64,
    start: int,
    names: tuple[str, ...],
    failure: int | None = None,
) -> Run:
    """A library :class:`Run` in hours since ``start``; a failed run's last row is stamped
    with the failure time, so that every row's target is the time left until it."""
    t = (row_ts - start).astype(np.float64) / HOUR_NS
    if failure is not None:
        t[-1] = max(float(t[-1]), (failure - start) / HOUR_NS)
    return Run(unit, t, rows, names, failed=failure is not None)


# -- one machine ---------------------------------------------------------------------------------


class _Machine:
    """A machine's grid rows and failures over the history (memory only: read again after a
    restart), its latest estimate and warning."""

    def __init__(self, name: str, device_type: str | None, line: str | None, k: int) -> None:
        self.name = name
        self.device_type = device_type
        self.line = line
        self.sids: tuple[list[int], int | None, int] = ([], None, 0)  # signals, gate, failure
        self.read_until: int | None = None
        self.seen: int | None = None  # latest point time known to be stored
        self.chunk_ns = FIRST_CHUNK_NS
        self.gate_prev: float | None = None
        self.fail_prev: float | None = None
        self.data_start: int | None = None
        self.row_ts: I64 = np.empty(0, np.int64)
        self.rows: F64 = np.empty((0, k))
        self.events: list[tuple[str, int]] = []
        self.last: dict[str, Any] | None = None  # latest estimate
        self.warning = False

    @property
    def in_failure(self) -> bool:
        return bool(self.events) and self.events[-1][0] == "failure"

    def prune(self, cutoff: int) -> None:
        i = int(np.searchsorted(self.row_ts, cutoff, side="left"))
        if i:
            self.row_ts, self.rows = self.row_ts[i:], self.rows[i:]
        j = bisect.bisect_left([e[1] for e in self.events], cutoff)
        if j:
            self.events = self.events[j:]
        if self.data_start is not None:
            self.data_start = max(self.data_start, cutoff)


class PredictiveApp(App[PredictiveConfig]):
    manifest = AppManifest(
        name="predictive",
        title="Predictive maintenance",
        version="1.0.0",
        summary="Remaining useful life per machine, in hours, from the run-to-failure "
        "histories in the historian; a maintenance warning before a bearing fails.",
        description=__doc__ or "",
        author="Shopfloor",
        tick_s=60.0,
    )
    config_model = PredictiveConfig
    example_config: ClassVar[Mapping[str, Any]] = {
        "resample_s": 600,
        "cap_hours": 24.0,
        "warning_hours": 6.0,
        "min_failures": 5,
    }

    def __init__(self, ctx: Any, config: PredictiveConfig) -> None:
        super().__init__(ctx, config)
        self.machines: dict[str, _Machine] = {}
        self._by_fail_sid: dict[int, str] = {}
        self.model: RulModel | None = None
        self.version: ModelVersion | None = None
        self.model_version: int | None = None
        self.trained_at: int | None = None  # data time of the last training
        self.trained_failures = 0
        self.warnings: set[str] = set()
        self.problem: str | None = None  # why no model is in use, when not obvious
        self._ruled: set[str] = set()
        self._loaded = False
        self._failed_at: int | None = None  # data time of a training that failed

    @property
    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.ctx.data_dir / "models")

    # -- devices ---------------------------------------------------------------------------

    def _refresh(self) -> None:
        cfg = self.config
        gate = None if cfg.only_when is None else cfg.only_when.signal
        need = [*cfg.signals, cfg.failure.signal, *([gate] if gate else [])]
        by_fail: dict[int, str] = {}
        for d in self.ctx.devices(cfg.device_type):
            if not all(s in d.signals for s in need):
                continue
            m = self.machines.get(d.name)
            if m is None:
                m = self.machines[d.name] = _Machine(
                    d.name, d.device_type, d.line, len(cfg.signals)
                )
                m.warning = d.name in self.warnings
            m.sids = (
                [d.signals[s] for s in cfg.signals],
                None if gate is None else d.signals[gate],
                d.signals[cfg.failure.signal],
            )
            by_fail[m.sids[2]] = d.name
        self._by_fail_sid = by_fail

    def subscriptions(self) -> Sequence[int]:
        # Only the failure signal: its points say how far the machine's data is stored.
        self._refresh()
        return sorted(self._by_fail_sid)

    def on_points(self, batch: PointBatch) -> None:
        if not self._by_fail_sid:
            self._refresh()
        for sid, s in batch.by_signal().items():
            name = self._by_fail_sid.get(sid)
            if name is not None and len(s):
                m = self.machines[name]
                t = int(s.ts[-1])
                m.seen = t if m.seen is None else max(m.seen, t)

    # -- the tick --------------------------------------------------------------------------

    def on_tick(self, now_ns: int) -> None:
        if not self.machines:
            self._refresh()
        if not self._loaded:
            self._load_active()
        deadline = time.monotonic() + CATCHUP_S
        caught_up = True
        for m in self.machines.values():
            caught_up &= self._read(m, now_ns, deadline)
        clock = self.data_time()
        if clock is None:
            return
        for m in self.machines.values():
            m.prune(clock - self.config.history_ns)
        if caught_up and self._due(clock):
            self._train(clock)
        if self.model is not None:
            for m in self.machines.values():
                self._predict(m)

    def data_time(self) -> int | None:
        """The latest point time over the machines: the app's clock."""
        seen = [m.seen for m in self.machines.values() if m.seen is not None]
        return max(seen) if seen else None

    def _read(self, m: _Machine, now_ns: int, deadline: float) -> bool:
        """Read the machine's complete steps not yet read; False if the budget ran out."""
        cfg = self.config
        step = cfg.step_ns
        signals, gate, fail = m.sids
        if m.seen is None:  # nothing delivered since the start: what is stored?
            for lookback in (HOUR_NS, cfg.history_ns):
                found = self.ctx.read_before(fail, now_ns + 1, lookback)
                if found is not None:
                    m.seen = found[0]
                    break
            if m.seen is None:
                return True
        if m.read_until is None:
            m.read_until = (m.seen - cfg.history_ns) // step * step
        limit = m.seen // step * step
        while m.read_until < limit:
            if time.monotonic() > deadline:
                return False
            a = m.read_until
            b = min(limit, a + max(step, m.chunk_ns // step * step))
            f = self.ctx.read(fail, a, b)
            n = len(f)
            if n:
                if m.data_start is None:
                    m.data_start = int(f.ts[0])
                events, m.fail_prev = failure_events(f, cfg.failure.equals, m.fail_prev)
                m.events.extend(events)
                g = None if gate is None else self.ctx.read(gate, a, b)
                series = [self.ctx.read(sid, a, b) for sid in signals]
                eq = 0.0 if cfg.only_when is None else cfg.only_when.equals
                ts, rows = grid_rows(a, b, step, series, g, eq, m.gate_prev)
                if g is not None:
                    fin = g.values[np.isfinite(g.values)]
                    if len(fin):
                        m.gate_prev = float(fin[-1])
                if len(ts):
                    m.row_ts = np.concatenate([m.row_ts, ts])
                    m.rows = np.vstack([m.rows, rows])
            m.read_until = b
            # the next read: about CHUNK_POINTS points per signal (empty: go faster)
            span = b - a
            grown = span * 4 if n == 0 else span * CHUNK_POINTS // n
            m.chunk_ns = int(min(MAX_CHUNK_NS, max(step, grown)))
        return True

    # -- training --------------------------------------------------------------------------

    def _load_active(self) -> None:
        self._loaded = True
        try:
            model, info = self.registry.load_active(self.ctx.tenant_id, self.config.model_name)
        except NotFound:
            return
        if info.metadata.get("training_data", {}).get("config") != self.config.fingerprint():
            self.problem = (
                f"the active model (version {info.version}) was trained with another config; "
                "a new one is trained when enough failures are known"
            )
            return
        self.model, self.version, self.model_version = model, info, info.version
        td = info.metadata.get("training_data", {})
        if self.trained_at is None and isinstance(td.get("data_time"), int):
            self.trained_at = td["data_time"]
        if self.trained_failures == 0:  # no state: the runs it was trained on
            self.trained_failures = len(td.get("runs", [])) + len(td.get("held_out", []))

    def _due(self, clock: int) -> bool:
        if self.model is None:
            # after a training that failed, wait an hour of data before trying again
            return self._failed_at is None or clock - self._failed_at >= HOUR_NS
        since = clock - (self.trained_at if self.trained_at is not None else clock)
        return since >= self.config.retrain_hours * HOUR_NS

    def failed_runs(self) -> list[tuple[str, int, Run]]:
        """Every failed run in the history as (machine, failure ns, run), by failure time."""
        cfg = self.config
        out: list[tuple[str, int, Run]] = []
        for m in self.machines.values():
            if m.data_start is None or len(m.row_ts) == 0:
                continue
            scale = reference(m.rows) if cfg.relative else np.ones(len(cfg.signals))
            failed, _ = split_runs(m.row_ts, m.events, m.data_start)
            for start, onset, lo, hi in failed:
                if hi - lo < MIN_RUN_ROWS:
                    continue
                unit = f"{m.name}@{to_iso(onset)}"
                run = make_run(
                    unit, m.row_ts[lo:hi], m.rows[lo:hi] / scale, start, cfg.signals, onset
                )
                out.append((m.name, onset, run))
        out.sort(key=lambda r: r[1])
        return out

    def _train(self, clock: int) -> None:
        cfg = self.config
        runs = self.failed_runs()
        n = len(runs)
        if n < cfg.min_failures:
            return
        if self.model is not None and n <= self.trained_failures:
            self.trained_at = clock  # nothing new to learn from: look again later
            return
        hold = cfg.holdout_runs if n - cfg.holdout_runs >= cfg.min_failures else 0
        fit, test = runs[: n - hold], runs[n - hold :]
        try:
            model = train([r for _, _, r in fit], cfg.train_config())
        except BadInput as exc:  # e.g. every signal constant: say so, try again later
            self._failed_at, self.trained_at = clock, clock
            self.problem = f"training failed: {exc.message}"
            return
        evaluation = _evaluate(model, [r for _, _, r in test]) if test else None
        info = self.registry.register(
            self.ctx.tenant_id,
            cfg.model_name,
            model,
            training_data={
                "config": cfg.fingerprint(),
                "data_time": clock,
                "runs": [r.unit for _, _, r in fit],
                "held_out": [r.unit for _, _, r in test],
                "machines": sorted({name for name, _, _ in runs}),
                "rows": int(sum(len(r) for _, _, r in fit)),
                "time_unit": "h",
            },
            evaluation=evaluation,
            activate=True,
        )
        self.model, self.version, self.model_version = model, info, info.version
        self.trained_at, self.trained_failures, self.problem = clock, n, None
        self._failed_at = None
        report = model.report
        self.ctx.event(
            "model_trained",
            f"RUL model version {info.version} trained on {len(fit)} run-to-failure histories"
            + (f", evaluated on {len(test)} held out" if test else ""),
            details={
                "version": info.version,
                "runs": len(fit),
                "held_out": len(test),
                "cv_rmse_hours": None if report is None else report.cv_rmse,
                "evaluation_rmse_hours": None if evaluation is None else evaluation.get("rmse"),
                "train_s": None if report is None else report.train_s,
            },
        )

    # -- live ------------------------------------------------------------------------------

    def _predict(self, m: _Machine) -> None:
        cfg = self.config
        assert self.model is not None
        if m.data_start is None or len(m.row_ts) == 0:
            return
        _, current = split_runs(m.row_ts, m.events, m.data_start)
        if current is None:
            return
        start, lo = current
        if lo >= len(m.row_ts):
            return
        ts = int(m.row_ts[-1])
        if m.last is not None and m.last["ts"] >= ts:
            return
        if cfg.relative and len(m.row_ts) * cfg.resample_s < REFERENCE_HOURS * 3600:
            return  # too little history for the machine's own median
        scale = reference(m.rows) if cfg.relative else np.ones(len(cfg.signals))
        run = make_run(m.name, m.row_ts[lo:], m.rows[lo:] / scale, start, cfg.signals)
        p = self.model.predict_last([run])
        rul, lower, upper = float(p.rul[0]), float(p.lower[0]), float(p.upper[0])
        m.last = {
            "ts": ts,
            "rul": round(rul, 3),
            "lower": round(lower, 3),
            "upper": round(upper, 3),
            "run_start": start,
            "updated": ts,
        }
        one = np.array([ts], np.int64)
        for name, value in zip(SIGNALS_OUT, (rul, lower, upper), strict=True):
            self.ctx.write(m.name, name, Series(one, np.array([value])), unit="h")
        if m.name not in self._ruled:  # after the first write: the rule needs its signal
            self.ctx.ensure_rule(
                f"rul-{m.name}",
                device=m.name,
                definition={
                    "kind": "threshold",
                    "signal": "rul_hours",
                    "limit": cfg.warning_hours,
                    "direction": "low",
                    "deadband": cfg.deadband_hours,
                },
                priority=2,
                message=f"maintenance: bearing failure expected within {cfg.warning_hours:g} h",
            )
            self._ruled.add(m.name)
        details = {"ts": ts, "rul_hours": m.last["rul"], "lower_hours": m.last["lower"],
                   "upper_hours": m.last["upper"], "model_version": self.model_version}  # fmt: skip
        if not m.warning and rul < cfg.warning_hours:
            m.warning = True
            self.warnings.add(m.name)
            self.ctx.event(
                "maintenance_warning",
                f"{m.name}: bearing failure expected within {rul:.1f} h "
                f"({lower:.1f} to {upper:.1f} h)",
                device=m.name,
                details=details,
            )
        elif m.warning and rul >= cfg.warning_hours + cfg.deadband_hours:
            m.warning = False
            self.warnings.discard(m.name)
            self.ctx.event(
                "warning_cleared",
                f"{m.name}: remaining life {rul:.1f} h, above the warning again",
                device=m.name,
                details=details,
            )

    # -- state -----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "model_version": self.model_version,
            "trained_at": self.trained_at,
            "trained_failures": self.trained_failures,
            "warnings": sorted(self.warnings),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        if state.get("version") != STATE_VERSION:
            raise BadInput(f"unknown state version {state.get('version')!r}", "state")
        self.trained_at = None if state["trained_at"] is None else int(state["trained_at"])
        self.trained_failures = int(state["trained_failures"])
        self.warnings = {str(w) for w in state["warnings"]}
        for name, m in self.machines.items():
            m.warning = name in self.warnings
        self.model_version = None if state["model_version"] is None else int(state["model_version"])
        if self.model_version is not None:
            self._load_active()
            if self.model is None:  # gone from the registry, or another config: train again
                self.model_version = None

    def status(self) -> dict[str, Any]:
        return {
            "machines": len(self.machines),
            "model_version": self.model_version,
            "failures_known": sum(
                sum(1 for e in m.events if e[0] == "failure") for m in self.machines.values()
            ),
            "predicted": sum(m.last is not None for m in self.machines.values()),
            "warnings": sorted(self.warnings),
        }

    # -- routes ----------------------------------------------------------------------------

    def route_machines(self, params: Mapping[str, str]) -> dict[str, Any]:
        rows = []
        for name in sorted(self.machines):
            m = self.machines[name]
            last = m.last
            if m.data_start is None:
                status = "no data"
            elif m.in_failure:
                status = "failed: in maintenance"
            elif self.model is None:
                status = "waiting for a model"
            elif last is None:
                status = "collecting"
            else:
                status = "warning" if m.warning else "ok"
            run_start = None
            if m.data_start is not None:
                _, current = split_runs(m.row_ts, m.events, m.data_start)
                run_start = None if current is None else current[0]
            rows.append(
                {
                    "machine": name,
                    "device_type": m.device_type,
                    "line": m.line,
                    "status": status,
                    "rul_hours": None if last is None else last["rul"],
                    "lower_hours": None if last is None else last["lower"],
                    "upper_hours": None if last is None else last["upper"],
                    "warning": m.warning,
                    "run_start": None if run_start is None else to_iso(run_start),
                    "last_update": None if last is None else to_iso(last["updated"]),
                    "failures": sum(1 for e in m.events if e[0] == "failure"),
                }
            )
        return {
            "cap_hours": self.config.cap_hours,
            "warning_hours": self.config.warning_hours,
            "model_version": self.model_version,
            "machines": rows,
        }

    def route_model(self, params: Mapping[str, str]) -> dict[str, Any]:
        cfg = self.config
        runs = sum(
            len(split_runs(m.row_ts, m.events, m.data_start)[0])
            for m in self.machines.values()
            if m.data_start is not None
        )
        out: dict[str, Any] = {
            "status": "trained" if self.model is not None else "waiting",
            "model_name": cfg.model_name,
            "version": self.model_version,
            "trained_at": None if self.trained_at is None else to_iso(self.trained_at),
            "failures_known": runs,
            "failures_needed": cfg.min_failures,
            "signals": list(cfg.signals),
            "cap_hours": cfg.cap_hours,
            "warning_hours": cfg.warning_hours,
            "problem": self.problem,
            "training": None,
            "evaluation": None,
        }
        if self.model is not None and self.version is not None:
            meta = self.version.metadata
            report = self.model.report
            out["created_at"] = meta.get("created_at")
            out["training"] = {
                "runs": len(meta.get("training_data", {}).get("runs", [])),
                "rows": meta.get("training_data", {}).get("rows"),
                "cv_rmse_hours": None if report is None else report.cv_rmse,
                "best_iteration": None if report is None else report.best_iteration,
                "hyper_parameters": meta.get("hyper_parameters"),
                "signals_used": [] if report is None else list(report.signals_used),
                "signals_dropped": [] if report is None else list(report.signals_dropped),
                "train_s": None if report is None else report.train_s,
            }
            out["evaluation"] = meta.get("evaluation")
        return out

    def route_history(self, params: Mapping[str, str]) -> dict[str, Any]:
        now = self.data_time()
        since = parse_instant(params.get("since", "-24h"), "since", now=now)
        name = params.get("machine")
        if name is None:  # the machine with the lowest estimate now
            ranked = sorted((m.last["rul"], n) for n, m in self.machines.items() if m.last)
            if not ranked:
                return {"machine": None, "warning_hours": self.config.warning_hours, "points": []}
            name = ranked[0][1]
        elif name not in self.machines:
            raise NotFound(f"machine {name!r} is not watched; machines: {sorted(self.machines)}")
        view = next((d for d in self.ctx.devices() if d.name == name), None)
        series: dict[str, Series] = {}
        for sig in SIGNALS_OUT:
            sid = None if view is None else view.signals.get(sig)
            if sid is not None:
                series[sig] = self.ctx.read(sid, since, 2**62)
        points: list[dict[str, Any]] = []
        if "rul_hours" in series:
            main = series["rul_hours"]
            others = {k: dict(zip(s.ts.tolist(), s.values.tolist(), strict=True))
                      for k, s in series.items() if k != "rul_hours"}  # fmt: skip
            for t, v in zip(main.ts.tolist(), main.values.tolist(), strict=True):
                lo = others.get("rul_lower_hours", {}).get(t)
                hi = others.get("rul_upper_hours", {}).get(t)
                points.append({"ts": t, "time": to_iso(t), "rul_hours": v,
                               "lower_hours": lo, "upper_hours": hi})  # fmt: skip
        return {
            "machine": name,
            "warning_hours": self.config.warning_hours,
            "cap_hours": self.config.cap_hours,
            "points": points,
        }

    @classmethod
    def routes(cls) -> Sequence[AppRoute]:
        return (
            AppRoute(
                "machines",
                "Every watched machine: remaining life and its interval, warning, run start",
                PredictiveApp.route_machines,
            ),
            AppRoute(
                "model",
                "The active RUL model: version, training report, evaluation, signals",
                PredictiveApp.route_model,
            ),
            AppRoute(
                "history",
                "A machine's recent remaining-life estimates",
                PredictiveApp.route_history,
                {
                    "machine": "the machine (default: the one with the lowest estimate now)",
                    "since": "from then on (RFC 3339, epoch ms, 'now', '-8h'; default -24h)",
                },
            ),
        )

    @classmethod
    def panels(cls) -> Sequence[Panel]:
        return (
            Panel("machines", "Remaining useful life", "table", "machines",
                  "Hours until a bearing failure is expected, per machine"),
            Panel("model", "RUL model", "kpi", "model",
                  "The active model's version, cross-validation and held-out errors"),
            Panel("history", "Remaining life", "line-chart", "history",
                  "A machine's estimate and its 80 % interval over time"),
        )  # fmt: skip


def _evaluate(model: RulModel, runs: list[Run]) -> dict[str, Any]:
    """Scores on held-out failed runs, each cut at :data:`EVAL_HOURS` before its failure."""
    heads: list[Run] = []
    truth: list[float] = []
    for r in runs:
        left = r.rul()
        for h in EVAL_HOURS:
            idx = np.flatnonzero(left >= h)
            if len(idx):
                i = int(idx[-1])
                heads.append(r.head(i + 1))
                truth.append(float(left[i]))
    if not heads:
        return {"runs": [r.unit for r in runs], "cuts": 0}
    ev = evaluate(model, heads, np.asarray(truth))
    return {**ev.to_dict(), "runs": [r.unit for r in runs], "cuts": len(heads),
            "cut_hours": list(EVAL_HOURS)}  # fmt: skip
