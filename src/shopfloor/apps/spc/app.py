"""The SPC app: Shewhart control charts on live signals, with run rules and capability.

Each configured chart watches one signal on one device (or one chart per device of a type).
Points arrive through :meth:`SpcApp.on_points`; consecutive accepted points form subgroups
(X-bar/R, X-bar/S) or stand alone (I-MR). A point is accepted when

- it is a number (a failed poll's NaN is skipped),
- ``only_when`` holds: the latest value of another signal of the device at or before the
  point equals ``equals`` (e.g. ``state == 2``, running); a point taken while it does not hold
  also discards the unfinished subgroup, so that a subgroup never spans a stop,
- and, with ``subgroup_every_s``, it is the first point of its period (one point per period,
  periods aligned to the epoch, so a restart does not shift them).

Phase I collects ``baseline_subgroups`` subgroups and freezes the limits (``*_limits`` of the
library); phase II evaluates every new subgroup against them (``evaluate_*``) and through a
streaming :class:`~shopfloor.apps.spc.run_rules.RuleEvaluator`. A subgroup whose dispersion (R,
S or moving range) lies outside its own limits counts as the extra violation
``dispersion_beyond``.

With ``reset_on`` (a recipe setpoint), a change of that signal's value is a deliberate process
change: the chart starts a new phase I (event ``chart_reset``), because limits of the old
recipe say nothing about the new one.

Derived signals, on the chart's device (``<id>`` is the chart id):

- ``spc_<id>_xbar`` and ``spc_<id>_r`` / ``spc_<id>_s`` (X-bar charts), or ``spc_<id>_x`` and
  ``spc_<id>_mr`` (I-MR): the plotted statistics, one point per subgroup, in both phases;
- ``spc_<id>_violations``: in phase II, the number of violations each subgroup completes (0
  when none), and a 0 when a reset ends phase II. A threshold rule ``spc:<id>-<device>``
  (> 0.5, priority 3) on it raises alarms with the ISA-18.2 life cycle.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Final, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from shopfloor.apps.sdk import (
    App,
    AppConfig,
    AppContext,
    AppManifest,
    AppRoute,
    Panel,
    PointBatch,
    Series,
)
from shopfloor.apps.spc.capability import (
    Capability,
    capability_from_individuals,
    capability_from_subgroups,
)
from shopfloor.apps.spc.charts import (
    ChartPoints,
    Limits,
    evaluate_individuals,
    evaluate_subgroups,
    imr_limits,
    xbar_r_limits,
    xbar_s_limits,
)
from shopfloor.apps.spc.run_rules import NELSON, RULES, WESTERN_ELECTRIC, RuleEvaluator
from shopfloor.core.errors import BadInput, NotFound
from shopfloor.core.timeutil import parse_instant

__all__ = ["ChartConfig", "OnlyWhen", "SpcApp", "SpcConfig"]

HISTORY_MAX: Final = 300  # subgroups kept per chart for the routes
DEFAULT_LAST: Final = 50
DISPERSION_RULE: Final = "dispersion_beyond"
DISPERSION_TEXT: Final = "Subgroup dispersion (R, S or moving range) beyond its control limits"
RULE_SETS: Final[Mapping[str, tuple[str, ...]]] = {
    "nelson": NELSON,
    "western_electric": WESTERN_ELECTRIC,
}
STATE_VERSION: Final = 1


def _field_error(loc: str, message: str, value: object) -> ValidationError:
    """A validation error located at ``loc`` (so the BadInput names that field)."""
    return ValidationError.from_exception_data(
        "ChartConfig",
        [InitErrorDetails(type=PydanticCustomError("spc", message), loc=(loc,), input=value)],
    )


class OnlyWhen(AppConfig):
    """Take points only while another signal of the device has a value (e.g. state == 2)."""

    signal: str = Field(min_length=1, max_length=200)
    equals: float


class ChartConfig(AppConfig):
    """One control chart (or one per device of ``device_type``)."""

    id: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,39}$",
        description="Chart id: a-z, 0-9, '_'; names the derived signals spc_<id>_*.",
    )
    device: str | None = Field(None, min_length=1, max_length=200)
    device_type: str | None = Field(None, min_length=1, max_length=200)
    signal: str = Field(min_length=1, max_length=200)
    chart: Literal["xbar_r", "xbar_s", "imr"] = "xbar_r"
    subgroup_size: int | None = Field(
        None, ge=1, le=100, description="Points per subgroup: 5 for X-bar charts, 1 for I-MR."
    )
    subgroup_every_s: float | None = Field(
        None, gt=0, le=86400, description="Take one point per period (none: every point)."
    )
    baseline_subgroups: int = Field(25, ge=2, le=200)
    rules: str | list[str] = Field(
        "nelson",
        description="'nelson', 'western_electric' or a list of rule ids (nelson_1, we_2, ...).",
    )
    lsl: float | None = None
    usl: float | None = None
    spec_relative_to: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="A signal (a recipe setpoint) whose value lsl and usl are offsets from.",
    )
    only_when: OnlyWhen | None = None
    reset_on: str | None = Field(
        None, min_length=1, max_length=200, description="Restart phase I when it changes."
    )
    recent_subgroups: int = Field(25, ge=2, le=HISTORY_MAX)
    unit: str = Field("", max_length=40, description="Unit of the signal (for the statistics).")

    @field_validator("rules")
    @classmethod
    def _rules(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, str) and v not in RULE_SETS:
            raise ValueError(f"rules must be one of {sorted(RULE_SETS)} or a list of rule ids")
        if isinstance(v, list):
            if not v:
                raise ValueError("give at least one rule id")
            unknown = [r for r in v if r not in RULES]
            if unknown:
                raise ValueError(f"unknown rule id(s) {unknown}; known: {sorted(RULES)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ChartConfig:
        if (self.device is None) == (self.device_type is None):
            raise _field_error("device", "give exactly one of device and device_type", None)
        if self.chart == "imr":
            if self.subgroup_size not in (None, 1):
                raise _field_error(
                    "subgroup_size",
                    "an imr chart takes single values: subgroup_size must be 1 or left out",
                    self.subgroup_size,
                )
        elif self.subgroup_size is not None and self.subgroup_size < 2:
            raise _field_error(
                "subgroup_size",
                f"an {self.chart} chart needs subgroups of at least 2 points "
                "(use chart 'imr' for single values)",
                self.subgroup_size,
            )
        if self.lsl is not None and self.usl is not None and self.lsl >= self.usl:
            raise _field_error("lsl", "lsl must be below usl", self.lsl)
        if self.spec_relative_to is not None and self.lsl is None and self.usl is None:
            raise _field_error("spec_relative_to", "needs lsl or usl (the offsets)", None)
        return self

    @property
    def size(self) -> int:
        if self.chart == "imr":
            return 1
        return 5 if self.subgroup_size is None else self.subgroup_size

    @property
    def rule_ids(self) -> tuple[str, ...]:
        if isinstance(self.rules, str):
            return RULE_SETS[self.rules]
        return tuple(dict.fromkeys(self.rules))

    @property
    def statistic(self) -> str:
        return f"spc_{self.id}_x" if self.chart == "imr" else f"spc_{self.id}_xbar"

    @property
    def dispersion(self) -> str:
        suffix = {"xbar_r": "r", "xbar_s": "s", "imr": "mr"}[self.chart]
        return f"spc_{self.id}_{suffix}"

    @property
    def violations_signal(self) -> str:
        return f"spc_{self.id}_violations"


class SpcConfig(AppConfig):
    charts: list[ChartConfig] = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _unique(self) -> SpcConfig:
        ids = [c.id for c in self.charts]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"chart ids repeat: {dup}")
        return self


EXAMPLE_CHART: Final[Mapping[str, Any]] = {
    "id": "seal_temp",
    "device_type": "simulated-packer",
    "signal": "seal_temp",
    "chart": "xbar_r",
    "subgroup_size": 5,
    "subgroup_every_s": 60.0,
    "baseline_subgroups": 25,
    "rules": "nelson",
    "lsl": -1.0,
    "usl": 1.0,
    "spec_relative_to": "seal_setpoint",
    "only_when": {"signal": "state", "equals": 2.0},
    "reset_on": "seal_setpoint",
    "unit": "°C",
}


@dataclass
class _Ids:
    value: int
    gate: int | None
    reset: int | None
    reference: int | None


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _cap_json(cap: Capability | None) -> dict[str, Any] | None:
    if cap is None:
        return None
    out = asdict(cap)
    for key in ("cpk_interval", "ppk_interval"):
        if out[key] is not None:
            out[key] = [float(v) for v in out[key]]
    return {k: (_finite(v) if isinstance(v, float) else v) for k, v in out.items()}


class _Chart:
    """One chart on one device: its subgroups, limits, rule state and history."""

    def __init__(self, cfg: ChartConfig, device: str) -> None:
        self.cfg = cfg
        self.device = device
        self.ids: _Ids | None = None
        self.ensured = False  # the alarm rule (not state: ensured again after a restart)
        self.start()
        self.subgroups = 0
        self.violations = 0
        self.resets = 0
        self.discarded = 0
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_MAX)
        self.recent: deque[list[float]] = deque(maxlen=cfg.recent_subgroups)
        self.gate: float | None = None
        self.reset_value: float | None = None
        self.reference: float | None = None
        self.last_bucket: int | None = None

    @property
    def key(self) -> str:
        return f"{self.cfg.id}@{self.device}"

    @property
    def signature(self) -> str:
        return json.dumps(self.cfg.model_dump(mode="json"), sort_keys=True)

    def start(self) -> None:
        """(Re)start phase I."""
        self.pending: list[float] = []
        self.baseline: list[list[float]] = []
        self.limits: Limits | None = None
        self.evaluator: RuleEvaluator | None = None
        self.previous: float | None = None  # last individual value (I-MR moving range)
        self.baseline_capability: dict[str, Any] | None = None
        self.started_ts: int | None = None
        self.frozen_ts: int | None = None
        self.flat = False  # the baseline showed no variation (reported once per phase I)

    @property
    def phase(self) -> str:
        return "baseline" if self.limits is None else "monitoring"

    # -- state -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "signature": self.signature,
            "device": self.device,
            "pending": list(self.pending),
            "baseline": [list(g) for g in self.baseline],
            "limits": None if self.limits is None else self.limits.to_dict(),
            "evaluator": None if self.evaluator is None else self.evaluator.snapshot(),
            "previous": self.previous,
            "baseline_capability": self.baseline_capability,
            "started_ts": self.started_ts,
            "frozen_ts": self.frozen_ts,
            "flat": self.flat,
            "subgroups": self.subgroups,
            "violations": self.violations,
            "resets": self.resets,
            "discarded": self.discarded,
            "history": list(self.history),
            "recent": [list(g) for g in self.recent],
            "gate": self.gate,
            "reset_value": self.reset_value,
            "reference": self.reference,
            "last_bucket": self.last_bucket,
        }

    @classmethod
    def from_state(cls, cfg: ChartConfig, state: Mapping[str, Any]) -> _Chart:
        chart = cls(cfg, str(state["device"]))
        chart.pending = [float(v) for v in state["pending"]]
        chart.baseline = [[float(v) for v in g] for g in state["baseline"]]
        chart.limits = None if state["limits"] is None else Limits.from_dict(state["limits"])
        ev = state["evaluator"]
        chart.evaluator = None if ev is None else RuleEvaluator.from_snapshot(ev)
        chart.previous = None if state["previous"] is None else float(state["previous"])
        chart.baseline_capability = state["baseline_capability"]
        chart.started_ts = state["started_ts"]
        chart.frozen_ts = state["frozen_ts"]
        chart.flat = bool(state["flat"])
        chart.subgroups = int(state["subgroups"])
        chart.violations = int(state["violations"])
        chart.resets = int(state["resets"])
        chart.discarded = int(state["discarded"])
        chart.history.extend(dict(h) for h in state["history"])
        chart.recent.extend([float(v) for v in g] for g in state["recent"])
        for name in ("gate", "reset_value", "reference"):
            value = state[name]
            setattr(chart, name, None if value is None else float(value))
        chart.last_bucket = None if state["last_bucket"] is None else int(state["last_bucket"])
        return chart

    # -- specification and capability ------------------------------------------------------

    def spec(self) -> tuple[float | None, float | None]:
        lsl, usl = self.cfg.lsl, self.cfg.usl
        if self.cfg.spec_relative_to is None:
            return lsl, usl
        if self.reference is None:
            return None, None
        ref = self.reference
        return (None if lsl is None else ref + lsl), (None if usl is None else ref + usl)

    def capability_of(self, groups: Sequence[Sequence[float]]) -> dict[str, Any] | None:
        lsl, usl = self.spec()
        if lsl is None and usl is None:
            return None
        values = [v for g in groups for v in g]
        if len(values) < 2:
            return None
        try:
            if self.cfg.chart == "imr":
                cap = capability_from_individuals(values, lsl=lsl, usl=usl)
            else:
                method: Literal["range", "stdev"] = (
                    "stdev" if self.cfg.chart == "xbar_s" else "range"
                )
                cap = capability_from_subgroups(groups, lsl=lsl, usl=usl, method=method)
        except BadInput:
            return None
        return _cap_json(cap)

    def recent_capability(self) -> dict[str, Any] | None:
        return self.capability_of(list(self.recent))


@dataclass
class _Out:
    """What one on_points call writes, gathered per (device, signal)."""

    points: dict[tuple[str, str, str], list[tuple[int, float]]]

    def add(self, device: str, signal: str, unit: str, ts: int, value: float) -> None:
        self.points.setdefault((device, signal, unit), []).append((ts, value))


def _latest(ts: np.ndarray[Any, Any], values: np.ndarray[Any, Any], at: int) -> float | None:
    i = int(np.searchsorted(ts, at, side="right"))
    return None if i == 0 else float(values[i - 1])


def _clean(series: Series | None) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    if series is None:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    ok = np.isfinite(series.values)
    return series.ts[ok], series.values[ok]


class SpcApp(App[SpcConfig]):
    manifest = AppManifest(
        name="spc",
        title="SPC",
        version="1.0.0",
        summary="Shewhart control charts with Nelson / Western Electric rules and capability.",
        description=(
            "X-bar/R, X-bar/S and I-MR charts on live signals: limits from a baseline, then "
            "frozen; run-rule violations raise alarms; Cp, Cpk, Pp and Ppk on the baseline "
            "and on recent data."
        ),
        author="Shopfloor",
        tick_s=10.0,
    )
    config_model = SpcConfig
    example_config: ClassVar[Mapping[str, Any]] = {"charts": [dict(EXAMPLE_CHART)]}

    def __init__(self, ctx: AppContext, config: SpcConfig) -> None:
        super().__init__(ctx, config)
        self.by_id = {c.id: c for c in config.charts}
        self.charts: dict[str, _Chart] = {}
        self._sync()

    # -- which charts, which signals ----------------------------------------------------

    def _sync(self) -> None:
        """Make a chart per configured (chart, device) and look up its signal ids."""
        views = {d.name: d for d in self.ctx.devices()}
        for cfg in self.config.charts:
            if cfg.device is not None:
                names = [cfg.device] if cfg.device in views else []
            else:
                names = sorted(n for n, d in views.items() if d.device_type == cfg.device_type)
            for name in names:
                sigs = views[name].signals
                if cfg.signal not in sigs:
                    continue
                key = f"{cfg.id}@{name}"
                chart = self.charts.get(key)
                if chart is None:
                    chart = self.charts[key] = _Chart(cfg, name)
                chart.ids = _Ids(
                    sigs[cfg.signal],
                    None if cfg.only_when is None else sigs.get(cfg.only_when.signal, -1),
                    None if cfg.reset_on is None else sigs.get(cfg.reset_on, -1),
                    None if cfg.spec_relative_to is None else sigs.get(cfg.spec_relative_to, -1),
                )

    def subscriptions(self) -> Sequence[int]:
        self._sync()
        out: set[int] = set()
        for chart in self.charts.values():
            if chart.ids is None:
                continue
            ids = chart.ids
            out.update(
                i
                for i in (ids.value, ids.gate, ids.reset, ids.reference)
                if i is not None and i >= 0
            )
        return sorted(out)

    # -- streaming ---------------------------------------------------------------------

    def on_points(self, batch: PointBatch) -> None:
        groups = batch.by_signal()
        out = _Out({})
        for chart in self.charts.values():
            if chart.ids is not None and chart.ids.value in groups:
                self._feed(chart, groups, out)
            elif chart.ids is not None:
                self._aux_only(chart, groups, out)
        self._flush(out)

    def _series(self, groups: Mapping[int, Series], sid: int | None) -> Any:
        return _clean(groups.get(sid) if sid is not None and sid >= 0 else None)

    def _aux_only(self, chart: _Chart, groups: Mapping[int, Series], out: _Out) -> None:
        """No value in the batch: keep the gate, reference and reset values current."""
        assert chart.ids is not None
        gts, gv = self._series(groups, chart.ids.gate)
        if len(gts):
            chart.gate = float(gv[-1])
        rts, rv = self._series(groups, chart.ids.reference)
        if len(rts):
            chart.reference = float(rv[-1])
        sts, sv = self._series(groups, chart.ids.reset)
        for t, v in zip(sts.tolist(), sv.tolist(), strict=True):
            self._maybe_reset(chart, int(t), float(v), out)

    def _maybe_reset(self, chart: _Chart, ts: int, value: float, out: _Out) -> None:
        old = chart.reset_value
        chart.reset_value = value
        if old is None or old == value:
            return
        was_monitoring = chart.limits is not None
        chart.start()
        chart.resets += 1
        chart.recent.clear()
        if was_monitoring:  # clears an alarm raised by the old recipe's last subgroups
            out.add(chart.device, chart.cfg.violations_signal, "", ts, 0.0)
        self.ctx.event(
            "chart_reset",
            f"SPC chart {chart.cfg.id} on {chart.device}: {chart.cfg.reset_on} changed from "
            f"{old:g} to {value:g}; collecting a new baseline",
            device=chart.device,
            details={"chart": chart.cfg.id, "ts": ts, "from": old, "to": value},
        )

    def _feed(self, chart: _Chart, groups: Mapping[int, Series], out: _Out) -> None:
        assert chart.ids is not None
        cfg = chart.cfg
        vts, vv = self._series(groups, chart.ids.value)
        gts, gv = self._series(groups, chart.ids.gate)
        rts, rv = self._series(groups, chart.ids.reference)
        sts, sv = self._series(groups, chart.ids.reset)
        resets = list(zip(sts.tolist(), sv.tolist(), strict=True))
        r = 0
        every = None if cfg.subgroup_every_s is None else int(cfg.subgroup_every_s * 1e9)
        for t_raw, v_raw in zip(vts.tolist(), vv.tolist(), strict=True):
            ts, value = int(t_raw), float(v_raw)
            while r < len(resets) and resets[r][0] <= ts:
                self._maybe_reset(chart, int(resets[r][0]), float(resets[r][1]), out)
                r += 1
            gate = _latest(gts, gv, ts)
            if gate is not None:
                chart.gate = gate
            ref = _latest(rts, rv, ts)
            if ref is not None:
                chart.reference = ref
            if cfg.only_when is not None and chart.gate != cfg.only_when.equals:
                if chart.pending:
                    chart.discarded += 1
                    chart.pending = []
                continue
            if every is not None:
                bucket = ts // every
                if bucket == chart.last_bucket:
                    continue
                chart.last_bucket = bucket
            chart.pending.append(value)
            if len(chart.pending) >= cfg.size:
                group, chart.pending = chart.pending, []
                self._subgroup(chart, ts, group, out)
        for t, v in resets[r:]:
            self._maybe_reset(chart, int(t), float(v), out)
        if len(gts):
            chart.gate = float(gv[-1])
        if len(rts):
            chart.reference = float(rv[-1])

    def _subgroup(self, chart: _Chart, ts: int, group: list[float], out: _Out) -> None:
        """A complete subgroup (one value for I-MR) at ``ts``, its last point's time."""
        cfg = chart.cfg
        chart.subgroups += 1
        if chart.started_ts is None:
            chart.started_ts = ts
        if chart.limits is None:
            self._baseline(chart, ts, group, out)
            return
        limits = chart.limits
        points = self._evaluate(chart, limits, group)
        value = float(points.values[0])
        spread = None if points.dispersion is None else _finite(float(points.dispersion[0]))
        assert chart.evaluator is not None
        found = [v.rule for v in chart.evaluator.update(value, sigma=float(points.sigma[0]))]
        if points.dispersion_beyond is not None and bool(points.dispersion_beyond[0]):
            found.append(DISPERSION_RULE)
        chart.previous = group[-1]
        chart.recent.append(group)
        chart.violations += len(found)
        chart.history.append(self._row(chart, ts, value, spread, found, points))
        out.add(chart.device, cfg.statistic, cfg.unit, ts, value)
        if spread is not None:
            out.add(chart.device, cfg.dispersion, cfg.unit, ts, spread)
        out.add(chart.device, cfg.violations_signal, "", ts, float(len(found)))
        for rule in found:
            text = RULES[rule].description if rule in RULES else DISPERSION_TEXT
            self.ctx.event(
                "violation",
                f"SPC chart {cfg.id} on {chart.device}: {rule}: {text}",
                device=chart.device,
                details={
                    "chart": cfg.id,
                    "rule": rule,
                    "description": text,
                    "ts": ts,
                    "value": value,
                    "subgroup": chart.subgroups,
                },
            )

    def _evaluate(self, chart: _Chart, limits: Limits, group: list[float]) -> ChartPoints:
        if chart.cfg.chart == "imr":
            return evaluate_individuals(limits, group, previous=chart.previous)
        return evaluate_subgroups(limits, [group])

    def _row(
        self,
        chart: _Chart,
        ts: int,
        value: float,
        spread: float | None,
        found: list[str],
        points: ChartPoints | None,
    ) -> dict[str, Any]:
        def at(arr: Any) -> float | None:
            return None if arr is None else _finite(float(arr[0]))

        return {
            "ts": ts,
            "value": value,
            "dispersion": spread,
            "center": None if points is None else at(points.center),
            "lcl": None if points is None else at(points.lcl),
            "ucl": None if points is None else at(points.ucl),
            "dispersion_center": None if points is None else at(points.dispersion_center),
            "dispersion_lcl": None if points is None else at(points.dispersion_lcl),
            "dispersion_ucl": None if points is None else at(points.dispersion_ucl),
            "phase": "baseline" if points is None else "monitoring",
            "violations": found,
        }

    def _baseline(self, chart: _Chart, ts: int, group: list[float], out: _Out) -> None:
        cfg = chart.cfg
        if cfg.chart == "imr":
            value = group[0]
            spread = None if chart.previous is None else abs(group[0] - chart.previous)
            chart.previous = group[0]
        else:
            arr = np.asarray(group)
            value = float(arr.mean())
            spread = float(arr.max() - arr.min() if cfg.chart == "xbar_r" else arr.std(ddof=1))
        chart.baseline.append(group)
        chart.history.append(self._row(chart, ts, value, spread, [], None))
        out.add(chart.device, cfg.statistic, cfg.unit, ts, value)
        if spread is not None:
            out.add(chart.device, cfg.dispersion, cfg.unit, ts, spread)
        if len(chart.baseline) < cfg.baseline_subgroups:
            return
        try:
            limits = self._limits(chart)
        except BadInput as exc:  # no variation at all: slide the window and keep collecting
            chart.baseline.pop(0)
            if not chart.flat:
                chart.flat = True
                self.ctx.event(
                    "baseline_flat",
                    f"SPC chart {cfg.id} on {chart.device}: {exc.message}",
                    device=chart.device,
                    details={"chart": cfg.id, "ts": ts},
                )
            return
        chart.limits = limits
        plotted_sigma = (limits.ucl - limits.center) / 3.0
        chart.evaluator = RuleEvaluator(limits.center, plotted_sigma, cfg.rule_ids)
        chart.frozen_ts = ts
        chart.baseline_capability = chart.capability_of(chart.baseline)
        self.ctx.event(
            "baseline_frozen",
            f"SPC chart {cfg.id} on {chart.device}: limits frozen from "
            f"{len(chart.baseline)} subgroups: center {limits.center:.4g}, "
            f"lcl {limits.lcl:.4g}, ucl {limits.ucl:.4g}",
            device=chart.device,
            details={"chart": cfg.id, "ts": ts, "limits": limits.to_dict()},
        )

    def _limits(self, chart: _Chart) -> Limits:
        kind = chart.cfg.chart
        if kind == "imr":
            return imr_limits([g[0] for g in chart.baseline])
        if kind == "xbar_s":
            return xbar_s_limits(chart.baseline)
        return xbar_r_limits(chart.baseline)

    def _flush(self, out: _Out) -> None:
        for (device, signal, unit), pts in out.points.items():
            ts = np.array([p[0] for p in pts], np.int64)
            values = np.array([p[1] for p in pts], np.float64)
            self.ctx.write(device, signal, Series(ts, values), unit=unit)
        for chart in self.charts.values():
            if chart.limits is not None and not chart.ensured:
                self._ensure_rule(chart)

    def _ensure_rule(self, chart: _Chart) -> None:
        cfg = chart.cfg
        if cfg.violations_signal not in self._device_signals(chart.device):
            return  # written with the first phase II subgroup
        self.ctx.ensure_rule(
            f"{cfg.id}-{chart.device}",
            device=chart.device,
            definition={"kind": "threshold", "signal": cfg.violations_signal, "limit": 0.5},
            priority=3,
            message=f"SPC chart {cfg.id}: {cfg.signal} out of statistical control",
        )
        chart.ensured = True

    def _device_signals(self, device: str) -> Mapping[str, int]:
        view = next((d for d in self.ctx.devices() if d.name == device), None)
        return {} if view is None else view.signals

    def on_tick(self, now_ns: int) -> None:
        self._sync()
        for chart in self.charts.values():
            if chart.limits is not None and not chart.ensured:
                self._ensure_rule(chart)

    # -- state -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "charts": {key: c.state() for key, c in sorted(self.charts.items())},
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            return
        charts: dict[str, _Chart] = {}
        for key, saved in dict(state.get("charts", {})).items():
            cfg = self.by_id.get(str(key).split("@", 1)[0])
            if cfg is None:
                continue  # the chart is no longer configured
            fresh = _Chart(cfg, str(saved["device"]))
            if saved.get("signature") != fresh.signature:
                self.ctx.event(  # its config changed: saved limits do not apply any more
                    "chart_config_changed",
                    f"SPC chart {cfg.id} on {fresh.device}: its config changed; "
                    "collecting a new baseline",
                    device=fresh.device,
                    details={"chart": cfg.id},
                )
                continue
            charts[key] = _Chart.from_state(cfg, saved)
        for key, chart in self.charts.items():
            if key in charts:
                charts[key].ids = chart.ids
        self.charts = charts
        self._sync()

    def status(self) -> dict[str, Any]:
        return {
            "charts": len(self.charts),
            "monitoring": sum(c.limits is not None for c in self.charts.values()),
            "subgroups": sum(c.subgroups for c in self.charts.values()),
            "violations": sum(c.violations for c in self.charts.values()),
        }

    # -- routes --------------------------------------------------------------------------

    def _find(self, params: Mapping[str, str]) -> _Chart | None:
        cid = params.get("id")
        device = params.get("device")
        if cid is None:
            if device is not None:
                raise BadInput("give the chart's id with its device", "id")
            return next((self.charts[k] for k in sorted(self.charts)), None)
        if cid not in self.by_id:
            raise NotFound(f"no SPC chart {cid!r}; charts: {sorted(self.by_id)}")
        mine = sorted((k, c) for k, c in self.charts.items() if c.cfg.id == cid)
        if device is None:
            if not mine:
                raise NotFound(f"SPC chart {cid!r} has no device yet")
            return mine[0][1]
        for _, c in mine:
            if c.device == device:
                return c
        raise NotFound(f"SPC chart {cid!r} has no device {device!r}")

    @staticmethod
    def _limits_json(chart: _Chart) -> dict[str, Any] | None:
        if chart.limits is None:
            return None
        d = chart.limits.to_dict()
        d.pop("version", None)
        return d

    def _summary(self, chart: _Chart) -> dict[str, Any]:
        last = chart.history[-1] if chart.history else None
        lsl, usl = chart.spec()
        return {
            "key": chart.key,
            "id": chart.cfg.id,
            "device": chart.device,
            "signal": chart.cfg.signal,
            "kind": chart.cfg.chart,
            "subgroup_size": chart.cfg.size,
            "rules": list(chart.cfg.rule_ids),
            "phase": chart.phase,
            "baseline": {"collected": len(chart.baseline), "needed": chart.cfg.baseline_subgroups},
            "limits": self._limits_json(chart),
            "last": last,
            "subgroups": chart.subgroups,
            "violations": chart.violations,
            "resets": chart.resets,
            "lsl": lsl,
            "usl": usl,
            "capability": {
                "baseline": chart.baseline_capability,
                "recent": chart.recent_capability(),
            },
        }

    def route_charts(self, params: Mapping[str, str]) -> dict[str, Any]:
        return {"charts": [self._summary(self.charts[k]) for k in sorted(self.charts)]}

    def route_chart(self, params: Mapping[str, str]) -> dict[str, Any]:
        last = _int_param(params, "last", DEFAULT_LAST, 1, HISTORY_MAX)
        since = None if "since" not in params else parse_instant(params["since"], "since")
        chart = self._find(params)
        if chart is None:
            return {"id": None, "device": None, "phase": None, "limits": None, "points": []}
        rows = [h for h in chart.history if since is None or h["ts"] >= since]
        return {
            "id": chart.cfg.id,
            "device": chart.device,
            "signal": chart.cfg.signal,
            "kind": chart.cfg.chart,
            "phase": chart.phase,
            "limits": self._limits_json(chart),
            "points": rows[-last:],
        }

    def route_capability(self, params: Mapping[str, str]) -> dict[str, Any]:
        chart = self._find(params)
        if chart is None:
            return {"id": None, "device": None, "baseline": None, "recent": None}
        lsl, usl = chart.spec()
        return {
            "id": chart.cfg.id,
            "device": chart.device,
            "lsl": lsl,
            "usl": usl,
            "baseline": chart.baseline_capability,
            "recent": chart.recent_capability(),
            "recent_subgroups": len(chart.recent),
        }

    @classmethod
    def routes(cls) -> Sequence[AppRoute]:
        which = {
            "id": "chart id (default: the first chart)",
            "device": "device of the chart (default: its first device)",
        }
        return (
            AppRoute("charts", "Every chart: phase, limits, last subgroup, capability", _charts),
            AppRoute(
                "chart",
                "The last subgroups of one chart with limits and violations",
                _chart,
                {
                    **which,
                    "last": f"how many subgroups (1-{HISTORY_MAX}, default {DEFAULT_LAST})",
                    "since": "only subgroups from this time (RFC 3339, epoch ms, now, -8h)",
                },
            ),
            AppRoute("capability", "Cp, Cpk, Pp, Ppk of one chart", _capability, which),
        )

    @classmethod
    def panels(cls) -> Sequence[Panel]:
        return (
            Panel("chart", "Control chart", "control-chart", "chart"),
            Panel("charts", "SPC charts", "table", "charts"),
        )


def _charts(app: SpcApp, params: Mapping[str, str]) -> dict[str, Any]:
    return app.route_charts(params)


def _chart(app: SpcApp, params: Mapping[str, str]) -> dict[str, Any]:
    return app.route_chart(params)


def _capability(app: SpcApp, params: Mapping[str, str]) -> dict[str, Any]:
    return app.route_capability(params)


def _int_param(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadInput(f"{name} must be a whole number, got {raw!r}", name) from None
    if not low <= value <= high:
        raise BadInput(f"{name} must be between {low} and {high}, got {value}", name)
    return value
