"""The OEE app: conformance, live KPIs equal to the library's on the same historian data,
roll-ups, past-range reports, parameter errors and the OEE-warning rule."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shopfloor.apps.oee import (
    CounterSeries,
    ProductSeries,
    StateSeries,
    current_shift_oee,
    parse_calendar,
    roll_up_kpis,
)
from shopfloor.apps.oee.app import (
    DEFAULT_CALENDAR,
    DEFAULT_STATE_MAP,
    OeeApp,
    OeeConfig,
    Track,
    extend_track,
    inputs_from_json,
)
from shopfloor.apps.sdk import Series
from shopfloor.core.errors import BadInput
from shopfloor.testing import check_app

NS = 10**9
MIN = 60 * NS
T_START = int(datetime(2026, 3, 2, 13, 40, tzinfo=UTC).timestamp()) * NS
SHIFT_CHANGE = int(datetime(2026, 3, 2, 14, 0, tzinfo=UTC).timestamp()) * NS
T_END = T_START + 40 * MIN
PRESSES = {"device_type": "simulated-press", "warning_after_min": 15.0}


def _ms(ns: int) -> str:
    return str(ns // 1_000_000)


# --------------------------------------------------------------------------- conformance


def test_check_app_passes_and_the_app_writes_its_signals(tmp_path: Path) -> None:
    # The packers only, to keep the run short (each machine costs 7 historian reads and 5
    # writes per tick); the example config covers every machine.
    report = check_app(OeeApp, tmp_path, config={"device_type": "simulated-packer"}, minutes=20)
    assert report.ok, str(report)
    for signal in ("oee", "availability", "effectiveness", "quality_ratio", "oee_armed"):
        assert report.signals_written.get(f"packer-01/{signal}", 0) > 0, report.signals_written
    assert not any(k.startswith("press-") for k in report.signals_written)
    current = report.routes["current"]
    assert current["shift"] is not None
    assert {m["machine"] for m in current["machines"]} == {f"packer-0{i}" for i in range(1, 4)}
    assert {g["name"] for g in current["lines"]} == {"line-1", "line-2", "line-3"}
    assert [s["name"] for s in current["sites"]] == ["Plant 1"]
    assert report.routes["report"]["shifts"]  # the last 24 h by shift
    assert isinstance(report.routes["downtime"]["pareto"], list)


def test_config_defaults_and_errors() -> None:
    cfg = OeeConfig()
    assert cfg.calendar == DEFAULT_CALENDAR
    cal = parse_calendar(cfg.calendar)
    assert [s.name for s in cal.shifts] == ["early", "late", "night"]
    assert all(len(s.breaks) == 1 for s in cal.shifts)
    assert cfg.state_map["4"] == "down"
    assert cfg.state_map["0"] == "planned_stop"
    with pytest.raises(ValueError, match="timezone"):
        OeeConfig(calendar={"timezone": "Mars/Base", "shifts": []})
    with pytest.raises(ValueError, match="not one of"):
        OeeConfig(state_map={"2": "producing"})
    with pytest.raises(ValueError, match="produced or a good"):
        OeeConfig(produced=None, good=None)


# --------------------------------------------------------------------------- a platform


class Harness:
    """A real platform with the demo factory, fed 13:40-14:20 UTC (the 14:00 shift change)
    and the app ticked every 5 minutes."""

    def __init__(self, tmp: Path) -> None:
        from shopfloor.api.platform import Platform
        from shopfloor.cli.demo import register_factory, to_batch
        from shopfloor.core.config import Settings
        from shopfloor.edge.connectors.simulator import FactorySimulator

        self.platform = Platform(Settings(data_dir=tmp / "p", mqtt_mode="off"))
        tenant, _ = self.platform.registry.create_tenant("oee-test")
        self.tenant_id = tenant.id
        sim = FactorySimulator(seed=5, start_ns=T_START)
        register_factory(self.platform.registry, tenant.id, sim)
        ids = {
            m.name: self.platform.registry.resolve(
                tenant.id, m.name, [s.name for s in m.signals], [s.data_type for s in m.signals]
            )
            for m in sim.machines()
        }
        self.ctx = self.platform.app_context(tenant.id, "oee")
        self.app = OeeApp(self.ctx, OeeConfig.model_validate(PRESSES))
        self.ticks: list[int] = []
        self.armed_at: dict[int, float] = {}
        pending: list[Any] = []
        n = 0
        for frames in sim.run_until(T_END):
            pending.append(frames)
            if len(pending) < 60:
                continue
            batch = to_batch(tenant.id, pending, dict(ids))
            pending = []
            self.platform.historian.write(batch)
            n += 1
            if n % 5 == 0:
                now = int(batch.column("ts").to_numpy().max())
                self.app.on_tick(now)
                self.ticks.append(now)
        self.now = self.ticks[-1]

    def close(self) -> None:
        self.platform.close()

    def sid(self, device: str, signal: str) -> int:
        d = next(d for d in self.ctx.devices() if d.name == device)
        return d.signals[signal]

    def series(self, device: str, signal: str, t0: int, t1: int) -> tuple[Any, Any]:
        """The last good sample before t0 and the good samples in [t0, t1)."""
        sid = self.sid(device, signal)
        before = self.ctx.read(sid, t0 - 10 * MIN, t0)
        ok = np.isfinite(before.values)
        s = self.ctx.read(sid, t0, t1)
        good = np.isfinite(s.values)
        ts = np.concatenate((before.ts[ok][-1:], s.ts[good]))
        return ts, np.concatenate((before.values[ok][-1:], s.values[good]))

    def reference(self, device: str, t0: int, now: int) -> Any:
        """current_shift_oee straight from the historian: independent of the app's code."""
        st_ts, st = self.series(device, "state", t0, now)
        fc_ts, fc = self.series(device, "fault_code", t0, now)
        pos = np.searchsorted(fc_ts, st_ts, side="right") - 1
        reasons = [None if p < 0 or fc[p] == 0 else str(int(fc[p])) for p in pos]
        states = StateSeries(st_ts, [str(int(c)) for c in st], reasons)
        counts = {}
        for kind, signal in (
            ("produced", "total_count"),
            ("good", "good_count"),
            ("scrap", "scrap_count"),
        ):
            ts, v = self.series(device, signal, t0, now)
            counts[kind] = CounterSeries(ts, v)
        pr_ts, pr = self.series(device, "product_code", t0, now)
        ic_ts, ic = self.series(device, "ideal_cycle_time", t0, now)
        ideal = {}
        for t, code in zip(pr_ts, pr, strict=True):
            ideal[str(int(code))] = float(ic[np.searchsorted(ic_ts, t, side="right") - 1])
        products = ProductSeries(pr_ts, [str(int(c)) for c in pr])
        return current_shift_oee(
            parse_calendar(DEFAULT_CALENDAR),
            now,
            states,
            counts,
            ideal,
            products=products,
            state_map=dict(DEFAULT_STATE_MAP),
        )


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    started = time.monotonic()
    h = Harness(tmp_path_factory.mktemp("oee-app"))
    assert time.monotonic() - started < 40
    yield h
    h.close()


