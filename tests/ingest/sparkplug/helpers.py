"""The stand-in for the MQTT service, a plain publisher, and reads from the historian.

:class:`HostHarness` does what the MQTT service does for the host: a paho client subscribed to
``spBv1.0/#`` feeds every message to ``SparkplugHost.handle`` in arrival order and is the host's
publish; it registers the host's offline STATE as its Will and publishes the online STATE once
subscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from shopfloor.api.platform import Platform
from shopfloor.ingest.sparkplug import SparkplugHost

WAIT_S = 10.0
Point = tuple[int, float | None, str | None, int]


class HostHarness:
    def __init__(self, platform: Platform, port: int, *, rebirth_interval_s: float) -> None:
        self.platform = platform
        self.port = port
        self.host = SparkplugHost(
            platform, self._publish, host_id="shopfloor", rebirth_interval_s=rebirth_interval_s
        )
        self.handled = 0
        self.busy = False
        self.published: list[tuple[str, bytes, int, bool]] = []
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._subscribed = threading.Event()
        self._loop = asyncio.get_running_loop()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"host-{port}")
        topic, payload = self.host.will()
        self.client.will_set(topic, payload, qos=1, retain=True)
        self.client.on_connect = lambda c, *_a: c.subscribe("spBv1.0/#", qos=1)
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        ok = await asyncio.to_thread(self._subscribed.wait, WAIT_S)
        assert ok, "host harness did not get its subscription"
        topic, payload = self.host.online()
        await self._publish(topic, payload, 1, True)
        self._task = asyncio.create_task(self._consume())

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (msg.topic, bytes(msg.payload)))

    async def _consume(self) -> None:
        while True:
            topic, payload = await self._queue.get()
            self.busy = True
            try:
                await self.host.handle(topic, payload)
            finally:
                self.busy = False
            self.handled += 1

    async def _publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.published.append((topic, payload, qos, retain))
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        await asyncio.to_thread(info.wait_for_publish, 5)

    def node(self, key: str) -> dict[str, Any]:
        nodes: dict[str, Any] = self.host.status()["nodes"]
        assert key in nodes, f"host knows no edge node {key}; it knows {sorted(nodes)}"
        return dict(nodes[key])

    async def until(self, pred: Callable[[], bool], what: str, wait_s: float = WAIT_S) -> None:
        deadline = time.monotonic() + wait_s
        while not pred():
            if self._task is not None and self._task.done():
                self._task.result()  # the consumer died: show why
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; host: {self.host.status()}")
            await asyncio.sleep(0.02)

    async def messages(self, key: str, n: int) -> dict[str, Any]:
        """Wait until edge node ``key`` had ``n`` messages handled to the end; its status."""

        def done() -> bool:
            nodes = self.host.status()["nodes"]
            # handle() counts a message on entry, so also wait for the consumer to be idle.
            idle = self._queue.empty() and not self.busy
            return key in nodes and nodes[key]["messages"] >= n and idle

        await self.until(done, f"{n} messages of {key}")
        return self.node(key)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):  # a test may have cut the connection already
            self.client.disconnect()
        self.client.loop_stop()


class Publisher:
    """A plain paho client to publish payloads pysparkplug encoded (its own client needs paho<2)."""

    def __init__(self, port: int, name: str = "pub") -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{port}")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def history(platform: Platform, key: str, tenant: str = "plant1") -> list[Point]:
    """Every stored point of signal ``key``: (ts ns, value, text, quality)."""
    tid = platform.registry.get_tenant(tenant).id
    ids = platform.registry.resolve_keys(tid, [key])
    t = platform.historian.query_raw(tid, ids, 0, 2**62)
    cols = [t.column(c).to_pylist() for c in ("ts", "value", "text", "quality")]
    return list(zip(*cols, strict=True))


def latest(platform: Platform, key: str, tenant: str = "plant1") -> Point:
    tid = platform.registry.get_tenant(tenant).id
    ids = platform.registry.resolve_keys(tid, [key])
    t = platform.historian.latest(tid, ids)
    assert t.num_rows == 1, f"no latest value of {key}"
    return (
        t.column("ts")[0].as_py(),
        t.column("value")[0].as_py(),
        t.column("text")[0].as_py(),
        t.column("quality")[0].as_py(),
    )
