"""``benchmarks.rul --quick`` runs end to end on C-MAPSS-format files and reports sane keys.

The files are synthetic (written here, in the C-MAPSS layout) so the test needs no dataset;
the real FD001 figures come from running the benchmark itself (docs/apps/predictive-maintenance.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]


def _write_cmapss(folder: Path, n_units: int = 9, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    train, test, rul = [], [], []
    for u in range(1, n_units + 1):
        life = int(rng.integers(100, 160))
        for name, stop in (("train", life), ("test", int(rng.integers(40, life - 5)))):
            t = np.arange(1, stop + 1)
            wear = np.exp(4.0 * t / life) / np.exp(4.0)
            sensors = np.tile(np.linspace(1.0, 21.0, 21), (stop, 1))  # constant sensors
            sensors[:, 1] = 642.0 + 2.0 * wear + rng.normal(0, 0.2, stop)
            sensors[:, 3] = 1400.0 + 30.0 * wear + rng.normal(0, 3.0, stop)
            settings = rng.normal(0, 0.002, (stop, 3))
            rows = np.column_stack([np.full(stop, u), t, settings, sensors])
            lines = [" ".join(f"{v:.4f}" for v in row) for row in rows]
            (train if name == "train" else test).extend(lines)
            if name == "test":
                rul.append(str(life - stop))
    (folder / "train_FD001.txt").write_text("\n".join(train) + "\n")
    (folder / "test_FD001.txt").write_text("\n".join(test) + "\n")
    (folder / "RUL_FD001.txt").write_text("\n".join(rul) + "\n")


def test_quick_benchmark_reports_the_protocol_keys(tmp_path: Path) -> None:
    _write_cmapss(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.rul",
            "--quick",
            "--n-jobs",
            "1",
            "--data",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "rul"
    assert result["subset"] == "FD001"
    assert result["quick"]
    assert result["units_test"] == 9
    assert result["units_train"] == 9
    assert 0.0 < result["rmse"] < 125.0
    assert result["score"] > 0.0
    assert 0.0 < result["train_s"] < 120.0
    assert result["cv_rmse"] > 0.0
    assert result["cap"] == 125.0
    assert 1 <= result["params"]["n_estimators"] <= 300
    # 19 of the 21 sensors never move in these files
    assert len(result["signals_dropped"]) == 19
    assert 0.0 <= result["interval_coverage"] <= 1.0
    assert "[bench]" in proc.stderr


def test_missing_files_are_reported(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.rul",
            "--quick",
            "--n-jobs",
            "1",
            "--data",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "train_FD001.txt" in proc.stderr
