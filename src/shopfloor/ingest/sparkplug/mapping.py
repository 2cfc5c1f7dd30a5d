"""From Sparkplug B to the registry and to columns.

- Sparkplug datatypes to signal data types (:func:`data_type_of`);
- metric names to signal names (:func:`signal_name`: registry names may not contain '/');
- a birth's place in the ISA-95 hierarchy (:class:`Places`: group -> site, edge node -> area,
  device -> machine under a line of the edge node's name);
- decoded metric values to :class:`~shopfloor.ingest.decode.Columns` (:class:`ColumnsBuilder`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import pyarrow as pa

from shopfloor.core.errors import BadInput, Conflict, NotFound
from shopfloor.core.quality import BAD
from shopfloor.core.sparkplug import payload as spb
from shopfloor.core.types import DataType
from shopfloor.ingest.decode import Columns
from shopfloor.registry.models import AssetLevel
from shopfloor.registry.service import AssetInfo, Registry, TenantInfo, check_name

__all__ = [
    "ColumnsBuilder",
    "Places",
    "UnsupportedMetric",
    "data_type_of",
    "device_name",
    "is_control",
    "signal_name",
]

_INTS: Final = frozenset(range(spb.INT8, spb.UINT64 + 1))
_NAMES: Final = {
    0: "Unknown",
    13: "DateTime",
    15: "UUID",
    16: "DataSet",
    17: "Bytes",
    18: "File",
    19: "Template",
    20: "PropertySet",
    21: "PropertySetList",
}

# Session bookkeeping and commands, not process data: never stored as signals.
_CONTROL_PREFIXES: Final = ("Node Control/", "Device Control/")
BDSEQ: Final = "bdSeq"


class UnsupportedMetric(ValueError):
    """A birth metric that cannot become a signal; the message says why."""


def data_type_of(datatype: int) -> DataType:
    """The signal data type of a Sparkplug datatype number; raises UnsupportedMetric."""
    if datatype in _INTS:
        return DataType.INT
    if datatype in (spb.FLOAT, spb.DOUBLE):
        return DataType.FLOAT
    if datatype == spb.BOOLEAN:
        return DataType.BOOL
    if datatype in (spb.STRING, spb.TEXT):
        return DataType.STRING
    name = _NAMES.get(datatype, "an array" if 22 <= datatype <= 34 else f"number {datatype}")
    raise UnsupportedMetric(
        f"datatype {name} is not supported (use an Int*, UInt*, Float, Double, Boolean, "
        "String or Text metric)"
    )


def is_control(name: str) -> bool:
    """bdSeq and Node/Device Control metrics: known to the host, never stored."""
    return name == BDSEQ or name.startswith(_CONTROL_PREFIXES)


def signal_name(metric: str) -> str:
    """The registry signal name of a metric name.

    Sparkplug names use '/' as a folder separator ("Inputs/Temperature"); the registry cannot
    (``<device>/<signal>`` must split unambiguously), so '/' becomes '.'. Names that are still
    not valid (empty, control characters, over 200 characters) raise UnsupportedMetric.
    """
    mapped = metric.replace("/", ".")
    try:
        return check_name(mapped, "signal")
    except BadInput as exc:
        raise UnsupportedMetric(
            f"metric name {metric!r} is not a valid signal name: {exc}"
        ) from None


def device_name(edge_node: str, device: str | None) -> str:
    """Registry device name: ``{edge_node}`` for node metrics, ``{edge_node}.{device}``."""
    name = edge_node if device is None else f"{edge_node}.{device}"
    check_name(name, "device")
    return name


@dataclass
class Places:
    """Finds or creates the assets a birth belongs under, caching their ids.

    The registry wants every level filled (a machine sits under a line), so an edge node's
    devices go under a line named like the edge node; the enterprise is the tenant's only one
    or one named after the tenant.
    """

    registry: Registry
    _ids: dict[tuple[int, tuple[str, ...]], int] = field(default_factory=dict)

    @staticmethod
    def area(group: str, edge_node: str) -> tuple[str, ...]:
        """Site and area names of an edge node's own device."""
        return (group, edge_node)

    @staticmethod
    def machine(group: str, edge_node: str, device: str) -> tuple[str, ...]:
        """Site, area, line and machine names of one of its devices."""
        return (group, edge_node, edge_node, device)

    def attach(self, tenant: TenantInfo, device: str, path: tuple[str, ...]) -> None:
        """Create the device under the asset at ``path`` unless it exists (existing devices
        stay where they are)."""
        try:
            self.registry.get_device(tenant.id, device)
            return
        except NotFound:
            pass
        try:
            asset_id = self._path(tenant, path)
            self.registry.create_device(tenant.id, device, asset_id=asset_id)
        except NotFound:  # a cached asset was deleted meanwhile: look the path up afresh
            self._ids.clear()
            self.registry.create_device(tenant.id, device, asset_id=self._path(tenant, path))
        except Conflict:
            pass  # another worker created it between our look and our insert

    def _path(self, tenant: TenantInfo, names: tuple[str, ...]) -> int:
        key = (tenant.id, names)
        found = self._ids.get(key)
        if found is not None:
            return found
        assets = self.registry.list_assets(tenant.id)
        parent = self._enterprise(tenant, assets)
        levels = (AssetLevel.SITE, AssetLevel.AREA, AssetLevel.LINE, AssetLevel.MACHINE)
        for level, name in zip(levels, names, strict=False):
            match = [a for a in assets if a.parent_id == parent and a.name == name]
            if match:
                parent = match[0].id
            else:
                try:
                    parent = self.registry.create_asset(tenant.id, level, name, parent).id
                except Conflict:  # created concurrently: read it back
                    assets = self.registry.list_assets(tenant.id)
                    parent = next(a.id for a in assets if a.parent_id == parent and a.name == name)
        self._ids[key] = parent
        return parent

    def _enterprise(self, tenant: TenantInfo, assets: list[AssetInfo]) -> int:
        tops = [a for a in assets if a.parent_id is None]
        named = [a for a in tops if a.name == tenant.name]
        if named:
            return named[0].id
        if len(tops) == 1:
            return tops[0].id
        return self.registry.create_asset(tenant.id, AssetLevel.ENTERPRISE, tenant.name).id


