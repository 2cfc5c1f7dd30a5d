"""Read the Numenta Anomaly Benchmark corpus: ``data/<category>/<file>.csv`` and label windows.

NAB's timestamps carry no zone; they are read as UTC, which is all the scorer needs (it only
compares them with the window limits, read the same way).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv

from shopfloor.core.errors import BadInput

WINDOWS_FILE = "labels/combined_windows.json"


@dataclass(frozen=True)
class NabSeries:
    """One corpus file: ``name`` is its path under ``data/`` (NAB's key in the label files)."""

    name: str
    timestamps: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    windows: list[tuple[int, int]]


def _to_ns(text: list[str], field: str) -> npt.NDArray[np.int64]:
    try:
        return np.array(text, dtype="datetime64[ns]").astype(np.int64)
    except ValueError as exc:
        raise BadInput(f"unreadable timestamp: {exc}", field) from None


def read_series_csv(path: Path) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """A NAB CSV (``timestamp,value``) as int64 ns and float64 arrays."""
    try:
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={"timestamp": pa.string(), "value": pa.float64()}
            ),
        )
    except (pa.ArrowInvalid, KeyError) as exc:
        raise BadInput(f"{path}: not a timestamp,value CSV ({exc})", "data") from None
    if "timestamp" not in table.column_names or "value" not in table.column_names:
        raise BadInput(f"{path}: needs columns timestamp and value", "data")
    ts = _to_ns(table.column("timestamp").to_pylist(), "timestamp")
    values = table.column("value").to_numpy().astype(np.float64)
    return ts, values


def load_corpus(
    root: Path, windows_file: str = WINDOWS_FILE, only: list[str] | None = None
) -> list[NabSeries]:
    """Every file named in the label file (or those in ``only``), in name order."""
    labels_path = root / windows_file
    if not labels_path.is_file():
        raise BadInput(f"{labels_path} not found: give the NAB folder", "data")
    labels: dict[str, list[list[str]]] = json.loads(labels_path.read_text())
    names = sorted(labels) if only is None else only
    out: list[NabSeries] = []
    for name in names:
        if name not in labels:
            raise BadInput(f"{name} is not in {windows_file}", "only")
        ts, values = read_series_csv(root / "data" / name)
        limits = [(str(a), str(b)) for a, b in labels[name]]
        starts = _to_ns([a for a, _ in limits], "windows")
        ends = _to_ns([b for _, b in limits], "windows")
        windows = [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]
        out.append(NabSeries(name, ts, values, windows))
    return out


def window_count(root: Path, windows_file: str = WINDOWS_FILE) -> int:
    """Windows in the whole label file (NAB's perfect score counts all of them)."""
    labels: dict[str, list[list[str]]] = json.loads((root / windows_file).read_text())
    return sum(len(w) for w in labels.values())
