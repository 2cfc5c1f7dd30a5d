"""The callers' side of a historian's group commit, shared by the backends.

A backend's writer thread takes ``(batch, future)`` pairs from ``_queue``, commits what arrived
within one commit interval together, and resolves the futures with :func:`settle`. This class
gives the backend ``submit``, ``write`` and ``write_async`` over that queue; the backend sets
``_queue``, ``_state_lock`` and ``_closed`` and owns the writer thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import queue
import threading
from typing import Any

import pyarrow as pa

from shopfloor.core.errors import StorageError
from shopfloor.core.types import POINT_SCHEMA

Waiter = cf.Future[None] | asyncio.Future[None]


class GroupCommitQueue:
    _queue: queue.Queue[Any]
    _state_lock: threading.Lock  # _closed against enqueuing
    _closed: bool

    def _enqueue(self, batch: pa.Table, fut: Waiter) -> None:
        """Check one caller's batch (so a bad one fails only its caller) and queue it."""
        if batch.schema != POINT_SCHEMA:
            try:
                batch = batch.cast(POINT_SCHEMA)
            except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
                raise StorageError(f"write failed, nothing of it was stored: {exc}") from None
        with self._state_lock:  # close() cannot slip in between the check and the put
            if self._closed:
                raise StorageError("historian is closed")
            self._queue.put((batch, fut))

    def submit(self, batch: pa.Table) -> cf.Future[None]:
        """Queue a batch for the next group commit; the future resolves once it is durable
        (the backend's commit: an fsync of its log, a COMMIT)."""
        fut: cf.Future[None] = cf.Future()
        if batch.num_rows == 0:
            fut.set_result(None)
            return fut
        try:
            self._enqueue(batch, fut)
        except StorageError as exc:
            fut.set_exception(exc)
        return fut

    def write(self, batch: pa.Table) -> None:
        self.submit(batch).result()

    async def write_async(self, batch: pa.Table) -> None:
        """Like write, for the event loop: one loop wake-up per group commit."""
        if self._closed:
            raise StorageError("historian is closed")
        if batch.num_rows == 0:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._enqueue(batch, fut)
        await fut


def settle(items: list[tuple[pa.Table, Waiter]], error: Exception | None) -> None:
    """Resolve the writers of one commit: thread futures directly, loop futures in one call
    per event loop (a wake-up per request cost about half a millisecond of loop time)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for _, fut in items:
        if isinstance(fut, asyncio.Future):
            by_loop.setdefault(fut.get_loop(), []).append(fut)
        elif not fut.set_running_or_notify_cancel():
            continue  # the caller cancelled: nobody to tell
        elif error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)
    for loop, futs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle_in_loop, futs, error)


def settle_in_loop(futs: list[asyncio.Future[None]], error: Exception | None) -> None:
    for fut in futs:
        if fut.done():  # the request was cancelled (client went away)
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)
