"""From decoded columns to a stored batch: resolve signal names, check types, write durably."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from shopfloor.core.errors import BadInput
from shopfloor.core.types import DataType, make_batch
from shopfloor.ingest.decode import Columns

if TYPE_CHECKING:
    from shopfloor.historian.backend import HistorianBackend
    from shopfloor.registry.service import Registry, TenantInfo


class Ingestor:
    def __init__(self, registry: Registry, historian: HistorianBackend) -> None:
        self.registry = registry
        self.historian = historian

    def to_batch(self, tenant: TenantInfo, cols: Columns) -> pa.Table:
        """Resolve names to ids (once per distinct signal) and build the point batch."""
        names = cols.signal.dictionary.to_pylist()
        by_device: dict[str, tuple[list[int], list[str]]] = {}
        for i, name in enumerate(names):
            device, sep, sig = name.rpartition("/")
            if not sep:
                if cols.device is None:
                    raise BadInput(
                        f"signal {name!r} has no device: set 'device' or send 'device/signal'",
                        "signal",
                    )
                device, sig = cols.device, name
            slot = by_device.setdefault(device, ([], []))
            slot[0].append(i)
            slot[1].append(sig)
        ids = np.empty(len(names), np.int32)
        for device, (idx, sigs) in by_device.items():
            kinds = [cols.kinds[i] for i in idx]
            ids[idx] = self.registry.resolve(tenant.id, device, sigs, kinds)
        self._check_types(names, ids, cols.kinds)
        point_ids = ids[np.asarray(cols.signal.indices, dtype=np.int64)]
        return make_batch(tenant.id, point_ids, cols.ts, cols.value, cols.quality, cols.text)

    def _check_types(self, names: list[str], ids: np.ndarray, seen: list[DataType]) -> None:
        stored = self.registry.signal_types(ids.tolist())
        for name, want, got in zip(names, stored, seen, strict=True):
            if (want == DataType.STRING) != (got == DataType.STRING):
                raise BadInput(
                    f"signal {name!r} holds {want} values, this batch sent {got}", "value"
                )

    async def ingest(self, tenant: TenantInfo, cols: Columns) -> int:
        """Store the batch; returns only once it is durable."""
        batch = self.to_batch(tenant, cols)
        await asyncio.wrap_future(self.historian.submit(batch))
        return int(batch.num_rows)
