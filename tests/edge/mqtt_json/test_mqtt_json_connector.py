"""The MQTT JSON connector against a real Mosquitto: mapping, devices, batching, faults, writes."""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as mqtt
import pytest

from shopfloor.core.quality import BAD, GOOD
from shopfloor.edge.connector import connector_class
from shopfloor.edge.connectors.mqtt_json.config import MqttJsonConfig
from shopfloor.edge.connectors.mqtt_json.connector import MqttJsonConnector
from shopfloor.edge.model import Reading, WriteRequest

from .conftest import Device, mosquitto_at

TS_MS = 1_700_000_000_123  # 2023-11-14T22:13:20.123Z


def make(port: int, subscriptions: list[dict[str, Any]], **extra: Any) -> MqttJsonConfig:
    return MqttJsonConfig.model_validate(
        {
            "broker": {"host": "127.0.0.1", "port": port},
            "subscriptions": subscriptions,
            "batch_s": 0.05,
            **extra,
        }
    )


class Collector:
    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self._changed = asyncio.Event()

    async def __call__(self, reading: Reading) -> None:
        self.readings.append(reading)
        self._changed.set()

    def points(self, device: str | None = None) -> int:
        return sum(len(r) for r in self.readings if device is None or r.device == device)

    async def until(self, done: Callable[[], bool], within_s: float = 10.0) -> None:
        async with asyncio.timeout(within_s):
            while not done():
                self._changed.clear()
                await self._changed.wait()


@asynccontextmanager
async def running(cfg: MqttJsonConfig, sink: Collector) -> AsyncIterator[MqttJsonConnector]:
    conn = MqttJsonConnector("mqtt", cfg, sink)
    task = asyncio.create_task(conn.run())
    try:
        for _ in range(1000):  # at most 10 s
            if conn.subscribed:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail(f"connector did not subscribe within 10 s: {conn.status()}")
        yield conn
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def run(fn: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(fn(), 60))


async def publish(device: Device, topic: str, payload: Any) -> None:
    body = payload if isinstance(payload, bytes | str) else orjson.dumps(payload)
    await asyncio.to_thread(device.publish, topic, body)


def test_entry_point_resolves_to_the_connector() -> None:
    assert connector_class("mqtt_json") is MqttJsonConnector


def test_mapped_values_with_a_millisecond_timestamp(broker: int, device: Device) -> None:
    sub = {
        "topic": "t1/line1/press/telemetry",
        "device": "press-1",
        "mapping": {
            "timestamp": "ts",
            "timestamp_unit": "ms",
            "values": {
                "temp": "data.temp",
                "speed": "data.speeds[0]",
                "last_speed": "data.speeds[-1]",
                "running": "state.run",
                "mode": "mode",
                "pressure": "data.pressure",
            },
        },
    }
    sink = Collector()

    async def main() -> None:
        async with running(make(broker, [sub]), sink):
            payload = {
                "ts": TS_MS,
                "data": {"temp": 21.5, "speeds": [1500, 1400, 1300], "pressure": None},
                "state": {"run": True},
                "mode": "auto",
            }
            await publish(device, "t1/line1/press/telemetry", payload)
            await sink.until(lambda: sink.points() >= 6)
        (r,) = sink.readings
        assert r.device == "press-1"
        assert r.signals == ("temp", "speed", "last_speed", "running", "mode", "pressure")
        assert (r.ts_ns == TS_MS * 1_000_000).all()
        assert r.source_ts
        assert r.values[:4].tolist() == [21.5, 1500.0, 1300.0, 1.0]
        assert math.isnan(r.values[4])
        assert r.text is not None
        assert r.text[4] == "auto"
        assert r.quality.tolist() == [GOOD] * 5 + [BAD]  # JSON null: the device has no value

    run(main)


