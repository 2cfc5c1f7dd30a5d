"""One Modbus connection (a TCP socket or an RTU line) shared by the devices behind it.

Modbus is request/response with one request in flight: on an RTU line that is the protocol,
and many TCP gateways cannot take more either. So :meth:`ModbusLink.call` serialises requests
with a FIFO lock and bounds each one with the calling device's own timeout, counted from the
moment the request goes out (waiting for the line does not eat into it). A unit that does not
answer costs the line one timeout per attempt; its poller backs off, so that is rare.

Reconnecting is done here, not by pymodbus: after a failed connect the link refuses requests
at once (no waiting on a dead socket) until its backoff expires, doubling from
``reconnect_min_s`` to ``reconnect_max_s``. A connection on which nothing has answered for
several requests in a row (a half-open socket, a gateway that hangs) is closed and reopened.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from shopfloor.edge.connectors.modbus.config import ConnectionConfig

__all__ = [
    "DEVICE_EXCEPTIONS",
    "ModbusExceptionResponse",
    "ModbusLink",
    "NotConnected",
    "RequestTimeout",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Exception codes that say the device (or the gateway's path to it) is unavailable, rather than
# that one request asked for something the device does not have.
DEVICE_EXCEPTIONS = frozenset({0x04, 0x06, 0x0A, 0x0B})
EXCEPTION_NAMES = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}


class NotConnected(ConnectionError):
    """The link has no connection now (refused, dropped, or waiting to reconnect)."""


class RequestTimeout(TimeoutError):
    """No answer within the device's timeout."""


class ModbusExceptionResponse(Exception):
    """The device answered with a Modbus exception code."""

    def __init__(self, code: int, what: str) -> None:
        self.code = code
        name = EXCEPTION_NAMES.get(code, "unknown exception")
        super().__init__(f"{what}: exception {code:#04x} ({name})")


def check(pdu: ModbusPDU, what: str) -> ModbusPDU:
    """The answer itself, or :class:`ModbusExceptionResponse` when it is an exception."""
    if pdu.isError():
        raise ModbusExceptionResponse(pdu.exception_code, what)
    return pdu


class ModbusLink:
    """A connection and its request lock; see the module docstring."""

    def __init__(self, config: ConnectionConfig) -> None:
        self.config = config
        self.name = config.name
        self._client: ModbusBaseClient | None = None
        self._lock = asyncio.Lock()
        self._next_connect = 0.0
        self._connect_failures = 0
        self._silent = 0  # requests in a row that got no answer at all
        # Close after this many unanswered requests in a row: one per device, and at least 3,
        # so that one dead unit behind a gateway never drops the others' connection.
        self.silent_limit = max(3, len(config.devices))
        self._timeout_cap = max(config.connect_timeout_s, *(d.timeout_s for d in config.devices))
        self.stats: dict[str, Any] = {
            "requests": 0,
            "timeouts": 0,
            "exceptions": 0,
            "connects": 0,
            "connect_failures": 0,
            "drops": 0,
            "last_error": None,
        }

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    def _make_client(self) -> ModbusBaseClient:
        c = self.config
        # pymodbus' own timeout is only a backstop (each request has the device's timeout);
        # its retries and its reconnect loop are off, because this link does both.
        common: dict[str, Any] = {
            "name": c.name,
            "timeout": self._timeout_cap + 1.0,
            "retries": 0,
            "reconnect_delay": 0,
        }
        if c.transport == "tcp":
            assert c.host is not None
            return AsyncModbusTcpClient(c.host, port=c.port, **common)
        assert c.serial_port is not None
        return AsyncModbusSerialClient(
            c.serial_port,
            framer=FramerType.RTU,
            baudrate=c.baudrate,
            bytesize=c.bytesize,
            parity=c.parity,
            stopbits=c.stopbits,
            **common,
        )

    async def _connect(self) -> ModbusBaseClient:
        client = self._client
        if client is not None and client.connected:
            return client
        now = time.monotonic()
        if now < self._next_connect:
            raise NotConnected(
                f"{self.name}: not connected; next attempt in {self._next_connect - now:.1f} s"
                f" (last error: {self.stats['last_error']})"
            )
        if client is None:
            client = self._client = self._make_client()
        try:
            ok = await asyncio.wait_for(client.connect(), self.config.connect_timeout_s)
        except (TimeoutError, OSError, ModbusException) as exc:
            ok, reason = False, f"{type(exc).__name__}: {exc}"
        else:
            reason = "connection refused or timed out"
        if not ok:
            client.close()
            self._connect_failures += 1
            self.stats["connect_failures"] += 1
            delay = min(
                self.config.reconnect_max_s,
                self.config.reconnect_min_s * 2 ** min(self._connect_failures - 1, 30),
            )
            self._next_connect = time.monotonic() + delay
            self.stats["last_error"] = f"connect failed: {reason}"
            if self._connect_failures == 1:
                log.warning("modbus %s: cannot connect (%s)", self.name, reason)
            raise NotConnected(f"{self.name}: cannot connect ({reason})")
        if self._connect_failures or self.stats["connects"]:
            log.info("modbus %s: connected again", self.name)
        self._connect_failures = 0
        self._next_connect = 0.0
        self._silent = 0
        self.stats["connects"] += 1
        return client

    def _drop(self, why: str) -> None:
        if self._client is not None:
            self._client.close()
        self.stats["drops"] += 1
        self.stats["last_error"] = why
        log.warning("modbus %s: closing the connection (%s)", self.name, why)

    async def call(
        self, request: Callable[[ModbusBaseClient], Awaitable[T]], timeout_s: float, what: str
    ) -> T:
        """Run ``request`` on the connection, alone, within ``timeout_s`` once it is sent."""
        async with self._lock:
            client = await self._connect()
            self.stats["requests"] += 1
            try:
                async with asyncio.timeout(timeout_s):
                    result = await request(client)
            except TimeoutError:
                self.stats["timeouts"] += 1
                self._silent += 1
                self.stats["last_error"] = f"{what}: no answer within {timeout_s:g} s"
                if self._silent >= self.silent_limit:
                    self._drop(f"no answer to {self._silent} requests in a row")
                    self._silent = 0
                raise RequestTimeout(self.stats["last_error"]) from None
            except ModbusExceptionResponse as exc:
                self._silent = 0  # the device did answer
                self.stats["exceptions"] += 1
                self.stats["last_error"] = str(exc)
                raise
            except ModbusException as exc:  # pymodbus: not connected, I/O error, bad frame
                self.stats["last_error"] = f"{what}: {exc}"
                if not client.connected:
                    self._drop(f"connection lost: {exc}")
                raise NotConnected(f"{self.name}: {exc}") from None
            self._silent = 0
            return result

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def status(self) -> dict[str, Any]:
        return {"connected": self.connected, **self.stats}
