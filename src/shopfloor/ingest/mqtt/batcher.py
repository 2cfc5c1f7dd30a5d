"""Telemetry messages that arrive together share one Arrow batch and one historian write.

Building an Arrow batch and queueing a write cost tens of microseconds whatever the batch
holds, which decided the rate of one-point messages (about 4K/s). gmqtt hands over every
message of one socket read before the event loop runs anything else, so each message's
coroutine decodes it and joins the pending list, and a flush scheduled with ``call_soon`` runs
after them: signal ids per message (a bad message fails alone), one batch per tenant, one
``write_async``. Each message's caller still waits for that write, so its PUBACK follows
durability as before.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from shopfloor.ingest.mqtt.device_api import ShortTelemetry, decode_short

if TYPE_CHECKING:
    from shopfloor.ingest.decode import Columns
    from shopfloor.ingest.service import IdArray, Ingestor
    from shopfloor.registry.service import TenantInfo

# A flush starts early once this many points wait (bounds the batch and the latency).
MAX_PENDING_POINTS: Final = 200_000

_Item = tuple["TenantInfo", "Columns | ShortTelemetry", "asyncio.Future[None]"]
# What one batch is built from: decoded columns, their signal ids, the messages they hold.
_Part = tuple["Columns", "IdArray", "list[asyncio.Future[None]]"]


class TelemetryBatcher:
    def __init__(
        self,
        ingestor: Ingestor,
        max_points: int = MAX_PENDING_POINTS,
        max_batch_points: int = 1_000_000,
    ) -> None:
        self._ingestor = ingestor
        self._max_points = max_points
        self._max_batch_points = max_batch_points
        self._pending: list[_Item] = []
        self._points = 0
        self._scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()
        self.flushes = 0
        self.messages = 0

    async def ingest(self, tenant: TenantInfo, item: Columns | ShortTelemetry) -> None:
        """Store one message's points; returns once they are durable."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append((tenant, item, fut))
        self._points += len(item)
        if self._points >= self._max_points:
            self._flush_now()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush_now)
        await fut

    def _flush_now(self) -> None:
        self._scheduled = False
        pending, self._pending, self._points = self._pending, [], 0
        if pending:
            task = asyncio.get_running_loop().create_task(self._flush(pending))
            self._flushes.add(task)  # keep a reference until it is done
            task.add_done_callback(self._flushes.discard)

    def _part(self, tenant: TenantInfo, cols: Columns, futs: list[asyncio.Future[None]]) -> _Part:
        return cols, self._ingestor.point_ids(tenant, cols), futs

    def _shorts(
        self, tenant: TenantInfo, items: list[tuple[ShortTelemetry, asyncio.Future[None]]]
    ) -> list[_Part]:
        """Short messages of one tenant decoded as one batch; when one of them spoils it (a
        type that does not fit its signal), one by one, so that only that one fails."""
        try:
            cols = decode_short([it for it, _ in items], self._max_batch_points)
            return [self._part(tenant, cols, [f for _, f in items])]
        except Exception:
            if len(items) == 1:
                raise
        parts = []
        for it, fut in items:
            try:
                parts.append(self._part(tenant, decode_short([it], self._max_batch_points), [fut]))
            except Exception as exc:
                fut.set_exception(exc)
        return parts

    async def _flush(self, pending: list[_Item]) -> None:
        self.flushes += 1
        self.messages += len(pending)
        groups: dict[int, tuple[TenantInfo, list[_Part]]] = {}
        shorts: dict[int, tuple[TenantInfo, list[tuple[ShortTelemetry, asyncio.Future[None]]]]]
        shorts = {}
        for tenant, item, fut in pending:
            if fut.done():  # the message's coroutine was cancelled
                continue
            if isinstance(item, ShortTelemetry):
                shorts.setdefault(tenant.id, (tenant, []))[1].append((item, fut))
                continue
            try:
                part = self._part(tenant, item, [fut])
            except Exception as exc:  # this message's fault (unknown signal, wrong kind)
                fut.set_exception(exc)
                continue
            groups.setdefault(tenant.id, (tenant, []))[1].append(part)
        for tenant, items in shorts.values():
            try:
                parts = self._shorts(tenant, items)
            except Exception as exc:
                items[0][1].set_exception(exc)
                continue
            groups.setdefault(tenant.id, (tenant, []))[1].extend(parts)
        # Tenants' writes go out together: they share the historian's next group commit.
        results = await asyncio.gather(
            *(self._write(tenant, parts) for tenant, parts in groups.values()),
            return_exceptions=True,
        )
        for (_, parts), result in zip(groups.values(), results, strict=True):
            for _, _, futs in parts:
                for fut in futs:
                    if fut.done():
                        continue
                    if isinstance(result, BaseException):  # none of them is acknowledged
                        fut.set_exception(result)
                    else:
                        fut.set_result(None)

    async def _write(self, tenant: TenantInfo, parts: list[_Part]) -> None:
        batch = self._ingestor.to_batch_many(tenant, [(c, i) for c, i, _ in parts])
        await self._ingestor.write(batch)