def _close(a: Any, b: Any) -> None:
    if a is None or b is None:
        assert a is b
    else:
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)


KPI_NAMES = ("availability", "effectiveness", "quality_ratio", "oee", "setup_rate", "mttr_s")


def test_current_machine_kpis_equal_the_library_on_the_historian_data(harness: Harness) -> None:
    view = harness.app.current_view({})
    assert view["shift"]["label"] == "2026-03-02 late"
    machines = {m["machine"]: m for m in view["machines"]}
    assert set(machines) == {f"press-0{i}" for i in range(1, 6)}
    produced_any = False
    for name, row in machines.items():
        ref = harness.reference(name, SHIFT_CHANGE, harness.now)
        assert ref is not None
        for k in KPI_NAMES:
            _close(row["kpis"][k], getattr(ref.kpis, k))
        assert row["counts"]["produced"] == ref.inputs.quantities.produced
        assert row["counts"]["good"] == ref.inputs.quantities.good
        assert row["times_s"]["apt"] == ref.inputs.times.apt_ns / NS
        assert row["times_s"]["pot"] == (harness.now - SHIFT_CHANGE) / NS
        assert row["failures"] == ref.inputs.failures
        produced_any |= ref.inputs.quantities.produced > 0
    assert produced_any  # the comparison is not all zeros


