"""``bench anomaly --quick`` runs and reports sane figures (speed is measured, not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
NAB = ROOT.parent / "shared" / "datasets" / "nab"


@pytest.mark.skipif(not NAB.is_dir(), reason="NAB corpus not present")
def test_anomaly_benchmark_quick() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.anomaly", "--quick", "--data", str(NAB)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("nab_standard", "nab_low_fp", "nab_low_fn"):
        assert -100.0 < result[key] <= 100.0, key
    assert result["files"] == 6
    assert result["windows"] == 14
    assert result["points"] > 10_000
    assert result["points_per_s"] > 0
    assert result["seconds"] > 0
    assert result["quick"] is True


def test_anomaly_benchmark_rejects_a_folder_without_labels(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.anomaly", "--quick", "--data", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "not a NAB folder" in out.stderr
