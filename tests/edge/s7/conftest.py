"""A real S7 server (snap7's pure-Python one) on a free 127.0.0.1 port, with DB, M, I, Q areas."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import snap7
from snap7.type import SrvArea

from tests.services import free_port


@dataclass
class Plc:
    port: int
    # The server copies a ctypes buffer on registration but keeps a bytearray as it is, so the
    # test writes these and the connector reads what the test wrote.
    areas: dict[str, bytearray] = field(
        default_factory=lambda: {
            "DB1": bytearray(1024),
            "DB2": bytearray(64),
            "M": bytearray(64),
            "I": bytearray(16),
            "Q": bytearray(16),
        }
    )
    server: snap7.server.Server | None = None

    def start(self) -> None:
        srv = snap7.server.Server(log=False)
        srv.register_area(SrvArea.DB, 1, self.areas["DB1"])
        srv.register_area(SrvArea.DB, 2, self.areas["DB2"])
        srv.register_area(SrvArea.MK, 0, self.areas["M"])
        srv.register_area(SrvArea.PE, 0, self.areas["I"])
        srv.register_area(SrvArea.PA, 0, self.areas["Q"])
        srv.start_to("127.0.0.1", self.port)
        self.server = srv

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def plc() -> Iterator[Plc]:
    # The server logs every refused request at WARNING; the tests provoke some on purpose.
    logging.getLogger("snap7").setLevel(logging.ERROR)
    p = Plc(free_port())
    p.start()
    yield p
    p.stop()