class ColumnsBuilder:
    """Collects the points of one message for one device, then makes Columns in one go.

    Protobuf hands metrics over one object at a time, so one pass in Python is unavoidable;
    everything after it (the arrays, the write) is columnar.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self._index: dict[str, int] = {}
        self._kinds: list[DataType] = []
        self._sig: list[int] = []
        self._ts: list[int] = []
        self._val: list[float] = []
        self._text: list[str | None] = []
        self._quality: list[int] = []
        self._missing: list[bool] = []
        self._any_text = False

    def __len__(self) -> int:
        return len(self._ts)

    def add(
        self,
        signal: str,
        kind: DataType,
        ts_ns: int,
        value: float | int | bool | str | None,
        quality: int,
    ) -> None:
        """One point; ``value`` None is a point without value (stored with bad quality)."""
        idx = self._index.get(signal)
        if idx is None:
            idx = self._index[signal] = len(self._kinds)
            self._kinds.append(kind)
        self._sig.append(idx)
        self._ts.append(ts_ns)
        if value is None:
            self._val.append(np.nan)
            self._text.append(None)
            self._missing.append(True)
            # A point without a value must be bad: the ingest path refuses a good one.
            self._quality.append(quality if quality >> 30 >= 2 else BAD)
            return
        self._missing.append(False)
        self._quality.append(quality)
        if isinstance(value, str):
            self._val.append(np.nan)
            self._text.append(value)
            self._any_text = True
        else:
            self._val.append(float(value))
            self._text.append(None)

    def columns(self) -> Columns:
        kinds = list(self._kinds)
        signal = pa.DictionaryArray.from_arrays(
            pa.array(self._sig, pa.int32()), pa.array(list(self._index), pa.string())
        )
        missing = np.array(self._missing, dtype=bool)
        quality = np.array(self._quality, dtype=np.uint32)
        return Columns(
            self.device,
            signal,
            np.array(self._ts, dtype=np.int64),
            np.array(self._val, dtype=np.float64),
            pa.array(self._text, pa.string()) if self._any_text else None,
            quality if quality.any() else None,
            lambda: kinds,
            missing=missing if missing.any() else None,
            names=tuple(self._index),
        )
