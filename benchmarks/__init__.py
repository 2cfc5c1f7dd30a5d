"""Benchmarks run by ``shopfloor bench NAME [--quick]``.

Each module ``benchmarks.<name>`` (``-`` in NAME becomes ``_``) exposes
``main(argv: list[str] | None = None) -> dict``: it prints progress to stderr and one JSON
object as the last line of stdout, and returns that object. See benchmarks/README.md.
"""

from __future__ import annotations

import json
import sys
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
