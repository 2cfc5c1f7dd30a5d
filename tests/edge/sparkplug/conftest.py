"""Fixtures: a real Mosquitto on a free 127.0.0.1 port, a recorder, uplinks, the decoder.

Without Mosquitto or pysparkplug the tests skip locally and fail under CI=true.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.services import MOSQUITTO, require

from .helpers import Broker, Recorder, Uplinks


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    require(f"Mosquitto ({MOSQUITTO})", MOSQUITTO.exists())
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def recorder(broker: Broker) -> Iterator[Recorder]:
    r = Recorder(broker.port)
    yield r
    r.close()


@pytest.fixture
def spb() -> Any:
    """pysparkplug, the independent decoder."""
    try:
        import pysparkplug
    except ImportError:
        require("pysparkplug (pip install pysparkplug)", False)
    return pysparkplug


@pytest.fixture
def uplinks(broker: Broker) -> Uplinks:
    return Uplinks(broker.port)
