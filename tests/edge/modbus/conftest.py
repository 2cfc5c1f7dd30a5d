"""Fixtures of the Modbus tests: async tests on asyncio, and a real pymodbus server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shopfloor.edge.connectors.modbus.simserver import SimServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def server() -> AsyncIterator[SimServer]:
    """A pymodbus TCP server on a free 127.0.0.1 port serving unit ids 1, 2 and 3."""
    async with SimServer([1, 2, 3]) as srv:
        yield srv
