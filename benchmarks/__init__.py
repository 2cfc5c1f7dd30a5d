"""Benchmarks run by ``shopfloor bench NAME [--quick]``.

Each module ``benchmarks.<name>`` (``-`` in NAME becomes ``_``) exposes
``main(argv: list[str] | None = None) -> dict``: it prints progress to stderr and one JSON
object as the last line of stdout, and returns that object. See benchmarks/README.md.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def p99_ms(samples_s: list[float]) -> float:
    return round(float(np.percentile(np.asarray(samples_s) * 1000.0, 99)), 3)


def emit(result: dict[str, Any]) -> dict[str, Any]:
    """Print the result as the last line of stdout and return it."""
    sys.stdout.write(json.dumps(result, sort_keys=False) + "\n")
    sys.stdout.flush()
    return result


def run_in_workdir(
    name: str, data_dir: Path | None, run: Callable[[Path], dict[str, Any]]
) -> dict[str, Any]:
    """``run(work)`` in a fresh work folder under ``data_dir`` (default: the temp folder),
    removed afterwards; the result gets ``elapsed_s`` and is emitted. Then, the JSON line being
    out (a failed run's figures are still worth reading), a result with ``failed`` fails."""
    t = time.perf_counter()
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"shopfloor-bench-{name}-", dir=data_dir))
    try:
        result = run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["elapsed_s"] = round(time.perf_counter() - t, 1)
    emit(result)
    if result.get("failed"):
        raise AssertionError(f"{name} benchmark: {result['failed']}")
    return result
