"""Fixtures: a real Platform (SQLite registry, DuckDB historian) in tmp_path with its MQTT
endpoint on free 127.0.0.1 ports, real paho device clients, and a real Mosquitto.

Without Mosquitto the tests that need it skip locally and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from shopfloor.api.app import create_app
from shopfloor.api.platform import Platform
from shopfloor.core.config import Settings
from shopfloor.ingest.mqtt import MqttService
from shopfloor.registry.service import TenantInfo
from tests.services import DYNSEC, MOSQUITTO, WAIT_S, Mosquitto, free_port, require

T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 60.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def eventually(check: Callable[[], bool], what: str, within_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# -- the platform ------------------------------------------------------------------------------


@dataclass
class Env:
    platform: Platform
    acme: TenantInfo
    other: TenantInfo
    acme_key: str
    port: int
    devices: list[Device] = field(default_factory=list)

    @property
    def mqtt(self) -> MqttService:
        assert self.platform.mqtt is not None
        return self.platform.mqtt

    def device(self, username: str | None, password: str | None = None, **kw: Any) -> Device:
        """A device client on the embedded broker, closed with the platform."""
        dev = Device(kw.pop("port", self.port), username, password, **kw)
        self.devices.append(dev)
        return dev

    def values(self, tenant: TenantInfo, device: str, signal: str) -> list[Any]:
        """The stored values of one signal, oldest first, read through the historian."""
        sigs = [
            s for s in self.platform.registry.list_signals(tenant.id, device) if s.name == signal
        ]
        if not sigs:
            return []
        t = self.platform.historian.query_raw(tenant.id, [sigs[0].id], 0, 2**62)
        texts = t.column("text").to_pylist()
        vals = t.column("value").to_pylist()
        return [x if x is not None else v for v, x in zip(vals, texts, strict=True)]

    async def wait_values(
        self, tenant: TenantInfo, device: str, signal: str, n: int = 1
    ) -> list[Any]:
        await eventually(
            lambda: len(self.values(tenant, device, signal)) >= n, f"{n} values of {signal}"
        )
        return self.values(tenant, device, signal)

    def http(self) -> httpx.AsyncClient:
        app = create_app(platform=self.platform)
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://test",
            headers={"Authorization": f"Bearer {self.acme_key}"},
        )


def make_platform(tmp_path: Path, **settings: Any) -> tuple[Platform, TenantInfo, TenantInfo, str]:
    platform = Platform(Settings(data_dir=tmp_path / "data", **settings))
    acme, key = platform.registry.create_tenant("acme")
    other, _ = platform.registry.create_tenant("other")
    for name in ("press-01", "press-02"):
        platform.registry.create_device(acme.id, name)
    platform.registry.create_device(other.id, "press-01")
    return platform, acme, other, key


async def embedded_env(tmp_path: Path, **settings: Any) -> Env:
    port = free_port()
    platform, acme, other, key = make_platform(
        tmp_path, mqtt_mode="embedded", mqtt_port=port, **settings
    )
    assert platform.mqtt is not None
    await platform.mqtt.start()
    return Env(platform, acme, other, key, port)


async def close_env(env: Env) -> None:
    for dev in env.devices:  # before the broker goes, so no connection outlives the loop
        await asyncio.to_thread(dev.close)
    await asyncio.sleep(0.1)
    if env.platform.mqtt is not None:
        await env.platform.mqtt.stop()
    env.platform.close()


@pytest.fixture
def env_factory(tmp_path: Path) -> Callable[..., Any]:
    """``async with env_factory(**settings) as env``: an embedded platform for one test."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def factory(**settings: Any) -> AsyncIterator[Env]:
        env = await embedded_env(tmp_path, **settings)
        try:
            yield env
        finally:
            await close_env(env)

    return factory


# -- devices -----------------------------------------------------------------------------------


class Device:
    """A real MQTT device (paho, MQTT 3.1.1 by default); blocking calls run in a thread."""

    def __init__(
        self,
        port: int,
        username: str | None,
        password: str | None = None,
        client_id: str | None = None,
        tls: tuple[Path, Path, Path] | None = None,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
    ) -> None:
        self.port = port
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"dev-{time.monotonic_ns()}",
            protocol=protocol,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls is not None:
            ca, cert, key = tls
            self.client.tls_set(ca_certs=str(ca), certfile=str(cert), keyfile=str(key))
        self.messages: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.subscribed = threading.Event()
        self.rc: int | None = None
        self.granted: list[int] = []
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = lambda _c, _u, m: self.messages.put(
            (m.topic, bytes(m.payload), m.retain)
        )
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.rc = int(rc.value)
        self.connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.rc = self.rc if self.rc else int(rc.value)
        self.disconnected.set()

    def _on_subscribe(self, _c: Any, _u: Any, _mid: Any, codes: Any, _p: Any) -> None:
        self.granted = [int(c.value) for c in codes]
        self.subscribed.set()

    def _connect(self) -> int:
        try:
            self.client.connect("127.0.0.1", self.port, keepalive=30)
        except OSError:  # a TLS handshake refused (no or a foreign certificate)
            return -1
        self.client.loop_start()
        deadline = time.monotonic() + WAIT_S
        while not (self.connected.is_set() or self.disconnected.is_set()):
            if time.monotonic() > deadline:
                raise AssertionError("neither CONNACK nor disconnect")
            time.sleep(0.01)
        if not self.connected.is_set():
            self.client.loop_stop()
            return -1
        assert self.rc is not None
        if self.rc != 0:  # refused: stop paho from trying again and again
            self.client.loop_stop()
        return self.rc

    async def connect(self) -> int:
        """The CONNACK reason code (0 = accepted), or -1 when the connection was dropped."""
        return await asyncio.to_thread(self._connect)

    async def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        await asyncio.to_thread(info.wait_for_publish, WAIT_S)

    async def subscribe(self, topic: str) -> list[int]:
        self.subscribed.clear()
        self.client.subscribe(topic, qos=1)
        ok = await asyncio.to_thread(self.subscribed.wait, WAIT_S)
        assert ok, f"no SUBACK for {topic}"
        return self.granted

    async def get(self) -> tuple[str, bytes, bool]:
        return await asyncio.to_thread(self.messages.get, True, WAIT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # paho keeps its wake-up socket pair until garbage collection otherwise, which then
        # warns about unclosed sockets in whatever test runs next.
        self.client._reset_sockets()


# -- Mosquitto ---------------------------------------------------------------------------------


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    require("mosquitto", MOSQUITTO.exists())
    (tmp_path / "mosq").mkdir()
    broker = Mosquitto(tmp_path / "mosq")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def dynsec_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    require("mosquitto with dynamic security", MOSQUITTO.exists() and DYNSEC.exists())
    (tmp_path / "mosq").mkdir()
    broker = Mosquitto(tmp_path / "mosq", ("admin", "admin-secret-1"))
    broker.start()
    yield broker
    broker.stop()