def test_a_line_is_the_roll_up_of_its_machines(harness: Harness) -> None:
    view = harness.app.current_view({})
    lines = {g["name"]: g for g in view["lines"]}
    assert set(lines) == {"line-1", "line-2", "line-3"}
    assert lines["line-1"]["machines"] == ["press-01", "press-02"]
    leaves = {
        m: harness.reference(m, SHIFT_CHANGE, harness.now).inputs
        for line in lines.values()
        for m in line["machines"]
    }
    parent_of = {m: line for line, g in lines.items() for m in g["machines"]}
    parent_of.update({line: "Assembly" for line in lines})
    expected = roll_up_kpis(leaves, parent_of)
    for line, group in lines.items():
        for k in KPI_NAMES:
            _close(group["kpis"][k], getattr(expected[line], k))
    (area,) = view["areas"]
    _close(area["kpis"]["oee"], expected["Assembly"].oee)
    # Sums, not means: the line's OEE is not the mean of its machines' (when they differ).
    per = [harness.app.current[m] for m in lines["line-1"]["machines"]]
    total = sum(inputs_from_json(r["inputs"]).quantities.produced for r in per)
    assert lines["line-1"]["counts"]["produced"] == total


def test_the_shift_change_emits_the_finished_shift(harness: Harness) -> None:
    ends = [e for e in harness.ctx.events if e.kind == "shift-end"]
    assert [e.details["shift"] for e in ends] == ["2026-03-02 early"]
    assert set(harness.app.previous) == {f"press-0{i}" for i in range(1, 6)}
    assert all(r["label"] == "2026-03-02 early" for r in harness.app.previous.values())


def test_report_over_a_shift_change_gives_two_shift_records(harness: Harness) -> None:
    answer = harness.app.report({"start": _ms(T_START), "end": _ms(T_END), "asset": "line-1"})
    assert answer["machines"] == ["press-01", "press-02"]
    shifts = answer["shifts"]
    assert [s["label"] for s in shifts] == ["2026-03-02 early", "2026-03-02 late"]
    assert [s["times_s"]["pot"] for s in shifts] == [2 * 20 * 60.0, 2 * 20 * 60.0]  # 2 machines
    assert all(s["partial"] for s in shifts)
    produced = sum(s["counts"]["produced"] for s in shifts)
    assert answer["total"]["counts"]["produced"] == produced
    assert answer["total"]["times_s"]["pot"] == 2 * 2 * 20 * 60.0  # two machines
    # The late part equals the live view of the same machines up to the last tick.
    live = harness.app.report(
        {"start": _ms(SHIFT_CHANGE), "end": _ms(harness.now), "asset": "press-01"}
    )
    row = next(m for m in harness.app.current_view({})["machines"] if m["machine"] == "press-01")
    assert live["total"]["kpis"]["oee"] == row["kpis"]["oee"]
    assert live["total"]["counts"] == row["counts"]


def test_downtime_pareto_is_sorted_and_sums_the_non_running_time(harness: Harness) -> None:
    answer = harness.app.downtime({"start": _ms(T_START), "end": _ms(T_END)})
    rows = answer["pareto"]
    seconds = [r["seconds"] for r in rows]
    assert seconds == sorted(seconds, reverse=True)
    if rows:
        assert rows[-1]["cumulative_share"] == pytest.approx(1.0)
    report = harness.app.report({"start": _ms(T_START), "end": _ms(T_END)})
    t = report["total"]["times_s"]
    # Every second not running is in the Pareto (no break in this range).
    assert t["planned_downtime"] == 0
    assert sum(seconds) == pytest.approx(t["pot"] - t["apt"])
    assert {r["state"] for r in rows} <= {"setup", "down", "idle", "planned_stop", "unknown"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start": "yesterday"}, "start"),
        ({"end": "soon"}, "end"),
        ({"start": "-1h", "end": "-2h"}, "end"),
        ({"start": "-40d"}, "end"),
        ({"start": "-1h", "asset": "line-9"}, "asset"),
    ],
)
def test_bad_params_name_the_param(harness: Harness, params: dict[str, str], field: str) -> None:
    for route in (harness.app.report, harness.app.downtime):
        with pytest.raises(BadInput) as err:
            route(params)
        assert err.value.field == field


