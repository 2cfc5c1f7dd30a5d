"""The MQTT JSON connector: devices that publish JSON telemetry to a broker.

paho-mqtt's network loop runs in its own thread (``loop_start``). Its callbacks do nothing but
hand each message to the event loop with ``call_soon_threadsafe``; decoding, batching, counters
and write confirmations all live on the event loop, so none of that state is shared between
threads. Readings are batched per device and handed on every ``batch_s`` (or sooner when
``max_batch_points`` are waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel

from shopfloor.edge.connector import Connector, ReadingSink
from shopfloor.edge.connectors.mqtt_json.config import MqttJsonConfig, Subscription
from shopfloor.edge.connectors.mqtt_json.mapping import Decoded, PayloadDecoder, PayloadError
from shopfloor.edge.model import Reading, WriteRequest, WriteResult

log = logging.getLogger(__name__)

__all__ = ["MqttJsonConnector"]

_LOG_EVERY_S = 60.0  # a device sending garbage is logged once a minute, with the count


@dataclass
class _DeviceStats:
    messages: int = 0
    points: int = 0
    bad_payloads: int = 0
    missing_fields: int = 0
    last_message_ns: int | None = None
    last_error: str | None = None
    last_logged: float = -math.inf

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "points": self.points,
            "bad_payloads": self.bad_payloads,
            "missing_fields": self.missing_fields,
            "last_message_ns": self.last_message_ns,
            "last_error": self.last_error,
        }


@dataclass
class _Batch:
    """Points of one device waiting to be handed on."""

    source_ts: bool
    signals: list[str] = field(default_factory=list)
    ts_ns: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    quality: list[int] = field(default_factory=list)
    text: list[str | None] = field(default_factory=list)
    has_text: bool = False

    def add(self, d: Decoded) -> None:
        self.signals += d.signals
        self.ts_ns += d.ts_ns
        self.values += d.values
        self.quality += d.quality
        self.text += d.text
        self.has_text |= d.has_text

    def take(self, device: str) -> Reading:
        reading = Reading(
            device,
            tuple(self.signals),
            np.array(self.ts_ns, dtype=np.int64),
            np.array(self.values, dtype=np.float64),
            np.array(self.quality, dtype=np.uint32),
            tuple(self.text) if self.has_text else None,
            self.source_ts,
        )
        self.signals, self.ts_ns, self.values, self.quality, self.text = [], [], [], [], []
        self.has_text = False
        return reading


@dataclass
class _TelemetryWatch:
    device: str
    signal: str
    value: Any
    future: asyncio.Future[Any]


class MqttJsonConnector(Connector):
    """Subscribes to device telemetry, maps JSON to points, publishes commands."""

    domain: ClassVar[str] = "mqtt_json"
    config_model: ClassVar[type[BaseModel]] = MqttJsonConfig

    def __init__(self, name: str, config: BaseModel, sink: ReadingSink) -> None:
        if not isinstance(config, MqttJsonConfig):
            raise TypeError(
                f"MqttJsonConnector needs an MqttJsonConfig, got {type(config).__name__}"
            )
        super().__init__(name, config, sink)
        self.cfg = config
        self._subs = [(s, PayloadDecoder(s.mapping)) for s in config.subscriptions]
        self._stats: dict[str, _DeviceStats] = {}
        self._batches: dict[str, _Batch] = {}
        self._waiting_points = 0
        self._responses: dict[str, asyncio.Future[Any]] = {}
        self._watches: list[_TelemetryWatch] = []
        self._client: mqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self.connected = False
        self.subscribed = False  # the broker acknowledged every subscription
        self.connects = 0
        self.last_error: str | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        client = self._make_client()
        self._client = client
        b = self.cfg.broker
        client.connect_async(b.host, b.port, b.keepalive_s)
        client.loop_start()  # paho's network thread; it also reconnects with backoff
        try:
            await self._flush_forever()
        finally:
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)
            self._client = None
            self.connected = self.subscribed = False
            await self._flush()

    def _make_client(self) -> mqtt.Client:
        b = self.cfg.broker
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=b.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if b.username is not None:
            password = b.password.get_secret_value() if b.password is not None else None
            client.username_pw_set(b.username, password)
        if b.tls is not None:
            client.tls_set(ca_certs=b.tls.ca_file, certfile=b.tls.cert_file, keyfile=b.tls.key_file)
            client.tls_insecure_set(b.tls.insecure)
        client.reconnect_delay_set(b.reconnect_min_s, b.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_connect_fail = self._on_connect_fail
        return client

    async def _flush_forever(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.cfg.batch_s)
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        self._waiting_points = 0
        for device, batch in list(self._batches.items()):
            if batch.signals:
                await self.sink(batch.take(device))

    # --- paho's network thread: hand over to the event loop, nothing else -------------------
    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any
    ) -> None:
        if reason.is_failure:
            self._call_soon(self._set_error, f"broker refused the connection: {reason}")
            return
        topics: list[tuple[str, int]] = [(s.filter, s.qos) for s in self.cfg.subscriptions]
        if self.cfg.commands is not None and self.cfg.commands.response_filter is not None:
            topics.append((self.cfg.commands.response_filter, 1))
        client.subscribe(topics)
        self._call_soon(self._set_connected, True)

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        b = self.cfg.broker
        self._call_soon(self._set_error, f"cannot connect to the broker at {b.host}:{b.port}")

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any
    ) -> None:
        self._call_soon(self._set_connected, False)
        if reason.is_failure:
            self._call_soon(self._set_error, f"disconnected: {reason}")

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[ReasonCode], _p: Any
    ) -> None:
        refused = [str(c) for c in codes if c.is_failure]
        if refused:
            self._call_soon(self._set_error, f"broker refused subscriptions: {refused}")
        self._call_soon(self._set_subscribed, not refused)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._call_soon(self._handle, msg.topic, msg.payload, time.time_ns())

    def _call_soon(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        # RuntimeError: the loop closed while paho was still delivering.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(fn, *args)

    # --- on the event loop ----------------------------------------------------------------------
    def _set_connected(self, up: bool) -> None:
        if up and not self.connected:
            self.connects += 1
            log.info(
                "MQTT %s: connected to %s:%d", self.name, self.cfg.broker.host, self.cfg.broker.port
            )
        self.connected = up
        if not up:
            self.subscribed = False

    def _set_subscribed(self, ok: bool) -> None:
        self.subscribed = ok

    def _set_error(self, message: str) -> None:
        self.last_error = message
        log.warning("MQTT %s: %s", self.name, message)

    def _handle(self, topic: str, payload: bytes, arrival_ns: int) -> None:
        commands = self.cfg.commands
        response_filter = commands.response_filter if commands is not None else None
        if response_filter is not None and mqtt.topic_matches_sub(response_filter, topic):
            self._on_response(topic, payload)
            return
        match = self._subscription_of(topic)
        if match is None:
            return  # a message of a subscription no longer configured: not ours
        sub, decoder = match
        device = _device_of(sub, topic)
        if not device:
            log.warning("MQTT %s: topic %r has an empty device level; ignored", self.name, topic)
            return
        stats = self._stats.setdefault(device, _DeviceStats())
        stats.messages += 1
        stats.last_message_ns = arrival_ns
        try:
            decoded = decoder.decode(payload, arrival_ns)
        except PayloadError as exc:
            self._bad_payload(device, stats, topic, str(exc))
            return
        except Exception as exc:  # a bug in mapping must not stop the other devices
            log.exception("MQTT %s: unexpected error decoding %r", self.name, topic)
            self._bad_payload(device, stats, topic, f"{type(exc).__name__}: {exc}")
            return
        stats.points += len(decoded)
        stats.missing_fields += decoded.missing
        batch = self._batches.get(device)
        if batch is None:
            batch = self._batches[device] = _Batch(source_ts=sub.mapping.timestamp is not None)
        batch.add(decoded)
        if self._watches:
            self._check_watches(device, decoded)
        self._waiting_points += len(decoded)
        if self._waiting_points >= self.cfg.max_batch_points and self._wake is not None:
            self._wake.set()

    def _subscription_of(self, topic: str) -> tuple[Subscription, PayloadDecoder] | None:
        """The first configured subscription matching ``topic`` (overlaps go to the first)."""
        for sub, decoder in self._subs:
            if mqtt.topic_matches_sub(sub.filter, topic):
                return sub, decoder
        return None

    def _bad_payload(self, device: str, stats: _DeviceStats, topic: str, error: str) -> None:
        stats.bad_payloads += 1
        stats.last_error = f"{topic}: {error}"
        now = time.monotonic()
        if now - stats.last_logged >= _LOG_EVERY_S:
            stats.last_logged = now
            log.warning(
                "MQTT device %s: bad payload on %r (%s); %d bad so far",
                device,
                topic,
                error,
                stats.bad_payloads,
            )

    # --- writes -----------------------------------------------------------------------------------
    async def write(self, request: WriteRequest) -> WriteResult:
        commands = self.cfg.commands
        if commands is None:
            return WriteResult(request.id, False, "no commands topic configured for writes")
        client = self._client
        if client is None or not self.connected:
            return WriteResult(request.id, False, "not connected to the MQTT broker")
        try:
            body = orjson.dumps(
                {"signal": request.signal, "value": request.value, "id": request.id}
            )
        except TypeError as exc:
            return WriteResult(request.id, False, f"value cannot be sent as JSON: {exc}")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        watch: _TelemetryWatch | None = None
        if request.confirm:
            if commands.confirm_by == "response":
                if request.id in self._responses:
                    return WriteResult(
                        request.id, False, f"a write with id {request.id!r} is pending"
                    )
                self._responses[request.id] = future
            else:
                watch = _TelemetryWatch(request.device, request.signal, request.value, future)
                self._watches.append(watch)
        try:
            topic = commands.topic_for(request.device)
            info = client.publish(topic, body, qos=commands.qos)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return WriteResult(
                    request.id, False, f"publish to {topic!r} failed: {mqtt.error_string(info.rc)}"
                )
            if not request.confirm:
                return WriteResult(request.id, True, f"published to {topic!r}, not confirmed")
            try:
                answer = await asyncio.wait_for(future, request.timeout_s)
            except TimeoutError:
                how = "response" if watch is None else "matching telemetry"
                return WriteResult(request.id, False, f"no {how} within {request.timeout_s} s")
        finally:
            self._responses.pop(request.id, None)
            if watch is not None and watch in self._watches:
                self._watches.remove(watch)
        if watch is not None:
            return WriteResult(request.id, True, "value seen in telemetry", answer)
        ok = answer.get("ok", True) is True
        message = str(
            answer.get("message", "confirmed by the device" if ok else "refused by the device")
        )
        return WriteResult(request.id, ok, message, answer.get("value"), extra={"response": answer})

    def _on_response(self, topic: str, payload: bytes) -> None:
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("MQTT %s: invalid JSON in command response on %r", self.name, topic)
            return
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
            log.warning("MQTT %s: command response on %r has no string id", self.name, topic)
            return
        future = self._responses.get(doc["id"])
        if future is not None and not future.done():
            future.set_result(doc)

    def _check_watches(self, device: str, decoded: Decoded) -> None:
        for w in self._watches:
            if w.device != device or w.future.done():
                continue
            for i, name in enumerate(decoded.signals):
                if name != w.signal:
                    continue
                seen = decoded.text[i] if decoded.text[i] is not None else decoded.values[i]
                if _same_value(seen, w.value):
                    w.future.set_result(seen)
                    break

    def status(self) -> dict[str, Any]:
        return {
            "broker": f"{self.cfg.broker.host}:{self.cfg.broker.port}",
            "connected": self.connected,
            "subscribed": self.subscribed,
            "connects": self.connects,
            "last_error": self.last_error,
            "devices": {name: s.as_dict() for name, s in self._stats.items()},
        }


def _device_of(sub: Subscription, topic: str) -> str:
    if sub.device is not None:
        return sub.device
    level = sub.device_level
    assert level is not None
    return topic.split("/")[level]


def _same_value(seen: Any, wanted: Any) -> bool:
    if isinstance(seen, str) or isinstance(wanted, str):
        return bool(seen == wanted)
    if isinstance(wanted, bool | int | float):
        return math.isclose(float(seen), float(wanted), rel_tol=1e-9, abs_tol=1e-12)
    return False
