"""The edge-modbus benchmark keeps working: a short run ends with one JSON object.

Speed is measured by running it (benchmarks/README.md), not asserted here; the drifts are,
loosely, because the benchmark exists to show them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_edge_modbus_benchmark_short(tmp_path: Path) -> None:
    args = ["--quick", "--duration", "2", "--devices", "10", "--data-dir", str(tmp_path)]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.edge_modbus", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert (result["devices"], result["dead_devices"]) == (10, 1)
    for key in ("registers_per_s", "shared_conn_registers_per_s", "duration_s"):
        assert result[key] > 0, key
    for key in ("period_drift_pct", "shared_conn_period_drift_pct"):
        assert 0 <= result[key] <= 10, (key, result)
    assert result["live_bad_readings"] == result["shared_conn_live_bad_readings"] == 0
    assert set(result["targets_met"]) == {"period_drift_pct", "shared_conn_period_drift_pct"}
