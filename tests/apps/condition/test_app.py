"""The condition-monitoring app: conformance on the demo factory, and its logic by hand."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shopfloor.apps.catalogue import parse_app_config
from shopfloor.apps.condition.app import ConditionApp, ConditionConfig
from shopfloor.apps.sdk import DeviceView, PointBatch, Series
from shopfloor.core.errors import BadInput, NotFound
from shopfloor.edge.connectors.simulator import FactorySimulator
from shopfloor.testing import check_app

VIB = {"vib_x_rms", "vib_y_rms", "vib_z_rms", "vib_x_peak", "vib_y_peak", "vib_z_peak"}
T0 = 1_800_000_000 * 10**9  # a whole minute (1_800_000_000 s = 30_000_000 min)
S = 10**9


# -- on the demo factory ----------------------------------------------------------------------


def test_conforms_and_flags_the_machine_with_a_developing_bearing_fault(tmp_path: Path) -> None:
    # The premise, from the simulator's ground truth: with check_app's seed (3) press-03
    # starts with a developing bearing fault, every other machine is healthy.
    sim = FactorySimulator(seed=3)
    sev = dict(zip([m.name for m in sim.machines()], sim.fault_severity.tolist(), strict=True))
    assert sev["press-03"] > 0.2
    assert all(v == 0 for k, v in sev.items() if k != "press-03")

    report = check_app(ConditionApp, tmp_path, config={"baseline_minutes": 15}, minutes=30)
    assert report.ok, str(report)

    scores = {k: n for k, n in report.signals_written.items() if k.endswith("/anomaly_score")}
    assert len(scores) >= 18, report.signals_written  # about one per running minute
    assert scores["press-03/anomaly_score"] >= 15

    rows = {r["machine"]: r for r in report.routes["machines"]["machines"]}
    assert len(rows) == 20
    # "both": a machine scores once its own 15 running minutes and its fleet's model exist
    trained = [n for n, r in rows.items() if r["baseline"]["status"] == "trained"]
    assert len(trained) >= 15, rows
    assert "press-03" in trained
    faulty = rows["press-03"]
    assert faulty["abnormal"] is True
    assert faulty["score"] > 0.999
    assert faulty["abnormal_since"] is not None
    assert faulty["top"][0]["signal"] in VIB | {"bearing_temp"}
    fleet = faulty["baseline"]["fleet"]
    assert fleet["status"] == "trained"
    assert "press-03" not in fleet["machines"]  # its fault was not learnt as normal
    assert len(fleet["machines"]) >= 3
    healthy = [r for n, r in rows.items() if n != "press-03"]
    assert not any(r["abnormal"] for r in healthy), [r["machine"] for r in healthy]
    assert all(r["score"] < 0.999 for r in healthy if r["score"] is not None)
    assert report.status["abnormal"] == ["press-03"]

    abnormal = [e for e in report.events if e["kind"] == "abnormal"]
    assert [e["device"] for e in abnormal] == ["press-03"]
    assert abnormal[0]["message"].startswith("press-03: abnormal condition: ")
    assert abnormal[0]["details"]["top"][0] in VIB | {"bearing_temp"}

    # The chart route without a name shows the worst machine.
    chart = report.routes["machine"]
    assert chart["machine"] == "press-03"
    assert len(chart["points"]) == scores["press-03/anomaly_score"]
    assert all(math.isclose(sum(p["contributions"].values()), 1.0, abs_tol=1e-3)
               for p in chart["points"])  # fmt: skip


# -- a small platform stand-in for the logic tests ---------------------------------------------


class FakeCtx:
    tenant_id = 1
    tenant = "t"
    app = "condition"

    def __init__(self, devices: Mapping[str, tuple[str, ...]], device_type: str = "kind") -> None:
        self.views: list[DeviceView] = []
        n = 0
        for name, signals in devices.items():
            sig = {}
            for s in signals:
                sig[s] = n
                n += 1
            self.views.append(DeviceView(name, device_type, ("e", "line-1", name), sig))
        self.written: dict[tuple[str, str], list[tuple[int, float]]] = {}
        self.units: dict[tuple[str, str], str] = {}
        self.rules: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.now = T0

    def now_ns(self) -> int:
        return self.now

    def devices(self, device_type: str | None = None) -> list[DeviceView]:
        return [d for d in self.views if device_type is None or d.device_type == device_type]

    def signal_ids(self, device_type: str | None, signal: str) -> list[int]:
        return [d.signals[signal] for d in self.devices(device_type) if signal in d.signals]

    def write(self, device: str, signal: str, series: Series, unit: str = "") -> None:
        pts = self.written.setdefault((device, signal), [])
        pts.extend(zip(series.ts.tolist(), series.values.tolist(), strict=True))
        self.units[(device, signal)] = unit

    def ensure_rule(self, name: str, *, device: str, definition: Mapping[str, Any],
                    priority: int = 3, message: str = "") -> None:  # fmt: skip
        assert (device, "anomaly_score") in self.written  # the rule's signal exists first
        self.rules[name] = {"device": device, "definition": dict(definition),
                            "priority": priority, "message": message}  # fmt: skip

    def event(self, kind: str, message: str, *, device: str | None = None,
              details: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        self.events.append({"kind": kind, "message": message, "device": device,
                            "details": dict(details or {})})  # fmt: skip


def make(config: Mapping[str, Any], devices: Mapping[str, tuple[str, ...]]) -> tuple[ConditionApp, FakeCtx]:  # fmt: skip
    ctx = FakeCtx(devices)
    cfg = parse_app_config(ConditionApp, dict(config))
    assert isinstance(cfg, ConditionConfig)
    return ConditionApp(ctx, cfg), ctx


def batch(ctx: FakeCtx, points: list[tuple[str, str, int, float]]) -> PointBatch:
    """(device, signal, ts, value) rows as a batch."""
    ids = {(d.name, s): i for d in ctx.views for s, i in d.signals.items()}
    return PointBatch(
        np.array([ids[(d, s)] for d, s, _, _ in points], np.int32),
        np.array([t for _, _, t, _ in points], np.int64),
        np.array([v for _, _, _, v in points], np.float64),
    )


Values = Callable[[str, int, np.random.Generator], dict[str, float]]


def run_minutes(app: ConditionApp, ctx: FakeCtx, start_min: int, minutes: int, values: Values,
                seed: int = 0, state: float = 2.0) -> None:  # fmt: skip
    """Feed ``minutes`` of one point per signal every 10 s (running), a tick after each."""
    rng = np.random.default_rng(seed + start_min)
    for minute in range(start_min, start_min + minutes):
        pts: list[tuple[str, str, int, float]] = []
        for d in ctx.views:
            for k in range(6):
                ts = T0 + (minute * 60 + k * 10) * S
                pts.append((d.name, "state", ts, state))
                for s, v in values(d.name, minute, rng).items():
                    pts.append((d.name, s, ts, v))
        app.on_points(batch(ctx, pts))
        ctx.now = T0 + (minute + 1) * 60 * S
        app.on_tick(ctx.now)


SMALL = {"signals": ["a", "b"], "subtract": {}, "baseline_minutes": 20}
TWO = {"m1": ("state", "a", "b"), "m2": ("state", "a", "b")}


def normal(device: str, minute: int, rng: np.random.Generator) -> dict[str, float]:
    return {"a": 10.0 + rng.normal(0, 0.1), "b": 5.0 + rng.normal(0, 0.05)}


# -- resampling ------------------------------------------------------------------------------


def test_resampling_averages_qualifying_points_and_drops_thin_intervals() -> None:
    app, ctx = make({"signals": ["a", "b"], "subtract": {"b": "c"}, "baseline_minutes": 60},
                    {"m1": ("state", "a", "b", "c")})  # fmt: skip
    t = [T0 + i * 10 * S for i in range(19)]  # 0, 10, ..., 180 s
    # Interval 0 (0-59 s): running until 30 s, idle after: 3 of 6 points qualify (enough).
    # Interval 1 (60-119 s): running at 60 s only: 1 of 6 (too few, dropped).
    # Interval 2 (120-179 s): running; the state arrives in the first batch only (carried
    # over), one value of a is NaN (ignored).
    first = [("m1", "state", t[0], 2.0), ("m1", "state", t[3], 1.0), ("m1", "state", t[6], 2.0),
             ("m1", "state", t[7], 1.0), ("m1", "state", t[12], 2.0)]  # fmt: skip
    a = [1, 3, 5, 100, 100, 100, 7, 100, 100, 100, 100, 100, 2, 4, float("nan"), 6, 8, 10]
    b = [4, 4, 7, 0, 0, 0, 1, 0, 0, 0, 0, 0, 3, 3, 3, 3, 3, 3]
    c = [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2]
    pts = first + [("m1", s, t[i], float(v[i])) for i in range(12) for s, v in
                   (("a", a), ("b", b), ("c", c))]  # fmt: skip
    app.subscriptions()
    app.on_points(batch(ctx, pts))
    m = app.machines["m1"]
    assert m.pending == [[float(T0), 3.0, 4.0]]  # a: (1+3+5)/3; b - c: (4+4+7)/3 - 1
    rest = [("m1", s, t[i], float(v[i])) for i in range(12, 18) for s, v in
            (("a", a), ("b", b), ("c", c))]  # fmt: skip
    app.on_points(batch(ctx, rest))
    assert len(m.pending) == 1  # interval 2 is still open: nothing later has arrived
    app.on_points(batch(ctx, [("m1", "a", t[18], 1.0)]))
    # a: (2+4+6+8+10)/5 = 6; b - c: 3 - 2 = 1
    assert m.pending[1] == [float(T0 + 120 * S), 6.0, 1.0]
    # A late point of a closed interval is dropped, not reopened.
    app.on_points(batch(ctx, [("m1", "a", t[13], 50.0), ("m1", "state", t[13], 2.0)]))
    assert len(m.pending) == 2
    assert 2 not in m.open


# -- own baseline, alarms, rules, events ------------------------------------------------------


def test_own_baseline_flags_a_step_and_names_the_signal() -> None:
    app, ctx = make({**SMALL, "baseline": "own"}, TWO)
    app.subscriptions()
    run_minutes(app, ctx, 0, 25, normal)
    assert all(set(m.detectors) == {"own"} for m in app.machines.values())
    assert not ctx.events
    rule = ctx.rules["anomaly-m1"]
    assert rule["priority"] == 2
    assert rule["definition"] == {"kind": "threshold", "signal": "anomaly_score",
                                  "limit": 0.999, "deadband": 0.05}  # fmt: skip
    assert ctx.units[("m1", "anomaly_score")] == "1"
    scores = [v for _, v in ctx.written[("m1", "anomaly_score")]]
    # 24 closed minutes (the 25th closes when a later point arrives), the 20 baseline ones too
    assert len(scores) == 24
    assert all(0.0 <= v < 0.999 for v in scores)

    def fault(device: str, minute: int, rng: np.random.Generator) -> dict[str, float]:
        out = normal(device, minute, rng)
        if device == "m1":
            out["b"] += 2.5  # +50 % of b's level
        return out

    run_minutes(app, ctx, 25, 5, fault)
    rows = {r["machine"]: r for r in app.route_machines({})["machines"]}
    assert rows["m1"]["abnormal"] is True
    assert rows["m1"]["top"][0]["signal"] == "b"
    assert rows["m1"]["top"][0]["share"] > 0.8
    assert rows["m2"]["abnormal"] is False
    events = [e for e in ctx.events if e["kind"] == "abnormal"]
    assert [(e["device"], e["message"]) for e in events] == [("m1", "m1: abnormal condition: b")]
    assert ctx.rules["anomaly-m1"]["message"] == "abnormal condition: b"
    assert ctx.written[("m1", "anomaly_score")][-1][1] > 0.999

    run_minutes(app, ctx, 30, 15, normal)  # back to normal: cleared, with an event
    assert app.route_machines({})["machines"][0]["abnormal"] is False
    assert [e["kind"] for e in ctx.events] == ["abnormal", "normal"]


def test_a_drop_is_no_fault_with_high_only_but_is_without() -> None:
    def drop(device: str, minute: int, rng: np.random.Generator) -> dict[str, float]:
        out = normal(device, minute, rng)
        if device == "m1":
            out["a"] -= 5.0  # half the level: a cold or slow machine
        return out

    for high_only, flagged in ((True, False), (False, True)):
        app, ctx = make({**SMALL, "baseline": "own", "high_only": high_only}, TWO)
        run_minutes(app, ctx, 0, 20, normal)
        run_minutes(app, ctx, 20, 8, drop)
        assert (app.machines["m1"].abnormal_since is not None) == flagged


# -- fleet baseline ---------------------------------------------------------------------------


FLEET = {f"m{i}": ("state", "a", "b") for i in range(1, 6)}


def already_faulty(device: str, minute: int, rng: np.random.Generator) -> dict[str, float]:
    # Machines differ by a few per cent; m3 has been twice as high in a from the start.
    level = {"m1": 1.0, "m2": 1.03, "m3": 2.0, "m4": 0.97, "m5": 1.01}[device]
    return {"a": 10.0 * level + rng.normal(0, 0.1), "b": 5.0 + rng.normal(0, 0.05)}


def test_fleet_baseline_catches_a_fault_present_from_the_start_and_own_does_not() -> None:
    app, ctx = make({**SMALL, "baseline": "fleet"}, FLEET)
    run_minutes(app, ctx, 0, 30, already_faulty)
    info = app.fleet["fleet:kind"]
    assert info["excluded"] == ["m3"]
    assert info["machines"] == ["m1", "m2", "m4", "m5"]
    rows = {r["machine"]: r for r in app.route_machines({})["machines"]}
    assert rows["m3"]["abnormal"] is True
    assert rows["m3"]["top"][0]["signal"] == "a"
    assert [n for n, r in rows.items() if r["abnormal"]] == ["m3"]
    assert any(e["kind"] == "baseline" and "m3" in e["message"] for e in ctx.events)

    own, own_ctx = make({**SMALL, "baseline": "own"}, FLEET)
    run_minutes(own, own_ctx, 0, 30, already_faulty)
    assert not any(m.abnormal_since for m in own.machines.values())  # m3 learnt it as normal


def test_fleet_waits_for_half_of_the_machines() -> None:
    app, ctx = make({**SMALL, "baseline": "fleet"}, FLEET)

    def only_two(device: str, minute: int, rng: np.random.Generator) -> dict[str, float]:
        return normal(device, minute, rng) if device in ("m1", "m2") else {}

    run_minutes(app, ctx, 0, 25, only_two)
    assert "fleet:kind" not in app.fleet  # 2 of 5 machines have a baseline
    assert app.route_machines({})["machines"][0]["baseline"]["status"] == "collecting"
    run_minutes(app, ctx, 25, 25, normal)  # now all report; after 20 minutes 5 of 5
    assert app.fleet["fleet:kind"]["machines"] == ["m1", "m2", "m3", "m4", "m5"]
    assert all(set(m.detectors) == {"fleet"} for m in app.machines.values())


# -- state, routes, config --------------------------------------------------------------------


def test_state_round_trip_continues_exactly() -> None:
    cfg = {**SMALL, "baseline": "fleet", "univariate": True}
    app, ctx = make(cfg, FLEET)
    run_minutes(app, ctx, 0, 27, already_faulty)
    state = json.loads(json.dumps(app.state(), allow_nan=False))
    again, ctx2 = make(cfg, FLEET)
    again.restore(state)
    assert json.loads(json.dumps(again.state())) == state
    # Both go on with the same data and write the same scores.
    before = {m: len(ctx.written[(m, "anomaly_score")]) for m in FLEET}
    run_minutes(app, ctx, 27, 5, already_faulty, seed=9)
    run_minutes(again, ctx2, 27, 5, already_faulty, seed=9)
    for m in FLEET:
        new = ctx.written[(m, "anomaly_score")][before[m] :]
        assert len(new) == 5
        assert new == ctx2.written[(m, "anomaly_score")]
    assert app.state() == again.state()
    rows = app.route_machines({})["machines"]
    assert set(rows[0]["signal_scores"]) == {"a", "b"}
    with pytest.raises(BadInput):
        again.restore({"version": 99})


def test_machine_route_params() -> None:
    app, ctx = make({**SMALL, "baseline": "own"}, TWO)
    assert app.route_machine({}) == {"machine": None, "abnormal_since": None, "signals": [],
                                     "points": []}  # fmt: skip
    run_minutes(app, ctx, 0, 25, normal)
    full = app.route_machine({"name": "m2"})
    assert full["machine"] == "m2"
    assert len(full["points"]) == 24  # minutes 0-23; minute 24 is still open
    since = str((T0 + 20 * 60 * S) // 10**6)  # epoch ms: minutes 20-23
    assert [p["ts"] for p in app.route_machine({"name": "m2", "since": since})["points"]] == [
        T0 + k * 60 * S for k in range(20, 24)
    ]
    with pytest.raises(NotFound):
        app.route_machine({"name": "nope"})
    with pytest.raises(BadInput) as err:
        app.route_machine({"name": "m2", "since": "yesterday-ish"})
    assert err.value.field == "since"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"no_such": 1}, "config.no_such"),
        ({"signals": []}, "config"),
        ({"signals": ["a", "a"]}, "config"),
        ({"signals": ["a"], "subtract": {"b": "c"}}, "config"),
        ({"baseline_minutes": 5}, "config"),  # 5 steps for 7 signals
        ({"alarm_score": 1.0}, "config.alarm_score"),
        ({"baseline": "mine"}, "config.baseline"),
        ({"resample_s": 1}, "config.resample_s"),
        ({"only_when": {"signal": "state", "equals": 2, "extra": 1}}, "config.only_when.extra"),
        ({"signals": "vib_x_rms"}, "config.signals"),
    ],
)
def test_bad_config_is_refused_naming_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(BadInput) as err:
        parse_app_config(ConditionApp, raw)
    assert err.value.field == field


def test_defaults_and_example_config() -> None:
    cfg = parse_app_config(ConditionApp, ConditionApp.example_config)
    assert isinstance(cfg, ConditionConfig)
    assert cfg.baseline == "both"
    assert cfg.baseline_steps == 60
    assert parse_app_config(ConditionApp, {}) == cfg  # the example is the defaults
    assert cfg.only_when is not None
    assert (cfg.only_when.signal, cfg.only_when.equals) == ("state", 2.0)
    assert cfg.inputs[-1] == "ambient_temp"
    off = parse_app_config(ConditionApp, {"only_when": None})
    assert isinstance(off, ConditionConfig)
    assert off.only_when is None


MIXED = {f"m{i}": ("state", "a", "b") for i in range(1, 7)}


def mixed(step_from: int) -> Values:
    # A varied fleet (levels 8 to 12); m6 has been at 25 from the start; m1 rises by half its
    # level from minute ``step_from`` on: still inside the fleet's spread, far above its own.
    def values(device: str, minute: int, rng: np.random.Generator) -> dict[str, float]:
        level = {"m1": 8.0, "m2": 9.0, "m3": 10.0, "m4": 11.0, "m5": 12.0, "m6": 25.0}[device]
        if device == "m1" and minute >= step_from:
            level += 4.0
        return {"a": level + rng.normal(0, 0.1), "b": 5.0 + rng.normal(0, 0.05)}

    return values


def test_both_baselines_catch_what_either_one_alone_misses() -> None:
    flagged = {}
    for mode in ("both", "fleet", "own"):
        app, ctx = make({**SMALL, "baseline": mode}, MIXED)
        run_minutes(app, ctx, 0, 40, mixed(step_from=30))
        flagged[mode] = sorted(n for n, m in app.machines.items() if m.abnormal_since)
        if mode == "both":
            by = {e["device"]: e["details"]["baseline"] for e in ctx.events
                  if e["kind"] == "abnormal"}  # fmt: skip
            assert by == {"m6": "fleet", "m1": "own"}
            rows = {r["machine"]: r for r in app.route_machines({})["machines"]}
            assert rows["m1"]["top"][0]["signal"] == "a"
            assert rows["m1"]["baseline"]["own"] == "trained"
            assert rows["m1"]["baseline"]["fleet"]["machines"] == ["m1", "m2", "m3", "m4", "m5"]
    assert flagged == {"both": ["m1", "m6"], "fleet": ["m6"], "own": ["m1"]}


def test_own_baseline_is_learnt_again_after_a_lasting_improvement() -> None:
    # m1's baseline is taken on a worn bearing (a at 15); after a repair it runs at 10 for a
    # baseline's length, which high_only does not flag, and the baseline is learnt again, so
    # that the next rise to 15 is an anomaly.
    def phases(device: str, minute: int, rng: np.random.Generator) -> dict[str, float]:
        out = normal(device, minute, rng)
        if device == "m1" and (minute < 20 or minute >= 50):
            out["a"] += 5.0
        return out

    app, ctx = make({**SMALL, "baseline": "own"}, TWO)
    run_minutes(app, ctx, 0, 48, phases)
    assert app.machines["m1"].abnormal_since is None  # lower than its baseline: no fault
    relearnt = [e for e in ctx.events if e["kind"] == "baseline"]
    assert [e["device"] for e in relearnt] == ["m1"]
    assert relearnt[0]["details"]["signals_below"] == ["a"]
    assert app.machines["m1"].relearnt == 1
    assert app.machines["m2"].relearnt == 0
    run_minutes(app, ctx, 48, 8, phases)
    assert app.machines["m1"].abnormal_since is not None
    assert app.route_machines({})["machines"][0]["top"][0]["signal"] == "a"
