"""The predictive-maintenance app: conformance, a week of simulated history on a real
platform (train, register, predict, warn, restore), and its grid and run logic by hand."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shopfloor.api.platform import Platform
from shopfloor.apps.catalogue import parse_app_config
from shopfloor.apps.context import PlatformContext
from shopfloor.apps.predictive import ModelRegistry
from shopfloor.apps.predictive.app import (
    DEFAULT_SIGNALS,
    HOUR_NS,
    PredictiveApp,
    PredictiveConfig,
    failure_events,
    grid_rows,
    make_run,
    reference,
    split_runs,
    value_at,
)
from shopfloor.apps.sdk import PointBatch, Series
from shopfloor.cli.demo import register_factory, to_batch
from shopfloor.core.config import Settings
from shopfloor.core.errors import BadInput, NotFound
from shopfloor.edge.connectors.simulator import FactorySimulator
from shopfloor.testing import check_app

S = 10**9
MIN = 60 * S
DAY0 = 20_600 * 86_400 * S  # 2026-05-27T00:00Z: a fixed start, so the ambient is the same


def config(**over: Any) -> PredictiveConfig:
    cfg = parse_app_config(PredictiveApp, {**PredictiveApp.example_config, **over})
    assert isinstance(cfg, PredictiveConfig)
    return cfg


# -- conformance -----------------------------------------------------------------------------


def test_conforms_and_answers_without_a_model(tmp_path: Path) -> None:
    report = check_app(PredictiveApp, tmp_path, minutes=20)
    assert report.ok, str(report)
    # 20 minutes hold no failure: no model, nothing written, but every route answers.
    assert not any(k.endswith("/rul_hours") for k in report.signals_written)
    rows = report.routes["machines"]["machines"]
    assert len(rows) == 20
    assert {r["status"] for r in rows} == {"waiting for a model"}
    assert all(r["rul_hours"] is None for r in rows)
    assert report.routes["model"]["status"] == "waiting"
    assert report.routes["model"]["failures_needed"] == 5
    assert report.routes["history"] == {"machine": None, "warning_hours": 6.0, "points": []}
    assert report.status["model_version"] is None
    assert report.events == []


# -- a week of history on a real platform ----------------------------------------------------


@dataclass
class Factory:
    platform: Platform
    tenant_id: int
    end: int  # time of the last stored step
    severity: dict[str, float]  # the simulator's truth at the end
    true_rul: dict[str, float]  # hours from the end until the bearing failure (degrading ones)
    failures: int  # bearing failures in the stored history


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Factory]:
    """Seven days of the demo factory at one reading a minute (as ``shopfloor demo``
    simulates its history), then on until a bearing is well on its way to failing."""
    tmp = tmp_path_factory.mktemp("predictive")
    platform = Platform(Settings(data_dir=tmp / "platform", mqtt_mode="off"))
    tenant, _ = platform.registry.create_tenant("t")
    sim = FactorySimulator(seed=1, start_ns=DAY0, period_s=60)
    register_factory(platform.registry, tenant.id, sim)
    machines = sim.machines()
    names = [m.name for m in machines]
    ids = {
        m.name: platform.registry.resolve(
            tenant.id, m.name, [s.name for s in m.signals], [s.data_type for s in m.signals]
        )
        for m in machines
    }
    # Only the signals the app reads are stored: the historian then answers the app's reads
    # several times faster (its uncompacted points are fewer), which keeps the test short.
    wanted = {*DEFAULT_SIGNALS, "state", "fault_code"}
    keep = np.concatenate([ids[m.name][[s.name in wanted for s in m.signals]] for m in machines])
    fault_at = {m.name: [s.name for s in m.signals].index("fault_code") for m in machines}
    failures = 0
    pending: list[Any] = []

    def flush() -> None:
        b = to_batch(tenant.id, pending, ids)
        platform.historian.write(b.filter(np.isin(b.column("signal_id").to_numpy(), keep)))
        pending.clear()

    prev = dict.fromkeys(names, 0.0)

    def count(frames: list[Any]) -> None:
        nonlocal failures
        for f in frames:
            v = float(f.values[fault_at[f.device]])
            if v == 201 and prev[f.device] != 201:
                failures += 1
            if np.isfinite(v):
                prev[f.device] = v

    for frames in sim.run_until(DAY0 + 7 * 86_400 * S):
        pending.append(frames)
        count(frames)
        if len(pending) == 1440:
            flush()
    for frames in sim.run_until(DAY0 + 9 * 86_400 * S):  # until a bearing is well worn
        pending.append(frames)
        count(frames)
        if sim.fault_severity.max() > 0.4:
            break
    flush()
    end = sim.now_ns
    severity = dict(zip(names, sim.fault_severity.tolist(), strict=True))
    # The truth: go on (storing nothing) until the worn bearings fail.
    worn = {n for n, v in severity.items() if v > 0.1}
    true_rul: dict[str, float] = {}
    while worn - set(true_rul) and sim.now_ns < end + 30 * HOUR_NS:
        for f in sim.step():
            if (
                f.device in worn
                and f.device not in true_rul
                and f.values[fault_at[f.device]] == 201
            ):
                true_rul[f.device] = (f.ts_ns - end) / HOUR_NS
    try:
        yield Factory(platform, tenant.id, end, severity, true_rul, failures)
    finally:
        platform.close()


@dataclass
class Trained:
    factory: Factory
    app: PredictiveApp
    ctx: PlatformContext


@pytest.fixture(scope="module")
def trained(factory: Factory) -> Trained:
    """The app's first tick over the stored history: it reads it all and trains."""
    ctx = factory.platform.app_context(factory.tenant_id, "predictive")
    app = PredictiveApp(ctx, config())
    assert len(app.subscriptions()) == 20  # each machine's fault_code
    # One tick reads it all and trains; on a busy machine its reading budget (CATCHUP_S) may
    # run out first, and the next ticks go on where it stopped.
    for _ in range(20):
        app.on_tick(factory.end)
        if app.model is not None:
            break
    return Trained(factory, app, ctx)