def test_device_from_topic_level_and_all_numeric_fields(broker: int, device: Device) -> None:
    sub = {
        "topic": "t2/+/{device}/telemetry",
        "mapping": {"timestamp": "time", "timestamp_unit": "rfc3339", "numeric_fields": "$"},
    }
    sink = Collector()

    async def main() -> None:
        async with running(make(broker, [sub]), sink):
            await publish(
                device,
                "t2/line1/cnc-7/telemetry",
                {"time": "2023-11-14T22:13:20.5Z", "a": 1, "b": 2.5, "ok": False,
                 "label": "x", "nested": {"c": 3}},
            )  # fmt: skip
            await publish(
                device, "t2/line2/robot-2/telemetry", {"time": "2023-11-14T23:13:20+01:00", "a": 7}
            )
            await sink.until(lambda: sink.points() >= 4)
        by_device = {r.device: r for r in sink.readings}
        assert set(by_device) == {"cnc-7", "robot-2"}
        cnc = by_device["cnc-7"]
        assert cnc.signals == ("a", "b", "ok")  # text and nested objects are left out
        assert cnc.values.tolist() == [1.0, 2.5, 0.0]
        assert (cnc.ts_ns == 1_700_000_000_500_000_000).all()
        robot = by_device["robot-2"]
        assert robot.values.tolist() == [7.0]
        assert robot.ts_ns.tolist() == [1_700_000_000_000_000_000]  # +01:00 taken into account

    run(main)


def test_arrays_of_samples(broker: int, device: Device) -> None:
    subs = [
        {
            "topic": "t3/vib",
            "device": "fan-1",
            "mapping": {"samples": "samples", "timestamp": "t", "timestamp_unit": "s",
                        "values": {"rms": "v.rms", "peak": "v.peak"}},
        },
        {
            "topic": "t3/flow",
            "device": "pump-1",
            "mapping": {"samples": "", "timestamp": "ts", "timestamp_unit": "ns",
                        "values": {"flow": "q"}},
        },
    ]  # fmt: skip
    sink = Collector()
    t0 = 1_700_000_000

    async def main() -> None:
        async with running(make(broker, subs), sink):
            samples = [{"t": t0 + k * 0.25, "v": {"rms": k, "peak": 10 * k}} for k in range(4)]
            await publish(device, "t3/vib", {"device": "x", "samples": samples})
            await publish(device, "t3/flow", [{"ts": t0 * 10**9 + k, "q": k / 2} for k in range(3)])
            await sink.until(lambda: sink.points() >= 11)
        fan = [r for r in sink.readings if r.device == "fan-1"]
        assert sum(len(r) for r in fan) == 8
        fan_r = fan[0]
        assert fan_r.signals == ("rms", "peak") * 4
        assert fan_r.values.tolist() == [0, 0, 1, 10, 2, 20, 3, 30]
        want_ts = [t0 * 10**9 + k * 250_000_000 for k in range(4) for _ in range(2)]
        assert fan_r.ts_ns.tolist() == want_ts
        (pump,) = [r for r in sink.readings if r.device == "pump-1"]
        assert pump.values.tolist() == [0.0, 0.5, 1.0]
        assert pump.ts_ns.tolist() == [t0 * 10**9 + k for k in range(3)]

    run(main)


