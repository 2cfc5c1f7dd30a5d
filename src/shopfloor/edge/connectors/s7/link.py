"""The thread boundary of the S7 connector: every snap7 call runs here, on one worker thread.

snap7's client is blocking and not meant to be shared between threads, and a PLC serves a
connection one request at a time anyway, so each PLC gets one :class:`S7Link`: one client, one
worker thread, requests queued in order. When a call fails at the connection level the client is
dropped; the next call reconnects, but not before an exponential backoff has passed, so a dead
PLC costs one connect attempt per backoff interval, not one per poll of every device.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import snap7
from snap7.error import S7ProtocolError
from snap7.type import Area as SnapArea

from shopfloor.edge.connectors.s7.codec import Block

log = logging.getLogger(__name__)

__all__ = ["AREAS", "S7Link", "S7Unavailable"]

T = TypeVar("T")

AREAS: dict[str, SnapArea] = {
    "DB": SnapArea.DB,
    "M": SnapArea.MK,
    "I": SnapArea.PE,
    "Q": SnapArea.PA,
}
_BACKOFF_FIRST_S = 0.5


class S7Unavailable(ConnectionError):
    """The PLC cannot be reached now; says when the next connect attempt is due."""


class S7Link:
    """One connection to one PLC and the single thread that talks on it."""

    def __init__(
        self,
        host: str,
        port: int,
        rack: int,
        slot: int,
        *,
        timeout_s: float,
        backoff_max_s: float,
    ) -> None:
        self.host, self.port, self.rack, self.slot = host, port, rack, slot
        self.timeout_s = timeout_s
        self.backoff_max_s = backoff_max_s
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"s7-{host}:{port}")
        self._client: snap7.Client | None = None
        self._connect_failures = 0
        self._next_connect = 0.0  # time.monotonic() before which no reconnect is tried
        self.connects = 0
        self.pdu_length: int | None = None
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def call(self, fn: Callable[[snap7.Client], T]) -> T:
        """Run ``fn(client)`` on the worker thread, connecting first if needed."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, fn)

    async def read_blocks(self, blocks: Sequence[Block]) -> list[bytearray]:
        return await self.call(lambda c: _read_blocks(c, blocks))

    async def aclose(self) -> None:
        """Disconnect on the worker thread (after a call still running there), then stop it."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(self._executor, self._drop), self.timeout_s)
        except (TimeoutError, RuntimeError):  # stuck in a call, or already shut down
            pass
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)

    # --- on the worker thread -----------------------------------------------------------------
    def _run(self, fn: Callable[[snap7.Client], T]) -> T:
        client = self._ensure_client()
        try:
            return fn(client)
        except S7ProtocolError:
            # The PLC answered (e.g. "object does not exist"): the connection itself is fine.
            raise
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._drop()
            raise

    def _ensure_client(self) -> snap7.Client:
        if self._client is not None:
            return self._client
        now = time.monotonic()
        if now < self._next_connect:
            raise S7Unavailable(
                f"PLC {self.host}:{self.port} unreachable ({self.last_error}); "
                f"next connect attempt in {self._next_connect - now:.1f} s"
            )
        client = snap7.Client()
        try:
            client.connect(self.host, self.rack, self.slot, self.port)
        except Exception as exc:
            self._connect_failures += 1
            delay = min(self.backoff_max_s, _BACKOFF_FIRST_S * 2 ** min(self._connect_failures, 20))
            self._next_connect = time.monotonic() + delay
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self._connect_failures == 1:
                log.warning("S7 %s:%d: connect failed (%s)", self.host, self.port, self.last_error)
            raise
        if client.connection is not None:
            client.connection.timeout = self.timeout_s
            if client.connection.socket is not None:
                client.connection.socket.settimeout(self.timeout_s)
        # One request at a time on one socket keeps the order the PLC sees simple and bounded.
        client.max_parallel = 1
        if self._connect_failures:
            log.info("S7 %s:%d: connected again", self.host, self.port)
        self._connect_failures = 0
        self._client = client
        self.connects += 1
        self.pdu_length = int(client.pdu_length)
        return client

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.disconnect()
            except Exception as exc:  # a dead socket may fail to close; it is gone either way
                log.debug("S7 %s:%d: disconnect: %s", self.host, self.port, exc)


def _read_blocks(client: snap7.Client, blocks: Sequence[Block]) -> list[bytearray]:
    """All blocks, packed into as few PDUs as snap7's multi-item read allows."""
    if len(blocks) == 1:
        b = blocks[0]
        return [client.read_area(AREAS[b.area], b.db, b.start, b.size)]
    out: list[bytearray] = []
    step = snap7.Client.MAX_VARS
    for i in range(0, len(blocks), step):
        items: list[dict[str, Any]] = [
            {"area": AREAS[b.area], "db_number": b.db, "start": b.start, "size": b.size}
            for b in blocks[i : i + step]
        ]
        _, data = client.read_multi_vars(items)
        out.extend(bytearray(d) for d in data)
    return out
