"""The benchmarks keep working: each runs small and ends with one JSON object.

Speed itself is measured by running them (benchmarks/README.md), never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _last_json(args: list[str], tmp_path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", *args, "--data-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_historian_benchmark_quick(tmp_path: Path) -> None:
    result = _last_json(["benchmarks.historian", "--quick"], tmp_path)
    for key in (
        "ingest_points_per_s",
        "raw_insert_points_per_s",
        "ingest_ratio",
        "bytes_per_point",
        "latest_p99_ms",
        "window_1h_1min_p99_ms",
        "multi_24h_1min_100_p99_ms",
    ):
        assert result[key] > 0, key
    assert result["points"] == 360_000


def test_ingest_http_benchmark_short(tmp_path: Path) -> None:
    args = ["benchmarks.ingest_http", "--quick", "--duration", "1", "--generator", "python"]
    result = _last_json([*args, "--form", "frame"], tmp_path)
    assert result["points_per_s"] > 0
    assert result["ceiling_points_per_s"] > 0
    assert result["non_2xx"] == 0
    assert result["distinct_points_stored"] > 0


def test_buffer_benchmark_quick(tmp_path: Path) -> None:
    result = _last_json(["benchmarks.buffer", "--quick"], tmp_path)
    for key in (
        "append_points_per_s",
        "append_points_per_s_single_writer",
        "replay_points_per_s",
        "bytes_per_point",
    ):
        assert result[key] > 0, key
    assert result["points"] == 200_000