def test_trains_registers_and_predicts_on_a_week_of_history(trained: Trained) -> None:
    factory, app, ctx = trained.factory, trained.app, trained.ctx
    # The premise, from the simulator's truth: one machine's bearing is worn and fails within
    # hours; the others are (nearly all) healthy; the week held enough failures to train on.
    (worn,) = [n for n, v in factory.severity.items() if v > 0.1]
    assert 0.4 < factory.severity[worn] < 1.0
    assert 0.0 < factory.true_rul[worn] < 6.0
    healthy = [n for n, v in factory.severity.items() if v == 0.0]
    assert len(healthy) >= 17
    assert factory.failures >= 10

    platform, tid = factory.platform, factory.tenant_id
    # A model was trained, registered for the tenant, made active.
    reg = ModelRegistry(ctx.data_dir / "models")
    assert reg.active_version(tid, "rul") == 1
    meta = reg.list_versions(tid, "rul")[0].metadata
    assert meta["training_data"]["config"]["signals"] == list(DEFAULT_SIGNALS)
    n_runs = len(meta["training_data"]["runs"]) + len(meta["training_data"]["held_out"])
    assert n_runs == app.trained_failures
    assert n_runs >= factory.failures - 3  # a failure right at the start may make no run
    assert len(meta["training_data"]["held_out"]) == 3
    ev = meta["evaluation"]
    assert ev["cuts"] >= 9
    assert 0 < ev["rmse"] < 12
    done = [e for e in ctx.events if e.kind == "model_trained"]
    assert len(done) == 1
    assert done[0].details["version"] == 1

    # Every machine got an estimate, written as three derived signals in hours.
    rows = {r["machine"]: r for r in app.route_machines({})["machines"]}
    assert len(rows) == 20
    est = {n: r["rul_hours"] for n, r in rows.items()}
    assert all(v is not None and 0 <= v <= 24 for v in est.values()), est
    for _n, r in rows.items():
        assert r["lower_hours"] <= r["rul_hours"] <= r["upper_hours"]
    units = {s.name: s.unit for s in platform.registry.list_signals(tid, worn)}
    assert units["rul_hours"] == units["rul_lower_hours"] == units["rul_upper_hours"] == "h"

    # The worn machine is expected to fail soon, and much sooner than any healthy one.
    assert est[worn] < 6.0, est
    assert abs(est[worn] - factory.true_rul[worn]) < 3.0, (est[worn], factory.true_rul[worn])
    assert est[worn] < min(est[n] for n in healthy) - 8.0
    assert float(np.median([est[n] for n in healthy])) > 18.0
    assert rows[worn]["warning"] is True
    assert rows[worn]["status"] == "warning"
    assert [n for n in healthy if rows[n]["warning"]] == []
    warned = [e for e in ctx.events if e.kind == "maintenance_warning"]
    assert [e.device for e in warned] == [worn]

    # The alarm comes from a rule the app keeps, on its derived signal.
    rule = platform.rules.get(tid, f"predictive:rul-{worn}")
    assert rule.kind == "threshold"
    assert rule.device == worn
    assert int(rule.priority) == 2
    assert rule.definition["signal"] == "rul_hours"
    assert rule.definition["direction"] == "low"
    assert rule.definition["limit"] == 6.0
    assert rule.message == "maintenance: bearing failure expected within 6 h"

    model = app.route_model({})
    assert model["status"] == "trained"
    assert model["version"] == 1
    assert model["training"]["cv_rmse_hours"] > 0
    assert model["evaluation"]["n_units"] == ev["n_units"]
    json.dumps(model, allow_nan=False)
    hist = app.route_history({})  # the machine with the lowest estimate
    assert hist["machine"] == worn
    assert [p["rul_hours"] for p in hist["points"]] == [pytest.approx(est[worn], abs=1e-3)]
    one = app.route_history({"machine": healthy[0], "since": "-30d"})["points"]
    assert len(one) == 1
    assert one[0]["lower_hours"] <= one[0]["rul_hours"] <= one[0]["upper_hours"]
    with pytest.raises(NotFound):
        app.route_history({"machine": "nope"})
    with pytest.raises(BadInput) as bad:
        app.route_history({"since": "yesterday"})
    assert bad.value.field == "since"

    # A second tick with no new data writes nothing new and does not train again.
    written = ctx.points_written
    app.on_tick(factory.end + MIN)
    assert ctx.points_written == written
    assert reg.active_version(tid, "rul") == 1

    # State round trip: small, and a new instance finds the active model in the registry.
    state = json.loads(json.dumps(app.state()))
    assert state["model_version"] == 1
    assert state["warnings"] == [worn]
    ctx2 = platform.app_context(tid, "predictive")
    again = PredictiveApp(ctx2, config())
    again.restore(state)
    assert again.state() == state
    assert again.model is not None
    again.subscriptions()
    for _ in range(20):  # reads the history again (over several ticks when busy), no retrain
        again.on_tick(factory.end)
    assert reg.active_version(tid, "rul") == 1
    assert len(reg.list_versions(tid, "rul")) == 1
    rows2 = {r["machine"]: r["rul_hours"] for r in again.route_machines({})["machines"]}
    assert rows2 == est  # the same model on the same data
    # the warning was restored: no second event for the same machine
    assert not [e for e in ctx2.events if e.kind == "maintenance_warning"]

    # A model trained with other signals is not used by this config.
    other = PredictiveApp(platform.app_context(tid, "predictive"), config(signals=["vib_x_rms"]))
    other.restore(state)
    assert other.model is None
    assert other.state()["model_version"] is None
    assert other.problem is not None
    assert "another config" in other.problem