def test_bad_payloads_are_counted_and_the_loop_keeps_running(broker: int, device: Device) -> None:
    sub = {
        "topic": "t4/{device}",
        "mapping": {"samples": "s", "timestamp": "ts", "values": {"x": "x", "y": "y"}},
    }
    sink = Collector()
    good = {"s": [{"ts": TS_MS, "x": 1, "y": 2}]}
    bad = [
        b"{not json",
        b'"just a string"',
        {"s": {"ts": TS_MS, "x": 1}},  # samples is not an array
        {"s": [{"x": 1, "y": 2}]},  # no timestamp
        {"s": [{"ts": "yesterday", "x": 1}]},  # timestamp of the wrong type
        {"s": [{"ts": TS_MS // 1000, "x": 1}]},  # seconds sent, milliseconds configured
        {"s": [{"ts": TS_MS, "x": {"deep": 1}}]},  # an object where a number belongs
        {"s": [{"ts": TS_MS, "z": 1}]},  # none of the mapped fields
    ]

    async def main() -> None:
        async with running(make(broker, [sub]), sink) as conn:
            for payload in bad:
                await publish(device, "t4/dev-a", payload)
            await publish(device, "t4/dev-a", {"s": [{"ts": TS_MS, "x": 5}]})  # y missing
            await publish(device, "t4/dev-a", good)
            await publish(device, "t4/dev-b", good)
            await sink.until(lambda: sink.points("dev-a") >= 3 and sink.points("dev-b") >= 2)
            status = conn.status()["devices"]
        a = status["dev-a"]
        assert a["messages"] == len(bad) + 2
        assert a["bad_payloads"] == len(bad)
        assert a["missing_fields"] == 1
        assert a["points"] == 3
        assert "t4/dev-a" in a["last_error"]
        assert "no values" in a["last_error"]  # the last bad one had none of the fields
        assert status["dev-b"]["bad_payloads"] == 0
        values_a = np.concatenate([r.values for r in sink.readings if r.device == "dev-a"])
        assert values_a.tolist() == [5.0, 1.0, 2.0]  # only the usable messages

    run(main)


def test_points_are_batched_per_device(broker: int, device: Device) -> None:
    sub = {"topic": "t5/{device}", "mapping": {"values": {"n": "n"}}}
    sink = Collector()
    cfg = make(broker, [sub], batch_s=1.0, max_batch_points=10)

    async def main() -> None:
        async with running(cfg, sink):

            def burst() -> None:
                infos = [device.client.publish("t5/counter", f'{{"n": {k}}}', qos=1)
                         for k in range(50)]  # fmt: skip
                for info in infos:
                    info.wait_for_publish(5)

            await asyncio.to_thread(burst)
            await sink.until(lambda: sink.points() >= 50)
        assert np.concatenate([r.values for r in sink.readings]).tolist() == list(range(50))
        assert len(sink.readings) <= 10  # 50 messages, handed on in a few readings
        assert not sink.readings[0].source_ts  # arrival time, not a device timestamp

    run(main)


def answer_commands(
    device: Device, prefix: str, respond: Callable[[str, dict[str, Any]], Any]
) -> list[dict[str, Any]]:
    """Make ``device`` answer commands on ``prefix/+/set``; returns the commands it saw."""
    seen: list[dict[str, Any]] = []
    subscribed = threading.Event()

    def on_message(client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        body = orjson.loads(msg.payload)
        seen.append(body)
        name = msg.topic.split("/")[1]
        reply = respond(name, body)
        if reply is not None:
            topic, payload = reply
            client.publish(topic, orjson.dumps(payload), qos=1)

    device.client.on_message = on_message
    device.client.on_subscribe = lambda *a: subscribed.set()
    device.client.subscribe(f"{prefix}/+/set", qos=1)
    assert subscribed.wait(5)
    return seen


def test_write_confirmed_by_a_response(broker: int, device: Device) -> None:
    def respond(name: str, body: dict[str, Any]) -> Any:
        if name == "mute":
            return None
        ok = body["value"] <= 100
        payload = {"id": body["id"], "ok": ok, "value": body["value"] if ok else 50}
        if not ok:
            payload["message"] = "above the limit of 100"
        return f"t6/{name}/result", payload

    seen = answer_commands(device, "t6", respond)
    cfg = make(
        broker,
        [{"topic": "t6/{device}/telemetry", "mapping": {"values": {"sp": "sp"}}}],
        commands={"topic": "t6/{device}/set", "response_topic": "t6/{device}/result"},
    )
    sink = Collector()

    async def main() -> None:
        async with running(cfg, sink) as conn:
            ok = await conn.write(WriteRequest("w-1", "oven-1", "setpoint", 80.5))
            refused = await conn.write(WriteRequest("w-2", "oven-1", "setpoint", 150))
            silent = await conn.write(WriteRequest("w-3", "mute", "setpoint", 1, timeout_s=0.5))
            unconfirmed = await conn.write(
                WriteRequest("w-4", "oven-1", "setpoint", 1, confirm=False)
            )
        assert ok.ok, ok.message
        assert ok.read_back == 80.5
        assert not refused.ok
        assert refused.message == "above the limit of 100"
        assert refused.read_back == 50
        assert not silent.ok
        assert "no response within 0.5 s" in silent.message
        assert unconfirmed.ok
        assert seen[0] == {"signal": "setpoint", "value": 80.5, "id": "w-1"}
        assert [s["id"] for s in seen[:3]] == ["w-1", "w-2", "w-3"]

    run(main)


def test_write_confirmed_by_telemetry(broker: int, device: Device) -> None:
    def respond(name: str, body: dict[str, Any]) -> Any:
        return f"t7/{name}/telemetry", {"speed": body["value"]}

    answer_commands(device, "t7", respond)
    cfg = make(
        broker,
        [{"topic": "t7/{device}/telemetry", "mapping": {"values": {"speed": "speed"}}}],
        commands={"topic": "t7/{device}/set", "confirm_by": "telemetry"},
    )
    sink = Collector()

    async def main() -> None:
        async with running(cfg, sink) as conn:
            res = await conn.write(WriteRequest("w-1", "belt-3", "speed", 0.75))
            other = await conn.write(WriteRequest("w-2", "belt-3", "direction", 1, timeout_s=0.5))
            await sink.until(lambda: sink.points() >= 2)
        assert res.ok, res.message
        assert res.read_back == 0.75
        assert not other.ok  # the telemetry never shows "direction"
        assert "no matching telemetry" in other.message
        assert np.concatenate([r.values for r in sink.readings]).tolist() == [0.75, 1.0]

    run(main)


def test_write_without_commands_or_broker_is_refused() -> None:
    sub = {"topic": "x/{device}", "mapping": {"values": {"a": "a"}}}

    async def main() -> None:
        no_commands = MqttJsonConnector("m", make(1, [sub]), Collector())
        res = await no_commands.write(WriteRequest("w", "d", "a", 1))
        assert not res.ok
        assert "no commands topic" in res.message
        cfg = make(1, [sub], commands={"topic": "x/{device}/set", "confirm_by": "telemetry"})
        offline = MqttJsonConnector("m", cfg, Collector())
        res = await offline.write(WriteRequest("w", "d", "a", 1))
        assert not res.ok
        assert "not connected" in res.message

    run(main)


def test_reconnects_and_resubscribes_after_a_broker_restart(tmp_path: Path) -> None:
    mosquitto = mosquitto_at(tmp_path)
    mosquitto.start()
    sub = {"topic": "t8/{device}", "mapping": {"values": {"v": "v"}}}
    cfg = make(
        mosquitto.port, [sub], broker={"host": "127.0.0.1", "port": mosquitto.port,
                                       "reconnect_min_s": 1, "reconnect_max_s": 1}
    )  # fmt: skip
    sink = Collector()

    async def until_state(conn: MqttJsonConnector, key: str, want: bool) -> None:
        for _ in range(1000):  # at most 10 s
            if conn.status()[key] is want:
                return
            await asyncio.sleep(0.01)
        pytest.fail(f"{key} did not become {want}: {conn.status()}")

    async def main() -> None:
        async with running(cfg, sink) as conn:
            before = Device(mosquitto.port)
            await publish(before, "t8/m1", {"v": 1})
            await sink.until(lambda: sink.points() >= 1)
            before.close()
            await asyncio.to_thread(mosquitto.stop)
            await until_state(conn, "connected", False)
            await asyncio.to_thread(mosquitto.start)
            await until_state(conn, "subscribed", True)
            after = Device(mosquitto.port)
            await publish(after, "t8/m1", {"v": 2})
            await sink.until(lambda: sink.points() >= 2)
            after.close()
            assert conn.status()["connects"] == 2
        assert np.concatenate([r.values for r in sink.readings]).tolist() == [1.0, 2.0]

    try:
        run(main)
    finally:
        mosquitto.stop()
