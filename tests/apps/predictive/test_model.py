"""Metrics by hand, unit-wise folds, training on a synthetic fleet, and save/load without pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shopfloor.apps.predictive.features import Run
from shopfloor.apps.predictive.model import (
    HyperParams,
    RulModel,
    TrainConfig,
    evaluate,
    nasa_score,
    rmse,
    train,
    unit_folds,
)
from shopfloor.core.errors import BadInput

SIGNALS = ("temp", "vib", "flat", "noise")


def synthetic_runs(n_units: int, seed: int) -> list[Run]:
    """Units that wear out: temp and vib rise faster near the end, flat never moves."""
    rng = np.random.default_rng(seed)
    runs = []
    for u in range(n_units):
        life = int(rng.integers(90, 160))
        t = np.arange(1.0, life + 1.0)
        wear = np.exp(4.0 * t / life) / np.exp(4.0)  # 0.02 .. 1
        temp = 600.0 + 10.0 * wear + rng.normal(0, 0.3, life)
        vib = 2.0 + 1.5 * wear + rng.normal(0, 0.05, life)
        flat = np.full(life, 14.62)
        noise = rng.normal(0, 1.0, life)
        runs.append(Run(f"m{u}", t, np.column_stack([temp, vib, flat, noise]), SIGNALS))
    return runs


def small_config(**kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "candidates": (
            HyperParams(n_estimators=80, learning_rate=0.1, min_child_samples=20),
            HyperParams(n_estimators=80, learning_rate=0.1, num_leaves=4, min_child_samples=20),
        ),
        "n_folds": 3,
        "n_seeds": 2,
        "cap": 60.0,
        # one thread: tests share the CPU, and spinning OpenMP threads slow everyone down
        "n_jobs": 1,
    }
    return TrainConfig(**(base | kw))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def model() -> RulModel:
    return train(synthetic_runs(12, seed=1), small_config())


# --- metrics ---------------------------------------------------------------------------------


def test_nasa_score_by_hand() -> None:
    pred = np.array([87.0, 50.0, 30.0, 21.0])
    true = np.array([100.0, 50.0, 20.0, 26.0])
    # d = -13, 0, 10, -5: (e^1 - 1) + (e^0 - 1) + (e^1 - 1) + (e^(5/13) - 1)
    want = 2 * (np.e - 1.0) + 0.0 + (np.exp(5 / 13) - 1.0)
    assert nasa_score(pred, true) == pytest.approx(want)
    # a late miss costs more than an early miss of the same size: e^(10/10) - 1 > e^(10/13) - 1
    assert nasa_score(np.array([30.0]), np.array([20.0])) > nasa_score(
        np.array([10.0]), np.array([20.0])
    )


def test_rmse_by_hand() -> None:
    # errors 0, 0, -2: sqrt(4 / 3)
    assert rmse(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0])) == pytest.approx(
        np.sqrt(4 / 3)
    )
    with pytest.raises(BadInput, match="must match"):
        rmse(np.array([1.0]), np.array([1.0, 2.0]))


# --- folds -----------------------------------------------------------------------------------


def test_folds_never_mix_a_unit() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(10), rng.integers(5, 30, size=10))
    folds = unit_folds(groups, 4)
    assert len(folds) == 4
    validated: list[int] = []
    for fit_rows, val_rows in folds:
        assert not set(groups[fit_rows]) & set(groups[val_rows])
        assert len(fit_rows) + len(val_rows) == len(groups)
        validated += sorted(set(groups[val_rows].tolist()))
    assert sorted(validated) == list(range(10))  # every unit validated exactly once
    with pytest.raises(BadInput, match="cannot make 4 folds"):
        unit_folds(np.array([0, 0, 1, 2]), 4)


# --- training and prediction -----------------------------------------------------------------


def test_training_reports_its_search(model: RulModel) -> None:
    rep = model.report
    assert rep is not None
    assert rep.signals_dropped == ("flat",)
    assert rep.signals_used == ("temp", "vib", "noise")
    assert rep.n_units == 12
    assert rep.n_regimes == 1
    assert len(rep.candidates) == 2
    assert rep.cv_rmse == min(c.cv_rmse for c in rep.candidates)
    assert 1 <= rep.best_iteration <= 80
    assert rep.chosen.n_estimators == rep.best_iteration
    assert all(len(c.fold_rmse) == 3 for c in rep.candidates)


def test_predictions_follow_the_wear(model: RulModel) -> None:
    runs = synthetic_runs(6, seed=7)  # units the model never saw
    for r in runs:
        p = model.predict(r)
        assert p.rul.shape == (len(r),)
        assert np.all(p.lower <= p.rul)
        assert np.all(p.rul <= p.upper)
        assert np.all(p.lower >= 0)
        assert np.all(p.upper <= 60.0)
    true = np.array([0.0] * 6)
    last = model.predict_last(runs)
    # at failure the estimate must be near 0, far below the cap of 60
    assert np.all(last.rul < 15.0), last.rul
    # half-way through life a unit is still healthy (true capped RUL well above 0)
    halves = [r.head(len(r) // 3) for r in runs]
    truth = np.array([min(60.0, len(r) - len(h)) for r, h in zip(runs, halves, strict=True)])
    ev = evaluate(model, halves, truth)
    assert ev.n_units == 6
    assert ev.rmse < 15.0, ev
    assert evaluate(model, runs, true).rmse < 15.0


def test_save_and_load_give_identical_predictions(model: RulModel, tmp_path: Path) -> None:
    model.save(tmp_path / "m")
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == ["lower.txt", "point_0.txt", "point_1.txt", "spec.json", "upper.txt"]
    assert "tree" in (tmp_path / "m" / "point_0.txt").read_text()  # LightGBM's own text
    again = RulModel.load(tmp_path / "m")
    r = synthetic_runs(1, seed=9)[0]
    a, b = model.predict(r), again.predict(r)
    assert np.array_equal(a.rul, b.rul)
    assert np.array_equal(a.lower, b.lower)
    assert np.array_equal(a.upper, b.upper)
    assert again.report == model.report


def test_loading_refuses_broken_models(model: RulModel, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"spec\.json missing"):
        RulModel.load(tmp_path)
    files = model.to_files()
    with pytest.raises(BadInput, match="missing"):
        RulModel.from_files({k: v for k, v in files.items() if k != "upper.txt"})
    with pytest.raises(BadInput, match="unknown model format"):
        RulModel.from_files(files | {"spec.json": '{"format": "pickle"}'})


def test_training_is_deterministic() -> None:
    runs = synthetic_runs(6, seed=2)
    cfg = small_config(candidates=(HyperParams(n_estimators=30),), n_seeds=1)
    a, b = train(runs, cfg), train(runs, cfg)
    assert np.array_equal(a.predict(runs[0]).rul, b.predict(runs[0]).rul)


def test_capped_weight_and_row_stride_are_accepted() -> None:
    runs = synthetic_runs(6, seed=2)
    m = train(
        runs,
        small_config(candidates=(HyperParams(n_estimators=20),), capped_weight=0.5, row_stride=3),
    )
    assert m.report is not None
    # every 3rd row counted back from the last: ceil(len / 3) rows per run
    assert m.report.n_rows == sum(-(-len(r) // 3) for r in runs)


def test_bad_training_input() -> None:
    runs = synthetic_runs(3, seed=2)
    with pytest.raises(BadInput, match="distinct"):
        train([runs[0], runs[0], runs[1]], small_config())
    with pytest.raises(BadInput, match="did not end in failure"):
        train([r.head(30) for r in runs], small_config())
    with pytest.raises(BadInput, match="cannot make 3 folds"):
        train(runs[:2], small_config())
    with pytest.raises(BadInput, match="quantiles"):
        TrainConfig(quantiles=(0.6, 0.9))
    with pytest.raises(BadInput, match="candidate"):
        TrainConfig(candidates=())
    with pytest.raises(BadInput, match="cap"):
        TrainConfig(cap=-1.0)


def test_evaluate_checks_lengths(model: RulModel) -> None:
    with pytest.raises(BadInput, match="2 runs but 1"):
        evaluate(model, synthetic_runs(2, seed=3), np.array([1.0]))


def test_public_surface() -> None:
    import shopfloor.apps.predictive as pkg

    assert sorted(pkg.__all__) == pkg.__all__
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None
    assert {"Run", "train", "RulModel", "ModelRegistry", "read_cmapss"} <= set(pkg.__all__)
