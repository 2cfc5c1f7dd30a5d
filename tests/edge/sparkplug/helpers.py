"""Test helpers: a real Mosquitto on a free 127.0.0.1 port, and a recorder of everything under spBv1.0/#.

Payloads are decoded with pysparkplug (its decoding only; its MQTT client is unused), an
implementation independent of our encoder. Without Mosquitto or pysparkplug the tests skip
locally and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from shopfloor.edge.model import Reading
from shopfloor.edge.uplinks.sparkplug import SparkplugUplink, SparkplugUplinkConfig
from tests.services import Mosquitto

# The broker these tests start and stop (the shared Mosquitto with persistence, so the
# recorder's session outlives a restart).
Broker = Mosquitto


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool

    @property
    def kind(self) -> str:
        return self.topic.split("/")[2]


class Recorder:
    """Subscribes to spBv1.0/# and keeps every message, reconnecting when the broker restarts."""

    def __init__(self, port: int) -> None:
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self.connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"recorder-{port}", clean_session=False
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_a: self.connected.clear()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.connected.wait(10), "recorder could not connect to the broker"

    def _on_connect(self, client: mqtt.Client, *_a: Any) -> None:
        client.subscribe("spBv1.0/#", qos=1)
        # The SUBACK is not awaited here; a published probe confirms the subscription.
        client.publish("spBv1.0/probe", b"", qos=1)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == "spBv1.0/probe":
            self.connected.set()
            return
        with self._cond:
            self.messages.append(Received(msg.topic, msg.payload, bool(msg.retain)))
            self._cond.notify_all()

    def of(self, kind: str) -> list[Received]:
        with self._cond:
            return [m for m in self.messages if m.kind == kind]

    def wait_for(
        self, pred: Callable[[list[Received]], bool], wait_s: float = 10.0, what: str = ""
    ) -> list[Received]:
        deadline = time.monotonic() + wait_s
        with self._cond:
            while not pred(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    kinds = [m.kind for m in self.messages]
                    raise AssertionError(f"timed out waiting for {what or pred}; got {kinds}")
                self._cond.wait(left)
            return list(self.messages)

    async def until(
        self, pred: Callable[[list[Received]], bool], wait_s: float = 10.0, what: str = ""
    ) -> list[Received]:
        """wait_for without blocking the event loop the uplink runs on."""
        return await asyncio.to_thread(self.wait_for, pred, wait_s, what)

    async def count(self, kind: str, n: int, wait_s: float = 10.0) -> list[Received]:
        """Wait until at least ``n`` messages of ``kind`` arrived; all of that kind."""
        await self.until(lambda ms: sum(m.kind == kind for m in ms) >= n, wait_s, f"{n} x {kind}")
        return self.of(kind)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()  # see SparkplugUplink._close: paho's socket pair


class Uplinks:
    """Builds and runs SparkplugUplinks against the test broker, with fast reconnects."""

    def __init__(self, port: int) -> None:
        self.port = port

    def config(self, **overrides: Any) -> SparkplugUplinkConfig:
        values: dict[str, Any] = {
            "port": self.port,
            "group_id": "plant1",
            "edge_node_id": "gw1",
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1.0,
            "publish_timeout_s": 3.0,
            "connect_timeout_s": 3.0,
        }
        values.update(overrides)
        return SparkplugUplinkConfig(**values)

    @contextlib.asynccontextmanager
    async def run(self, **overrides: Any) -> AsyncIterator[SparkplugUplink]:
        uplink = SparkplugUplink(self.config(**overrides))
        await uplink.start()
        try:
            yield uplink
        finally:
            await uplink.stop()


def reading(
    device: str,
    signals: tuple[str, ...],
    ts_ms: list[int] | int,
    values: list[float],
    quality: list[int] | int = 0,
    text: tuple[str | None, ...] | None = None,
) -> Reading:
    n = len(signals)
    ts = np.broadcast_to(np.asarray(ts_ms, dtype=np.int64) * 1_000_000, (n,)).copy()
    q = np.broadcast_to(np.asarray(quality, dtype=np.uint32), (n,)).copy()
    return Reading(device, signals, ts, np.asarray(values, dtype=np.float64), q, text)


async def until_true(pred: Callable[[], bool], wait_s: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + wait_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.02)
