"""Fixtures: a real Mosquitto on a free 127.0.0.1 port, a real Platform (SQLite registry,
DuckDB historian) in tmp_path, the host harness between them, publishers.

Without Mosquitto or pysparkplug the tests skip locally and fail under CI=true.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from shopfloor.api.platform import Platform
from shopfloor.core.config import Settings
from tests.edge.sparkplug.helpers import Broker, Recorder, Uplinks
from tests.services import MOSQUITTO, require

from .helpers import HostHarness, Publisher


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    require(f"Mosquitto ({MOSQUITTO})", MOSQUITTO.exists())
    (tmp_path / "mqtt").mkdir()
    b = Broker(tmp_path / "mqtt")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    p = Platform(Settings(data_dir=tmp_path / "data", commit_interval_ms=2.0))
    p.registry.create_tenant("plant1")
    yield p
    p.close()


@pytest.fixture
async def harness(platform: Platform, broker: Broker) -> AsyncIterator[HostHarness]:
    h = HostHarness(platform, broker.port, rebirth_interval_s=60.0)
    await h.start()
    yield h
    await h.stop()


@pytest.fixture
def recorder(broker: Broker) -> Iterator[Recorder]:
    r = Recorder(broker.port)
    yield r
    r.close()


@pytest.fixture
def publisher(broker: Broker) -> Iterator[Publisher]:
    p = Publisher(broker.port)
    yield p
    p.close()


@pytest.fixture
def uplinks(broker: Broker) -> Uplinks:
    return Uplinks(broker.port)


@pytest.fixture
def spb() -> Any:
    """pysparkplug 0.3.0, the independent encoder (its payloads only)."""
    try:
        import pysparkplug
    except ImportError:
        require("pysparkplug (pip install pysparkplug==0.3.0)", False)
    return pysparkplug
