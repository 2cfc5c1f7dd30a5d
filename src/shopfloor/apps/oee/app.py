"""The OEE app: ISO 22400-2 KPIs per machine and shift, live and for any past range.

Built on the computation library of this package (calendar, states, kpis, rollup). Per
machine of the tenant (every device with the state signal, or those of ``device_type``):

- **Live.** Every tick (60 s) the app reads what the historian got since the last tick for
  the machine's state, reason, counter, product and ideal-cycle-time signals, keeps them
  compactly in memory (state and product change points; counter increments summed per
  product segment, which gives exactly the library's figures), and computes the shift in
  progress with :func:`current_shift_oee`. It writes ``oee``, ``availability``,
  ``effectiveness`` and ``quality_ratio`` (fractions) and ``oee_armed`` (0/1) per machine
  and rolls the machines up machine > line > area > site with :func:`roll_up` (sums of the
  inputs, never means of ratios). A rule per machine raises a low-priority alarm while the
  shift's OEE is below ``oee_warning`` once ``warning_after_min`` of the shift have passed.
- **Past ranges.** The ``report`` and ``downtime`` routes compute any range of up to 31
  days from the historian on demand, one shift instance at a time (bounded memory).

Samples that are NaN (a failed poll) are skipped: the last good value holds, as on a PLC.
A point that arrives more than two minutes behind what was read already (late data) makes
the machine be read again from the shift start at the next tick.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import numpy as np
from pydantic import Field, field_validator, model_validator

from shopfloor.apps.oee.calendar import ShiftCalendar, ShiftInstance, expand, parse_calendar
from shopfloor.apps.oee.kpis import KpiInputs, Quantities, TimeElements, compute_kpis
from shopfloor.apps.oee.rollup import (
    PeriodRecord,
    current_shift_oee,
    machine_oee,
    merge_reasons,
    roll_up,
    sum_inputs,
)
from shopfloor.apps.oee.states import (
    CATEGORIES,
    CounterSeries,
    ProductSeries,
    StateSeries,
    counter_increments,
)
from shopfloor.apps.sdk import (
    App,
    AppConfig,
    AppContext,
    AppManifest,
    AppRoute,
    DeviceView,
    Panel,
    PointBatch,
    Series,
)
from shopfloor.core.errors import BadInput
from shopfloor.core.timeutil import DAY_NS, parse_instant, to_iso

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CALENDAR",
    "DEFAULT_STATE_MAP",
    "OeeApp",
    "OeeConfig",
    "Track",
    "extend_track",
    "figures",
    "follow_track",
    "inputs_from_json",
    "inputs_to_json",
    "pareto",
    "record_to_json",
    "start_track",
]

NS: Final = 1_000_000_000
MINUTE_NS: Final = 60 * NS
HOUR_NS: Final = 60 * MINUTE_NS
MAX_RANGE_NS: Final = 31 * DAY_NS
# How far back the state (or a counter) at a window start is looked for, widening step by
# step so that a signal sampled every second costs one short read.
LOOKBACKS_NS: Final = (15 * MINUTE_NS, 2 * DAY_NS)
LATE_NS: Final = 2 * MINUTE_NS
ARMED_REFRESH_NS: Final = 15 * MINUTE_NS
GROUP_LEVELS: Final = ("line", "area", "site")
_POSITIONAL_LEVELS: Final = ("machine", "line", "area", "site", "enterprise")

DEFAULT_CALENDAR: Final[dict[str, Any]] = {
    "timezone": "UTC",
    "shifts": [
        {
            "name": "early",
            "start": "06:00",
            "end": "14:00",
            "breaks": [{"start": "10:00", "end": "10:30", "name": "break"}],
        },
        {
            "name": "late",
            "start": "14:00",
            "end": "22:00",
            "breaks": [{"start": "18:00", "end": "18:30", "name": "break"}],
        },
        {
            "name": "night",
            "start": "22:00",
            "end": "06:00",
            "breaks": [{"start": "02:00", "end": "02:30", "name": "break"}],
        },
    ],
}
# The simulator's state codes (docs/simulator.md).
DEFAULT_STATE_MAP: Final[dict[str, str]] = {
    "0": "planned_stop",  # off
    "1": "idle",
    "2": "running",
    "3": "idle",  # blocked / starved
    "4": "down",
    "5": "setup",  # changeover
}
DERIVED: Final = ("oee", "availability", "effectiveness", "quality_ratio")


def _copy_calendar() -> dict[str, Any]:
    import copy

    return copy.deepcopy(DEFAULT_CALENDAR)


class OeeConfig(AppConfig):
    calendar: dict[str, Any] = Field(
        default_factory=_copy_calendar,
        description="Shift calendar (docs/apps/oee.md); default: 3 x 8 h in UTC with breaks.",
    )
    device_type: str | None = Field(None, description="None: every device with the state signal.")
    state_signal: str = "state"
    state_map: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_STATE_MAP),
        description="State code (as text, e.g. '2') -> running/setup/down/idle/planned_stop.",
    )
    reason_signal: str | None = Field("fault_code", description="Reason code; 0 means none.")
    produced: str | None = "total_count"
    good: str | None = "good_count"
    scrap: str | None = "scrap_count"
    rework: str | None = None
    product_signal: str | None = "product_code"
    ideal_cycle_signal: str | None = Field(
        "ideal_cycle_time", description="Ideal cycle time (s) of the product loaded."
    )
    ideal_cycle_s: dict[str, float] = Field(
        default_factory=dict,
        description="Fixed ideal cycle times (s) per product code; 'default' for any other.",
    )
    oee_warning: float | None = Field(
        0.6, ge=0.0, le=1.0, description="Low-priority alarm below this shift OEE; None: none."
    )
    warning_after_min: float = Field(30.0, ge=0.0, le=24 * 60)

    @field_validator("calendar")
    @classmethod
    def _calendar(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            parse_calendar(v)
        except BadInput as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("state_map")
    @classmethod
    def _state_map(cls, v: dict[str, str]) -> dict[str, str]:
        for code, category in v.items():
            if category not in CATEGORIES:
                raise ValueError(f"state {code!r} maps to {category!r}, not one of {CATEGORIES}")
        return v

    @field_validator("ideal_cycle_s")
    @classmethod
    def _ideal(cls, v: dict[str, float]) -> dict[str, float]:
        for product, seconds in v.items():
            if not (math.isfinite(seconds) and seconds > 0):
                raise ValueError(f"ideal cycle time of {product!r} must be > 0 seconds")
        return v

    @model_validator(mode="after")
    def _counts(self) -> OeeConfig:
        if self.produced is None and self.good is None:
            raise ValueError("give a produced or a good counter signal (or both)")
        if self.ideal_cycle_signal is None and not self.ideal_cycle_s:
            raise ValueError("give ideal_cycle_signal or ideal_cycle_s")
        return self

    def counters(self) -> dict[str, str]:
        """Count kind -> signal name, for the kinds configured."""
        named = {"produced": self.produced, "good": self.good, "scrap": self.scrap}
        named["rework"] = self.rework
        return {k: s for k, s in named.items() if s is not None}

    def parsed_calendar(self) -> ShiftCalendar:
        return parse_calendar(self.calendar)


# --------------------------------------------------------------------------- the data kept


def _code(value: float) -> str:
    """A state / product / reason code as text: '2' for 2.0."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass
