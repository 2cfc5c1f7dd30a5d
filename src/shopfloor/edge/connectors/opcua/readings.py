"""Data change notifications of one publish response -> one :class:`Reading` per device.

Every monitored item has a client handle ``1 + index`` into an :class:`ItemTable`, which maps
it to its device and signal with numpy arrays, so a publish response of thousands of
notifications is grouped by device with one sort instead of per-item dictionaries. The only
per-item Python is pulling value, status and timestamp out of the objects asyncua decoded.

The table also remembers each item's last (source timestamp, status): a notification that
repeats both is a duplicate (a server resending an unchanged value, e.g. the initial value of
a re-created subscription after a reconnect) and is dropped, so every point leaves once.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from asyncua import ua

from shopfloor.edge.connectors.opcua.config import OpcUaConfig
from shopfloor.edge.model import Reading

__all__ = ["BAD_NOT_SUPPORTED", "ItemTable", "to_readings"]

# OPC UA Bad_NotSupported: the value is of a type a Reading cannot carry (array, structure).
BAD_NOT_SUPPORTED: Final = 0x803D0000


@dataclass(eq=False)
class ItemTable:
    """Every configured node in configuration order; handle ``h`` is row ``h - 1``."""

    devices: tuple[str, ...]
    signals: tuple[tuple[str, ...], ...]  # per device
    node_ids: tuple[str, ...]  # per item
    device_of: npt.NDArray[np.intp]
    position_of: npt.NDArray[np.intp]
    last_ts_ns: npt.NDArray[np.int64]
    last_status: npt.NDArray[np.uint32]
    reported: npt.NDArray[np.bool_]

    @classmethod
    def from_config(cls, config: OpcUaConfig) -> ItemTable:
        devices = tuple(d.name for d in config.devices)
        signals = tuple(tuple(n.signal for n in d.nodes) for d in config.devices)
        node_ids = tuple(n.node_id for d in config.devices for n in d.nodes)
        sizes = [len(s) for s in signals]
        n = len(node_ids)
        return cls(
            devices,
            signals,
            node_ids,
            np.repeat(np.arange(len(devices)), sizes),
            np.concatenate([np.arange(k) for k in sizes]),
            np.full(n, -1, dtype=np.int64),
            np.zeros(n, dtype=np.uint32),
            np.zeros(n, dtype=bool),
        )

    def __len__(self) -> int:
        return len(self.node_ids)

    def lookup(self, device: str, signal: str) -> int | None:
        """Row of a device's signal, or None."""
        try:
            d = self.devices.index(device)
            p = self.signals[d].index(signal)
        except ValueError:
            return None
        return sum(len(s) for s in self.signals[:d]) + p


@dataclass
class Converted:
    readings: list[Reading]
    notifications: int
    duplicates: int


def _scalar(value: Any) -> tuple[float, str | None, bool]:
    """(number, text, supported) for one OPC UA value."""
    if isinstance(value, bool | int | float):
        return float(value), None, True
    if isinstance(value, str):
        return math.nan, value, True
    if value is None:
        return math.nan, None, True
    return math.nan, None, False


def to_readings(
    table: ItemTable, items: Sequence[ua.MonitoredItemNotification], now_ns: int
) -> Converted:
    """Group ``items`` by device into readings, dropping unknown handles and duplicates."""
    n = len(items)
    handles = np.empty(n, dtype=np.intp)
    values = np.empty(n, dtype=np.float64)
    status = np.empty(n, dtype=np.uint32)
    ts_s = np.empty(n, dtype=np.float64)
    texts: list[str | None] = [None] * n
    any_text = False
    all_source = True
    for k, item in enumerate(items):
        dv = item.Value
        handles[k] = item.ClientHandle
        code = dv.StatusCode.value if dv.StatusCode is not None else 0
        stamp = dv.SourceTimestamp
        if stamp is None:
            all_source = False
            stamp = dv.ServerTimestamp
        ts_s[k] = stamp.timestamp() if stamp is not None else math.nan
        number, word, supported = _scalar(dv.Value.Value if dv.Value is not None else None)
        values[k] = number
        if word is not None:
            texts[k] = word
            any_text = True
        status[k] = code if supported else BAD_NOT_SUPPORTED
    rows = handles - 1
    known = (rows >= 0) & (rows < len(table))
    # datetime has microsecond resolution; a float of seconds holds that exactly enough to round
    missing = np.isnan(ts_s)
    ts_ns = np.where(missing, 0, np.rint(np.nan_to_num(ts_s) * 1e6)).astype(np.int64) * 1000
    ts_ns[missing] = now_ns
    safe = np.where(known, rows, 0)
    dup = known & (table.last_ts_ns[safe] == ts_ns) & (table.last_status[safe] == status)
    keep = known & ~dup
    rows = rows[keep]
    if not len(rows):
        return Converted([], n, int(dup.sum()))
    ts_ns, values, status = ts_ns[keep], values[keep], status[keep]
    kept_texts = [texts[i] for i in np.flatnonzero(keep)] if any_text else None
    table.last_ts_ns[rows] = ts_ns
    table.last_status[rows] = status
    table.reported[rows] = True

    dev = table.device_of[rows]
    order = np.argsort(dev, kind="stable")
    dev = dev[order]
    starts = np.concatenate(([0], np.flatnonzero(np.diff(dev)) + 1, [len(dev)]))
    readings = []
    for a, b in itertools.pairwise(starts.tolist()):
        sel = order[a:b]
        d = int(dev[a])
        names = table.signals[d]
        text: tuple[str | None, ...] | None = None
        if kept_texts is not None:
            text = tuple(kept_texts[i] for i in sel.tolist())
            if all(t is None for t in text):
                text = None
        readings.append(
            Reading(
                table.devices[d],
                tuple(names[p] for p in table.position_of[rows[sel]].tolist()),
                ts_ns[sel],
                values[sel],
                status[sel],
                text,
                source_ts=all_source,
            )
        )
    return Converted(readings, n, int(dup.sum()))