# -- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"warning_hours": 30.0}, "config.warning_hours"),  # not below the cap (24)
        ({"min_failures": 2}, "config.min_failures"),  # fewer than n_folds (3)
        ({"signals": []}, "config.signals"),
        ({"signals": ["a", "a"]}, "config.signals"),
        ({"resample_s": 10}, "config.resample_s"),
        ({"windows": [1]}, "config.windows"),
        ({"model_name": "../x"}, "config.model_name"),
        ({"failure": {"signal": "fault_code", "value": 3}}, "config.failure.value"),
        ({"candidates": []}, "config.candidates"),
        ({"no_such": 1}, "config.no_such"),
    ],
)
def test_bad_config_names_the_field(over: dict[str, Any], field: str) -> None:
    with pytest.raises(BadInput) as exc:
        parse_app_config(PredictiveApp, {**PredictiveApp.example_config, **over})
    assert exc.value.field == field


def test_defaults_keep_training_small() -> None:
    tc = config().train_config()
    assert tc.cap == 24.0
    assert tc.n_jobs == 1
    assert tc.n_seeds == 1
    assert tc.n_folds == 3
    assert len(tc.candidates) == 1
    assert tc.features.windows == (6, 24)
    assert tc.features.time_since_start is False


# -- the grid and the runs, by hand ----------------------------------------------------------


