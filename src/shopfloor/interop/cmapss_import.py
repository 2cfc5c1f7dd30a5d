"""Import NASA C-MAPSS run-to-failure files into the historian, as devices of a tenant.

Each unit (engine) of a ``train_FDxxx.txt`` / ``test_FDxxx.txt`` file becomes a device
``<prefix>-<unit>`` of the device type ``cmapss-engine`` with the file's three operating
settings and 21 sensors as signals (the names of ``shopfloor.apps.predictive.cmapss``); cycle ``c`` is stored at ``start + (c - 1) * cycle``. For a training
file (every unit run to failure) the signal ``failed`` is 0 at every recorded cycle and 1 from
one cycle after the last (the unit failed then, and stays failed: two points), so the
predictive-maintenance app finds the run-to-failure histories in the historian with
``failure: {signal: failed, equals: 1}``, exactly as it finds the demo factory's bearing
failures. The parsing (and its errors, with the line number) is
``shopfloor.apps.predictive.cmapss``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from shopfloor.apps.predictive.cmapss import SENSOR_NAMES, SETTING_NAMES, read_cmapss
from shopfloor.core.errors import BadInput, NotFound
from shopfloor.core.types import make_batch
from shopfloor.registry.service import SignalSpec

__all__ = ["DEVICE_TYPE", "CmapssReport", "import_cmapss"]

DEVICE_TYPE: Final = "cmapss-engine"
SETTINGS: Final = tuple(SETTING_NAMES)
SENSORS: Final = tuple(SENSOR_NAMES)
FAILED: Final = "failed"


@dataclass(frozen=True, slots=True)
class CmapssReport:
    units: int
    points: int
    failed_units: int
    seconds: float


def import_cmapss(
    platform: Any,
    tenant_id: int,
    path: Path,
    *,
    start_ns: int,
    cycle_ns: int,
    prefix: str = "engine",
    failed: bool | None = None,
    progress: Any = None,
) -> CmapssReport:
    """Import one C-MAPSS file; devices that exist already are written to (a re-import
    overwrites the same points: last write wins)."""
    if cycle_ns <= 0:
        raise BadInput("the cycle duration must be positive", "cycle")
    began = time.monotonic()
    runs = read_cmapss(path, failed=failed)
    reg = platform.registry
    try:
        reg.get_device_type(tenant_id, DEVICE_TYPE)
    except NotFound:
        specs = [SignalSpec(n, description="C-MAPSS operating setting") for n in SETTINGS]
        specs += [SignalSpec(n, description="C-MAPSS sensor") for n in SENSORS]
        specs.append(SignalSpec(FAILED, description="1 at the cycle the unit failed"))
        reg.create_device_type(tenant_id, DEVICE_TYPE, specs, description="C-MAPSS turbofan")
    existing = {d.name for d in reg.list_devices(tenant_id)}
    task = None if progress is None else progress.add_task(f"{path.name}", total=len(runs))
    points = 0
    for run in runs:
        device = f"{prefix}-{run.unit}"
        if device not in existing:
            reg.create_device(tenant_id, device, DEVICE_TYPE)
        names = list(SETTINGS) + list(SENSORS)
        columns = np.column_stack(
            [run.settings if run.settings is not None else np.empty((len(run), 0)), run.signals]
        )
        if columns.shape[1] != len(names):
            raise BadInput(
                f"unit {run.unit}: {columns.shape[1]} columns, expected {len(names)}", "columns"
            )
        ts = start_ns + ((run.time - run.time[0]) * cycle_ns).astype(np.int64)
        ids = reg.resolve(tenant_id, device, [*names, FAILED])
        n, k = columns.shape
        sid = np.repeat(ids[:k].astype(np.int32)[None, :], n, axis=0).ravel()
        batch_ts = np.repeat(ts, k)
        values = columns.ravel()
        if run.failed:  # the failure marker: 0 on every cycle, then 1 (failed, and stays)
            after = np.array([ts[-1] + cycle_ns, ts[-1] + 2 * cycle_ns], np.int64)
            marker = np.concatenate([np.zeros(n), [1.0, 1.0]])
            sid = np.concatenate([sid, np.full(n + 2, ids[k], np.int32)])
            batch_ts = np.concatenate([batch_ts, ts, after])
            values = np.concatenate([values, marker])
        platform.historian.write(make_batch(tenant_id, sid, batch_ts, values))
        points += len(sid)
        if task is not None:
            progress.advance(task)
    return CmapssReport(
        units=len(runs),
        points=points,
        failed_units=sum(r.failed for r in runs),
        seconds=time.monotonic() - began,
    )
