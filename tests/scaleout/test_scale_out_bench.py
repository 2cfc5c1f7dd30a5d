"""`shopfloor bench scale-out` keeps working (small): real workers, broker and PostgreSQL, one
JSON object last, every point stored once and both workers used. Speed is not asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.historian import postgres_service
from tests.services import MOSQUITTO, require

ROOT = Path(__file__).resolve().parents[2]


def test_scale_out_benchmark_small(tmp_path: Path) -> None:
    require("Mosquitto", MOSQUITTO.exists())
    missing = postgres_service.missing()
    require(missing or "PostgreSQL", missing is None)
    args = ["--messages", "600", "--devices", "20", "--data-dir", str(tmp_path)]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale_out", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "scale-out"
    for key in (
        "points_per_s_1_worker",
        "points_per_s_2_workers",
        "postgres_copy_ceiling_points_per_s",
    ):
        assert result[key] > 0, key
    assert result["distinct_points_stored_1"] == result["points"] == 60_000
    assert result["distinct_points_stored_2"] == 60_000
    assert min(result["points_written_per_worker_2"]) > 0