def test_the_oee_warning_rule_exists_and_is_armed_after_the_delay(harness: Harness) -> None:
    rule = harness.platform.rules.get(harness.tenant_id, "oee:oee-low-press-01")
    assert rule.kind == "expression"
    assert rule.device == "press-01"
    assert int(rule.priority) == 4
    assert rule.definition["expression"] == "oee < 0.6 and oee_armed >= 1"
    armed = harness.ctx.read(harness.sid("press-01", "oee_armed"), 0, 2**62)
    by_ts = dict(zip(armed.ts.tolist(), armed.values.tolist(), strict=True))
    # 15 min into a shift (warning_after_min): 13:45 and 13:55 early armed, 14:00 and
    # 14:05 late not yet (written at the change only), 14:15 late armed.
    assert by_ts[SHIFT_CHANGE] == 0.0
    assert by_ts[SHIFT_CHANGE + 15 * MIN] == 1.0
    assert SHIFT_CHANGE + 5 * MIN not in by_ts  # unchanged: not written again
    assert by_ts[T_START + 5 * MIN] == 1.0


def test_state_round_trips(harness: Harness) -> None:
    state = harness.app.state()
    again = OeeApp(harness.ctx, OeeConfig.model_validate(PRESSES))
    again.restore(state)
    assert again.state() == state
    assert again.current_view({})["machines"] == harness.app.current_view({})["machines"]


# --------------------------------------------------------------------------- hand-made data


def _s(ts: list[int], values: list[float]) -> Series:
    return Series(np.array(ts, np.int64), np.array(values, np.float64))


def test_track_compacts_counts_per_product_exactly() -> None:
    """Counts with a failed poll (NaN), a reset and a product change, read in two ticks."""
    t0 = 1000
    data = {
        "state": _s([990, 1000, 1050], [2, 2, 4]),
        "reason": _s([990, 1050], [0, 101]),
        "product": _s([990, 1030], [7, 8]),
        "ideal": _s([990, 1030], [2.0, 3.0]),
        # 100 before t0; +1 at 1010, NaN at 1020, +4 at 1025 (after the NaN), reset to 2
        # at 1040 (+2, product 8), +3 at 1060.
        "produced": _s([995, 1010, 1020, 1025, 1040, 1060], [100, 101, np.nan, 105, 2, 5]),
        "good": _s([995, 1010, 1025, 1040, 1060], [90, 91, 95, 2, 4]),
    }

    def finite(s: Series) -> Series:
        ok = np.isfinite(s.values)
        return Series(s.ts[ok], s.values[ok])

    def read(role: str, start: int, end: int) -> Series:
        s = finite(data.get(role, _s([], [])))
        m = (s.ts >= start) & (s.ts < end)
        return Series(s.ts[m], s.values[m])

    def before(role: str, ts: int) -> tuple[int, float] | None:
        s = finite(data.get(role, _s([], [])))
        m = s.ts < ts
        return (int(s.ts[m][-1]), float(s.values[m][-1])) if m.any() else None

    cfg = OeeConfig(scrap=None)
    track = Track(t0, t0)
    extend_track(track, cfg, read, before, 1035)
    extend_track(track, cfg, read, before, 1100)
    assert track.products == [[999, "7"], [1030, "8"]]
    assert track.ideal == {"7": 2.0, "8": 3.0}
    # product 7 (segment 1): 1 + 4 = 5 parts, dated by the last one; product 8: 2 + 3.
    assert track.counts["produced"] == [[1025, 5.0, 1], [1060, 5.0, 2]]
    assert track.counts["good"] == [[1025, 5.0, 1], [1060, 4.0, 2]]
    assert track.states == [[999, "2", None], [1050, "4", "101"]]
    # And back through JSON.
    assert Track.from_json(track.to_json()) == track
