"""Simulated Modbus devices (pymodbus' own server) for tests, benchmarks and demos.

- :class:`SimServer`: a pymodbus TCP server, or an RTU server on a serial port, serving a set
  of unit ids, each with 4 tables of ``size`` entries starting at address 0. ``silent_units``
  never get an answer: the server reads their requests and sends nothing, which is what a dead
  slave on an RTU line or a dead unit behind a Modbus TCP gateway looks like to the client.
  ``set_registers`` / ``set_bits`` / ``registers`` put values in and read them out directly.
- :class:`SilentTcpServer`: accepts connections and never answers anything (a hung device).
- :class:`PtyLine`: two pseudo-terminals joined back to back, a null-modem cable for testing
  RTU without hardware: the connector opens one end, a :class:`SimServer` the other.
- :func:`period_drift_pct`: the drift of a poller's observed period, from reading timestamps.

Run as a process (for benchmarks, so the devices do not share the client's CPU):
``python -m shopfloor.edge.connectors.modbus.simserver --port P --units 1-50 --silent 50``
prints ``READY <port> <silent port>`` once it serves, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import termios
import tty
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Self

import numpy as np
import numpy.typing as npt
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.base import ModbusBaseServer
from pymodbus.simulator import DataType, SimData, SimDevice

__all__ = [
    "PtyLine",
    "SilentTcpServer",
    "SimServer",
    "fill_pattern",
    "free_port",
    "main",
    "period_drift_pct",
]

# Function codes that reach each table in pymodbus' datastore.
_FC = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def period_drift_pct(ts_ns: npt.ArrayLike, period_s: float) -> float:
    """|mean observed period - configured| / configured * 100, from a poller's timestamps."""
    ts = np.asarray(ts_ns, dtype=np.int64)
    if len(ts) < 2:
        return float("inf")
    mean_s = float(ts[-1] - ts[0]) / (len(ts) - 1) / 1e9
    return abs(mean_s - period_s) / period_s * 100.0


def fill_pattern(unit: int, size: int) -> list[int]:
    """What ``--fill`` puts in every register: unit * 256 + address, in 16 bits."""
    return [(unit * 256 + a) & 0xFFFF for a in range(size)]


def _device(unit: int, size: int) -> SimDevice:
    return SimDevice(
        unit,
        simdata=(
            [SimData(0, count=size, values=False, datatype=DataType.BITS)],
            [SimData(0, count=size, values=False, datatype=DataType.BITS)],
            [SimData(0, count=size, values=0, datatype=DataType.REGISTERS)],
            [SimData(0, count=size, values=0, datatype=DataType.REGISTERS)],
        ),
    )


