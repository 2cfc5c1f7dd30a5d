"""Importer of NASA's C-MAPSS turbofan text format into :class:`Run` histories.

Each line of ``train_FDxxx.txt`` / ``test_FDxxx.txt`` holds 26 space-separated numbers: unit,
cycle, op_setting_1..3, sensor_1..21. Lines of one unit are consecutive and in cycle order.
Training units run to failure (``failed=True``); test units stop some time before it
(``failed=False``), and ``RUL_FDxxx.txt`` gives their true remaining life at the last cycle,
one number a line, in unit order.

Reference: Saxena, Goebel, Simon, Eklund, "Damage Propagation Modeling for Aircraft Engine
Run-to-failure Simulation", PHM 2008; NASA Prognostics Data Repository.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from shopfloor.apps.predictive.features import Run
from shopfloor.core.errors import BadInput

SETTING_NAMES = tuple(f"op_setting_{i}" for i in range(1, 4))
SENSOR_NAMES = tuple(f"sensor_{i}" for i in range(1, 22))
N_COLUMNS = 2 + len(SETTING_NAMES) + len(SENSOR_NAMES)


def parse_cmapss(text: str, *, failed: bool = True, source: str = "text") -> list[Run]:
    """Runs from C-MAPSS text, one per unit, in the order the units first appear.

    ``failed`` says whether the runs end at failure (training files) or not (test files).
    A malformed line raises :class:`BadInput` naming ``source`` and the 1-based line number.
    """
    rows: list[list[float]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != N_COLUMNS:
            raise BadInput(
                f"{source} line {lineno}: expected {N_COLUMNS} numbers, got {len(parts)}", source
            )
        try:
            values = [float(p) for p in parts]
        except ValueError as exc:
            raise BadInput(f"{source} line {lineno}: not a number ({exc})", source) from None
        if not all(np.isfinite(values)) or values[0] != int(values[0]) or values[1] <= 0:
            raise BadInput(f"{source} line {lineno}: bad unit or cycle number", source)
        rows.append(values)
    if not rows:
        raise BadInput(f"{source}: no data lines", source)
    data = np.asarray(rows, dtype=np.float64)
    return _split_units(data, failed, source)


def _split_units(data: npt.NDArray[np.float64], failed: bool, source: str) -> list[Run]:
    unit = data[:, 0]
    # a new unit starts wherever the unit number changes
    starts = np.flatnonzero(np.r_[True, unit[1:] != unit[:-1]])
    ends = np.r_[starts[1:], len(unit)]
    seen: set[int] = set()
    runs: list[Run] = []
    for a, b in zip(starts, ends, strict=True):
        u = int(unit[a])
        if u in seen:
            raise BadInput(
                f"{source} line {a + 1}: unit {u} appears twice, not in one block", source
            )
        seen.add(u)
        cycles = data[a:b, 1]
        bad = np.flatnonzero(np.diff(cycles) <= 0)
        if bad.size:
            raise BadInput(
                f"{source} line {a + int(bad[0]) + 2}: cycles of unit {u} must increase", source
            )
        runs.append(
            Run(
                unit=str(u),
                time=cycles.copy(),
                signals=data[a:b, 5:].copy(),
                signal_names=SENSOR_NAMES,
                settings=data[a:b, 2:5].copy(),
                setting_names=SETTING_NAMES,
                failed=failed,
            )
        )
    return runs


def read_cmapss(path: str | Path, *, failed: bool | None = None) -> list[Run]:
    """Runs of a C-MAPSS file; ``failed`` defaults to True unless the file name starts with test."""
    p = Path(path)
    if failed is None:
        failed = not p.name.lower().startswith("test")
    return parse_cmapss(p.read_text(), failed=failed, source=p.name)


def parse_rul(text: str, *, source: str = "text") -> npt.NDArray[np.float64]:
    """True remaining lives from RUL_FDxxx.txt text, one per test unit in unit order."""
    out: list[float] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            (value,) = (float(p) for p in parts)
        except ValueError:
            raise BadInput(
                f"{source} line {lineno}: expected one number, got {line!r}", source
            ) from None
        if not np.isfinite(value) or value < 0:
            raise BadInput(f"{source} line {lineno}: RUL must be a number >= 0", source)
        out.append(value)
    if not out:
        raise BadInput(f"{source}: no data lines", source)
    return np.asarray(out, dtype=np.float64)


def read_rul(path: str | Path) -> npt.NDArray[np.float64]:
    """True remaining lives from a RUL_FDxxx.txt file."""
    p = Path(path)
    return parse_rul(p.read_text(), source=p.name)
