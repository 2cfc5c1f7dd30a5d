"""A real Mosquitto on a free 127.0.0.1 port, and a plain paho client to play the devices."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.services import MOSQUITTO, Mosquitto, require


def mosquitto_at(folder: Path) -> Mosquitto:
    """A Mosquitto (not started) without persistence: each test starts from a clean broker."""
    require(f"mosquitto ({MOSQUITTO})", MOSQUITTO.exists())
    return Mosquitto(folder, persistence=False)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The port of a Mosquitto that lives for the module; tests use their own topics."""
    m = mosquitto_at(tmp_path_factory.mktemp("mosquitto"))
    m.start()
    yield m.port
    m.stop()


class Device:
    """A paho client standing in for devices: publishes telemetry, answers commands."""

    def __init__(self, port: int) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def device(broker: int) -> Iterator[Device]:
    d = Device(broker)
    yield d
    d.close()
