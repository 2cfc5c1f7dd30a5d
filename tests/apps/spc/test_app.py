"""The SPC app: conformance on the demo factory, and its logic on hand-made data.

The hand-made tests run the app on a real platform (SQLite registry, DuckDB historian) with a
device of their own, ``gauge-01``, and feed it points directly as the host would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shopfloor.apps.catalogue import parse_app_config
from shopfloor.apps.context import PlatformContext
from shopfloor.apps.sdk import PointBatch
from shopfloor.apps.spc.app import EXAMPLE_CHART, SpcApp, SpcConfig
from shopfloor.apps.spc.constants import d2
from shopfloor.core.errors import BadInput, NotFound
from shopfloor.registry.service import SignalSpec
from shopfloor.testing import check_app

S = 10**9
T0 = 1_800_000_000 * S  # 2027-01-15, a whole second


# -- conformance on the demo factory -------------------------------------------------------


def test_example_config_conforms_and_collects_a_baseline(tmp_path: Path) -> None:
    report = check_app(SpcApp, tmp_path, minutes=30)
    assert report.ok, str(report)
    charts = report.routes["charts"]["charts"]
    assert [c["device"] for c in charts] == ["packer-01", "packer-02", "packer-03"]
    for chart in charts:
        # one point a minute while running, 5 a subgroup: at most 6 subgroups in 30 minutes
        assert chart["phase"] == "baseline"
        assert chart["baseline"]["needed"] == 25
        assert 0 <= chart["baseline"]["collected"] <= 6
        assert chart["limits"] is None
    written = {k for k in report.signals_written if "/spc_seal_temp_" in k}
    assert all(k.rsplit("/", 1)[1] in ("spc_seal_temp_xbar", "spc_seal_temp_r") for k in written)
    assert report.routes["chart"]["id"] == "seal_temp"


def test_faster_config_reaches_phase_two_on_the_demo_factory(tmp_path: Path) -> None:
    fast = {**EXAMPLE_CHART, "subgroup_every_s": 5.0, "baseline_subgroups": 10}
    report = check_app(SpcApp, tmp_path, config={"charts": [fast]}, minutes=25)
    assert report.ok, str(report)
    kinds = {e["kind"] for e in report.events}
    assert "baseline_frozen" in kinds
    monitoring = [c for c in report.routes["charts"]["charts"] if c["phase"] == "monitoring"]
    assert monitoring
    for chart in monitoring:
        limits = chart["limits"]
        # seal_temp sits on its recipe setpoint with 0.2 K of sensor noise
        assert min(abs(limits["center"] - sp) for sp in (150, 165, 175)) < 0.2
        assert 0.1 < limits["sigma"] < 0.35
        assert chart["usl"] - chart["lsl"] == pytest.approx(2.0)
        cap = chart["capability"]["baseline"]
        assert 1.0 < cap["cp"] < 3.0  # 2 K of tolerance over 6 x 0.2 K: about 1.7
        key = f"{chart['device']}/spc_seal_temp_violations"
        assert report.signals_written[key] > 0
    points = report.routes["chart"]["points"]
    assert 0 < len(points) <= 50
    assert points[-1]["phase"] == "monitoring"
    assert points[-1]["ucl"] > points[-1]["center"] > points[-1]["lcl"]


# -- a platform with a gauge of our own ----------------------------------------------------


class Bench:
    """A platform with one device ``gauge-01`` (signals diameter, state, recipe)."""

    def __init__(self, tmp_path: Path) -> None:
        from shopfloor.api.platform import Platform
        from shopfloor.core.config import Settings

        self.platform = Platform(Settings(data_dir=tmp_path / "p", mqtt_mode="off"))
        reg = self.platform.registry
        self.tenant = reg.create_tenant("spc-test")[0].id
        reg.create_device_type(
            self.tenant,
            "gauge",
            [SignalSpec("diameter", unit="mm"), SignalSpec("state"), SignalSpec("recipe")],
            description="a test gauge",
        )
        reg.create_device(self.tenant, "gauge-01", "gauge")
        self.ids = {s.name: s.id for s in reg.list_signals(self.tenant, "gauge-01")}

    def app(self, chart: dict[str, Any]) -> tuple[SpcApp, PlatformContext]:
        ctx = self.platform.app_context(self.tenant, "spc")
        cfg = parse_app_config(SpcApp, {"charts": [chart]})
        assert isinstance(cfg, SpcConfig)
        return SpcApp(ctx, cfg), ctx

    def batch(self, rows: Sequence[tuple[str, int, float]]) -> PointBatch:
        return PointBatch(
            np.array([self.ids[name] for name, _, _ in rows], np.int32),
            np.array([ts for _, ts, _ in rows], np.int64),
            np.array([v for _, _, v in rows], np.float64),
        )

    def values(self, signal: str) -> list[float]:
        sig = self.platform.registry.get_signal(self.tenant, f"gauge-01/{signal}")
        table = self.platform.historian.query_raw(self.tenant, [sig.id], 0, 2**62)
        return [float(v) for v in table.column("value").to_pylist()]


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    b = Bench(tmp_path)
    try:
        yield b
    finally:
        b.platform.close()


XBAR = {
    "id": "dia",
    "device": "gauge-01",
    "signal": "diameter",
    "chart": "xbar_r",
    "subgroup_size": 2,
    "baseline_subgroups": 4,
    "rules": "nelson",
    "lsl": 4.0,
    "usl": 16.0,
    "unit": "mm",
}


def diameters(subgroups: Sequence[Sequence[float]], start: int = 0) -> list[tuple[str, int, float]]:
    """One point a second, subgroup after subgroup."""
    flat = [v for g in subgroups for v in g]
    return [("diameter", T0 + (start + i) * S, v) for i, v in enumerate(flat)]


# Baseline: means 10, 10, 11, 9 (x̿ = 10), ranges all 2 (R̄ = 2), so with n = 2
# sigma = R̄/d2(2) = 1.7725, sigma of a mean = 1.2533 and UCL = 10 + A2·R̄ = 13.760.
BASELINE = [[9.0, 11.0], [11.0, 9.0], [10.0, 12.0], [10.0, 8.0]]
# Phase II: three subgroups on the center line, then the process shifts by 3 sigma (5.3).
PHASE_TWO = [[10.0, 10.0], [10.0, 10.0], [10.0, 10.0], [15.0, 16.0], [15.5, 15.5]]


def test_limits_from_the_baseline_by_hand(bench: Bench) -> None:
    app, ctx = bench.app(XBAR)
    app.on_points(bench.batch(diameters(BASELINE)))
    chart = app.route_charts({})["charts"][0]
    assert chart["phase"] == "monitoring"
    limits = chart["limits"]
    sigma = 2.0 / d2(2)
    assert limits["center"] == pytest.approx(10.0)
    assert limits["sigma"] == pytest.approx(sigma)
    assert limits["ucl"] == pytest.approx(10.0 + 3 * sigma / np.sqrt(2))
    assert limits["ucl"] == pytest.approx(13.760, abs=1e-3)  # A2(2) = 1.880
    assert limits["dispersion_ucl"] == pytest.approx(3.267 * 2.0, abs=2e-3)  # D4(2) = 3.267
    cap = chart["capability"]["baseline"]
    assert cap["cp"] == pytest.approx(12.0 / (6 * sigma))
    assert cap["cpk"] == pytest.approx(6.0 / (3 * sigma))
    assert [e.kind for e in ctx.events] == ["baseline_frozen"]
    # the plotted statistics were written for every baseline subgroup
    assert bench.values("spc_dia_xbar") == [10.0, 10.0, 11.0, 9.0]
    assert bench.values("spc_dia_r") == [2.0, 2.0, 2.0, 2.0]


def test_a_shift_of_three_sigma_fires_nelson_1_then_5(bench: Bench) -> None:
    app, ctx = bench.app(XBAR)
    app.on_points(bench.batch(diameters(BASELINE)))
    app.on_points(bench.batch(diameters(PHASE_TWO, start=8)))
    # Subgroup 4 of phase II (mean 15.5 > UCL 13.76) breaks rule 1; subgroup 5 is the second
    # of three beyond 2 sigma on the same side, so rule 5 joins rule 1.
    assert bench.values("spc_dia_violations") == [0.0, 0.0, 0.0, 1.0, 2.0]
    assert bench.values("spc_dia_xbar")[4:] == [10.0, 10.0, 10.0, 15.5, 15.5]
    violations = [e for e in ctx.events if e.kind == "violation"]
    assert [(e.details["rule"], e.details["ts"]) for e in violations] == [
        ("nelson_1", T0 + 15 * S),  # the last point of the 8th subgroup overall
        ("nelson_1", T0 + 17 * S),
        ("nelson_5", T0 + 17 * S),
    ]
    first = violations[0]
    assert first.device == "gauge-01"
    assert first.details["chart"] == "dia"
    assert "beyond 3 sigma" in first.details["description"]
    assert "dia" in first.message
    rule = bench.platform.rules.get(bench.tenant, "spc:dia-gauge-01")
    assert rule.kind == "threshold"
    assert rule.device == "gauge-01"
    assert rule.definition["signal"] == "spc_dia_violations"
    assert rule.definition["limit"] == 0.5
    assert int(rule.priority) == 3
    assert "dia" in rule.message
    chart = app.route_chart({"id": "dia", "last": "2"})
    assert [p["violations"] for p in chart["points"]] == [["nelson_1"], ["nelson_1", "nelson_5"]]
    assert app.route_charts({})["charts"][0]["violations"] == 3
    assert app.status()["violations"] == 3


def test_western_electric_and_explicit_rule_lists(bench: Bench) -> None:
    app, _ctx = bench.app({**XBAR, "rules": ["nelson_5"]})
    app.on_points(bench.batch(diameters(BASELINE + PHASE_TWO)))
    assert bench.values("spc_dia_violations") == [0.0, 0.0, 0.0, 0.0, 1.0]
    we, ctx2 = bench.app({**XBAR, "id": "dia_we", "rules": "western_electric"})
    we.on_points(bench.batch(diameters(BASELINE + PHASE_TWO)))
    rules = [e.details["rule"] for e in ctx2.events if e.kind == "violation"]
    assert rules == ["we_1", "we_1", "we_2"]


def test_imr_chart_moving_ranges_and_dispersion_violation(bench: Bench) -> None:
    chart = {
        "id": "dia_i",
        "device": "gauge-01",
        "signal": "diameter",
        "chart": "imr",
        "baseline_subgroups": 5,
        "rules": ["nelson_1"],
    }
    app, ctx = bench.app(chart)
    # baseline 10, 11, 10, 11, 10: x̄ = 10.4, MR̄ = 1, sigma = 1/d2(2) = 0.886
    # UCL = 10.4 + 2.66 = 13.06, MR UCL = 3.267; then 12.5 (MR 2.5), 8.5 (MR 4.0 beyond)
    values = [10.0, 11.0, 10.0, 11.0, 10.0, 12.5, 8.5]
    app.on_points(bench.batch([("diameter", T0 + i * S, v) for i, v in enumerate(values)]))
    limits = app.route_charts({})["charts"][0]["limits"]
    assert limits["center"] == pytest.approx(10.4)
    assert limits["ucl"] == pytest.approx(10.4 + 3 / d2(2))
    assert bench.values("spc_dia_i_mr") == [1.0, 1.0, 1.0, 1.0, 2.5, 4.0]
    assert bench.values("spc_dia_i_violations") == [0.0, 1.0]
    assert [e.details["rule"] for e in ctx.events if e.kind == "violation"] == ["dispersion_beyond"]


def test_only_when_every_s_and_reset_on(bench: Bench) -> None:
    chart = {
        **XBAR,
        "subgroup_every_s": 2.0,
        "only_when": {"signal": "state", "equals": 2.0},
        "reset_on": "recipe",
        "spec_relative_to": "recipe",
        "lsl": -6.0,
        "usl": 6.0,
    }
    app, ctx = bench.app(chart)
    rows: list[tuple[str, int, float]] = [("state", T0, 2.0), ("recipe", T0, 0.0)]
    # one point a second; every 2 s only the even seconds count
    for i in range(8):
        rows.append(("diameter", T0 + i * S, float(i)))
    rows.append(("state", T0 + 8 * S, 1.0))  # stopped: 8 (the start of a subgroup) is lost
    rows.append(("diameter", T0 + 8 * S, 100.0))
    rows.append(("state", T0 + 9 * S, 2.0))
    rows.append(("diameter", T0 + 10 * S, 50.0))
    app.on_points(bench.batch(sorted(rows, key=lambda r: r[1])))
    # even seconds 0, 2, 4, 6 make [0, 2] and [4, 6]; 8 was taken while stopped
    assert bench.values("spc_dia_xbar") == [1.0, 5.0]
    state = app.state()["charts"]["dia@gauge-01"]
    assert state["pending"] == [50.0]
    # a recipe change: back to phase I, with the unfinished subgroup dropped
    app.on_points(bench.batch([("recipe", T0 + 11 * S, 1.0), ("diameter", T0 + 12 * S, 3.0)]))
    after = app.route_charts({})["charts"][0]
    assert after["resets"] == 1
    assert after["baseline"]["collected"] == 0
    assert app.state()["charts"]["dia@gauge-01"]["pending"] == [3.0]
    assert after["lsl"] == -5.0
    assert after["usl"] == 7.0
    reset = [e for e in ctx.events if e.kind == "chart_reset"]
    assert len(reset) == 1
    assert reset[0].details["to"] == 1.0


def test_state_round_trip_mid_stream_gives_identical_results(bench: Bench) -> None:
    chart = {**XBAR, "subgroup_size": 4, "baseline_subgroups": 10, "lsl": 7.0, "usl": 13.0}
    rng = np.random.default_rng(7)
    values = rng.normal(10.0, 1.0, 400)
    values[200:] += np.linspace(0.0, 2.5, 200)  # a drift the rules should see
    rows = [("diameter", T0 + i * S, float(v)) for i, v in enumerate(values)]
    first, ctx1 = bench.app(chart)
    first.on_points(bench.batch(rows[:150]))
    first.on_points(bench.batch(rows[150:222]))  # 222: mid-subgroup, in phase II
    saved = json.loads(json.dumps(first.state(), allow_nan=False))
    assert saved["charts"]["dia@gauge-01"]["pending"]
    second, ctx2 = bench.app(chart)
    second.restore(saved)
    assert second.state() == saved
    split = len(ctx1.events)
    for app in (first, second):
        for a in range(222, 400, 37):
            app.on_points(bench.batch(rows[a : a + 37]))
    assert first.state() == second.state()
    later1 = [(e.kind, dict(e.details)) for e in list(ctx1.events)[split:]]
    later2 = [(e.kind, dict(e.details)) for e in ctx2.events]
    assert later1 == later2
    assert any(k == "violation" for k, _ in later1)  # the drift was seen after the restart


def test_a_changed_config_starts_its_chart_afresh(bench: Bench) -> None:
    app, _ = bench.app(XBAR)
    app.on_points(bench.batch(diameters(BASELINE)))
    saved = app.state()
    other, ctx = bench.app({**XBAR, "baseline_subgroups": 6})
    other.restore(saved)
    assert [e.kind for e in ctx.events] == ["chart_config_changed"]
    chart = other.route_charts({})["charts"][0]
    assert chart["phase"] == "baseline"
    assert chart["subgroups"] == 0


def test_a_flat_baseline_keeps_collecting(bench: Bench) -> None:
    app, ctx = bench.app(XBAR)
    flat = [[10.0, 10.0]] * 5
    app.on_points(bench.batch(diameters(flat)))
    assert app.route_charts({})["charts"][0]["phase"] == "baseline"
    assert [e.kind for e in ctx.events] == ["baseline_flat"]
    # the window slides: the last four subgroups, [10, 10] x 3 and [9, 11], make the limits
    app.on_points(bench.batch(diameters([[9.0, 11.0]], start=10)))
    limits = app.route_charts({})["charts"][0]["limits"]
    assert limits["center"] == pytest.approx(10.0)
    assert limits["sigma"] == pytest.approx(0.5 / d2(2))
    assert [e.kind for e in ctx.events] == ["baseline_flat", "baseline_frozen"]


# -- config and routes ----------------------------------------------------------------------


def refused(chart: dict[str, Any]) -> BadInput:
    with pytest.raises(BadInput) as info:
        parse_app_config(SpcApp, {"charts": [chart]})
    return info.value


def test_bad_configs_name_their_field() -> None:
    assert refused({**XBAR, "subgroup_size": 1}).field == "config.charts.0.subgroup_size"
    assert refused({**XBAR, "chart": "imr", "subgroup_size": 3}).field == (
        "config.charts.0.subgroup_size"
    )
    bad_rule = refused({**XBAR, "rules": ["nelson_1", "nelson_9"]})
    assert bad_rule.field == "config.charts.0.rules"
    assert "nelson_9" in bad_rule.message
    assert refused({**XBAR, "rules": "shewhart"}).field == "config.charts.0.rules"
    assert refused({**XBAR, "device_type": "gauge"}).field == "config.charts.0.device"
    assert refused({**XBAR, "lsl": 16.0}).field == "config.charts.0.lsl"
    assert refused({**XBAR, "id": "Bad-Id"}).field == "config.charts.0.id"
    with pytest.raises(BadInput) as twice:
        parse_app_config(SpcApp, {"charts": [XBAR, XBAR]})
    assert "repeat" in twice.value.message
    parse_app_config(SpcApp, {"charts": [{**XBAR, "chart": "imr", "subgroup_size": None}]})


def test_route_parameters(bench: Bench) -> None:
    app, _ = bench.app(XBAR)
    app.on_points(bench.batch(diameters(BASELINE + PHASE_TWO)))
    assert len(app.route_chart({})["points"]) == 9
    since = str((T0 + 15 * S) // 10**6)  # epoch ms
    assert [p["ts"] for p in app.route_chart({"id": "dia", "since": since})["points"]] == [
        T0 + 15 * S,
        T0 + 17 * S,
    ]
    with pytest.raises(BadInput) as bad:
        app.route_chart({"last": "0"})
    assert bad.value.field == "last"
    with pytest.raises(BadInput) as bad:
        app.route_chart({"since": "yesterday-ish"})
    assert bad.value.field == "since"
    with pytest.raises(NotFound):
        app.route_chart({"id": "nope"})
    with pytest.raises(NotFound):
        app.route_capability({"id": "dia", "device": "gauge-99"})
    cap = app.route_capability({"id": "dia"})
    assert cap["recent_subgroups"] == 5
    assert cap["recent"]["count"] == 10
    assert cap["lsl"] == 4.0
    assert cap["usl"] == 16.0
