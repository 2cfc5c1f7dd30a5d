"""Remaining-useful-life benchmark: NASA C-MAPSS by the standard protocol.

Trains :func:`shopfloor.apps.predictive.train` on ``train_<SUBSET>.txt`` (every engine run to
failure; hyper-parameters and the number of trees chosen by 5-fold cross-validation over the
training engines only, GroupKFold by engine), then predicts each engine of ``test_<SUBSET>.txt``
at its last cycle and compares with ``RUL_<SUBSET>.txt``. As is standard for C-MAPSS, the target
and the true RUL are both capped at 125 cycles for training and scoring.

- ``rmse``: root mean square error of the last-cycle predictions (cycles).
- ``score``: the PHM08 (NASA) score, sum of exp(-d/13) - 1 for d < 0 and exp(d/10) - 1 for
  d >= 0, d = predicted - true: late predictions cost more.
- ``train_s``: wall time of training (normalisation, features, cross-validation, final fits).
- ``cv_rmse``: the chosen candidate's mean validation RMSE over all rows of the held-out
  training engines (not comparable with ``rmse``, which is at the last cycle of test engines).
- ``interval_coverage``: share of test engines whose true RUL lies in [lower, upper] (the 0.1
  and 0.9 quantile models; 0.8 is the nominal coverage).

``--quick``: 30 training engines, one candidate, 3 folds, one seed, 300 trees at most.

Run: ``shopfloor bench rul [--quick]`` or ``python -m benchmarks.rul [--quick] [--data DIR]
[--subset FD001]``. The last line of stdout is one JSON object. Targets (FD001): rmse <= 12.5,
score <= 250, train_s <= 300 (reported, not asserted).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import emit, progress
from shopfloor.apps.predictive import (
    HyperParams,
    TrainConfig,
    evaluate,
    read_cmapss,
    read_rul,
    train,
)

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "cmapss"
TARGETS = {"rmse": ("<=", 12.5), "score": ("<=", 250.0), "train_s": ("<=", 300.0)}


def run(data: Path, subset: str, quick: bool, n_jobs: int) -> dict[str, Any]:
    files = [data / f"{kind}_{subset}.txt" for kind in ("train", "test", "RUL")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SystemExit(f"C-MAPSS files not found: {', '.join(missing)} (see --data)")
    train_runs = read_cmapss(files[0], failed=True)
    test_runs = read_cmapss(files[1], failed=False)
    true_rul = read_rul(files[2])
    progress(f"{subset}: {len(train_runs)} training engines, {len(test_runs)} test engines")
    cfg = TrainConfig(n_jobs=n_jobs)
    if quick:
        train_runs = train_runs[:30]
        cfg = TrainConfig(
            candidates=(HyperParams(n_estimators=300, learning_rate=0.05),),
            n_folds=3,
            n_seeds=1,
            n_jobs=n_jobs,
        )
    progress(
        f"training: {len(cfg.candidates)} candidates x {cfg.n_folds} folds, {cfg.n_seeds} seeds"
    )
    model = train(train_runs, cfg)
    rep = model.report
    assert rep is not None
    for c in rep.candidates:
        progress(f"candidate {asdict(c.params)}: cv_rmse {c.cv_rmse} at {c.best_iteration} trees")
    ev = evaluate(model, test_runs, true_rul)
    result: dict[str, Any] = {
        "benchmark": "rul",
        "subset": subset,
        "quick": quick,
        "rmse": ev.rmse,
        "score": ev.score,
        "train_s": rep.train_s,
        "units_train": rep.n_units,
        "units_test": ev.n_units,
        "cap": ev.cap,
        "cv_rmse": rep.cv_rmse,
        "params": asdict(rep.chosen),
        "n_regimes": rep.n_regimes,
        "signals_dropped": list(rep.signals_dropped),
        "interval_coverage": ev.interval_coverage,
        "mae": ev.mae,
        "n_jobs": n_jobs,
        "cpus": os.cpu_count(),
        "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()},
    }
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="bench rul", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small run, under a minute")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the C-MAPSS files")
    ap.add_argument("--subset", default="FD001", help="FD001 (default), FD002, FD003 or FD004")
    ap.add_argument("--n-jobs", type=int, default=2, help="LightGBM threads")
    args = ap.parse_args(argv)
    return emit(run(args.data.resolve(), args.subset, args.quick, args.n_jobs))


if __name__ == "__main__":
    main()
