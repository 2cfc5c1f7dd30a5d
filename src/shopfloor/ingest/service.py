"""From decoded columns to a stored batch: resolve signal names, check types, write durably."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.core.errors import BadInput
from shopfloor.core.types import DataType, make_batch
from shopfloor.ingest.decode import Columns

if TYPE_CHECKING:
    from shopfloor.historian.backend import HistorianBackend
    from shopfloor.registry.service import Registry, TenantInfo

# Senders repeat the same set of signals batch after batch: remember the resolved ids per
# (tenant, device, names) so the registry is asked once per distinct set, not per batch.
_CACHE_SIZE: Final = 4096

IdArray = npt.NDArray[np.int32]
# Called with each batch once it is durable (the live rules, rules/runtime.py); it must only
# enqueue: it runs on the write path, and what it raises is logged, never passed to ingest.
DurableHook = Callable[[int, pa.Table], None]

log = logging.getLogger(__name__)


class Ingestor:
    def __init__(self, registry: Registry, historian: HistorianBackend) -> None:
        self.registry = registry
        self.historian = historian
        self.on_durable: DurableHook | None = None
        self._lock = threading.Lock()
        self._known: dict[
            tuple[int, str | None, tuple[str, ...]],
            tuple[npt.NDArray[np.int32], npt.NDArray[np.bool_]],
        ] = {}
        self._generation = registry.generation

    def to_batch(self, tenant: TenantInfo, cols: Columns) -> pa.Table:
        """Resolve names to ids (once per distinct set of signals) and build the point batch."""
        point_ids = self.point_ids(tenant, cols)
        return make_batch(tenant.id, point_ids, cols.ts, cols.value, cols.quality, cols.text)

    def to_batch_many(
        self, tenant: TenantInfo, parts: Sequence[tuple[Columns, IdArray]]
    ) -> pa.Table:
        """One point batch from many small decoded messages and their :meth:`point_ids`.

        Building an Arrow batch costs tens of microseconds whatever its size, which decides
        the rate of one-point MQTT messages; so messages that arrive together share one.
        """
        if len(parts) == 1:
            cols, ids = parts[0]
            return make_batch(tenant.id, ids, cols.ts, cols.value, cols.quality, cols.text)
        quality = None
        if any(c.quality is not None for c, _ in parts):
            quality = np.concatenate(
                [
                    c.quality if c.quality is not None else np.zeros(len(c), np.uint32)
                    for c, _ in parts
                ]
            )
        text = None
        if any(c.text is not None for c, _ in parts):
            text = pa.concat_arrays(
                [
                    c.text.cast(pa.string())
                    if c.text is not None
                    else pa.nulls(len(c), pa.string())
                    for c, _ in parts
                ]
            )
        return make_batch(
            tenant.id,
            np.concatenate([ids for _, ids in parts]),
            np.concatenate([c.ts for c, _ in parts]),
            np.concatenate([c.value for c, _ in parts]),
            quality,
            text,
        )

    def point_ids(self, tenant: TenantInfo, cols: Columns) -> IdArray:
        """The signal id of every point (registering new signals); checks the kinds."""
        names = cols.signal_names()
        key = (tenant.id, cols.device, names)
        with self._lock:
            if self._generation != self.registry.generation:
                self._known.clear()
                self._generation = self.registry.generation
            known = self._known.get(key)
        if known is None:
            known = self._resolve(tenant, cols, names)
            with self._lock:
                if len(self._known) >= _CACHE_SIZE:
                    self._known.clear()
                self._known[key] = known
        ids, stored_text = known
        mismatch = stored_text != cols.text_per_signal()
        if cols.missing is not None:  # a failed read says nothing about the kind
            mismatch &= cols.present_per_signal()
        if mismatch.any():
            self._type_error(names, ids, cols)
        point_ids: IdArray = ids[np.asarray(cols.signal.indices, dtype=np.int64)]
        return point_ids

    def _resolve(
        self, tenant: TenantInfo, cols: Columns, names: tuple[str, ...]
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.bool_]]:
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
            kinds = [cols.kinds()[i] for i in idx]
            ids[idx] = self.registry.resolve(tenant.id, device, sigs, kinds)
        stored = self.registry.signal_types(ids.tolist())
        return ids, np.array([t == DataType.STRING for t in stored], dtype=bool)

    def _type_error(
        self, names: tuple[str, ...], ids: npt.NDArray[np.int32], cols: Columns
    ) -> None:
        stored = self.registry.signal_types(ids.tolist())
        present = cols.present_per_signal()
        for name, want, got, seen in zip(names, stored, cols.kinds(), present, strict=True):
            if seen and (want == DataType.STRING) != (got == DataType.STRING):
                raise BadInput(
                    f"signal {name!r} holds {want} values, this batch sent {got}", "value"
                )
        raise BadInput("values do not match the signals' data types", "value")

    async def write(self, batch: pa.Table) -> None:
        """Write a batch; returns once it is durable, then hands it to :attr:`on_durable`.

        Every ingest path (HTTP, the MQTT batcher, Sparkplug) writes through here, so the live
        rules see what was stored and nothing else."""
        await self.historian.write_async(batch)
        self.durable(batch)

    def durable(self, batch: pa.Table) -> None:
        """Hand a durable batch to :attr:`on_durable` (never fails the write)."""
        hook = self.on_durable
        if hook is None or batch.num_rows == 0:
            return
        try:
            hook(int(batch.column("tenant_id")[0].as_py()), batch)
        except Exception:
            log.exception("the durable-batch hook failed; ingest goes on")

    async def ingest(self, tenant: TenantInfo, cols: Columns) -> int:
        """Store the batch; returns only once it is durable."""
        batch = self.to_batch(tenant, cols)
        await self.write(batch)
        return int(batch.num_rows)