class Track:
    """One machine's inputs from ``t0`` on, kept compact; ``cursor``: read up to (excl.).

    ``states``: change points of (state code, reason) from the last sample before t0 on;
    ``products``: change points of the product (name) with ``ideal`` the ideal cycle time
    of each name; ``counts``: per count kind, increments ``[ts, amount, segment]`` summed per
    product segment (index into ``products``; an increment belongs to the product active at
    its time, so merging within a segment keeps every figure exact) with ``last`` the last
    cumulative value. ``last``: the last finite value of every signal read.
    """

    t0: int
    cursor: int
    states: list[list[Any]] = field(default_factory=list)  # [ts, code, reason | None]
    products: list[list[Any]] = field(default_factory=list)  # [ts, name]
    ideal: dict[str, float] = field(default_factory=dict)
    counts: dict[str, list[list[Any]]] = field(default_factory=dict)  # [ts, amount, seg]
    last: dict[str, float] = field(default_factory=dict)  # role -> last finite value
    started: bool = False  # the values before t0 were looked up

    def to_json(self) -> dict[str, Any]:
        return {
            "t0": self.t0,
            "cursor": self.cursor,
            "states": self.states,
            "products": self.products,
            "ideal": self.ideal,
            "counts": self.counts,
            "last": self.last,
            "started": self.started,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Track:
        return cls(
            int(raw["t0"]),
            int(raw["cursor"]),
            [list(s) for s in raw.get("states", [])],
            [list(p) for p in raw.get("products", [])],
            {str(k): float(v) for k, v in raw.get("ideal", {}).items()},
            {str(k): [list(c) for c in v] for k, v in raw.get("counts", {}).items()},
            {str(k): float(v) for k, v in raw.get("last", {}).items()},
            bool(raw.get("started", False)),
        )

    # -- for the library --------------------------------------------------------------------

    def state_series(self) -> StateSeries:
        return StateSeries(
            np.array([s[0] for s in self.states], dtype=np.int64),
            [s[1] for s in self.states],
            [s[2] for s in self.states],
        )

    def product_series(self) -> ProductSeries | None:
        if not self.products:
            return None
        return ProductSeries(
            np.array([p[0] for p in self.products], dtype=np.int64),
            [p[1] for p in self.products],
        )

    def counter_series(self, kinds: Sequence[str]) -> dict[str, CounterSeries]:
        out = {}
        for kind in kinds:
            cells = self.counts.get(kind, [])
            out[kind] = CounterSeries(
                np.array([c[0] for c in cells], dtype=np.int64),
                np.array([c[1] for c in cells], dtype=np.float64),
                cumulative=False,
            )
        return out


Reader = Callable[[str, int, int], Series]  # role, start, end -> finite points
Before = Callable[[str, int], tuple[int, float] | None]  # role, ts -> last finite point


def _ideal_for(code: str, signal_value: float | None, fixed: Mapping[str, float]) -> float | None:
    if code in fixed:
        return fixed[code]
    if signal_value is not None:
        return signal_value
    return fixed.get("default")


def _steps(chunks: Sequence[Series], start: Sequence[float | None]) -> list[tuple[int, list[Any]]]:
    """Change points of the tuple of several step signals: (ts, values in effect)."""
    marks: list[tuple[int, int, float]] = []
    for i, s in enumerate(chunks):
        prev = start[i]
        vals = s.values
        if len(vals) == 0:
            continue
        before = np.concatenate(([np.nan if prev is None else prev], vals[:-1]))
        keep = np.flatnonzero(vals != before)  # NaN never compares equal: a first value stays
        marks.extend((int(s.ts[j]), i, float(vals[j])) for j in keep.tolist())
    marks.sort(key=lambda m: (m[0], m[1]))
    current: list[Any] = list(start)
    out: list[tuple[int, list[Any]]] = []
    for ts, i, v in marks:
        current[i] = v
        if out and out[-1][0] == ts:
            out[-1] = (ts, list(current))
        else:
            out.append((ts, list(current)))
    return out


def _track_roles(config: OeeConfig) -> list[str]:
    return ["state", "reason", "product", "ideal", *config.counters()]


def start_track(track: Track, config: OeeConfig, values: Mapping[str, float]) -> None:
    """Set the values in force just before ``track.t0`` (role -> value)."""
    for role in _track_roles(config):
        if role not in values:
            continue
        if role in ("state", "reason", "product", "ideal"):
            # A step signal's value at t0, dated just before t0 (only the state at t0
            # matters to the library), so the baselines of several signals stay in time
            # order whenever each was sampled.
            one = Series(np.array([track.t0 - 1], np.int64), np.array([float(values[role])]))
            _add_steps(track, config, role, one)
        else:
            track.last[role] = float(values[role])
    track.started = True


def follow_track(prev: Track, config: OeeConfig, t0: int) -> Track:
    """A track from ``t0`` on that takes its start values from ``prev`` (read up to t0):
    the next shift of a range, without looking anything up again."""
    if prev.cursor != t0:
        raise ValueError("follow_track needs the previous track read up to t0")
    track = Track(t0, t0)
    start_track(track, config, prev.last)
    return track


def extend_track(track: Track, config: OeeConfig, read: Reader, before: Before, end: int) -> None:
    """Read the track's signals over [track.cursor, end) and add them (see :class:`Track`)."""
    if end <= track.cursor:
        return
    roles = _track_roles(config)
    if not track.started:
        values = {}
        for role in roles:
            point = before(role, track.t0)
            if point is not None:
                values[role] = point[1]
        start_track(track, config, values)
    chunks = {role: read(role, track.cursor, end) for role in roles}
    _add_steps_pair(track, config, chunks["product"], chunks["ideal"])
    _add_steps_state(track, chunks["state"], chunks["reason"])
    for kind in config.counters():
        _add_counts(track, kind, chunks[kind])
    track.cursor = end


def _add_steps(track: Track, config: OeeConfig, role: str, s: Series) -> None:
    empty = Series(np.empty(0, np.int64), np.empty(0))
    if role in ("state", "reason"):
        _add_steps_state(track, s if role == "state" else empty, s if role == "reason" else empty)
    else:
        _add_steps_pair(
            track, config, s if role == "product" else empty, s if role == "ideal" else empty
        )


def _add_steps_state(track: Track, state: Series, reason: Series) -> None:
    for ts, (code, rsn) in _steps(
        [state, reason], [track.last.get("state"), track.last.get("reason")]
    ):
        track.last.update({k: v for k, v in (("state", code), ("reason", rsn)) if v is not None})
        if code is None:
            continue  # no state known yet: a reason alone says nothing
        entry = [ts, _code(code), None if rsn is None or rsn == 0 else _code(rsn)]
        if track.states and track.states[-1][1:] == entry[1:]:
            continue
        if track.states and track.states[-1][0] == ts:
            track.states[-1] = entry
        else:
            track.states.append(entry)


def _add_steps_pair(track: Track, config: OeeConfig, product: Series, ideal: Series) -> None:
    uses_signal = config.product_signal is not None
    for ts, (code, ict) in _steps(
        [product, ideal], [track.last.get("product"), track.last.get("ideal")]
    ):
        track.last.update({k: v for k, v in (("product", code), ("ideal", ict)) if v is not None})
        if uses_signal and code is None:
            continue  # before the first product sample: the library's default product
        name = _code(code) if code is not None else "default"
        seconds = _ideal_for(name, ict, config.ideal_cycle_s)
        if seconds is not None and name in track.ideal and track.ideal[name] != seconds:
            # The same code with another ideal cycle time: a product of its own.
            name = f"{name}@{seconds:g}s"
        if seconds is not None:
            track.ideal.setdefault(name, seconds)
        if track.products and track.products[-1][1] == name:
            continue
        if track.products and track.products[-1][0] == ts:
            track.products[-1] = [ts, name]
        else:
            track.products.append([ts, name])


def _add_counts(track: Track, kind: str, s: Series) -> None:
    if len(s) == 0:
        return
    last = track.last.get(kind)
    if last is None:
        ts, values = s.ts, s.values
    else:
        # The previous sample sits just before the chunk: only its value matters.
        ts = np.concatenate(([int(s.ts[0])], s.ts))
        values = np.concatenate(([last], s.values))
    track.last[kind] = float(s.values[-1])
    inc_ts, amount = counter_increments(CounterSeries(ts, values), f"counts.{kind}")
    nz = amount != 0
    inc_ts, amount = inc_ts[nz], amount[nz]
    if len(inc_ts) == 0:
        return
    change_ts = np.array([p[0] for p in track.products], dtype=np.int64)
    seg = np.searchsorted(change_ts, inc_ts, side="right")
    cells = track.counts.setdefault(kind, [])
    cuts = np.flatnonzero(np.diff(seg)) + 1
    for a, b in zip(
        np.concatenate(([0], cuts)).tolist(),
        np.concatenate((cuts, [len(seg)])).tolist(),
        strict=True,
    ):
        t, total, sg = int(inc_ts[b - 1]), float(amount[a:b].sum()), int(seg[a])
        if cells and cells[-1][2] == sg:
            cells[-1] = [t, cells[-1][1] + total, sg]
        else:
            cells.append([t, total, sg])


# --------------------------------------------------------------------------- JSON forms


def inputs_to_json(inputs: KpiInputs) -> dict[str, float]:
    t, q = inputs.times, inputs.quantities
    return {
        "pot_ns": t.pot_ns,
        "planned_downtime_ns": t.planned_downtime_ns,
        "apt_ns": t.apt_ns,
        "asut_ns": t.asut_ns,
        "adet_ns": t.adet_ns,
        "adot_ns": t.adot_ns,
        "unknown_ns": t.unknown_ns,
        "produced": q.produced,
        "good": q.good,
        "scrap": q.scrap,
        "rework": q.rework,
        "ideal_time_s": q.ideal_time_s,
        "failures": inputs.failures,
        "tbf_ns": inputs.tbf_ns,
        "ttr_ns": inputs.ttr_ns,
    }


def inputs_from_json(raw: Mapping[str, Any]) -> KpiInputs:
    times = TimeElements(
        *(
            int(raw[k])
            for k in (
                "pot_ns",
                "planned_downtime_ns",
                "apt_ns",
                "asut_ns",
                "adet_ns",
                "adot_ns",
                "unknown_ns",
            )
        )
    )
    quantities = Quantities(
        *(float(raw[k]) for k in ("produced", "good", "scrap", "rework", "ideal_time_s"))
    )
    return KpiInputs(
        times, quantities, int(raw["failures"]), int(raw["tbf_ns"]), int(raw["ttr_ns"])
    )


def figures(inputs: KpiInputs) -> dict[str, Any]:
    """KPIs, time elements (s) and counts of one machine or group and period."""
    t, q = inputs.times, inputs.quantities
    return {
        "kpis": compute_kpis(inputs).as_dict(),
        "times_s": {
            "pot": t.pot_ns / NS,
            "planned_downtime": t.planned_downtime_ns / NS,
            "pbt": t.pbt_ns / NS,
            "aubt": t.aubt_ns / NS,
            "aupt": t.aupt_ns / NS,
            "apt": t.apt_ns / NS,
            "asut": t.asut_ns / NS,
            "adet": t.adet_ns / NS,
            "adot": t.adot_ns / NS,
            "unknown": t.unknown_ns / NS,
        },
        "counts": {
            "produced": q.produced,
            "good": q.good,
            "scrap": q.scrap,
            "rework": q.rework,
            "ideal_time_s": q.ideal_time_s,
        },
        "failures": inputs.failures,
    }


def _reasons_json(reasons: Mapping[tuple[str, str | None], int]) -> list[list[Any]]:
    return [[state, reason, ns] for (state, reason), ns in reasons.items()]


def record_to_json(rec: PeriodRecord) -> dict[str, Any]:
    shift = rec.shift
    return {
        "label": rec.label,
        "shift": shift.name if shift is not None else None,
        "start": to_iso(rec.start_ns),
        "end": to_iso(rec.end_ns),
        "start_ns": rec.start_ns,
        "end_ns": rec.end_ns,
        "partial": shift.partial if shift is not None else False,
        "inputs": inputs_to_json(rec.inputs),
        "reasons": _reasons_json(rec.reasons),
        "products": {
            name: {
                "produced": q.produced,
                "good": q.good,
                "scrap": q.scrap,
                "ideal_time_s": q.ideal_time_s,
            }
            for name, q in rec.products.items()
        },
    }


def _public(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A stored record as routes show it: its figures instead of the raw inputs."""
    out = {k: v for k, v in rec.items() if k not in ("inputs", "reasons")}
    out.update(figures(inputs_from_json(rec["inputs"])))
    out["reasons"] = [
        {"state": s, "reason": r, "seconds": ns / NS} for s, r, ns in rec.get("reasons", [])
    ]
    return out


def pareto(reasons: Mapping[tuple[str, str | None], int]) -> list[dict[str, Any]]:
    total = sum(reasons.values())
    out: list[dict[str, Any]] = []
    running = 0
    for (state, reason), ns in merge_reasons([reasons]).items():
        running += ns
        out.append(
            {
                "state": state,
                "reason": reason,
                "seconds": ns / NS,
                "share": ns / total if total else None,
                "cumulative_share": running / total if total else None,
            }
        )
    return out


# --------------------------------------------------------------------------- the app


class OeeApp(App[OeeConfig]):
    manifest = AppManifest(
        name="oee",
        title="OEE",
        version="1.0.0",
        summary="OEE per ISO 22400-2 per machine, line, area and site: live and by shift.",
        description=(
            "Availability, effectiveness, quality ratio and OEE (plus MTBF, MTTR, setup rate, "
            "scrap ratio, first-pass yield) from machine states, counters and ideal cycle "
            "times, per shift of a calendar, rolled up machine > line > area > site."
        ),
        author="Shopfloor",
        tick_s=60.0,
    )
    config_model = OeeConfig
    example_config: ClassVar[Mapping[str, Any]] = {"oee_warning": 0.6}

    def __init__(self, ctx: AppContext, config: OeeConfig) -> None:
        super().__init__(ctx, config)
        self.calendar = config.parsed_calendar()
        self._state_map: dict[Hashable, str] = {k: v for k, v in config.state_map.items()}
        self.shift: dict[str, Any] | None = None  # label, start_ns, end_ns of the live shift
        self.tracks: dict[str, Track] = {}
        self.current: dict[str, dict[str, Any]] = {}  # machine -> record (JSON form)
        self.previous: dict[str, dict[str, Any]] = {}  # the last finished shift
        self.errors: dict[str, str] = {}
        self.armed: dict[str, list[float]] = {}  # machine -> [oee_armed, when written]
        self.now_ns: int | None = None
        self._dirty: set[str] = set()
        self._ruled: set[str] = set()

    # -- the machines ---------------------------------------------------------------------

    def _roles(self) -> dict[str, str]:
        c = self.config
        roles: dict[str, str | None] = {
            "state": c.state_signal,
            "reason": c.reason_signal,
            "product": c.product_signal,
            "ideal": c.ideal_cycle_signal,
            **c.counters(),
        }
        return {r: s for r, s in roles.items() if s is not None}

    def machines(self) -> list[DeviceView]:
        return sorted(
            (
                d
                for d in self.ctx.devices(self.config.device_type)
                if self.config.state_signal in d.signals
            ),
            key=lambda d: d.name,
        )

    def subscriptions(self) -> Sequence[int]:
        roles = self._roles().values()
        return [d.signals[s] for d in self.machines() for s in roles if s in d.signals]

    def on_points(self, batch: PointBatch) -> None:
        # The values are read from the historian at the tick. A point stamped well before
        # what was read already (late data: an edge gateway's buffer) makes that machine be
        # read again from the shift start. Points of the last LATE_NS are not checked: the
        # historian stores a point before it is delivered here, so a tick may have read it
        # before it arrives.
        owner = {sid: (d.name, name) for d in self.machines() for name, sid in d.signals.items()}
        for sid, series in batch.by_signal().items():
            who = owner.get(sid)
            if who is None:
                continue
            track = self.tracks.get(who[0])
            if track is not None and int(series.ts.min()) < track.cursor - LATE_NS:
                self._dirty.add(who[0])

    def _reader(self, device: DeviceView) -> tuple[Reader, Before]:
        roles = self._roles()
        empty = Series(np.empty(0, np.int64), np.empty(0))

        def read(role: str, start: int, end: int) -> Series:
            name = roles.get(role)
            if name is None or name not in device.signals:
                return empty
            s = self.ctx.read(device.signals[name], start, end)
            ok = np.isfinite(s.values)
            return s if bool(ok.all()) else Series(s.ts[ok], s.values[ok])

        def before(role: str, ts: int) -> tuple[int, float] | None:
            name = roles.get(role)
            if name is None or name not in device.signals:
                return None
            sid = device.signals[name]
            for lookback in LOOKBACKS_NS:
                point = self.ctx.read_before(sid, ts, lookback)
                if point is None:
                    continue
                if math.isfinite(point[1]):
                    return point
                s = self.ctx.read(sid, ts - lookback, ts)  # a failed poll: the last good one
                ok = np.flatnonzero(np.isfinite(s.values))
                if len(ok):
                    return int(s.ts[ok[-1]]), float(s.values[ok[-1]])
            return None

        return read, before

    def _hierarchy(self, devices: Sequence[DeviceView]) -> tuple[dict[str, str], dict[str, str]]:
        """(parent_of, level of every node) for the machines, up to the site."""
        levels_of = getattr(self.ctx, "asset_levels", None)
        known: dict[str, str] = {}
        if callable(levels_of):
            known = {str(k): str(v) for k, v in levels_of().items()}
        parent_of: dict[str, str] = {}
        level: dict[str, str] = {}
        for d in devices:
            path = list(d.asset_path)
            positional = {
                name: _POSITIONAL_LEVELS[i]
                for i, name in enumerate(reversed(path))
                if i < len(_POSITIONAL_LEVELS)
            }
            chain = path[:-1] if path and path[-1] == d.name else path
            level[d.name] = "machine"
            child = d.name
            for node in reversed(chain):
                lvl = known.get(node, positional.get(node, "asset"))
                if lvl == "enterprise":
                    break
                if node != child:
                    parent_of[child] = node
                    level[node] = lvl
                    child = node
        return parent_of, level

    def _ideal(self, track: Track) -> dict[str, float]:
        """Ideal cycle times for the library: the track's, and the fixed ones besides."""
        return {**self.config.ideal_cycle_s, **track.ideal}

    # -- live -----------------------------------------------------------------------------

    def _running_shift(self, now_ns: int) -> ShiftInstance | None:
        running = [
            s
            for s in expand(self.calendar, now_ns - 2 * DAY_NS, now_ns + 1)
            if s.planned_start_ns <= now_ns < s.planned_end_ns
        ]
        return running[0] if running else None

    def on_tick(self, now_ns: int) -> None:
        self.now_ns = now_ns
        shift = self._running_shift(now_ns)
        ended_tracks: dict[str, Track] = {}
        if self.shift is not None and (
            shift is None or shift.planned_start_ns != self.shift["start_ns"]
        ):
            ended_tracks = self.tracks
            self._finish_shift(now_ns)
            self.tracks = {}
        if shift is None:
            self.shift, self.tracks, self.current = None, {}, {}
            return
        if self.shift is None:
            self.shift = {
                "label": shift.label,
                "name": shift.name,
                "start_ns": shift.planned_start_ns,
                "end_ns": shift.planned_end_ns,
            }
        devices = self.machines()
        kinds = list(self.config.counters())
        elapsed_s = (now_ns - shift.planned_start_ns) / NS
        for d in devices:
            track = self.tracks.get(d.name)
            if track is None or d.name in self._dirty or track.t0 != shift.planned_start_ns:
                ended = ended_tracks.get(d.name)
                if ended is not None and ended.cursor == shift.planned_start_ns:
                    track = follow_track(ended, self.config, shift.planned_start_ns)
                else:
                    track = Track(shift.planned_start_ns, shift.planned_start_ns)
                self.tracks[d.name] = track
            self._dirty.discard(d.name)
            read, before = self._reader(d)
            try:
                extend_track(track, self.config, read, before, now_ns)
                rec = current_shift_oee(
                    self.calendar,
                    now_ns,
                    track.state_series(),
                    track.counter_series(kinds),
                    self._ideal(track),
                    products=track.product_series(),
                    state_map=self._state_map,
                )
            except BadInput as exc:
                self.errors[d.name] = str(exc)
                self.current.pop(d.name, None)
                continue
            self.errors.pop(d.name, None)
            if rec is None:
                continue
            self.current[d.name] = record_to_json(rec)
            self._publish(d.name, now_ns, rec, elapsed_s)

    def _publish(self, machine: str, now_ns: int, rec: PeriodRecord, elapsed_s: float) -> None:
        ts = np.array([now_ns], np.int64)
        kpis = rec.kpis
        values = {
            "oee": kpis.oee,
            "availability": kpis.availability,
            "effectiveness": kpis.effectiveness,
            "quality_ratio": kpis.quality_ratio,
        }
        for name, value in values.items():
            if value is not None:
                self.ctx.write(machine, name, Series(ts, np.array([value])), unit="")
        warning = self.config.oee_warning
        if warning is None:
            return
        # oee_armed: 0 for the first warning_after_min of a shift, then 1. Written when it
        # changes and every ARMED_REFRESH_NS besides (a restarted rule engine learns it
        # again), not every tick: one historian write per machine and tick saved.
        armed = 1.0 if elapsed_s >= self.config.warning_after_min * 60 else 0.0
        last = self.armed.get(machine)
        if (
            last is None
            or last[0] != armed
            or now_ns - int(last[1]) >= ARMED_REFRESH_NS
            or machine not in self._ruled  # the rule needs the signal to exist first
        ):
            self.ctx.write(machine, "oee_armed", Series(ts, np.array([armed])), unit="")
            self.armed[machine] = [armed, now_ns]
        if machine not in self._ruled and kpis.oee is not None:
            try:
                self._ensure_warning_rule(machine, warning)
            except BadInput as exc:  # a signal not registered yet (a race at start): next tick
                log.warning("oee: the low-OEE rule of %s waits: %s", machine, exc)
                return
            self._ruled.add(machine)

    def _ensure_warning_rule(self, machine: str, warning: float) -> None:
        self.ctx.ensure_rule(
            f"oee-low-{machine}",
            device=machine,
            definition={
                "kind": "expression",
                "expression": f"oee < {warning!r} and oee_armed >= 1",
            },
            priority=4,
            message=(
                f"shift OEE below {warning:.0%} after "
                f"{self.config.warning_after_min:g} min of the shift"
            ),
        )

    def _finish_shift(self, now_ns: int) -> None:
        """The live shift ended: complete its records up to its end and keep them."""
        assert self.shift is not None
        start, end = int(self.shift["start_ns"]), int(self.shift["end_ns"])
        stop = min(end, now_ns)
        kinds = list(self.config.counters())
        done: dict[str, dict[str, Any]] = {}
        by_name = {d.name: d for d in self.machines()}
        for name, track in self.tracks.items():
            d = by_name.get(name)
            if d is None or track.t0 != start:
                continue
            read, before = self._reader(d)
            try:
                extend_track(track, self.config, read, before, stop)
                report = machine_oee(
                    self.calendar,
                    start,
                    stop,
                    track.state_series(),
                    track.counter_series(kinds),
                    self._ideal(track),
                    products=track.product_series(),
                    state_map=self._state_map,
                )
            except BadInput as exc:
                self.errors[name] = str(exc)
                continue
            if report.shifts:
                done[name] = record_to_json(report.shifts[0])
        self.previous = done
        if done:
            leaves = {m: inputs_from_json(r["inputs"]) for m, r in done.items()}
            site = compute_kpis(sum_inputs(leaves.values()))
            self.ctx.event(
                "shift-end",
                f"shift {self.shift['label']} ended: OEE "
                + ("n/a" if site.oee is None else f"{site.oee:.1%}")
                + f" over {len(done)} machines",
                details={
                    "shift": self.shift["label"],
                    "oee": site.oee,
                    "machines": {m: compute_kpis(i).oee for m, i in sorted(leaves.items())},
                },
            )
        self.shift = None

    # -- state ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "shift": self.shift,
            "now_ns": self.now_ns,
            "tracks": {m: t.to_json() for m, t in sorted(self.tracks.items())},
            "current": self.current,
            "previous": self.previous,
            "errors": self.errors,
            "armed": self.armed,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        shift = state.get("shift")
        self.shift = dict(shift) if isinstance(shift, Mapping) else None
        now = state.get("now_ns")
        self.now_ns = int(now) if now is not None else None
        self.tracks = {str(m): Track.from_json(t) for m, t in state.get("tracks", {}).items()}
        self.current = {str(m): dict(r) for m, r in state.get("current", {}).items()}
        self.previous = {str(m): dict(r) for m, r in state.get("previous", {}).items()}
        self.errors = {str(m): str(e) for m, e in state.get("errors", {}).items()}
        self.armed = {str(m): list(a) for m, a in state.get("armed", {}).items()}

    def status(self) -> dict[str, Any]:
        site = compute_kpis(
            sum_inputs(inputs_from_json(r["inputs"]) for r in self.current.values())
        )
        return {
            "shift": None if self.shift is None else self.shift["label"],
            "machines": len(self.current),
            "oee": site.oee,
            "errors": len(self.errors),
        }

    # -- routes ---------------------------------------------------------------------------

    def _groups(
        self, leaves: Mapping[str, KpiInputs], devices: Sequence[DeviceView]
    ) -> dict[str, list[dict[str, Any]]]:
        parent_of, level = self._hierarchy(devices)
        totals = roll_up(leaves, parent_of)
        members: dict[str, list[str]] = {}
        for m in leaves:
            node = parent_of.get(m)
            while node is not None:
                members.setdefault(node, []).append(m)
                node = parent_of.get(node)
        out: dict[str, list[dict[str, Any]]] = {f"{lvl}s": [] for lvl in GROUP_LEVELS}
        for node, inputs in sorted(totals.items()):
            lvl = level.get(node, "asset")
            if lvl not in GROUP_LEVELS:
                continue
            out[f"{lvl}s"].append(
                {"name": node, "machines": sorted(members.get(node, [])), **figures(inputs)}
            )
        return out

    def current_view(self, params: Mapping[str, str]) -> dict[str, Any]:
        devices = [d for d in self.machines() if d.name in self.current]
        parent_of, level = self._hierarchy(devices)
        leaves = {m: inputs_from_json(r["inputs"]) for m, r in self.current.items()}

        def line_of(m: str) -> str | None:
            node = parent_of.get(m)
            while node is not None and level.get(node) != "line":
                node = parent_of.get(node)
            return node

        return {
            "now": None if self.now_ns is None else to_iso(self.now_ns),
            "shift": None
            if self.shift is None
            else {
                "label": self.shift["label"],
                "start": to_iso(int(self.shift["start_ns"])),
                "end": to_iso(int(self.shift["end_ns"])),
            },
            "machines": [
                {"machine": m, "line": line_of(m), **_public(r)}
                for m, r in sorted(self.current.items())
            ],
            **self._groups(leaves, devices),
            "errors": dict(sorted(self.errors.items())),
        }

    def _range(self, params: Mapping[str, str]) -> tuple[int, int, list[DeviceView]]:
        now = self.ctx.now_ns()
        start = parse_instant(params.get("start", "-24h"), "start", now)
        end = min(parse_instant(params.get("end", "now"), "end", now), now)
        if end <= start:
            raise BadInput(
                "the range is empty: end must be after start (and start before now)", "end"
            )
        if end - start > MAX_RANGE_NS:
            raise BadInput(
                f"the range is {(end - start) / DAY_NS:.1f} days; at most 31 days at a time",
                "end",
            )
        devices = self.machines()
        asset = params.get("asset", "").strip()
        if asset:
            devices = [d for d in devices if d.name == asset or asset in d.asset_path]
            if not devices:
                raise BadInput(f"no machine, line, area or site named {asset!r}", "asset")
        return start, end, devices

    def _past(
        self, start: int, end: int, devices: Sequence[DeviceView]
    ) -> tuple[list[ShiftInstance], dict[str, list[PeriodRecord]], dict[str, str]]:
        """Per machine, one record per shift instance in [start, end), from the historian."""
        shifts = expand(self.calendar, start, end)
        kinds = list(self.config.counters())
        records: dict[str, list[PeriodRecord]] = {}
        errors: dict[str, str] = {}
        for d in devices:
            read, before = self._reader(d)
            out: list[PeriodRecord] = []
            track: Track | None = None
            try:
                for shift in shifts:  # one shift at a time: memory stays bounded
                    if track is not None and track.cursor == shift.start_ns:
                        track = follow_track(track, self.config, shift.start_ns)
                    else:
                        track = Track(shift.start_ns, shift.start_ns)
                    extend_track(track, self.config, read, before, shift.end_ns)
                    report = machine_oee(
                        self.calendar,
                        shift.start_ns,
                        shift.end_ns,
                        track.state_series(),
                        track.counter_series(kinds),
                        self._ideal(track),
                        products=track.product_series(),
                        state_map=self._state_map,
                    )
                    out.extend(report.shifts)
            except BadInput as exc:
                errors[d.name] = str(exc)
                continue
            records[d.name] = out
        return shifts, records, errors

    def report(self, params: Mapping[str, str]) -> dict[str, Any]:
        start, end, devices = self._range(params)
        shifts, records, errors = self._past(start, end, devices)
        rows = []
        for i, shift in enumerate(shifts):
            per = [recs[i] for recs in records.values() if i < len(recs)]
            inputs = sum_inputs(r.inputs for r in per)
            rows.append(
                {
                    "label": shift.label,
                    "shift": shift.name,
                    "start": to_iso(shift.start_ns),
                    "end": to_iso(shift.end_ns),
                    "partial": shift.partial,
                    **figures(inputs),
                }
            )
        total = sum_inputs(r.inputs for recs in records.values() for r in recs)
        return {
            "start": to_iso(start),
            "end": to_iso(end),
            "asset": params.get("asset") or None,
            "machines": sorted(records),
            "shifts": rows,
            "total": figures(total),
            "by_machine": [
                {"machine": m, **figures(sum_inputs(r.inputs for r in recs))}
                for m, recs in sorted(records.items())
            ],
            "errors": errors,
        }

    def downtime(self, params: Mapping[str, str]) -> dict[str, Any]:
        start, end, devices = self._range(params)
        _, records, errors = self._past(start, end, devices)
        reasons = merge_reasons(r.reasons for recs in records.values() for r in recs)
        return {
            "start": to_iso(start),
            "end": to_iso(end),
            "asset": params.get("asset") or None,
            "machines": sorted(records),
            "pareto": pareto(reasons),
            "errors": errors,
        }

    @classmethod
    def routes(cls) -> Sequence[AppRoute]:
        rng = {
            "start": "RFC 3339, epoch ms, 'now' or '-8h' (default -24h)",
            "end": "as start (default now); at most 31 days after start",
            "asset": "a machine, line, area or site (default: all machines)",
        }
        return (
            AppRoute(
                "current",
                "The shift in progress: KPIs per machine, line, area and site",
                OeeApp.current_view,
            ),
            AppRoute(
                "report",
                "KPIs per shift and in total over a past range, from the historian",
                OeeApp.report,
                rng,
            ),
            AppRoute(
                "downtime",
                "Pareto of downtime by state and reason code over a range",
                OeeApp.downtime,
                rng,
            ),
        )

    @classmethod
    def panels(cls) -> Sequence[Panel]:
        return (
            Panel("current", "OEE this shift", "kpi", "current", "Per machine, line and site"),
            Panel("report", "OEE by shift", "table", "report", "The last 24 hours by shift"),
            Panel("downtime", "Downtime Pareto", "bar-chart", "downtime", "By state and reason"),
        )
