"""The edge-opcua benchmark keeps working (tiny size); speed is measured by running it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_edge_opcua_benchmark_tiny(tmp_path: Path) -> None:
    args = ["--devices", "2", "--per-device", "10", "--steady", "2", "--data-dir", str(tmp_path)]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.edge_opcua", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["items"] == 20
    for key in (
        "first_data_s",
        "all_items_s",
        "changes_per_s",
        "server_ceiling_changes_per_s",
        "cpu_pct",
    ):
        assert result[key] is not None, key
        assert result[key] >= 0, key
    assert result["server_ceiling_changes_per_s"] > 0
    assert result["changes_per_s"] <= result["server_ceiling_changes_per_s"]
    assert result["duplicate_pct"] == 0
    assert set(result["targets_met"]) == {
        "first_data_s",
        "all_items_s",
        "change_ratio",
        "duplicate_pct",
        "cpu_pct",
    }
