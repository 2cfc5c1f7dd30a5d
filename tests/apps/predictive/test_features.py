"""Runs, capping, regime normalisation and window features against values worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from shopfloor.apps.predictive.features import (
    FeatureSpec,
    Normaliser,
    Run,
    capped_rul,
    window_features,
)
from shopfloor.core.errors import BadInput


def _run(unit: str, x: list[list[float]], settings: list[list[float]] | None = None) -> Run:
    sig = np.asarray(x, dtype=np.float64)
    s = None if settings is None else np.asarray(settings, dtype=np.float64)
    return Run(
        unit,
        np.arange(1.0, len(sig) + 1.0),
        sig,
        tuple(f"s{i}" for i in range(sig.shape[1])),
        s,
        () if s is None else tuple(f"op{i}" for i in range(s.shape[1])),
    )


# --- the run data model ----------------------------------------------------------------------


def test_run_refuses_bad_shapes_and_values() -> None:
    t = np.array([1.0, 2.0, 3.0])
    with pytest.raises(BadInput, match="strictly increasing"):
        Run("u", np.array([1.0, 1.0, 2.0]), np.zeros((3, 1)), ("a",))
    with pytest.raises(BadInput, match=r"shape \(3, k\)"):
        Run("u", t, np.zeros((2, 1)), ("a",))
    with pytest.raises(BadInput, match="distinct names"):
        Run("u", t, np.zeros((3, 2)), ("a", "a"))
    with pytest.raises(BadInput, match="NaN"):
        Run("u", t, np.array([[1.0], [np.nan], [2.0]]), ("a",))
    with pytest.raises(BadInput, match="non-empty"):
        Run("u", np.zeros(0), np.zeros((0, 1)), ("a",))


def test_rul_and_head() -> None:
    r = Run("u", np.array([10.0, 20.0, 35.0]), np.zeros((3, 1)), ("a",))
    assert r.rul().tolist() == [25.0, 15.0, 0.0]  # 35 - t
    h = r.head(2)
    assert len(h) == 2
    assert not h.failed


def test_capping_is_piecewise_linear() -> None:
    got = capped_rul(np.array([200.0, 125.0, 124.0, 0.0]), 125.0)
    assert got.tolist() == [125.0, 125.0, 124.0, 0.0]
    with pytest.raises(BadInput, match="cap must be positive"):
        capped_rul(np.array([1.0]), 0.0)


# --- window features -------------------------------------------------------------------------


def test_window_statistics_by_hand() -> None:
    x = np.array([[1.0], [2.0], [4.0], [8.0]])
    spec = FeatureSpec(windows=(3,), ewm_alpha=0.5)
    f = window_features(x, np.array([5.0, 6.0, 7.0, 9.0]), spec)
    names = spec.names(("v",))
    assert names == [
        "v.last", "v.ewm", "v.mean3", "v.std3", "v.slope3", "v.min3", "v.max3", "time_since_start"
    ]  # fmt: skip
    assert f.shape == (4, len(names))
    col = {n: f[:, i] for i, n in enumerate(names)}
    assert col["v.last"].tolist() == [1.0, 2.0, 4.0, 8.0]
    # ewm, alpha 0.5: 1; 0.5*2 + 0.5*1 = 1.5; 0.5*4 + 0.5*1.5 = 2.75; 0.5*8 + 0.5*2.75 = 5.375
    assert col["v.ewm"] == pytest.approx([1.0, 1.5, 2.75, 5.375])
    # windows: [1], [1, 2], [1, 2, 4], [2, 4, 8]
    assert col["v.mean3"] == pytest.approx([1.0, 1.5, 7 / 3, 14 / 3])
    # population std of [1,2]: 0.5; of [1,2,4]: mean 7/3, squares 16/9+1/9+25/9 = 42/9, /3
    # of [2,4,8]: mean 14/3, squares 64/9 + 4/9 + 100/9 = 168/9, /3
    assert col["v.std3"] == pytest.approx([0.0, 0.5, np.sqrt(42 / 27), np.sqrt(168 / 27)])
    # least-squares slope on u = 0..m-1: [1,2] -> 1; [1,2,4] -> ((-1)(1) + (1)(4)) / 2 = 1.5
    # (centred u = -1, 0, 1 and sum (u - u_bar)^2 = 2); [2,4,8] -> (8 - 2) / 2 = 3
    assert col["v.slope3"] == pytest.approx([0.0, 1.0, 1.5, 3.0])
    assert col["v.min3"].tolist() == [1.0, 1.0, 1.0, 2.0]
    assert col["v.max3"].tolist() == [1.0, 2.0, 4.0, 8.0]
    assert col["time_since_start"].tolist() == [0.0, 1.0, 2.0, 4.0]  # t - 5


def test_signals_stay_apart_and_a_subset_of_stats_works() -> None:
    x = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 40.0]])
    spec = FeatureSpec(windows=(2,), stats=("mean", "slope"), time_since_start=False)
    f = window_features(x, np.arange(3.0), spec)
    assert spec.names(("a", "b")) == [
        "a.last", "a.ewm", "a.mean2", "a.slope2", "b.last", "b.ewm", "b.mean2", "b.slope2"
    ]  # fmt: skip
    # last row: a window [3, 5] -> mean 4, slope 2; b window [10, 40] -> mean 25, slope 30
    assert f[2, [2, 3, 6, 7]].tolist() == pytest.approx([4.0, 2.0, 25.0, 30.0])


def test_long_runs_match_a_plain_loop() -> None:
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.normal(size=(300, 2)), axis=0)
    spec = FeatureSpec(windows=(30,))
    f = window_features(x, np.arange(300.0), spec)
    names = spec.names(("a", "b"))
    for i in (0, 5, 29, 30, 299):
        win = x[max(0, i - 29) : i + 1, 1]
        u = np.arange(len(win), dtype=np.float64)
        slope = np.polyfit(u, win, 1)[0] if len(win) > 1 else 0.0
        assert f[i, names.index("b.mean30")] == pytest.approx(win.mean())
        assert f[i, names.index("b.std30")] == pytest.approx(win.std(), abs=1e-9)
        assert f[i, names.index("b.slope30")] == pytest.approx(slope, abs=1e-9)


def test_feature_spec_refuses_bad_values() -> None:
    with pytest.raises(BadInput, match="windows"):
        FeatureSpec(windows=(1,))
    with pytest.raises(BadInput, match="stats"):
        FeatureSpec(stats=("median",))
    with pytest.raises(BadInput, match="ewm_alpha"):
        FeatureSpec(ewm_alpha=0.0)
    spec = FeatureSpec(windows=(5, 20), stats=("mean",), ewm_alpha=0.3)
    assert FeatureSpec.from_dict(spec.to_dict()) == spec


# --- normalisation ---------------------------------------------------------------------------


def test_constant_signals_are_dropped_and_named() -> None:
    runs = [
        _run("1", [[1.0, 7.0, 0.0], [2.0, 7.0, 1.0], [3.0, 7.0, 0.0]]),
        _run("2", [[5.0, 7.0, 1.0], [6.0, 7.0, 1.0]]),
    ]
    n = Normaliser().fit(runs)
    assert n.kept == ("s0", "s2")
    assert n.dropped == ("s1",)
    z = n.transform(runs[0])
    # s0 over all 5 rows: 1,2,3,5,6 -> mean 3.4, population std sqrt((5.76+1.96+0.16+2.56+6.76)/5)
    sd = np.sqrt(17.2 / 5)
    assert z.shape == (3, 2)
    assert z[:, 0] == pytest.approx((np.array([1.0, 2.0, 3.0]) - 3.4) / sd)
    with pytest.raises(BadInput, match="every signal is constant"):
        Normaliser().fit([_run("1", [[1.0], [1.0]])])


def _two_regime_fleet(seed: int) -> list[Run]:
    """Two operating points; s0 sits at 100 or 150 by regime (plus a trend), s1 is constant
    within each regime (300 or 310), as some C-MAPSS FD002 sensors are."""
    rng = np.random.default_rng(seed)
    runs = []
    for u in range(6):
        n = 60
        regime = rng.integers(0, 2, size=n)
        settings = np.column_stack(
            [np.where(regime == 1, 10.0, 0.0), np.where(regime == 1, 0.5, 0.0)]
        ) + rng.normal(0, 0.001, size=(n, 2))
        trend = np.linspace(0, 1, n)
        s0 = 100.0 + 50.0 * regime + trend + rng.normal(0, 0.5, n)
        s1 = np.where(regime == 1, 310.0, 300.0)
        runs.append(
            Run(
                str(u),
                np.arange(1.0, n + 1),
                np.column_stack([s0, s1]),
                ("s0", "s1"),
                settings,
                ("alt", "mach"),
            )
        )
    return runs


def test_two_regimes_are_found_and_normalised_away() -> None:
    runs = _two_regime_fleet(1)
    n = Normaliser().fit(runs)
    assert n.centres.shape[0] == 2
    # s1 only moves with the regime: constant within each, so dropped
    assert n.kept == ("s0",)
    assert n.dropped == ("s1",)
    z = np.concatenate([n.transform(r) for r in runs])[:, 0]
    regime = np.concatenate(
        [(r.settings[:, 0] > 5).astype(int) for r in runs if r.settings is not None]
    )
    # within each regime: mean 0 and std 1 (the 50-unit level difference is gone)
    for j in (0, 1):
        assert z[regime == j].mean() == pytest.approx(0.0, abs=1e-9)
        assert z[regime == j].std() == pytest.approx(1.0)
    # and a fresh run is normalised with the training statistics, from its own settings
    # (cluster numbers are arbitrary: compare with the label training gave each operating point)
    fresh = _two_regime_fleet(2)[0]
    assert fresh.settings is not None
    label = n.regimes(np.array([[0.0, 0.0], [10.0, 0.5]]))
    assert sorted(label.tolist()) == [0, 1]
    truth = (fresh.settings[:, 0] > 5).astype(int)
    assert np.array_equal(n.regimes(fresh.settings), label[truth])
    again = Normaliser.from_dict(n.to_dict())
    assert np.array_equal(again.transform(fresh), n.transform(fresh))


def test_noise_around_one_operating_point_is_one_regime() -> None:
    rng = np.random.default_rng(0)
    runs = [
        _run(str(u), rng.normal(size=(50, 2)).tolist(), rng.normal(0, 0.002, (50, 2)).tolist())
        for u in range(4)
    ]
    assert Normaliser().fit(runs).centres.shape[0] == 1


def test_regimes_need_settings_and_the_same_signals() -> None:
    runs = _two_regime_fleet(1)
    n = Normaliser().fit(runs)
    r = runs[0]
    with pytest.raises(BadInput, match="operating settings"):
        n.transform(Run("x", r.time, r.signals, r.signal_names))
    with pytest.raises(BadInput, match="trained on"):
        n.transform(Run("x", r.time, r.signals, ("s0", "other"), r.settings, r.setting_names))
    forced = Normaliser(n_regimes=1).fit(runs)
    assert forced.centres.shape[0] == 1
    assert forced.kept == ("s0", "s1")