class _Service(ABC):
    """``async with`` starts it and stops it."""

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class SimServer(_Service):
    """Unit ids with holding, input, coil and discrete tables of ``size`` entries each.

    TCP on ``127.0.0.1:port`` by default; with ``serial_port`` an RTU server on that port.
    :meth:`stop` and :meth:`start` again keep the port (and the values written so far).
    """

    def __init__(
        self,
        units: Iterable[int] = (1,),
        *,
        port: int | None = None,
        serial_port: str | None = None,
        size: int = 1000,
        silent_units: Iterable[int] = (),
    ) -> None:
        self.units = tuple(units)
        self.port = port if port is not None else free_port()  # TCP only
        self.serial_port = serial_port
        self.size = size
        self.silent_units = set(silent_units)
        self._server: ModbusBaseServer | None = None
        # Values survive a stop/start: they are copied out on stop and back in on start.
        self._saved: dict[tuple[int, str], list[int] | list[bool]] = {}

    def _trace(self, sending: bool, data: bytes) -> bytes:
        # The unit id sits at byte 6 of a Modbus TCP frame and at byte 0 of an RTU frame.
        if sending and data:
            unit = data[0] if self.serial_port is not None else data[6]
            if unit in self.silent_units:
                return b""
        return data

    async def start(self) -> None:
        if self._server is not None:
            return
        devices = [_device(u, self.size) for u in self.units]
        server: ModbusBaseServer
        if self.serial_port is not None:
            server = ModbusSerialServer(
                devices,
                framer=FramerType.RTU,
                port=self.serial_port,
                baudrate=115200,  # what the tests use; a pseudo-terminal ignores it anyway
                parity="N",
                trace_packet=self._trace,
            )
        else:
            server = ModbusTcpServer(
                devices, address=("127.0.0.1", self.port), trace_packet=self._trace
            )
        await server.serve_forever(background=True)
        self._server = server
        for (unit, table), values in self._saved.items():
            await self._set(unit, table, 0, values)

    async def stop(self) -> None:
        if self._server is None:
            return
        for unit in self.units:
            for table in _FC:
                self._saved[(unit, table)] = await self._get(unit, table, 0, self.size)
        await self._server.shutdown()  # type: ignore[no-untyped-call]
        self._server = None
        await asyncio.sleep(0)  # let the transports close

    def _live(self) -> ModbusBaseServer:
        if self._server is None:
            raise RuntimeError("the simulated server is not running")
        return self._server

    async def _get(self, unit: int, table: str, address: int, count: int) -> list[int] | list[bool]:
        return await self._live().async_getValues(unit, _FC[table], address, count)

    async def _set(
        self, unit: int, table: str, address: int, values: Sequence[int] | Sequence[bool]
    ) -> None:
        await self._live().async_setValues(unit, _FC[table], address, list(values))

    async def set_registers(
        self, unit: int, address: int, values: Sequence[int], table: str = "holding"
    ) -> None:
        await self._set(unit, table, address, [int(v) for v in values])

    async def set_bits(
        self, unit: int, address: int, values: Sequence[bool], table: str = "coil"
    ) -> None:
        await self._set(unit, table, address, [bool(v) for v in values])

    async def registers(
        self, unit: int, address: int, count: int, table: str = "holding"
    ) -> list[int]:
        return [int(v) for v in await self._get(unit, table, address, count)]

    async def bits(self, unit: int, address: int, count: int, table: str = "coil") -> list[bool]:
        return [bool(v) for v in await self._get(unit, table, address, count)]


class SilentTcpServer(_Service):
    """Accepts TCP connections on 127.0.0.1 and never answers: a device that hangs."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def _swallow(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while await reader.read(4096):
                pass
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._swallow, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for w in list(self._writers):
            w.close()
        await self._server.wait_closed()
        self._server = None


class PtyLine(_Service):
    """Two pseudo-terminals joined back to back: ``a`` and ``b`` are the two ends' paths.

    Bytes written to one end come out of the other, through this event loop (no threads, no
    socat). Both ends stay open (held by this object) until :meth:`close`, so a serial port
    closing and reopening on either side does not hang the line up.
    """

    def __init__(self) -> None:
        self._fds: list[int] = []
        ends = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave, termios.TCSANOW)
            os.set_blocking(master, False)
            self._fds += [master, slave]
            ends.append((master, os.ttyname(slave)))
        (self._ma, self.a), (self._mb, self.b) = ends
        self._loop: asyncio.AbstractEventLoop | None = None

    def _pump(self, src: int, dst: int) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            data = os.read(src, 4096)
            if data:
                os.write(dst, data)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._ma, self._pump, self._ma, self._mb)
        self._loop.add_reader(self._mb, self._pump, self._mb, self._ma)

    async def stop(self) -> None:
        self.close()

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._ma)
            self._loop.remove_reader(self._mb)
            self._loop = None
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []


def _units(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


async def _serve(args: argparse.Namespace) -> None:
    server = SimServer(
        _units(args.units),
        port=args.port or free_port(),
        size=args.size,
        silent_units=_units(args.silent) if args.silent else (),
    )
    silent = SilentTcpServer(args.silent_port or None)
    await server.start()
    if args.fill:
        for unit in server.units:
            pattern = fill_pattern(unit, server.size)
            for table in ("holding", "input"):
                await server.set_registers(unit, 0, pattern, table)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server, silent:
        print(f"READY {server.port} {silent.port}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    ap.add_argument("--units", default="1", help="unit ids served, e.g. 1-50 or 1,2,7")
    ap.add_argument("--silent", default="", help="unit ids that never get an answer")
    ap.add_argument("--silent-port", type=int, default=0, help="port of the never-answering server")
    ap.add_argument("--size", type=int, default=1000, help="entries per table")
    ap.add_argument("--fill", action="store_true", help="registers hold unit * 256 + address")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    # pymodbus logs an error (with a dump of recent frames) whenever a client goes away while
    # its answer is on the way, which every benchmark does at its end.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