def series(ts: list[int], values: list[float]) -> Series:
    return Series(np.asarray(ts, np.int64), np.asarray(values, np.float64))


def test_value_at_takes_the_last_value_at_or_before() -> None:
    gate = series([10, 20], [2.0, 1.0])
    got = value_at(gate, 5.0, np.asarray([5, 10, 15, 20, 25], np.int64))
    assert got.tolist() == [5.0, 2.0, 2.0, 1.0, 1.0]
    assert np.isnan(value_at(gate, None, np.asarray([5], np.int64))[0])


def test_failure_events_across_chunks() -> None:
    ev, last = failure_events(series([1, 2, 3, 4, 5], [0, 201, 201, 101, 0]), 201.0, None)
    assert ev == [("failure", 2), ("recovered", 4)]
    assert last == 0.0
    # carried over: the previous chunk ended in the failure; NaN points say nothing
    ev, last = failure_events(series([6, 7, 8], [201, np.nan, 0]), 201.0, 201.0)
    assert ev == [("recovered", 8)]
    assert last == 0.0
    # data that start inside a failure: no onset seen, only the recovery
    ev, _ = failure_events(series([1, 2, 3], [201, 201, 0]), 201.0, None)
    assert ev == [("recovered", 3)]
    assert failure_events(series([], []), 201.0, 3.0) == ([], 3.0)


def test_grid_rows_average_the_running_points_and_skip_the_rest() -> None:
    # steps of 10 from 100: [100, 110) [110, 120) [120, 130)
    a = series([100, 102, 104, 111, 113, 121, 123, 125], [1, 3, 5, 7, 9, 2, 4, 100])
    b = series([100, 102, 104, 111, 113, 121, 123, 125], [10, 30, np.nan, 70, 90, 1, 1, 1])
    # running (2) from 100, idle (1) from 112, running again from 120, idle at 125
    gate = series([100, 112, 120, 125], [2, 1, 2, 1])
    ts, rows = grid_rows(100, 130, 10, [a, b], gate, 2.0, None)
    # step 1: a 1,3,5 (all running), b 10,30 (NaN dropped): means 3 and 20, last point 104
    # step 2: a 7 running, 9 idle: 1 of 2 points = half, kept: a 7, b 70, last point 111
    # step 3: 121, 123 running, 125 idle: 2 of 3 kept: a 3, b 1, last point 123
    assert ts.tolist() == [104, 111, 123]
    assert rows.tolist() == [[3.0, 20.0], [7.0, 70.0], [3.0, 1.0]]
    # with a stricter share the half-running step goes
    ts, _ = grid_rows(100, 130, 10, [a, b], gate, 2.0, None, min_fraction=0.6)
    assert ts.tolist() == [104, 123]
    # the gate carried in from the previous chunk: idle, so nothing qualifies before 112
    gate2 = series([120, 125], [2, 1])
    ts, rows = grid_rows(100, 130, 10, [a, b], gate2, 2.0, 1.0)
    assert ts.tolist() == [123]
    # no gate: every point counts
    ts, rows = grid_rows(100, 130, 10, [a, b], None, 2.0, None)
    assert ts.tolist() == [104, 113, 125]
    assert rows[1].tolist() == [8.0, 80.0]
    assert rows[2].tolist() == pytest.approx([106 / 3, 1.0])


def test_split_runs_between_failures() -> None:
    row_ts = np.asarray([10, 20, 30, 40, 50, 60, 70], np.int64)
    events = [("failure", 35), ("recovered", 45), ("failure", 62), ("recovered", 65)]
    failed, current = split_runs(row_ts, events, data_start=5)
    assert failed == [(5, 35, 0, 3), (45, 62, 4, 6)]
    assert current == (65, 6)
    # in a failure now: no current run
    failed, current = split_runs(row_ts, events[:3], data_start=5)
    assert len(failed) == 2
    assert current is None
    # data that start inside a failure: the first run starts at the recovery
    failed, current = split_runs(row_ts, [("recovered", 25)], data_start=5)
    assert failed == []
    assert current == (25, 2)


def test_make_run_stamps_the_failure_and_reference_scales() -> None:
    rows = np.asarray([[1.0, 0.0], [2.0, 0.0], [4.0, 0.0]])
    ts = np.asarray([0, 1, 2], np.int64) * HOUR_NS + 10 * HOUR_NS
    run = make_run("m", ts, rows, 9 * HOUR_NS, ("a", "b"), failure=12 * HOUR_NS + HOUR_NS // 2)
    assert run.time.tolist() == [1.0, 2.0, 3.5]  # hours since the run start; last = failure
    assert run.rul().tolist() == [2.5, 1.5, 0.0]
    live = make_run("m", ts, rows, 9 * HOUR_NS, ("a", "b"))
    assert live.failed is False
    assert live.time.tolist() == [1.0, 2.0, 3.0]
    assert reference(rows).tolist() == [2.0, 1.0]  # medians; about zero -> 1


def test_reading_in_steps_gives_the_same_rows_as_at_once(trained: Trained) -> None:
    """As in ``shopfloor demo``: the history arrives while the app runs; the host's batches
    say how far it is stored, and each tick reads the complete steps up to there."""
    factory, once = trained.factory, trained.app
    platform, tid = factory.platform, factory.tenant_id
    steps = PredictiveApp(platform.app_context(tid, "predictive"), config(min_failures=100))
    sids = np.asarray(steps.subscriptions(), np.int32)
    for t in (DAY0 + 36 * HOUR_NS + 17 * MIN, DAY0 + 100 * HOUR_NS, factory.end):
        steps.on_points(PointBatch(sids, np.full(len(sids), t, np.int64), np.zeros(len(sids))))
        steps.on_tick(factory.end)  # the wall clock is ahead of the data, as in the demo
    for _ in range(20):  # on a busy machine a tick's reading budget may run out: go on
        steps.on_tick(factory.end)
    assert steps.data_time() == factory.end
    for name, m in once.machines.items():
        s = steps.machines[name]
        assert len(m.row_ts) > 500
        np.testing.assert_array_equal(s.row_ts, m.row_ts)
        np.testing.assert_allclose(s.rows, m.rows, rtol=1e-12)
        assert s.events == m.events
    # Without any state it found the active model (min_failures does not change what a
    # model is trained on) and did not train again: the model's data time is the data's.
    assert steps.route_model({})["version"] == 1
    assert len(ModelRegistry(trained.ctx.data_dir / "models").list_versions(tid, "rul")) == 1
